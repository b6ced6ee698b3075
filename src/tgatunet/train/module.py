"""The Lightning module: T-GAT-UNet trained on masked-modality modelling plus classification."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.strategies import FSDPStrategy

from tgatunet.config import Config, config_from_dict
from tgatunet.data.resident import DeviceWindows
from tgatunet.infer.trained import predict_in_batches
from tgatunet.graph.knn import KnnGraph
from tgatunet.model.compile import CompiledOrEager
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet
from tgatunet.train.learning_rate import LearningRate
from tgatunet.train.micro_batch import MicroBatches
from tgatunet.train.objective import classification_loss, masked_loss, run_inputs, spread_loss, validation_inputs


class TGATUNetModule(pl.LightningModule):
    """Wraps the T-GAT-UNet with its objective and optimiser.

    Training uses Lightning's manual optimisation, because a step may run as several micro-batches
    (:class:`~tgatunet.train.micro_batch.MicroBatches`, sized by the memory optimizer), which automatic optimisation
    cannot express: it zeroes the gradients between ``training_step`` and the backward pass. What Lightning does
    itself in automatic mode, gradient clipping and the per-epoch learning-rate schedule, is therefore done here.

    Args:
        config: the run's config as flat keys (kept in checkpoints).
        channels: channel names, in model order.
        class_names: class names, in logit order.
        need_patterns: ``[P][C]`` bool channel sets that some source needs; training hides them.
        device_kind: the training device's kind (``cuda``: compile with CUDA graphs).
        micro_batches: the step's micro-batches (the plan's, :mod:`tgatunet.train.plan`; default whole batches).
        resident: the training windows kept on the device; batches then carry indices only.

    With ``graph_type: knn`` each batch's graph is built from what the model sees, ``observed & ~hidden``, so no
    hidden value shapes it. Applying a trained run does not go through this module (:mod:`tgatunet.infer.trained`).
    """

    def __init__(self, config: dict[str, Any], channels: list[str], class_names: list[str], need_patterns: list[list[bool]], device_kind: str = "cpu",
                 micro_batches: MicroBatches | None = None, resident: DeviceWindows | None = None) -> None:
        super().__init__()
        self.save_hyperparameters("config", "channels", "class_names", "need_patterns")
        self.config: Config = config_from_dict(config, origin="checkpoint")
        self.model = TGATUNet(ModelSpec.from_config(self.config, len(channels), len(class_names)))
        self.compiled = None
        if self.config.performance.compile:
            self.compiled = CompiledOrEager(self.model, mode="reduce-overhead" if device_kind == "cuda" else None)
        self.register_buffer("patterns", torch.tensor(need_patterns, dtype=torch.bool).reshape(-1, len(channels)), persistent=False)
        self.automatic_optimization = False
        self.micro_batches = micro_batches or MicroBatches()
        self.knn = KnnGraph.from_config(self.config) if self.config.model.graph_type == "knn" else None
        self.learning_rate = LearningRate(self.config.training.lr)
        self.resident = resident

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        if "values" not in batch and self.resident is not None:  # an index batch: gather the windows here
            batch["values"], batch["observed"] = self.resident.gather(batch["index"])
        return batch

    def neighbors(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The batch's full-resolution graph (None: temporal)."""
        return None if self.knn is None else self.knn.build(values, visible)

    def forward(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``recon [B, T, C]``, ``logits [B, classes]`` and ``log_spread [B, T, C]`` of ``values, visible [B, T, C]``."""
        return (self.compiled or self.model)(values, visible, self.neighbors(values, visible))

    def predict_windows(self, values: torch.Tensor, visible: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``recon [W, T, C]``, ``logits [W, classes]``, ``spread [W, T, C]`` (numpy) of many windows, as a trained
        run predicts them."""
        return predict_in_batches(self, values, visible, batch_size, self.device, self.model.spec.num_classes)

    def inputs(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``visible [B, T, C]`` and ``targets [B, T, C]`` bool: what this step shows and reconstructs.

        Values completed by the dynamic need update (``batch["filled"]``) may be shown, never targets.
        """
        return run_inputs(batch["observed"], batch.get("filled"), self.patterns, self.config.training, generator)

    def losses(self, batch: dict[str, torch.Tensor], visible: torch.Tensor, targets: torch.Tensor,
               rows: slice = slice(None)) -> dict[str, torch.Tensor]:
        """The share of windows ``rows`` in the batch's losses, for the inputs of :meth:`inputs`: scalars ``loss``,
        ``recon``, ``cls_loss``, ``spread`` (:func:`~tgatunet.train.objective.spread_loss`), ``mae`` (of the
        reconstruction on the targets) and ``correct`` (labelled windows right).

        Sums over ``rows`` are divided by the whole batch's counts (target values, labelled
        windows), so the shares of disjoint rows add up to the batch's losses, gradients included.
        """
        t = self.config.training
        values, labels = batch["values"][rows], batch["label"][rows]
        recon, logits, log_spread = self(values, visible[rows])
        loss_recon = masked_loss(recon.float(), values, targets[rows], t.recon_loss, denominator=targets.sum())
        loss_cls = classification_loss(logits.float(), labels, denominator=(batch["label"] >= 0).sum())
        loss_spread = spread_loss(log_spread.float(), recon.float(), values, targets[rows], denominator=targets.sum())
        return {"loss": t.recon_weight * loss_recon + t.cls_weight * loss_cls + loss_spread, "recon": loss_recon,
                "cls_loss": loss_cls, "spread": loss_spread,
                "mae": masked_loss(recon.detach().float(), values, targets[rows], "l1", denominator=targets.sum()),
                "correct": ((logits.argmax(-1) == labels) & (labels >= 0)).sum()}


    def _log_losses(self, stage: str, totals: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], hidden: int | None = None) -> None:
        size = len(batch["values"])
        # Epoch means weighted by batch size; under DDP the weighted sums and the sizes are each
        # summed over ranks (sync_dist), so the mean is over all windows, each counted once.
        epoch = {"on_epoch": True, "on_step": False, "sync_dist": True}
        self.log(f"{stage}/loss", totals["loss"], prog_bar=True, batch_size=size, **epoch)
        self.log(f"{stage}/recon", totals["recon"], batch_size=size, **epoch)
        self.log(f"{stage}/cls_loss", totals["cls_loss"], batch_size=size, **epoch)
        self.log(f"{stage}/spread", totals["spread"], batch_size=size, **epoch)
        # The completion error the run is selected by: a mean over all hidden values of the epoch.
        self.log(f"{stage}/mae", totals["mae"], prog_bar=stage == "val", batch_size=max(hidden or size, 1), **epoch)
        # Logged for every batch, weighted by its labelled windows (possibly none): a rank that
        # skipped the key would leave the others waiting in the sync. Training weighs by batch size
        # instead: reading a count off the device every step would make the host wait for it.
        labelled = size if stage == "train" else int((batch["label"] >= 0).sum())
        acc = totals["correct"].float() / max(labelled, 1)
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val", batch_size=labelled, **epoch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        visible, targets = self.inputs(batch)  # drawn once for the whole batch: micro-batches share it
        totals: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            # DDP: one gradient all-reduce per step, not one per micro-batch.
            hold_sync = getattr(self.trainer.strategy, "block_backward_sync", contextlib.nullcontext)
            totals.update(self.micro_batches.accumulate(len(batch["values"]), lambda rows: self.losses(batch, visible, targets, rows),
                                                        self.manual_backward, optimizer.zero_grad, self.global_step, hold_sync))
            return totals["loss"]

        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate.at(self.global_step)
        try:
            optimizer.step(closure=closure)
        except torch._dynamo.exc.TorchDynamoException as err:
            # The backward graph compiles at the first backward pass, outside the compiled call. The
            # closure failed before the optimiser stepped, so the step is simply run again, eagerly.
            if self.compiled is None or not self.compiled.give_up(err):
                raise
            optimizer.step(closure=closure)
        self._log_losses("train", totals, batch)
        return totals["loss"]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Where Lightning clips in automatic mode: after the closure, after mixed-precision unscaling.
        clip = self.config.training.grad_clip
        if clip is None:
            return
        if isinstance(self.trainer.strategy, FSDPStrategy):
            # Each rank holds a shard of the gradients: the global norm must come from the sharded
            # root module (torch's clip_grad_norm_ would see one shard; Lightning refuses to clip there).
            # It takes the spread head in with the network: under FSDP the head's gradients can shorten its steps.
            self.trainer.strategy.model.clip_grad_norm_(clip)
        else:
            # The spread head is clipped on its own: a norm taken over all parameters would let its gradients
            # shorten the network's steps. (Gradients here are already unscaled under mixed precision.)
            torch.nn.utils.clip_grad_norm_(self.model.network_parameters(), clip)
            torch.nn.utils.clip_grad_norm_(self.model.spread.parameters(), clip)

    def on_validation_epoch_end(self) -> None:
        if "val/mae" in self.trainer.callback_metrics and not self.trainer.sanity_checking:
            self.learning_rate.observe(float(self.trainer.callback_metrics["val/mae"]))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        visible, targets = validation_inputs(batch["observed"], batch.get("filled"), self.patterns, self.config.training, batch_idx)
        self._log_losses("val", self.losses(batch, visible, targets), batch, hidden=int(targets.sum()))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The random state at the end of an epoch, so that a resumed run draws the shuffles, hidden
        # values and dropout masks the uninterrupted run would have drawn.
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],  # plain data
            "python": random.getstate(),
        }
        checkpoint["learning_rate"] = self.learning_rate.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "learning_rate" in checkpoint:
            self.learning_rate.load_state_dict(checkpoint["learning_rate"])
        rng = checkpoint.get("rng")
        if rng is None or self._trainer is None:  # loading to predict: leave the caller's random state alone
            return
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        kind, keys, *rest = rng["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(rng["python"])

    def configure_optimizers(self):
        t = self.config.training
        # torch's fused AdamW (one kernel for all parameters) is refused by Lightning's gradient clipping
        # under mixed precision, where the optimiser would have to unscale gradients itself.
        fused = self.device.type in ("cpu", "cuda") and not self.config.performance.precision.endswith("-mixed")
        # The learning rate of each step is set by self.learning_rate (see training_step).
        return torch.optim.AdamW(self.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused)
