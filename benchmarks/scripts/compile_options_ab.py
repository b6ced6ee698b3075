#!/usr/bin/env python
"""In-process A/B of the inductor options for compiled CPU prediction (``model.compile.CPU_INFERENCE_OPTIONS``).

The reference setting of the study's ``compute`` section (medium preset, window 128, 9
synthetic channels, float32, one thread): one window through the eager model
and through the model compiled with inductor's defaults, with ``cpp_wrapper``,
with ``realize_reads_threshold: 1`` and with both. Every variant is compiled in
this one process, then the variants are timed in alternation (``--rounds``
rounds of ``--calls`` calls each, each call timed on its own), so a drift of
the machine's speed hits all of them alike. Prints each variant's largest
difference from the eager outputs and the median over rounds of its per-round
median latency.

Usage::

    python benchmarks/scripts/compile_options_ab.py [--rounds 9] [--calls 300]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

import torch  # noqa: E402

from benchmarks.compute import Setting, prepare_setting  # noqa: E402

VARIANTS = {
    "defaults": {},
    "cpp_wrapper": {"cpp_wrapper": True},
    "realize_reads_threshold=1": {"realize_reads_threshold": 1},
    "both": {"cpp_wrapper": True, "realize_reads_threshold": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        _, _, module, loader = prepare_setting(Setting(), Path(tmp), device)
        batch = next(iter(loader))
    model = module.model.eval()
    values, observed = batch["values"][:1], batch["observed"][:1]
    runs = {"eager": model}
    runs.update({name: torch.compile(copy.deepcopy(model), options=options) for name, options in VARIANTS.items()})
    with torch.inference_mode():
        want = model(values, observed)
        for name, run in runs.items():
            start = time.perf_counter()
            got = run(values, observed)
            diff = max((g - w).abs().max().item() for g, w in zip(got, want))
            print(f"{name:28s} first call {time.perf_counter() - start:6.1f} s, largest difference from eager {diff:.1e}")

        def latency_ms(run) -> float:
            times = []
            for _ in range(args.calls):
                start = time.perf_counter()
                run(values, observed)
                times.append(time.perf_counter() - start)
            return 1e3 * statistics.median(times)

        per_round = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                per_round[name].append(latency_ms(run))
    for name, medians in per_round.items():
        print(f"{name:28s} {statistics.median(medians):.3f} ms (rounds {min(medians):.3f}-{max(medians):.3f})")


if __name__ == "__main__":
    main()
