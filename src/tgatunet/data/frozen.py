"""Tensors that refuse to be written.

PyTorch has no read-only tensors: a tensor made from a NumPy array flagged
``write=False`` is written without complaint. :class:`ReadOnlyTensor` closes
that gap for the prepared data that validation and test read: every in-place
operation (``t[i] = x``, ``t.add_(x)``, ``t += x``, ``torch.add(a, b, out=t)``,
``F.relu(t, inplace=True)``, ...) on it, or on a view of it, raises
:class:`ReadOnlyError`. Operations that produce new memory (indexing with
index arrays, arithmetic, ``.clone()``, ``.to()`` onto another device) return ordinary,
writable tensors, so batches built from it cost nothing extra; views
(slices, ``.view``, ``.detach()``, ``.data``) stay read-only, and NumPy arrays
taken from it (``.numpy()``, ``np.asarray``) come flagged ``write=False``.

The guard works at the level of tensor operations: code that deliberately
unwraps it (``as_subclass(torch.Tensor)``) or reaches the raw storage
(``untyped_storage()``, ``data_ptr()``) is not stopped; the run's leakage
guard (hashes at start and end, :mod:`tgatunet.train.leakage_guard`) catches that.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np
import torch

# Python operators that write their left operand; every other in-place op is named "<op>_".
_INPLACE_DUNDERS = {
    f"__{op}__"
    for op in (
        "setitem", "iadd", "isub", "imul", "imatmul", "itruediv", "ifloordiv",
        "imod", "ipow", "iand", "ior", "ixor", "ilshift", "irshift",
    )
}


class ReadOnlyError(RuntimeError):
    """Code tried to write data that must stay as it was read (a bug, not a user error)."""


@functools.lru_cache(maxsize=None)
def _inplace_position(func: Any) -> int | None:
    """Position of an ``inplace`` parameter of ``func`` (``torch.nn.functional``'s style), if it has one."""
    try:
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("inplace") if "inplace" in names else None


def _is_inplace(func: Any, args: tuple, kwargs: dict) -> bool:
    name = getattr(func, "__name__", "").split(".")[0]  # "add_.Tensor" for torch.ops.aten.add_.Tensor
    if name in _INPLACE_DUNDERS or (name.endswith("_") and not name.startswith("__")):
        return True
    at = _inplace_position(func)
    return bool(kwargs.get("inplace", args[at] if at is not None and at < len(args) else False))


def _frozen_in(obj: Any) -> list[ReadOnlyTensor]:
    """The read-only tensors among ``obj`` and the lists, tuples and dicts inside it."""
    if isinstance(obj, ReadOnlyTensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _frozen_in(item)]
    if isinstance(obj, dict):
        return _frozen_in(list(obj.values()))
    return []


class ReadOnlyTensor(torch.Tensor):
    """A tensor (and its views) whose in-place writes raise :class:`ReadOnlyError`. Make one with :func:`freeze`."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", func)
        written = _frozen_in(kwargs.get("out"))
        if args and _is_inplace(func, args, kwargs):
            written += _frozen_in(args[0])
        if written:
            raise ReadOnlyError(
                f"'{name}' would write read-only data (the prepared inputs are frozen so that "
                "no run can change validation or test data); work on a copy: .clone()."
            )
        with torch._C.DisableTorchFunctionSubclass():
            inputs = _frozen_in((args, kwargs))
            versions = [t._version for t in inputs]
            frozen = {t.untyped_storage().data_ptr() for t in inputs}
            result = func(*args, **kwargs)
            # Last line of defence for a write the rules above did not foresee: too late to
            # prevent, but never silent.
            if any(t._version != v for t, v in zip(inputs, versions)):
                raise ReadOnlyError(f"'{name}' wrote read-only data.")
            return _settle(result, frozen, cls)

    def __deepcopy__(self, memo: dict) -> ReadOnlyTensor:
        return freeze(self.clone())


def _settle(out: Any, frozen: set[int], cls: type) -> Any:
    """Results in frozen memory (views) stay read-only; results in new memory become ordinary tensors."""
    if isinstance(out, torch.Tensor):
        return out.as_subclass(cls if out.untyped_storage().data_ptr() in frozen else torch.Tensor)
    if isinstance(out, np.ndarray):
        out.setflags(write=False)  # .numpy() / np.asarray share the memory
    elif isinstance(out, (list, tuple)) and not isinstance(out, torch.Size):
        return type(out)([_settle(item, frozen, cls) for item in out])
    return out


def freeze(tensor: torch.Tensor) -> ReadOnlyTensor:
    """``tensor`` as a :class:`ReadOnlyTensor` sharing its memory (no copy)."""
    return tensor.as_subclass(ReadOnlyTensor)
