"""The dynamic need update: training-only, need channels only, configured epochs only, never a target.

And the leakage guard around it: validation and test inputs bit-identical
before and after a run, recorded in metrics.json.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import base_config, make_frames
from tgatunet.config import config_from_dict
from tgatunet.data.prepared import collate_windows, prepare_data
from tgatunet.data.training_inputs import TrainingInputs, TrainingWindowDataset
from tgatunet.errors import ConfigError
from tgatunet.infer.rundir import RunDir
from tgatunet.train.leakage_guard import LeakageGuard, split_fingerprint
from tgatunet.train.need_update import NeedUpdate, every_window
from tgatunet.train.objective import sample_inputs
from tgatunet.train.run import build_module, train

C = 2  # index of channel "c", the channel source "partial" needs


def _update_config(dataset, **changes) -> dict:
    return {**dataset["config"], "dynamic_need_update": True, "need_update_start": 1, "need_update_every": 2, **changes}


def _split_inputs(data, split):
    rows = np.unique(data.rows(data.windows[split].starts))
    return torch.from_numpy(data.values[rows]), torch.from_numpy(data.observed[rows])


def _run_data(trainer):
    (guard,) = [c for c in trainer.callbacks if isinstance(c, LeakageGuard)]
    return guard.data


class Snapshots(pl.Callback):
    """The need-update buffer at the start of every epoch (after the update, if one ran) and the run's data."""

    def __init__(self) -> None:
        self.buffer: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.data = None
        self.inputs_at_start = {}

    def on_fit_start(self, trainer, pl_module):
        self.data = _run_data(trainer)
        self.inputs_at_start = {split: _split_inputs(self.data, split) for split in ("val", "test")}

    def on_train_epoch_start(self, trainer, pl_module):
        (update,) = [c for c in trainer.callbacks if isinstance(c, NeedUpdate)]
        self.update = update
        self.buffer[trainer.current_epoch] = (update.inputs.values.clone(), update.inputs.filled.clone())


@pytest.fixture(scope="module")
def updated_run(tmp_path_factory):
    """One 4-epoch run with updates at epochs 1 and 3, shared by the tests that inspect it."""
    folder = tmp_path_factory.mktemp("updated")
    paths = {}
    for name, frame in make_frames().items():
        paths[name] = folder / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    cfg = {
        **base_config(paths),
        "dynamic_need_update": True,
        "need_update_start": 1,
        "need_update_every": 2,
        "epochs": 4,
        "run_dir": str(folder / "run"),
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    snapshots = Snapshots()
    run = train(folder / "config.yaml", callbacks=[snapshots], progress_bar=False)
    return run, snapshots, config_from_dict(cfg)


# --- leakage: validation and test inputs -----------------------------------------------


def test_validation_and_test_inputs_are_bit_identical_after_a_run_with_the_update(updated_run):
    run, snap, config = updated_run
    assert snap.update.epochs == [1, 3]  # the update did run
    for split in ("val", "test"):
        before_values, before_observed = snap.inputs_at_start[split]
        after_values, after_observed = _split_inputs(snap.data, split)
        assert torch.equal(before_values.view(torch.int32), after_values.view(torch.int32))  # bit for bit
        assert torch.equal(before_observed, after_observed)
        # ... and equal to the data prepared afresh from the files, with the run's stats and splits
        stats, splits, _ = run.read_data()
        fresh = prepare_data(config, stats=stats, block_splits=splits)
        fresh_values, fresh_observed = _split_inputs(fresh, split)
        assert torch.equal(fresh_values.view(torch.int32), after_values.view(torch.int32))
        assert torch.equal(fresh_observed, after_observed)

    guard = run.read_metrics()["leakage_guard"]
    assert guard["held"] is True
    assert guard["start"] == guard["end"]
    assert set(guard["start"]) == {"val", "test"}
    assert guard["start"]["val"] == split_fingerprint(snap.data, "val")
    assert all(len(h) == 64 for h in guard["start"].values())


def test_fingerprint_changes_with_any_validation_or_test_input_and_only_with_those(dataset):
    data = prepare_data(config_from_dict(dataset["config"]))
    base = {s: split_fingerprint(data, s) for s in ("val", "test")}

    def edited(row: int, channel: int, what: str):
        values, observed = data.values.copy(), data.observed.copy()
        if what == "value":
            values[row, channel] = np.nextafter(values[row, channel], np.float32(np.inf))  # one ulp
        else:
            observed[row, channel] = ~observed[row, channel]
        other = dataclasses.replace(data, values=values, observed=observed)
        return {s: split_fingerprint(other, s) for s in ("val", "test")}

    for split in ("val", "test"):
        row = int(data.windows[split].starts[-1]) + 3
        for what in ("value", "mask"):
            changed = edited(row, 1, what)
            assert changed[split] != base[split]
            other = "test" if split == "val" else "val"
            assert changed[other] == base[other]
    train_row = int(data.windows["train"].starts[0])
    assert edited(train_row, 0, "value") == base


class WriteThroughTheStorage(pl.Callback):
    """What the read-only arrays cannot stop: a tensor made on their memory (torch ignores NumPy's write flag)."""

    def on_train_epoch_end(self, trainer, pl_module):
        data = _run_data(trainer)
        row = int(data.windows["test"].starts[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
            torch.from_numpy(data.values)[row, 0] += 1.0


def test_guard_reports_a_write_it_could_not_prevent(dataset, caplog):
    with caplog.at_level(logging.ERROR, logger="tgatunet"):
        path = dataset["write"]({**dataset["config"], "epochs": 1})
        run = train(path, callbacks=[WriteThroughTheStorage()], progress_bar=False)
    guard = run.read_metrics()["leakage_guard"]
    assert guard["held"] is False
    assert guard["start"]["test"] != guard["end"]["test"] and guard["start"]["val"] == guard["end"]["val"]
    assert "test inputs changed" in caplog.text


def test_normalisation_early_stopping_and_model_selection_never_see_test_data(dataset):
    """Changing every test value changes nothing a run learns or selects (update on)."""
    cfg = _update_config(dataset, epochs=2, patience=1, need_update_start=0, need_update_every=1)
    first = train(dataset["write"]({**cfg, "run_dir": str(dataset["dir"] / "a")}, "a.yaml"), progress_bar=False)
    _, splits, _ = first.read_data()
    for name, path in dataset["paths"].items():
        frame = pd.read_csv(path)
        test = frame["subject"].map(lambda b: splits[f"{name}/{b}"] == "test")
        for column in ("a", "b", "c"):
            if column in frame:
                frame.loc[test, column] = frame.loc[test, column] * 100.0 + 7.0
        frame.to_csv(path, index=False)
    second = train(dataset["write"]({**cfg, "run_dir": str(dataset["dir"] / "b")}, "b.yaml"), progress_bar=False)

    a, b = first.read_data(), second.read_data()
    assert a[1] == b[1] and a[2]["stats"] == b[2]["stats"]
    ma, mb = first.read_metrics(), second.read_metrics()
    assert ma["train"]["best_val_mae"] == mb["train"]["best_val_mae"]
    assert ma["train"]["epochs_completed"] == mb["train"]["epochs_completed"]
    assert ma["leakage_guard"]["start"]["val"] == mb["leakage_guard"]["start"]["val"]
    assert ma["leakage_guard"]["start"]["test"] != mb["leakage_guard"]["start"]["test"]  # the test data did change
    for ckpt in ("best.ckpt", "last.ckpt"):
        wa = torch.load(first.checkpoints / ckpt, weights_only=False)["state_dict"]
        wb = torch.load(second.checkpoints / ckpt, weights_only=False)["state_dict"]
        for key in wa:
            assert torch.equal(wa[key], wb[key]), (ckpt, key)


# --- what the update writes, and when ----------------------------------------------------


def test_buffer_holds_only_training_rows_of_needing_sources(dataset):
    data = prepare_data(config_from_dict(dataset["config"]))
    inputs = TrainingInputs(data)
    train = data.windows["train"]
    partial_rows = set(data.rows(train.starts[train.sources == 1]).ravel().tolist())
    assert set(inputs.rows.tolist()) == partial_rows
    held_out = {int(r) for s in ("val", "test") for r in data.rows(data.windows[s].starts).ravel()}
    assert not held_out & set(inputs.rows.tolist())
    assert inputs.fillable[:, C].all() and not inputs.fillable[:, :C].any()
    # every training window of "partial" reads its own rows from the buffer
    dataset_ = TrainingWindowDataset(data, inputs)
    for i in np.flatnonzero(train.sources == 1):
        item = dataset_[i]
        rows = data.rows(train.starts[i : i + 1])[0]
        assert torch.equal(item["values"], torch.from_numpy(data.values[rows])) and not item["filled"].any()
    assert (inputs.window_start[train.sources == 0] == -1).all()


def test_fill_writes_only_fillable_positions(dataset):
    data = prepare_data(config_from_dict(dataset["config"]))
    inputs = TrainingInputs(data)
    before = inputs.values.clone()
    covered = torch.ones(len(inputs), dtype=torch.bool)
    covered[:5] = False
    written = inputs.fill(torch.full_like(before, 42.0), covered)
    changed = inputs.values != before
    assert written == int(inputs.fillable[5:].sum()) == int(changed.sum())
    assert torch.equal(changed, inputs.fillable & covered[:, None])
    assert torch.equal(inputs.filled, changed)


def test_update_runs_only_at_configured_epochs_and_touches_only_need_channels(updated_run):
    _, snap, _ = updated_run
    inputs = snap.update.inputs
    assert snap.update.epochs == [1, 3]
    initial = torch.from_numpy(snap.data.values[inputs.rows])
    previous = (initial, torch.zeros_like(inputs.filled))
    for epoch in range(4):
        values, filled = snap.buffer[epoch]
        changed = values != previous[0]
        if epoch in (1, 3):
            assert changed.any()
        else:
            assert not changed.any() and torch.equal(filled, previous[1])
        assert not (changed & ~inputs.fillable).any()  # only missing values of need channels
        previous = (values, filled)
    values, filled = snap.buffer[3]
    assert torch.equal(filled, inputs.fillable)  # every missing "c" value of the training windows
    assert torch.equal(values[~filled], initial[~filled])  # observed values bit-identical


@pytest.mark.parametrize("start, every, due", [(1, 2, [1, 3, 5]), (0, 1, [0, 1, 2, 3, 4, 5]), (4, 3, [4])])
def test_due_epochs(start, every, due):
    update = NeedUpdate(inputs=None, every=every, start=start, batch_size=8)
    assert [e for e in range(6) if update.due(e)] == due


class Interrupt(Exception):
    pass


class InterruptAt(pl.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise Interrupt


def test_resume_restores_the_completed_values(dataset):
    path = dataset["write"](_update_config(dataset, epochs=3, patience=10))
    with pytest.raises(Interrupt):
        train(path, callbacks=[InterruptAt(2)], progress_bar=False)
    saved = torch.load(RunDir(dataset["dir"] / "run").last_checkpoint, weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("NeedUpdate")]
    assert state["epochs"] == [1] and state["filled"].any()

    snapshots = Snapshots()
    run = train(path, resume=True, callbacks=[snapshots], progress_bar=False)
    values, filled = snapshots.buffer[2]  # epoch 2: no update, the checkpoint's values in place
    assert snapshots.update.epochs == [1]
    assert torch.equal(filled, state["filled"]) and torch.equal(values[filled], state["values"])
    assert run.read_metrics()["train"]["need_update"]["epochs"] == [1]


def test_persistent_loader_workers_see_the_updates(dataset):
    data = prepare_data(config_from_dict(dataset["config"]))
    inputs = TrainingInputs(data)
    loader = torch.utils.data.DataLoader(
        TrainingWindowDataset(data, inputs),
        batch_size=64,
        num_workers=1,
        persistent_workers=True,
        collate_fn=collate_windows,
    )
    assert not any(batch["filled"].any() for batch in loader)
    inputs.fill(torch.full((len(inputs), 3), 5.0), torch.ones(len(inputs), dtype=torch.bool))
    batches = list(loader)
    assert sum(int(b["filled"].sum()) for b in batches) > 0
    assert all((b["values"][b["filled"]] == 5.0).all() for b in batches)


# --- completed values are inputs, never targets ---------------------------------------------


def test_sample_inputs_never_targets_filled_values():
    torch.manual_seed(0)
    observed = torch.ones(6, 10, 3, dtype=torch.bool)
    observed[:3, :, 2] = False  # the need channel of the first three windows
    filled = ~observed
    patterns = torch.tensor([[False, False, True]])
    seen_filled = False
    for _ in range(50):
        visible, targets = sample_inputs(observed, filled, patterns, 0.5, 0.3, 0.2)
        assert not (targets & ~observed).any()
        assert not (visible & targets).any()
        assert not (visible & ~(observed | filled)).any()
        seen_filled |= bool((visible & filled).any())
    assert seen_filled  # completed values do reach the model as inputs


def test_sample_inputs_without_filled_is_the_plain_objective():
    observed = torch.rand(4, 8, 3) > 0.2
    patterns = torch.tensor([[False, True, True]])
    args = (patterns, 0.5, 0.3, 0.2)
    a = sample_inputs(observed, None, *args, torch.Generator().manual_seed(1))
    b = sample_inputs(observed, torch.zeros_like(observed), *args, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_training_loss_has_no_gradient_at_completed_values(dataset, monkeypatch):
    config = config_from_dict(_update_config(dataset))
    data = prepare_data(config)
    inputs = TrainingInputs(data)
    inputs.fill(torch.randn(len(inputs), 3) * 1e3, torch.ones(len(inputs), dtype=torch.bool))
    train_set = TrainingWindowDataset(data, inputs)
    batch = train_set.__getitems__(list(range(len(train_set))))
    assert batch["filled"].any()

    module = build_module(config, data)
    recon = torch.zeros_like(batch["values"], requires_grad=True)
    logits = torch.zeros(len(recon), len(data.class_names))
    log_spread = torch.zeros_like(batch["values"])
    monkeypatch.setattr(module, "compiled", lambda values, visible, graph: (recon, logits, log_spread))
    for seed in range(5):
        recon.grad = None
        visible, targets = module.inputs(batch, torch.Generator().manual_seed(seed))
        module.losses(batch, visible, targets)["loss"].backward()
        assert (recon.grad[batch["filled"]] == 0).all()
        assert (recon.grad[batch["observed"]] != 0).any()


# --- config --------------------------------------------------------------------------------


def test_update_without_need_channels_is_a_config_error(dataset):
    cfg = _update_config(dataset)
    cfg["sources"] = [dict(s, need=[]) for s in cfg["sources"]]
    with pytest.raises(ConfigError, match="dynamic_need_update"):
        config_from_dict(cfg)


def test_update_starting_after_the_last_epoch_is_a_config_error(dataset):
    with pytest.raises(ConfigError, match="need_update_start"):
        config_from_dict(_update_config(dataset, epochs=3, need_update_start=3))


# --- the ablation ------------------------------------------------------------------------------


def test_evaluate_ablation_trains_the_counterpart_and_compares(dataset):
    from typer.testing import CliRunner

    from tgatunet.cli import app

    cfg = {**dataset["config"], "epochs": 1, "need_update_start": 0, "need_update_every": 1}
    run = train(dataset["write"](cfg), progress_bar=False)
    result = CliRunner().invoke(app, ["evaluate", "--run", str(run.root), "--ablation", "need-update"])
    assert result.exit_code == 0, result.output

    ablation = run.read_metrics()["need_update"]
    counterpart = RunDir(run.root / "ablation" / "need_update_on")
    assert counterpart.read_config().training.dynamic_need_update and not run.read_config().training.dynamic_need_update
    assert counterpart.read_metrics()["train"]["need_update"]["epochs"] == [0]
    assert counterpart.read_metrics()["leakage_guard"]["held"] is True
    assert ablation["without"]["run"] == str(run.root) and ablation["with"]["run"] == str(counterpart.root)
    for name in ("with", "without"):
        assert isinstance(ablation[name]["completion_mae"], float) and 0.0 <= ablation[name]["accuracy"] <= 1.0
    metrics = {name: RunDir(Path(ablation[name]["run"])).read_metrics() for name in ("with", "without")}
    for name in ("with", "without"):
        assert ablation[name]["completion_mae"] == metrics[name]["completion"]["model"]["mae"]
        assert ablation[name]["accuracy"] == metrics[name]["classification"]["accuracy"]
    lower = "with" if ablation["with"]["completion_mae"] < ablation["without"]["completion_mae"] else "without"
    assert ablation["better"]["completion_mae"] in (lower, "tie")
    assert "Dynamic need update" in result.output


def test_evaluate_rejects_an_unknown_ablation(dataset):
    from typer.testing import CliRunner

    from tgatunet.cli import app

    result = CliRunner().invoke(app, ["evaluate", "--run", str(dataset["dir"]), "--ablation", "dropout"])
    assert result.exit_code != 0 and "need-update" in result.output



def test_under_ddp_the_shares_of_the_processes_come_back_in_window_order():
    # Process r completes windows r, r + world, ...; the gathered completions must line up with the windows.
    windows, world, T, C = 7, 3, 2, 1
    every = np.arange(windows, dtype=np.float32)[:, None, None] * np.ones((1, T, C), np.float32)  # window i holds i
    per = -(-windows // world)
    shares = [every[r::world] for r in range(world)]
    padded = [torch.cat([torch.from_numpy(s), torch.zeros(per - len(s), T, C)]) for s in shares]

    class Strategy:
        def all_gather(self, tensor):
            assert torch.equal(tensor, padded[1])  # this process's own padded share goes in
            return torch.stack(padded)

    trainer = SimpleNamespace(world_size=world, strategy=Strategy())
    got = every_window(trainer, torch.device("cpu"), shares[1], windows)
    np.testing.assert_array_equal(got, every)
