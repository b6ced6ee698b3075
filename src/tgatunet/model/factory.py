"""Choosing the network a spec describes: the standard T-GAT-UNet or its lightweight variant."""

from __future__ import annotations

from torch import nn

from tgatunet.model.lite_unet import LiteTGATUNet
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet


def build_model(spec: ModelSpec) -> nn.Module:
    """``LiteTGATUNet`` when ``spec.lite`` (config ``use_optimized_model``), else ``TGATUNet``.

    Both map ``(values [B, T, C], visible [B, T, C], neighbors=None)`` to
    ``(recon [B, T, C], logits [B, num_classes])``.
    """
    return LiteTGATUNet(spec) if spec.lite else TGATUNet(spec)
