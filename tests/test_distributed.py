"""Two-process DDP training on CPU (gloo), end to end.

Lightning's ``ddp`` strategy starts the other rank by running the *script* again
(``sys.argv``), so the run happens in a subprocess running a small script file,
not inside pytest's process. The script records, per rank, which windows each
training and validation batch held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

import tgatunet
from tgatunet.infer.predict import complete_run
from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.evaluate.trained_run import load_run
from tgatunet.config import config_from_dict
from tgatunet.errors import ConfigError
from tgatunet.train.loaders import make_loader
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.run import train
from tgatunet.infer.rundir import RunDir

SCRIPT = '''
import json
import sys
from pathlib import Path

import lightning.pytorch as pl

from tgatunet.train.micro_batch import MicroBatches
from tgatunet.train.need_update import NeedUpdate
from tgatunet.train.run import train


class RecordWindows(pl.Callback):
    """Writes RANK.json: window indices of every training (per epoch) and validation batch, last val/loss."""

    def __init__(self, out):
        self.out = Path(out)
        self.train, self.val = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.setdefault(trainer.current_epoch, []).extend(batch["index"].tolist())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.setdefault(trainer.current_epoch, []).extend(batch["index"].tolist())

    def on_validation_epoch_end(self, trainer, pl_module):
        self.val_loss = float(trainer.callback_metrics["val/loss"])

    def on_fit_end(self, trainer, pl_module):
        record = {
            "world_size": trainer.world_size,
            "train": self.train,
            "val": self.val,
            "val_loss": self.val_loss,
            "parameters": [p.detach().double().sum().item() for p in pl_module.parameters()],
            "steps_by_micro_batch_size": dict(pl_module.micro_batches.steps_by_size),
        }
        update = next((c for c in trainer.callbacks if isinstance(c, NeedUpdate)), None)
        if update is not None:
            filled = update.inputs.values[update.inputs.filled]
            record["need_update"] = {**update.summary(), "values": filled.double().tolist()}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class SplitSteps(pl.Callback):
    """Runs every step in micro-batches of a fixed size."""

    def __init__(self, size):
        self.size = size

    def on_fit_start(self, trainer, pl_module):
        pl_module.micro_batches = MicroBatches(self.size)


extra = [SplitSteps(int(sys.argv[3]))] if len(sys.argv) > 3 else []
train(sys.argv[1], callbacks=[RecordWindows(sys.argv[2]), *extra], progress_bar=False)
'''


def _ddp_run(dataset, tmp_path: Path, cfg: dict, micro_batch: int | None = None) -> tuple[RunDir, list[dict]]:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    record = tmp_path / "record"
    record.mkdir()
    config = dataset["write"](cfg, "ddp.yaml")
    src = str(Path(tgatunet.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(config), str(record), *([str(micro_batch)] if micro_batch else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    return RunDir(Path(cfg["run_dir"])), ranks


def _validate_in_one_process(run: RunDir) -> float:
    """Validation loss of the run's last checkpoint, computed by one process over all validation windows."""
    trained = load_run(run)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = make_loader(trained.data, "val", trained.config, shuffle=False)
    module = TGATUNetModule.load_from_checkpoint(run.last_checkpoint, map_location="cpu")
    return trainer.validate(module, loader, verbose=False)[0]["val/loss"]


def test_two_process_ddp_on_cpu(dataset, tmp_path):
    # Nothing hidden: a window's validation loss then depends on the model and the window only (not
    # on batch composition), so the two-process value can be checked exactly against one process.
    no_masking = {"mask_pattern_prob": 0.0, "mask_channel_prob": 0.0, "mask_step_prob": 0.0, "mask_gap_prob": 0.0}
    base = {**dataset["config"], **no_masking, "accelerator": "cpu", "epochs": 3, "patience": 10, "fresh_offsets": False}
    run, ranks = _ddp_run(
        dataset, tmp_path, {**base, "devices": 2, "strategy": "ddp", "batch_size": 4, "run_dir": str(tmp_path / "ddp")}
    )
    assert [r["world_size"] for r in ranks] == [2, 2]

    # Training: each epoch the ranks split the shuffled windows; the sampler pads the
    # shorter shard with repeated windows only when the count is odd.
    _, _, info = run.read_data()
    n_train, n_val = info["windows"]["train"], info["windows"]["val"]
    for epoch in ("0", "1", "2"):
        a, b = (r["train"][epoch] for r in ranks)
        assert len(a) == len(b) == -(-n_train // 2)
        assert len(set(a)) == len(a) and len(set(b)) == len(b)
        assert len(set(a) & set(b)) == n_train % 2
        assert set(a) | set(b) == set(range(n_train))
    assert ranks[0]["train"]["0"] != ranks[0]["train"]["1"]  # reshuffled every epoch
    # Validation: split without any repeat, and the synced loss is the mean over all windows, each once.
    a, b = (r["val"]["0"] for r in ranks)
    assert not set(a) & set(b) and sorted(a + b) == list(range(n_val))
    assert ranks[0]["val_loss"] == ranks[1]["val_loss"]

    # One process with the same effective batch (2 x 4) ends close to the two-process run.
    ddp_metrics = run.read_metrics()["train"]
    assert ddp_metrics["epochs_completed"] == 3 and ddp_metrics["windows_per_second"] > 0
    single = train(
        dataset["write"]({**base, "devices": 1, "batch_size": 8, "run_dir": str(tmp_path / "single")}, "single.yaml"),
        progress_bar=False,
    )
    single_metrics = single.read_metrics()["train"]
    assert ddp_metrics["final_val_loss"] == pytest.approx(single_metrics["final_val_loss"], rel=0.05)
    assert ranks[0]["val_loss"] == pytest.approx(_validate_in_one_process(run), rel=1e-5)

    # Rank 0 wrote the run directory; one process evaluates and completes from its checkpoint.
    evaluated = evaluate_run(run.root)
    assert 0.0 <= evaluated["classification"]["accuracy"] <= 1.0
    assert evaluated["completion"]["model"]["mae"] > 0
    written = {w.name: w for w in complete_run(run.root, output=tmp_path / "completed")}
    assert written["partial"].filled["c"] > 0 and written["partial"].outputs["completed"].is_file()


def test_ddp_with_micro_batches_keeps_the_processes_in_step(dataset, tmp_path):
    # Micro-batches accumulate without syncing; the last one's all-reduce must carry the whole
    # gradient, or the processes' models drift apart.
    cfg = {**dataset["config"], "accelerator": "cpu", "epochs": 2, "devices": 2, "strategy": "ddp", "batch_size": 6}
    _, ranks = _ddp_run(dataset, tmp_path, {**cfg, "run_dir": str(tmp_path / "micro")}, micro_batch=2)
    assert all("2" in r["steps_by_micro_batch_size"] for r in ranks)  # steps really ran in micro-batches
    assert ranks[0]["parameters"] == pytest.approx(ranks[1]["parameters"], rel=1e-6, abs=1e-7)


def test_ddp_need_update_splits_the_windows_and_every_process_gets_all_values(dataset, tmp_path):
    cfg = {**dataset["config"], "accelerator": "cpu", "epochs": 3, "devices": 2, "strategy": "ddp", "batch_size": 4}
    cfg.update(dynamic_need_update=True, need_update_every=1, need_update_start=1, run_dir=str(tmp_path / "need"))
    _, ranks = _ddp_run(dataset, tmp_path, cfg)
    first, second = (r["need_update"] for r in ranks)
    assert first["epochs"] == second["epochs"] == [1, 2]
    # each window completed by one process: the shares add up to the windows of the needing sources
    shares = [a + b for a, b in zip(first["windows_completed_by_this_process"], second["windows_completed_by_this_process"])]
    assert shares == [first["windows"]] * 2 and 0 < first["windows_completed_by_this_process"][0] < first["windows"]
    # and both processes hold every completed value, the same ones
    assert first["values_completed"] == second["values_completed"] > 0
    assert first["values"] == second["values"]
    raw = dataset["config"]
    config = config_from_dict({**raw, "devices": "auto", "num_nodes": 2, "strategy": "ddp"})
    assert (config.performance.devices, config.performance.num_nodes, config.performance.strategy) == ("auto", 2, "ddp")
    with pytest.raises(ConfigError, match="strategy 'fsdp' .* accelerator: gpu"):
        config_from_dict({**raw, "strategy": "fsdp", "accelerator": "cpu"})
    with pytest.raises(ConfigError, match="devices must be a positive number"):
        config_from_dict({**raw, "devices": 0})
    with pytest.raises(ConfigError, match="strategy"):
        config_from_dict({**raw, "strategy": "deepspeed"})


def test_devices_lightning_cannot_provide_are_a_config_error(dataset):
    path = dataset["write"]({**dataset["config"], "accelerator": "gpu", "devices": 64})
    with pytest.raises(ConfigError, match="accelerator 'gpu', devices 64"):
        train(path, progress_bar=False)
