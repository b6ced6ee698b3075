"""Applying a trained run: its directory, its model loaded without the training stack, files and frames streamed through it."""
