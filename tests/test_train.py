"""Training end to end on a tiny dataset: run directory, metrics, resume, atomic checkpoints."""

import json

import lightning.pytorch as pl
import pytest
import torch

from tgatunet.errors import RunError
from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.infer.rundir import RunDir
from tgatunet.files import atomic_write
from tgatunet.train.run import train


class Interrupt(Exception):
    pass


class InterruptAtEpoch(pl.Callback):
    """Stops training the way a crash would, at the start of ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise Interrupt


class EpochRecorder(pl.Callback):
    def __init__(self) -> None:
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


def test_run_directory_holds_everything(dataset):
    run = train(dataset["write"](), progress_bar=False)
    for path in (run.config_path, run.data_path, run.best_checkpoint, run.last_checkpoint, run.metrics_path):
        assert path.is_file(), path
    assert (run.logs / "csv" / "metrics.csv").is_file()
    assert any((run.logs / "tensorboard").glob("events.out.tfevents*"))
    assert (run.plots / "loss_curves.png").is_file()
    metrics = evaluate_run(run.root)
    assert metrics["train"]["windows_per_second"] > 0
    for method in ("model", "mean_fill", "ridge"):
        for key in ("mae", "rmse", "pearson"):
            assert isinstance(metrics["completion"][method][key], float)
    assert metrics["completion"]["scenarios"][0]["hidden"] == ["c"]
    assert 0.0 <= metrics["classification"]["accuracy"] <= 1.0
    assert 0.0 <= metrics["classification"]["macro_f1"] <= 1.0
    assert (run.plots / "confusion_matrix.png").is_file()
    assert (run.plots / "completion_examples.png").is_file()
    assert json.loads(run.metrics_path.read_text()) == metrics


def test_existing_run_is_not_overwritten_silently(dataset):
    path = dataset["write"]()
    train(path, progress_bar=False)
    with pytest.raises(RunError, match="--resume"):
        train(path, progress_bar=False)
    train(path, overwrite=True, progress_bar=False)


def test_training_is_deterministic_on_cpu(dataset):
    cfg = dict(dataset["config"])
    first = train(dataset["write"]({**cfg, "run_dir": str(dataset["dir"] / "a")}, "a.yaml"), progress_bar=False)
    second = train(dataset["write"]({**cfg, "run_dir": str(dataset["dir"] / "b")}, "b.yaml"), progress_bar=False)
    a = torch.load(first.last_checkpoint, weights_only=False)["state_dict"]
    b = torch.load(second.last_checkpoint, weights_only=False)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resume_continues_an_interrupted_run(dataset):
    cfg = {**dataset["config"], "epochs": 4, "patience": 10}
    path = dataset["write"](cfg)
    with pytest.raises(Interrupt):
        train(path, callbacks=[InterruptAtEpoch(2)], progress_bar=False)
    run = RunDir(dataset["dir"] / "run")
    assert torch.load(run.last_checkpoint, weights_only=False)["epoch"] == 1  # epochs 0 and 1 finished

    recorder = EpochRecorder()
    train(path, resume=True, callbacks=[recorder], progress_bar=False)
    assert recorder.epochs == [2, 3]
    assert torch.load(run.last_checkpoint, weights_only=False)["epoch"] == 3
    assert json.loads(run.metrics_path.read_text())["train"]["epochs_completed"] == 4


def test_resume_refuses_a_changed_model_or_missing_run(dataset):
    path = dataset["write"]()
    with pytest.raises(RunError, match="nothing to resume"):
        train(path, resume=True, progress_bar=False)
    train(path, progress_bar=False)
    changed = dataset["write"]({**dataset["config"], "hidden_channels": 32})
    with pytest.raises(RunError, match="hidden_channels"):
        train(changed, resume=True, progress_bar=False)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_write(target, lambda handle: torch.save({"epoch": 1}, handle))

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_write(target, lambda handle: torch.save({"epoch": 2}, handle))
    monkeypatch.undo()
    assert torch.load(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
