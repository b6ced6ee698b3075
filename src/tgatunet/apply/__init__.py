"""Using a trained run: predict, complete, evaluate."""
