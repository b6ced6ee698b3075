"""Training: the masked-modality objective, the Lightning module, callbacks and the run driver."""
