"""T-GAT-UNet: the batched graph attention layer and the U-Net built from it."""
