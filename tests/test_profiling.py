"""Peak-memory and timing probes used by the benchmarks and the memory optimizer."""

import torch

from tgatunet.profiling import median_seconds, peak_memory_bytes


def test_peak_counts_temporaries_that_are_already_freed():
    def work():
        big = torch.ones(1024, 1024)  # 4 MiB, freed before the function returns
        return float(big.sum())

    peak = peak_memory_bytes(work)
    assert 4 * 2**20 <= peak < 6 * 2**20


def test_peak_grows_with_the_activations_kept_for_backward():
    layer = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(4)])

    def step(batch):
        def run():
            layer(torch.randn(batch, 256)).sum().backward()

        return run

    small, large = peak_memory_bytes(step(64)), peak_memory_bytes(step(512))
    activations_large = 4 * 512 * 256 * 4  # four layer outputs of [512, 256] float32
    assert large - small >= 0.8 * (activations_large - 4 * 64 * 256 * 4)


def test_median_seconds_is_positive_and_calls_the_function():
    calls = []
    assert median_seconds(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5
