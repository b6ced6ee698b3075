"""Completion intervals and the verdict per completed channel: calibrated on validation, they hold on unseen data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tgatunet.infer.intervals import KINDS, IntervalCalibration, interval_bounds, interval_score, missing_kinds

NOISE = 0.3  # the standard deviation of the unpredictable part of channel y


def noisy_frames(seed: int, blocks: int, rows: int = 64) -> dict[str, pd.DataFrame]:
    """Sources ``full`` (a, b, y, z) and ``partial`` (a, b; needs y and z). ``y`` is a lagged mix of a and b plus
    Gaussian noise of known size; ``z`` is pure noise: nothing can predict it."""
    rng = np.random.default_rng(seed)
    frames = {}
    for name in ("full", "partial"):
        parts = []
        for b in range(blocks):
            label = b % 2
            t = np.arange(rows)
            freq = 0.15 if label == 0 else 0.35
            a = np.sin(freq * t + rng.uniform(0, 6))
            bb = np.cos(freq * t + rng.uniform(0, 6))
            part = pd.DataFrame({"subject": f"{name}{seed}_{b:02d}", "label": ["slow", "fast"][label], "a": a, "b": bb})
            if name == "full":
                part["y"] = 0.8 * np.roll(a, 1) - 0.5 * bb + NOISE * rng.standard_normal(rows)
                part["z"] = rng.standard_normal(rows)
            parts.append(part)
        frames[name] = pd.concat(parts, ignore_index=True)
    return frames


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory) -> Path:
    """A small run trained on :func:`noisy_frames` and evaluated (coverage 0.9)."""
    from tgatunet.evaluate.evaluate import evaluate_run
    from tgatunet.train.run import train

    root = tmp_path_factory.mktemp("noisy")
    paths = {}
    for name, frame in noisy_frames(0, blocks=30).items():
        paths[name] = root / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    config = {
        "common_modalities": ["a", "b"],
        "sources": [{"name": "full", "path": str(paths["full"]), "have": ["y", "z"]},
                    {"name": "partial", "path": str(paths["partial"]), "need": ["y", "z"]}],
        "block_col": "subject", "label_col": "label", "window_size": 32, "step_size": 8, "val_fraction": 0.3,
        "test_fraction": 0.3, "seed": 3, "batch_size": 16, "hidden_channels": 32, "epochs": 30, "patience": 30,
        "lr": 0.003, "run_dir": str(root / "run"),
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    run = train(root / "config.yaml", progress_bar=False)
    evaluate_run(run.root)
    return run.root


def test_missing_kinds_tell_points_gaps_and_whole_channels():
    visible = np.ones((1, 8, 3), dtype=bool)
    visible[0, 3, 0] = False  # a lone missing step
    visible[0, 2:6, 1] = False  # a drop-out
    visible[0, :, 2] = False  # the channel missing from the whole window
    kinds = missing_kinds(visible)[0]
    assert KINDS[kinds[3, 0]] == "points"
    assert {KINDS[k] for k in kinds[2:6, 1]} == {"gaps"}
    assert {KINDS[k] for k in kinds[:, 2]} == {"need"}


def test_conformal_factor_is_the_finite_sample_quantile_and_falls_back_when_scores_are_few():
    rng = np.random.default_rng(0)
    scores = np.abs(rng.standard_normal(20000))
    kinds = np.where(np.arange(20000) % 2 == 0, 1, 2)  # gaps and need
    channel = np.zeros(20000, dtype=int)
    channel[:10] = 1  # channel 1 has 10 scores: too few of its own
    table = IntervalCalibration.fit(scores, kinds, channel, ["u", "v"])
    factors = table.factors(0.9)
    assert abs(factors[1, 0] - 1.645) < 0.05  # the 90% quantile of |N(0, 1)|
    assert table.counts[1, 1] == (kinds == 1).sum()  # v's gaps fall back to all gaps scores
    assert table.counts[0, 0] == 20000  # no points score at all: every score
    again = IntervalCalibration.from_dict(table.to_dict())
    np.testing.assert_allclose(again.factors(0.8), table.factors(0.8), rtol=1e-5)
    assert np.all(table.factors(0.95) > table.factors(0.9))


@pytest.mark.parametrize("n", [50, 60, 73, 127, 877, 3001])
def test_the_factor_is_never_below_the_conformal_order_statistic(n):
    scores = np.random.default_rng(n).exponential(size=n)
    table = IntervalCalibration.fit(scores, np.ones(n, dtype=int), np.zeros(n, dtype=int), ["u"])
    for coverage in (0.5, 0.8, 0.9, 0.95):
        k = int(np.ceil((n + 1) * coverage))  # the k-th smallest score keeps the guarantee
        factor = table.factors(coverage)[1, 0]
        assert factor >= np.sort(scores)[k - 1]
        assert (scores <= factor).sum() <= k + np.ceil(0.005 * n)  # and at most one table step above it
    assert np.isinf(table.factors(n / (n + 1) + 1e-3)[1, 0])  # more than the scores can vouch for
    assert table.highest_coverage() == n / (n + 1)


def test_interval_score_is_width_plus_the_miss_penalty():
    lower, upper, truth = np.array([0.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0]), np.array([0.5, 1.5, -1.0])
    np.testing.assert_allclose(interval_score(lower, upper, truth, 0.9), [1.0, 1.0 + 20 * 0.5, 1.0 + 20 * 1.0])


def test_bounds_only_where_filled():
    completed = np.array([[1.0, 2.0], [3.0, 4.0]])
    filled = np.array([[True, False], [False, True]])
    lower, upper = interval_bounds(completed, filled, np.full((2, 2), 0.5), np.ones((2, 2), np.int8), np.full((3, 2), 2.0))
    assert np.isnan(lower[0, 1]) and np.isnan(upper[1, 0])
    np.testing.assert_allclose([lower[0, 0], upper[1, 1]], [0.0, 5.0])


def test_intervals_cover_the_truth_at_the_nominal_rate_on_unseen_data(noisy_run):
    import tgatunet

    metrics = tgatunet.load(noisy_run).evaluate()["completion"]
    for pattern in ("need", "gaps", "points"):
        coverage = metrics["intervals"][pattern]["model"]["coverage"]
        assert 0.84 <= coverage <= 0.96, (pattern, coverage)
    # New recordings of the same kind, never seen: the partial source's y and z, at another coverage.
    run = tgatunet.load(noisy_run)
    full = noisy_frames(99, blocks=12)["full"]
    frame = full.drop(columns=["y", "z"])
    completed = run.complete(frame, block_col="subject", interval=0.7)
    for channel in ("y", "z"):
        inside = (full[channel] >= completed[f"{channel}_lower"]) & (full[channel] <= completed[f"{channel}_upper"])
        assert 0.62 <= inside.mean() <= 0.78, (channel, inside.mean())
    # y carries NOISE of unpredictable noise, z all of its unit variance: z's intervals are the wider.
    width = {c: (completed[f"{c}_upper"] - completed[f"{c}_lower"]).mean() for c in ("y", "z")}
    assert width["y"] < width["z"]


def test_intervals_only_on_filled_cells_and_around_the_value(noisy_run):
    import tgatunet

    run = tgatunet.load(noisy_run)
    frame = noisy_frames(5, blocks=4)["full"]
    frame.loc[frame.index % 7 == 0, "a"] = np.nan  # drop-outs in an observed channel
    completed = run.complete(frame, block_col="subject", interval=True)
    columns = list(completed.columns)
    assert columns[columns.index("a") + 1 : columns.index("a") + 3] == ["a_lower", "a_upper"]  # beside the value
    filled = completed["a_imputed"].to_numpy()
    assert filled.sum() == (frame["a"].isna()).sum() > 0
    assert completed.loc[~filled, ["a_lower", "a_upper"]].isna().all().all()  # observed values get no interval
    assert (completed.loc[filled, "a_lower"] < completed.loc[filled, "a"]).all()
    assert (completed.loc[filled, "a"] < completed.loc[filled, "a_upper"]).all()
    # Arrays: (completed, lower, upper), the same numbers as the DataFrame.
    channels = ["a", "b", "y", "z"]
    values, lower, upper = run.complete(frame[channels].to_numpy()[:64], channels=channels, interval=True)
    single = run.complete(frame.iloc[:64], interval=True)
    np.testing.assert_array_equal(lower[:, 0], single["a_lower"].to_numpy())
    assert np.isnan(lower[:, 1]).all()  # b observed throughout


def test_the_verdict_flags_a_channel_no_better_than_its_mean(noisy_run, caplog):
    import tgatunet

    run = tgatunet.load(noisy_run)
    report = run.channel_report()
    need = report[report.pattern == "need"].set_index("channel")
    assert need.loc["z", "verdict"] == "no better than the mean"
    assert need.loc["y", "verdict"] == "better than the mean"
    assert need.loc["y", "mae"] < 0.8 * need.loc["y", "mean_fill_mae"]
    frame = noisy_frames(7, blocks=2)["partial"]
    with caplog.at_level(logging.WARNING):
        applied = run.apply(frame, block_col="subject")
    assert set(applied.untrusted) == {"z"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'z'" in m and "treat its filled values as unknown" in m for m in warned)
    assert not any("'y'" in m for m in warned)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run.complete(frame[["a", "b"]].to_numpy(), channels=["a", "b"])  # arrays are warned about too
    assert any("'z'" in r.getMessage() for r in caplog.records)


def test_cli_and_api_give_the_same_intervals_bit_for_bit(noisy_run, tmp_path):
    from typer.testing import CliRunner

    import tgatunet
    from tgatunet.cli import app

    frame = noisy_frames(11, blocks=3)["partial"]
    path = tmp_path / "new.parquet"
    frame.to_parquet(path)
    result = CliRunner().invoke(app, ["predict", "--run", str(noisy_run), "--input", str(path), "--output", str(tmp_path / "out"),
                                      "--coverage", "0.8"])
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(tmp_path / "out" / "new_completed.parquet")
    api = tgatunet.load(noisy_run).complete(frame, interval=0.8)
    for column in ("y", "y_lower", "y_upper", "z_lower", "z_upper"):
        np.testing.assert_array_equal(written[column].to_numpy(), api[column].to_numpy())


def test_coverage_is_checked_and_numpy_numbers_are_taken(noisy_run):
    import tgatunet
    from tgatunet.errors import DataError

    run = tgatunet.load(noisy_run)
    frame = noisy_frames(1, blocks=1)["partial"]
    for bad in (1.5, 0, -1, float("nan"), "0.9", np.array([0.9, 0.8])):
        with pytest.raises(DataError, match="between 0 and 1"):
            run.complete(frame, interval=bad)
    with pytest.raises(DataError, match="ask for at most"):
        run.complete(frame, interval=0.9999)
    same = run.complete(frame, interval=np.float32(0.8))
    np.testing.assert_array_equal(same["y_lower"], run.complete(frame, interval=0.800000011920929)["y_lower"])


def test_the_spread_head_does_not_change_how_the_network_learns():
    """The spread's loss trains only its head: the network's gradients are the same with it and without."""
    from tgatunet.model.tgat_unet import ModelSpec, TGATUNet
    from tgatunet.train.objective import masked_loss, spread_loss

    torch.manual_seed(0)
    model = TGATUNet(ModelSpec(in_channels=3, num_classes=2, hidden_channels=16))
    values, visible = torch.randn(4, 16, 3), torch.rand(4, 16, 3) > 0.3
    grads = []
    for with_spread in (False, True):
        model.zero_grad()
        torch.manual_seed(5)  # the same dropout masks
        recon, logits, log_spread = model(values, visible)
        loss = masked_loss(recon, values, ~visible)
        if with_spread:
            loss = loss + spread_loss(log_spread, recon, values, ~visible)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    network = [n for n in grads[1] if not n.startswith("spread.")]
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in network)
    assert "spread.weight" not in grads[0] and grads[1]["spread.weight"].abs().sum() > 0
    assert not any(TGATUNet(ModelSpec(in_channels=3, num_classes=2)).spread.weight.flatten())  # starts at zero


def test_resuming_a_run_of_an_earlier_version_is_a_clear_error(dataset):
    from tgatunet.errors import RunError
    from tgatunet.train.run import train

    config = dataset["write"]({**dataset["config"], "epochs": 1})
    run = train(config, progress_bar=False)
    checkpoint = torch.load(run.last_checkpoint, weights_only=False)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("model.spread.")}
    torch.save(checkpoint, run.last_checkpoint)  # as an earlier tgatunet wrote it: no spread head
    with pytest.raises(RunError, match="earlier tgatunet"):
        train(dataset["write"]({**dataset["config"], "epochs": 2}), resume=True, progress_bar=False)
