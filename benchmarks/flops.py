"""What the machine can do, and what a piece of work asks of it: FLOPs counted, matmul peak, copy bandwidth.

**Model FLOPs** are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products,
attention, convolutions; the CPU attention kernel gets torch's own attention formula).
Element-wise and reduction work (no FLOPs to ``FlopCounterMode``) is estimated at one FLOP per
output element (per input element for reductions), only to say what share of the work the matrix
products are.

**Peak** (:func:`sustained_matmul_flops`): the median rate of square float32 matrix products
``n x n`` for each n, each size timed on its own; the peak is the fastest size's rate.

**Memory bandwidth** (:func:`copy_bandwidth`): the rate of a tensor copy that stays in a core's
cache and of one that streams from memory. An element-wise pass over an activation that has left
the cache runs at best at the second rate: where a step's element-wise share is large, this, not
the matmul peak, is the limit it meets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_backward_flop_count, sdpa_flop_count

from tgatunet.profiling import median_seconds, torch_threads

# FlopCounterMode knows the attention kernels of CUDA; the CPU one gets torch's own attention formulas.
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, out_shape=None, **kwargs: (
        sdpa_flop_count(q, k, v)
    ),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v)
    ),
}


class ElementwiseFlops(TorchDispatchMode):
    """Estimated FLOPs of the ops ``FlopCounterMode`` does not count: one per output element of a
    pointwise op, one per input element of a reduction."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._overloadpacket not in flop_registry and func._overloadpacket not in CPU_ATTENTION:
            if torch.Tag.pointwise in func.tags:
                self.flops += sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
            elif torch.Tag.reduction in func.tags:
                self.flops += sum(t.numel() for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor))
        return out


def count_flops(fn: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one ``fn()``: ``model`` (``FlopCounterMode``'s count) and ``elementwise`` (estimated)."""
    elementwise = ElementwiseFlops()
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter, elementwise:
        fn()
    return {"model": int(counter.get_total_flops()), "elementwise": int(elementwise.flops)}


def sustained_matmul_flops(
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    threads: int = 1,
    sizes: tuple[int, ...] = (64, 128, 256, 512, 1024),
    repeats: int = 5,
) -> dict[str, Any]:
    """Sustained FLOP/s of square ``n x n`` matrix products with ``threads`` torch threads.

    Returns:
        ``peak_flops_per_second`` (the fastest size's median rate), ``peak_size`` (that ``n``) and
        ``by_size`` (``n -> median FLOP/s`` of ``repeats`` products after one warm-up product).
    """
    device = torch.device(device)
    by_size = {}
    with torch_threads(threads):
        for n in sizes:
            a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
            # Products of small matrices are short: a batch of them is one repeat, above timer resolution.
            inner = max(1, 2**24 // n**3)

            def products() -> None:
                for _ in range(inner):
                    torch.mm(a, b)

            by_size[n] = 2 * n**3 * inner / median_seconds(products, repeats=repeats, warmup=1, device=device)
    best = max(by_size, key=by_size.get)
    return {"peak_flops_per_second": by_size[best], "peak_size": best, "by_size": by_size}


def copy_bandwidth(
    device: torch.device | str = "cpu",
    threads: int = 1,
    sizes_bytes: tuple[int, ...] = (2**18, 2**26),
    repeats: int = 9,
) -> dict[str, float]:
    """Sustained bytes/s of a float32 tensor copy (bytes read + bytes written) for each buffer size.

    A copy is the cheapest element-wise pass: it bounds what any pass over tensors of that size
    can reach. The default sizes are 256 KiB, which a core's cache holds (a ``[16, 128, 64]``
    fp32 activation of the medium preset is 512 KiB), and 64 MiB, which comes from memory.

    Returns:
        buffer size in bytes (as a string key) -> median bytes/s of ``repeats`` timed copies, each
        sweeping the buffer several times, so that one timing is well above the timer's resolution.
    """
    device = torch.device(device)
    rates = {}
    with torch_threads(threads):
        for size in sizes_bytes:
            src = torch.randn(size // 4, device=device)
            dst = torch.empty_like(src)
            sweeps = max(1, 2**22 // size)

            def copies() -> None:
                for _ in range(sweeps):
                    dst.copy_(src)

            rates[str(size)] = 2 * size * sweeps / median_seconds(copies, repeats=repeats, warmup=1, device=device)
    return rates
