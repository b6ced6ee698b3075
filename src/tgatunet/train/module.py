"""The Lightning module: T-GAT-UNet trained on masked-modality modelling plus classification."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy

from tgatunet.config import Config, config_from_dict
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet
from tgatunet.train.objective import classification_loss, masked_loss, sample_hidden


class TGATUNetModule(pl.LightningModule):
    """Wraps :class:`TGATUNet` with its objective and optimiser.

    Args:
        config: the run's config as plain data (kept in checkpoints).
        channels: channel names, in model order.
        class_names: class names, in logit order.
        need_patterns: ``[P][C]`` bool channel sets that some source needs; training hides them.
    """

    def __init__(
        self,
        config: dict[str, Any],
        channels: list[str],
        class_names: list[str],
        need_patterns: list[list[bool]],
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config: Config = config_from_dict(config, origin="checkpoint")
        self.model = TGATUNet(ModelSpec.from_config(self.config, len(channels), len(class_names)))
        self.register_buffer(
            "patterns", torch.tensor(need_patterns, dtype=torch.bool).reshape(-1, len(channels)), persistent=False
        )

    def forward(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(values, visible)

    def _step(self, batch: dict[str, torch.Tensor], stage: str, generator: torch.Generator | None) -> torch.Tensor:
        cfg = self.config
        values, observed = batch["values"], batch["observed"]
        hidden = sample_hidden(
            observed, self.patterns, cfg.mask_pattern_prob, cfg.mask_channel_prob, cfg.mask_step_prob, generator
        )
        recon, logits = self(values, observed & ~hidden)
        loss_recon = masked_loss(recon.float(), values, hidden, cfg.recon_loss)
        loss_cls = classification_loss(logits.float(), batch["label"])
        loss = cfg.recon_weight * loss_recon + cfg.cls_weight * loss_cls
        size = len(values)
        # Epoch means weighted by batch size; under DDP the weighted sums and the sizes are each
        # summed over ranks (sync_dist), so the mean is over all windows, each counted once.
        epoch = {"on_epoch": True, "on_step": False, "sync_dist": True}
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size, **epoch)
        self.log(f"{stage}/recon", loss_recon, batch_size=size, **epoch)
        self.log(f"{stage}/cls_loss", loss_cls, batch_size=size, **epoch)
        # Logged for every batch, weighted by its labelled windows (possibly none): a rank that
        # skipped the key would leave the others waiting in the sync.
        labelled = batch["label"] >= 0
        count = int(labelled.sum())
        acc = (logits.argmax(-1)[labelled] == batch["label"][labelled]).float().sum() / max(count, 1)
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val", batch_size=count, **epoch)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", None)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # The same hidden values every epoch, so validation losses are comparable.
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed * 100_003 + batch_idx)
        self._step(batch, "val", generator)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Under FSDP each rank holds a shard of the gradients: the global norm must come from the
        # sharded root module (torch's clip_grad_norm_ would see one shard), and Lightning refuses to
        # clip by norm there, so the strategy's module clips.
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.config.epochs, eta_min=self.config.lr * 0.05)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
