"""Scoring a trained run on its test blocks against baselines, and experiments that train runs to compare (seeds, ablation)."""
