"""The dynamic need update: the model completes the training windows' missing channels as it learns.

At the start of every due epoch (``need_update_start``, then every ``need_update_every`` epochs) the current model, in
eval mode and without gradients, completes the ``need`` channels of every training window of the sources that lack
them; the predictions of overlapping windows are averaged per row (as :mod:`tgatunet.infer.predict` does) and written
to the training-only :class:`~tgatunet.data.training_inputs.TrainingInputs` buffer. From then on those windows carry
the completed values as inputs (``filled``); the objective never uses them as targets
(:func:`tgatunet.train.objective.sample_inputs`).

Each completion sees only observed values (``visible = observed``), never an earlier completion, so an update does not
feed on its own guesses.

Under DDP the processes share the work: each completes every ``world_size``-th window, and the completions are
gathered, so every process writes all of them.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from tgatunet.data.training_inputs import TrainingInputs
from tgatunet.data.windows import average_overlaps
from tgatunet.errors import RunError

log = logging.getLogger(__name__)


class NeedUpdate(pl.Callback):
    """Completes the ``need`` channels of the training windows at epochs ``start, start + every, ...`` (0-based).

    ``inputs`` is the training split's input buffer, the only thing written; ``batch_size``: windows per inference batch.
    """

    def __init__(self, inputs: TrainingInputs, every: int, start: int, batch_size: int) -> None:
        self.inputs = inputs
        self.every = every
        self.start = start
        self.batch_size = batch_size
        self.epochs: list[int] = []
        self.computed: list[int] = []  # windows this process completed, per update

    def due(self, epoch: int) -> bool:
        return epoch >= self.start and (epoch - self.start) % self.every == 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self.due(epoch):
            return
        rows = self.inputs.window_rows()  # [W_b, T]
        # Under DDP each process completes every world_size-th window; all then share the results.
        share = np.arange(trainer.global_rank, len(rows), trainer.world_size)
        index = torch.from_numpy(rows[share])
        was_training = pl_module.training
        pl_module.eval()
        try:
            with trainer.precision_plugin.forward_context():
                recon, _, _ = pl_module.predict_windows(self.inputs.values[index], self.inputs.observed[index], self.batch_size)
        finally:
            pl_module.train(was_training)
        recon = every_window(trainer, pl_module.device, recon, len(rows))  # [W_b, T, C]
        mean, count = average_overlaps(rows, recon, len(self.inputs))
        written = self.inputs.fill(torch.from_numpy(mean), torch.from_numpy(count > 0))
        self.epochs.append(epoch)
        self.computed.append(len(share))
        log.info("epoch %d: need update completed %d values in %d training windows", epoch, written, len(rows))

    def summary(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs), "values_completed": int(self.inputs.filled.sum()),
                "windows": int((self.inputs.window_start >= 0).sum()), "windows_completed_by_this_process": list(self.computed)}

    def state_dict(self) -> dict[str, Any]:
        # Checkpoints carry the completed values, so a resumed run feeds the same inputs.
        return {"epochs": list(self.epochs), "filled": self.inputs.filled.clone(), "values": self.inputs.values[self.inputs.filled].clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        filled = state_dict["filled"]
        if filled.shape != self.inputs.filled.shape or (filled & ~self.inputs.fillable).any():
            raise RunError(f"the checkpoint's need-update state ({tuple(filled.shape)} rows x channels) does not fit this "
                           f"run's training windows ({tuple(self.inputs.filled.shape)}): the data or its splits changed since "
                           "the checkpoint was written. Train again without --resume.")
        self.epochs = list(state_dict["epochs"])
        self.inputs.values[filled] = state_dict["values"]
        self.inputs.filled.copy_(filled)


def every_window(trainer: pl.Trainer, device: torch.device, share: np.ndarray, windows: int) -> np.ndarray:
    """Every window's completion ``[windows, T, C]``, in window order, from each process's ``share``
    (window ``i`` is completed by process ``i % world_size``, as its ``i // world_size``-th)."""
    world = trainer.world_size
    if world == 1:
        return share
    per = -(-windows // world)
    padded = torch.zeros(per, *share.shape[1:], device=device)  # all_gather needs one shape on every process
    padded[: len(share)] = torch.from_numpy(share)
    gathered = trainer.strategy.all_gather(padded)  # [world, per, T, C]: [r, j] is window j * world + r
    return gathered.transpose(0, 1).reshape(world * per, *share.shape[1:])[:windows].cpu().numpy()
