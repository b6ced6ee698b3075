"""The benchmark suite: each section measures one optimisation and writes its figures to results.json."""
