"""One training step of a :class:`~tgatunet.train.module.TGATUNetModule`, outside Lightning's loop.

What the benchmarks time and profile (``bench compute``, ``bench scaling``,
``bench scale``): the computation of ``TGATUNetModule.training_step`` for one
batch, in phases a profiler can tell apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from tgatunet.train.module import TGATUNetModule


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def endless(loader: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


class TrainStep:
    """One training step of ``module`` in the phases the breakdown times; calling it runs them all.

    Phases: :meth:`inputs` (the objective's random hiding), :meth:`graph` (the batch's
    full-resolution neighbour tables, None for the temporal graph), :meth:`forward` (the
    module's ``losses``), :meth:`backward`, :meth:`optimize` (clipping, optimiser step, zeroed
    gradients).
    """

    def __init__(self, module: TGATUNetModule, batch: dict[str, torch.Tensor] | None = None) -> None:
        self.module = module.train()
        self.batch = batch
        self.optimizer = module.configure_optimizers()["optimizer"]
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None  # visible, targets [B, T, C]
        self._loss: torch.Tensor | None = None

    def set_batch(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def inputs(self) -> None:
        self._inputs = self.module.inputs(self.batch)

    def graph(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.module.neighbors(self.batch["values"], self._inputs[0], repeated=False)

    def forward(self) -> None:
        self._loss = self.module.losses(self.batch, *self._inputs)["loss"]

    def backward(self) -> None:
        self._loss.backward()
        self._loss = None

    def optimize(self) -> None:
        if self.module.config.training.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.module.config.training.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self) -> None:
        self.inputs()
        self.forward()
        self.backward()
        self.optimize()
