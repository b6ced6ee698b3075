"""Completion scored by pattern against baselines; training selected by the completion it is scored on."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from tgatunet.evaluate.baselines import LaggedRidge, linear_fill, locf_fill, mean_fill
from tgatunet.data.hiding import PATTERNS, hide
from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.evaluate.seeds import aggregate, seed_repeats, spread
from tgatunet.config import config_from_dict
from tgatunet.train.objective import validation_inputs
from tgatunet.data.prepared import prepare_data
from tgatunet.train.objective import sample_hidden
from tgatunet.train.run import train, training_budget


def test_linear_interpolation_of_a_ramp_is_exact_and_locf_carries_a_step():
    t = np.arange(10.0)
    values = np.stack([2 * t + 1, np.where(t < 5, 1.0, 4.0)], axis=1)
    visible = np.ones_like(values, dtype=bool)
    visible[[2, 3, 4, 7], 0] = False  # inside the ramp
    visible[[5, 6], 1] = False  # just after the step
    assert np.allclose(linear_fill(values, visible)[:, 0], values[:, 0])
    assert locf_fill(values, visible)[[5, 6], 1].tolist() == [1.0, 1.0]  # the last value seen, carried
    visible[0, 1] = False
    assert locf_fill(values, visible)[0, 1] == 1.0  # before the first visible value: that value
    assert (mean_fill(values, visible) == 0).all()  # the training mean, in normalised units


def test_ridge_recovers_a_lagged_linear_relation():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(300)
    b = 0.8 * np.r_[a[0], a[:-1]] - 0.3 * a  # b depends on a at lag 0 and -1 (the first step repeated, as edges are)
    values = np.stack([a, b], axis=1)
    observed = np.ones_like(values, dtype=bool)
    ridge = LaggedRidge([(values, observed)], lags=2, alpha=1e-9)
    visible = observed.copy()
    visible[:, 1] = False  # b hidden: predicted from a
    assert np.abs(ridge(values, visible)[:, 1] - b).max() < 1e-6


def test_gap_and_point_hiding_only_hides_observed_values():
    observed = torch.rand(6, 40, 4) > 0.3
    hidden = sample_hidden(observed, torch.zeros(0, 4, dtype=torch.bool), 0.0, 0.0, 0.2, gap_prob=1.0, gap_max=0.25)
    assert not (hidden & ~observed).any() and hidden.any()
    runs = [np.diff(np.flatnonzero(np.diff(np.r_[0, col, 0]))) for col in hidden[0].T.numpy().astype(int)]
    assert all(len(r) for r in runs)


@pytest.fixture
def run(dataset):
    return train(dataset["write"]({**dataset["config"], "epochs": 3}), progress_bar=False)


def test_every_pattern_is_scored_for_every_method_on_observed_values_only(run):
    from tgatunet.evaluate.trained_run import load_run

    trained = load_run(run)
    for pattern in PATTERNS:
        for recording in hide(trained.data, pattern, 0.25, 0.1, seed=1):
            assert not (recording.hidden & ~recording.observed).any()
    completion = evaluate_run(run.root)["completion"]
    assert set(completion["need"]) == {"model", "mean_fill", "ridge"}  # no interpolation across a whole channel
    for pattern in ("gaps", "points"):
        assert set(completion[pattern]) == {"model", "mean_fill", "linear", "locf", "ridge"}
        for scores in completion[pattern].values():
            assert {"mae", "rmse", "pearson", "per_channel"} <= set(scores)
    assert completion["model"] == completion["need"]["model"]  # the earlier key, kept
    assert all(completion["hidden_values"][p] > 0 for p in PATTERNS)


def test_the_saits_baseline_is_skipped_with_a_clear_message_without_pypots(run, monkeypatch, caplog):
    import tgatunet.evaluate.saits as saits

    monkeypatch.setattr(saits, "available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="tgatunet"):
        completion = evaluate_run(run.root, baselines=("saits",))["completion"]
    assert "saits" not in completion["need"]
    assert "tgatunet[baselines]" in caplog.text


def _has_pypots() -> bool:
    from tgatunet.evaluate.saits import available

    return available()


@pytest.mark.skipif(not _has_pypots(), reason="PyPOTS not installed")
def test_both_saits_variants_train_early_stopped_and_are_scored_on_the_same_values(run):
    import yaml

    from tgatunet.config import load_config

    config = run.read_config()
    (run.root / "config.yaml").write_text(yaml.safe_dump({**config.to_dict(), "saits_epochs": 3, "saits_patience": 1}))
    completion = evaluate_run(run.root, baselines=("saits",))["completion"]
    for name in ("saits_default", "saits_task"):
        assert completion["need"][name]["mae"] > 0 and completion["seconds"][f"{name}_training"] > 0
        training = completion["baseline_training"][name]
        assert 1 <= training["best_epoch"] <= training["epochs"] <= 3 and training["best_val_mae"] > 0
    for pattern, peer in completion["strongest_peer"].items():
        better = min(completion[pattern]["saits_default"]["mae"], completion[pattern]["saits_task"]["mae"])
        assert peer["mae"] == better and peer["model_ratio"] == pytest.approx(completion[pattern]["model"]["mae"] / better)
    assert load_config(run.root / "config.yaml").evaluation.saits_epochs == 3


def test_the_task_hiding_of_saits_hides_exactly_the_channel_sets_a_source_needs():
    from tgatunet.evaluate.saits import Hiding

    gyro = torch.tensor([[False, False, True, True]])
    only_need = Hiding(gyro, pattern_prob=1.0, channel_prob=0.0, step_prob=0.0, gap_prob=0.0, gap_max=0.25)
    observed = torch.ones(20, 4, dtype=torch.bool)
    assert torch.equal(only_need(observed), gyro.expand(20, 4))
    observed[:, 3] = False  # a channel the window lacks is never hidden (nothing to score)
    assert torch.equal(only_need(observed), observed & gyro)
    drawn = Hiding(gyro, 0.5, 0.15, 0.1, 0.3, 0.25)
    torch.manual_seed(0)
    hidden = torch.stack([drawn(torch.ones(20, 4, dtype=torch.bool)) for _ in range(400)])
    whole = hidden[:, :, 2:].all(dim=(1, 2))
    assert 0.4 < whole.float().mean() < 0.65  # the need set in about pattern_prob of the windows


def test_saits_is_selected_on_the_values_that_select_the_run(run):
    from tgatunet.evaluate.evaluate import validation_windows
    from tgatunet.evaluate.trained_run import load_run

    trained = load_run(run)
    x, x_ori = validation_windows(trained)
    again, _ = validation_windows(trained)
    hidden = np.isnan(x) & ~np.isnan(x_ori)
    assert hidden.any() and np.array_equal(np.isnan(x), np.isnan(again))  # the same values every time
    assert not (~np.isnan(x) & np.isnan(x_ori)).any()  # nothing unobserved shown
    # The run's own validation step, batch by batch, hides the same values.
    values, observed = trained.data.gather(trained.data.windows["val"])
    training = trained.model.config.training
    visible, targets = validation_inputs(observed[: training.batch_size], None, trained.model.patterns, training, 0)
    assert np.array_equal(targets.numpy(), hidden[: training.batch_size])


def test_a_run_that_ends_at_its_budget_while_improving_says_so_and_names_the_key(dataset):
    from tgatunet.train.stopping import training_ending

    assert "too_early" not in training_ending(True, 12, 12, True, 1000)
    assert "too_early" not in training_ending(False, 9, 12, True, 1000)  # flat for a while: the budget was not the limit
    ending = training_ending(False, 0, 12, True, 320_000)
    assert ending["stopped_by"] == "max_windows" and "max_windows: 640000" in ending["too_early"]
    assert "Raise epochs" in training_ending(False, 1, 12, False, 500)["too_early"]
    run = train(dataset["write"]({**dataset["config"], "epochs": "auto", "max_windows": 240, "patience": 50}),
                progress_bar=False)
    train_metrics = run.read_metrics()["train"]
    assert train_metrics["stopped_by"] == "max_windows" and "max_windows" in train_metrics["too_early"]


def test_validation_completion_error_selects_the_checkpoint_and_stops_training(dataset):
    run = train(dataset["write"]({**dataset["config"], "epochs": 6, "patience": 2}), progress_bar=False)
    log = pd.read_csv(run.logs / "csv" / "metrics.csv").dropna(subset=["val/mae"])
    best = torch.load(run.best_checkpoint, weights_only=False)
    monitored = [v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint") and v.get("monitor")]
    assert monitored and monitored[0]["monitor"] == "val/mae"
    assert monitored[0]["best_model_score"].item() == pytest.approx(log["val/mae"].min(), rel=1e-6)
    assert run.read_metrics()["train"]["best_val_mae"] == pytest.approx(log["val/mae"].min(), rel=1e-6)


def test_epochs_auto_gives_a_small_dataset_as_many_windows_per_check_as_a_large_one(dataset):
    config = config_from_dict({**dataset["config"], "epochs": "auto", "max_windows": 8000})
    data = prepare_data(config)
    small = training_budget(config, data)
    assert small["max_steps"] == 8000 // config.training.batch_size and small["max_epochs"] == -1
    assert small["check_val_every_n_epoch"] * data.epoch_windows >= 3200 > (small["check_val_every_n_epoch"] - 1) * data.epoch_windows
    fixed = training_budget(config.with_keys(epochs=4), prepare_data(config))
    assert fixed == {"max_epochs": 4, "check_val_every_n_epoch": 1}


def test_the_step_ceiling_holds(dataset):
    run = train(dataset["write"]({**dataset["config"], "epochs": "auto", "max_windows": 240}), progress_bar=False)
    assert run.read_metrics()["train"]["steps"] == 240 // 8


def test_fresh_offsets_draw_new_training_windows_every_epoch(dataset):
    config = config_from_dict(dataset["config"])
    data = prepare_data(config)
    fixed = prepare_data(config.with_keys(fresh_offsets=False))
    assert data.epoch_windows == len(fixed.windows["train"]) < len(data.windows["train"])
    assert set(fixed.windows["train"].starts) < set(data.windows["train"].starts)  # every start row is a candidate


def test_spread_and_aggregate():
    assert spread([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(np.sqrt(2)), "values": [1.0, 3.0]}
    runs = [{"completion": {"need": {"model": {"mae": m, "rmse": 1.0, "pearson": 0.5}}}, "classification": {"accuracy": a}}
            for m, a in ((0.3, 0.9), (0.5, 1.0))]
    figures = aggregate(runs)
    assert figures["completion"]["need"]["model"]["mae"]["mean"] == pytest.approx(0.4)
    assert figures["classification"]["accuracy"]["values"] == [0.9, 1.0]


def test_seeds_retrain_differently_and_report_the_spread(run):
    result = seed_repeats(run.root, 2)
    assert result["seeds"] == [3, 4] and len(result["runs"]) == 2
    maes = result["completion"]["need"]["model"]["mae"]["values"]
    assert maes[0] != maes[1]  # another seed, another run
    assert run.read_metrics()["seeds"]["completion"]["gaps"]["linear"]["mae"]["std"] == 0.0  # the same values hidden
