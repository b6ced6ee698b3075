"""``torch.compile`` with a fallback to eager execution where compilation is not supported.

Compilation can fail in three places: when the model is wrapped (``torch.compile``
refuses an unsupported Python or platform), on the first call (tracing or the
backend's code generation fails, e.g. without a working C++ compiler), and in
the first backward pass, where the backward graph is compiled (outside the
call: the training step catches that one and calls :meth:`CompiledOrEager.give_up`).
Either way the run continues eagerly, with one warning that says why.

Prediction on a CPU compiles with two inductor options (:data:`CPU_INFERENCE_OPTIONS`),
measured on one window of the medium preset, one thread, every variant compiled in
one process and timed in alternation (``scripts/compile_options_ab.py``; two runs):
0.83-1.10 ms with the defaults, 0.69-0.73 ms with ``cpp_wrapper`` (the compiled graph
is driven from C++: no Python between its kernels), 0.64 ms with
``realize_reads_threshold: 1`` as well (the GAT's attention weights are computed once
into a buffer instead of being recomputed, exponentials included, inside every loop
that reads them: the aggregation reads them once per feature). Outputs equal the
eager model's to 1e-6. Training keeps inductor's defaults: on a CPU the compiled
training step only draws level with the eager one (0.74-1.03x), and these options
did not change that (0.92-0.95x without checkpointing).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

CPU_INFERENCE_OPTIONS = {"cpp_wrapper": True, "realize_reads_threshold": 1}


def uncached_when_compiling(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` for a ``functools.lru_cache``-wrapped ``fn``; the bare function while ``torch.compile`` traces.

    Dynamo traces through a cache wrapper anyway, with a warning at every call site; the bare
    function computes the same without the warning (what it builds from shapes alone becomes
    part of the compiled graph).
    """
    return fn.__wrapped__(*args) if torch.compiler.is_compiling() else fn(*args)


def _fall_back(reason: str) -> None:
    warnings.warn(f"torch.compile is not available here ({reason}); running the model eagerly.", RuntimeWarning, stacklevel=3)


class CompiledOrEager:
    """Calls ``torch.compile(module)``; after a compilation failure, ``module`` itself.

    Not an ``nn.Module``: it holds no parameters of its own, so a module that keeps
    one as an attribute saves the same state dict with or without compilation.

    Args:
        module: the model.
        options: inductor options for ``torch.compile`` (None: its defaults).

    Attributes:
        module: the eager module.
        compiled: the compiled module, or None once compilation has failed.
    """

    def __init__(self, module: nn.Module, options: dict[str, Any] | None = None) -> None:
        self.module = module
        self.compiled: Any = None
        try:
            self.compiled = torch.compile(module, options=options)
        except RuntimeError as err:  # unsupported Python version or platform
            _fall_back(str(err))

    @classmethod
    def for_inference(cls, module: nn.Module, device: torch.device) -> CompiledOrEager:
        """``module`` compiled for prediction on ``device`` (:data:`CPU_INFERENCE_OPTIONS` on a CPU)."""
        return cls(module, CPU_INFERENCE_OPTIONS if device.type == "cpu" else None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as err:
                # A genuine error in the model raises again from the eager call below.
                self.give_up(err)
        return self.module(*args, **kwargs)

    def give_up(self, err: Exception) -> bool:
        """Run eagerly from now on, because of ``err``; False if that was already so (nothing to give up)."""
        if self.compiled is None:
            return False
        _fall_back(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        self.compiled = None
        return True
