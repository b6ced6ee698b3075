"""T-GAT-UNet: the batched graph attention layers, the transformer layer and the U-Net built from them."""
