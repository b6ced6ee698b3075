"""``torch.compile`` with a fallback to eager execution where compilation is not supported.

Compilation can fail in three places: when the model is wrapped (``torch.compile`` refuses an unsupported Python or
platform), on the first call (tracing or the backend's code generation fails, e.g. without a working C++ compiler),
and in the first backward pass, where the backward graph is compiled (outside the call: the training step catches that
one and calls :meth:`CompiledOrEager.give_up`). Either way the run continues eagerly, with one warning that says why.

Training on CUDA compiles with ``mode="reduce-overhead"``: the step is captured as CUDA graphs and replayed, without a
kernel launch from Python each; its shapes must not change, so the training loader drops an epoch's last, partial
batch. Prediction on a CPU compiles with :data:`CPU_INFERENCE_OPTIONS`: ``cpp_wrapper`` drives the compiled graph from
C++ (no Python between its kernels), and ``realize_reads_threshold: 1`` makes inductor compute the GAT's attention
weights once into a buffer instead of recomputing them, exponentials included, in every loop that reads them
(docs/PERFORMANCE.md has the measured effect).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

CPU_INFERENCE_OPTIONS = {"cpp_wrapper": True, "realize_reads_threshold": 1}


def _fall_back(reason: str) -> None:
    warnings.warn(f"torch.compile is not available here ({reason}); running the model eagerly.", RuntimeWarning, stacklevel=3)


class CompiledOrEager:
    """Calls ``torch.compile(module)``; after a compilation failure, ``module`` itself.

    Not an ``nn.Module``: it holds no parameters of its own, so a module that keeps
    one as an attribute saves the same state dict with or without compilation.

    ``options``: inductor options (None: its defaults); ``mode``: ``torch.compile``'s mode (``reduce-overhead``
    replays the step as CUDA graphs). ``compiled`` is the compiled module, or None once compilation has failed.
    """

    def __init__(self, module: nn.Module, options: dict[str, Any] | None = None, mode: str | None = None) -> None:
        self.module = module
        self.compiled: Any = None
        try:
            self.compiled = torch.compile(module, options=options, mode=mode)
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
