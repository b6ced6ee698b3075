"""The Lightning module: T-GAT-UNet trained on masked-modality modelling plus classification."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from tgatunet.config import Config, config_from_dict
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet
from tgatunet.train.objective import classification_loss, masked_loss, sample_inputs


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
        values = batch["values"]
        visible, targets = sample_inputs(
            batch["observed"],
            batch.get("filled"),
            self.patterns,
            cfg.mask_pattern_prob,
            cfg.mask_channel_prob,
            cfg.mask_step_prob,
            generator,
        )
        recon, logits = self(values, visible)
        loss_recon = masked_loss(recon.float(), values, targets, cfg.recon_loss)
        loss_cls = classification_loss(logits.float(), batch["label"])
        loss = cfg.recon_weight * loss_recon + cfg.cls_weight * loss_cls
        size = len(values)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size, on_epoch=True, on_step=False)
        self.log(f"{stage}/recon", loss_recon, batch_size=size, on_epoch=True, on_step=False)
        self.log(f"{stage}/cls_loss", loss_cls, batch_size=size, on_epoch=True, on_step=False)
        labelled = batch["label"] >= 0
        if labelled.any():
            acc = (logits.argmax(-1)[labelled] == batch["label"][labelled]).float().mean()
            self.log(f"{stage}/acc", acc, prog_bar=stage == "val", batch_size=int(labelled.sum()), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", None)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # The same hidden values every epoch, so validation losses are comparable.
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed * 100_003 + batch_idx)
        self._step(batch, "val", generator)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.config.epochs, eta_min=self.config.lr * 0.05)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
