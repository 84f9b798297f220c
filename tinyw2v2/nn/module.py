"""``Module`` and ``Parameter``: the machinery every layer and model is built on (named like ``torch.nn``).

- A ``Parameter`` is a ``Tensor`` with ``requires_grad=True``. Assigning a ``Parameter`` to a module attribute
  registers it, assigning a ``Module`` registers a submodule; registration order is kept, and dotted names
  (``encoder.layers.0.attention.q_proj.weight``) are built exactly as torch builds them.
- ``state_dict()`` holds the *raw arrays* (no copy: they alias the parameters, as torch's do); ``load_state_dict``
  copies every value onto the parameter's own device and dtype with explicit transfers and *replaces*
  ``param.data`` (the ``Parameter`` object stays the same, so optimisers keep working).
- ``Module.to(device)`` / ``to(dtype)`` work in place on the parameters and their gradients.
- ``save`` / ``load`` write and read the state dict as an .npz, atomically (``tinyw2v2.io``).
"""
from __future__ import annotations

import collections
import os
from typing import Iterator, NamedTuple

import numpy as np

from .. import backend
from ..io import as_array
from ..io import load_arrays, save_arrays
from ..tensor import Tensor

__all__ = ["Parameter", "Module", "IncompatibleKeys"]


class Parameter(Tensor):
    """A trainable ``Tensor``: ``requires_grad=True`` unless told otherwise.

    ``Parameter(data, requires_grad=True, dtype=None, device=None)``: floating-point data becomes float32 unless
    ``dtype`` is given (``dtype=tinyw2v2.float64`` for checks), exactly as ``Tensor``. ``data`` may be a raw
    array or a ``Tensor``. Unlike ``Tensor`` (and torch's ``nn.Parameter``), the array is always copied (unless
    ``copy=False``): optimisers update ``.data`` in place, which must not write into the caller's array.
    """

    def __init__(self, data, requires_grad: bool = True, dtype=None, device=None, copy: bool = True):
        source = data.data if isinstance(data, Tensor) else data
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, device=device)
        if copy and self.data is source:
            self.data = self.data.copy()

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of every layer and model (like ``torch.nn.Module``).

    Subclasses call ``super().__init__()`` first, then assign ``Parameter`` s and ``Module`` s as attributes,
    and implement ``forward``; ``module(x)`` calls ``forward(x)``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # --- registration ---------------------------------------------------------------------------
    def _check_init(self, name):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__(): call super().__init__() first in "
                f"{type(self).__name__}.__init__"
            )

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._check_init(name)
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._check_init(name)
            self._forget(name)
            self._modules[name] = value
        elif "_parameters" in self.__dict__ and name in self._parameters:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r} of {type(self).__name__} "
                    "(wrap it in nn.Parameter, or assign None)"
                )
            self._parameters[name] = None
        elif "_parameters" in self.__dict__ and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to submodule {name!r} (expected a Module)")
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        """Remove ``name`` from every registry and the instance dict (before re-registering it)."""
        self.__dict__.pop(name, None)
        self._parameters.pop(name, None)
        self._modules.pop(name, None)

    def __getattr__(self, name):  # only called when normal lookup fails
        d = self.__dict__
        for registry in ("_parameters", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if name in self._parameters or name in self._modules:
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._modules))

    def register_parameter(self, name: str, param) -> None:
        """Register ``param`` (a ``Parameter`` or None) under ``name``."""
        self._check_init(name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got {type(param).__name__}")
        self._forget(name)
        self._parameters[name] = param

    def register_module(self, name: str, module) -> None:
        self._check_init(name)
        self._forget(name)
        self._modules[name] = module

    # --- traversal ------------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True) -> Iterator:
        """(dotted name, module) for this module ("") and every submodule, depth first in registration order."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator:
        for _, m in self.named_modules():
            yield m

    def _named_members(self, get, prefix: str, recurse: bool, remove_duplicate: bool = True):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mod_prefix, module in mods:
            for name, value in get(module):
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield mod_prefix + ("." if mod_prefix else "") + name, value

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True) -> Iterator:
        """(dotted name, Parameter) pairs, torch's order: each module's own parameters, then its submodules'."""
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    # --- modes ----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set the training flag on self and every submodule (dropout reads it); returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (default) or zero every parameter's gradient."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def num_parameters(self, only_trainable: bool = False) -> int:
        """Number of scalars in the (distinct) parameters."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not only_trainable)

    # --- calling --------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- device and dtype -------------------------------------------------------------------------
    def to(self, device=None, dtype=None) -> "Module":
        """Move (``to("cuda")``) and/or cast (``to(np.float64)``) every parameter and gradient in place.

        Parameters keep their identity (only ``.data`` and ``.grad`` are replaced), so an optimiser made before
        the call still holds them, though its state (moments) is not moved: move the model first. Only
        floating-point arrays are cast, as in torch. Returns self.
        """
        if device is not None and not isinstance(device, str):  # to(np.float64): the first argument is a dtype
            device, dtype = None, device
        if device is not None:
            device = backend.normalize_device(device)
        dtype = np.dtype(dtype) if dtype is not None else None

        def convert(a):
            if a is None:
                return None
            if device is not None:
                a = backend.to_device(a, device)
            if dtype is not None and np.issubdtype(a.dtype, np.floating) and a.dtype != dtype:
                a = a.astype(dtype)
            return a

        for t in self.parameters():
            t.data = convert(t.data)
            if t.grad is not None:
                t.grad = convert(t.grad)
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def float(self) -> "Module":
        return self.to(dtype=np.float32)

    def double(self) -> "Module":
        return self.to(dtype=np.float64)

    # --- state ----------------------------------------------------------------------------------
    def _state_items(self):
        """(name, Parameter) in torch's state-dict order: per module, its parameters, then its submodules'."""
        for prefix, module in self.named_modules():
            dot = prefix + ("." if prefix else "")
            for name, p in module._parameters.items():
                if p is not None:
                    yield dot + name, p

    def state_dict(self) -> "collections.OrderedDict":
        """Ordered dict dotted name -> raw array (aliases, not copies), like torch's ``state_dict()``."""
        return collections.OrderedDict((name, t.data) for name, t in self._state_items())

    def load_state_dict(self, state, strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` (name -> NumPy / CuPy array, Tensor or torch tensor) into the parameters.

        Each value is copied explicitly onto the target's device and cast to its dtype; ``param.data`` is replaced
        by that fresh array. Shape mismatches always raise; with ``strict`` (default) missing and unexpected keys
        raise too; every problem is listed in one ``RuntimeError``. Returns (missing_keys, unexpected_keys).
        """
        targets = collections.OrderedDict(self._state_items())
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        problems, updates = [], []
        for name, target in targets.items():
            if name not in state:
                continue
            value = as_array(state[name])
            if tuple(value.shape) != target.shape:
                problems.append(f"size mismatch for {name}: the checkpoint has shape {tuple(value.shape)}, "
                                f"the model has shape {target.shape}")
                continue
            updates.append((target, value))
        if strict:
            if missing:
                problems.insert(0, "missing keys: " + ", ".join(missing))
            if unexpected:
                problems.insert(0, "unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise RuntimeError(f"error(s) loading state dict into {type(self).__name__}:\n  " + "\n  ".join(problems))
        for target, value in updates:
            # explicit transfer, then astype, which always copies: the model never aliases the caller's arrays
            target.data = backend.to_device(value, target.device).astype(target.dtype)
        return IncompatibleKeys(missing, unexpected)

    def save(self, path, metadata=None) -> None:
        """Write ``state_dict()`` to ``path`` (.npz) atomically, with optional JSON-able ``metadata``."""
        save_arrays(path, self.state_dict(), metadata)

    @staticmethod
    def load_state(path):
        """Read a checkpoint written by ``save``: returns (state dict of host arrays, metadata or None)."""
        return load_arrays(path)

    def load(self, path, strict: bool = True):
        """Load a checkpoint written by ``save`` into this module; returns its metadata (or None)."""
        state, metadata = load_arrays(path)
        try:
            self.load_state_dict(state, strict=strict)
        except RuntimeError as e:
            raise RuntimeError(f"checkpoint {os.fspath(path)!r}: {e}") from None
        return metadata

    # --- printing -------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
