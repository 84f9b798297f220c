"""``tinyw2v2.nn``: parameters, modules and the layers the model is built from (named like ``torch.nn``).

    import tinyw2v2.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(512, 768)          # registered submodule "proj"
            self.norm = nn.LayerNorm(768)
        def forward(self, x):
            return self.norm(self.proj(x))

    block = Block().to("cuda")
    block.state_dict()                               # {"proj.weight": (768, 512), "proj.bias": ..., ...}
    block.save("ckpt.npz", metadata={"dim": 768})   # atomic write
    meta = block.load("ckpt.npz")

Design (mirrors torch so that a torch / transformers state dict maps 1:1):

- A ``Parameter`` is a ``Tensor`` with ``requires_grad=True``. Assigning a ``Parameter`` to a module attribute
  registers it, assigning a ``Module`` registers a submodule; registration order is kept, and dotted names
  (``encoder.layers.0.attention.q_proj.weight``) are built exactly as torch builds them.
- Buffers (``register_buffer``) are non-trainable state, stored as ``Tensor`` objects with
  ``requires_grad=False`` (their dtype is kept as given: float64 buffers stay float64).
- ``state_dict()`` holds the *raw arrays* (no copy: they alias the parameters, as torch's do); ``load_state_dict``
  copies every value onto the parameter's own device and dtype with explicit transfers and *replaces*
  ``param.data`` (the ``Parameter`` object stays the same, so optimisers keep working).
- ``Module.to(device)`` / ``to(dtype)`` work in place on the parameters (and their gradients) and buffers.
- Layers draw their default initialisation from a NumPy ``Generator`` passed as ``rng=`` or from this module's
  default generator (``tinyw2v2.nn.manual_seed(seed)`` resets it), on the host, then move it to ``device=``.
- The layers call ``tinyw2v2.functional`` at call time, so this file imports before the op families exist.
"""
from __future__ import annotations

import collections
import json
import math
import os
import tempfile
import zipfile
from typing import Iterator, NamedTuple

import numpy as np

from . import backend
from .tensor import Tensor

__all__ = [
    "Parameter", "Module", "ModuleList", "Sequential", "Identity", "Linear", "LayerNorm", "GroupNorm", "Conv1d",
    "Dropout", "manual_seed", "default_generator", "save_arrays", "load_arrays", "CheckpointError",
    "IncompatibleKeys",
]

# ----------------------------------------------------------------------------------------------
# Random initialisation

_rng = np.random.default_rng(0)


def manual_seed(seed) -> np.random.Generator:
    """Reset the default host generator the layers draw their initial weights from; returns it."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def default_generator() -> np.random.Generator:
    return _rng


def _fill(param, values) -> None:
    """Write values (drawn on the host or on a device) into a parameter, keeping its dtype and device."""
    if not backend.is_array(values):
        values = np.asarray(values)
    values = values if values.dtype == param.dtype else values.astype(param.dtype)
    param.data = backend.to_device(values, param.device)


def _uniform(rng, bound: float, shape) -> np.ndarray:
    """U(-bound, bound) of ``shape`` drawn from ``rng`` (or the module default), float64 on the host."""
    return (rng if rng is not None else _rng).uniform(-bound, bound, size=shape)


# ----------------------------------------------------------------------------------------------
# Parameter


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


# ----------------------------------------------------------------------------------------------
# Module


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (corrupt, truncated, not an .npz written by ``save_arrays``)."""


def _as_array(value):
    """A state-dict value as an array: raw arrays as they are, Tensors' data, torch tensors via NumPy."""
    if isinstance(value, Tensor):
        return value.data
    if backend.is_array(value):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


class Module:
    """Base class of every layer and model (like ``torch.nn.Module``).

    Subclasses call ``super().__init__()`` first, then assign ``Parameter`` s and ``Module`` s as attributes,
    and implement ``forward``; ``module(x)`` calls ``forward(x)``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
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
        elif "_parameters" in self.__dict__ and name in self._buffers:
            self._buffers[name] = self._as_buffer(value)
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        """Remove ``name`` from every registry and the instance dict (before re-registering it)."""
        self.__dict__.pop(name, None)
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent.discard(name)

    def __getattr__(self, name):  # only called when normal lookup fails
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if name in self._parameters or name in self._modules or name in self._buffers:
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    @staticmethod
    def _as_buffer(value):
        if value is None:
            return None
        if isinstance(value, Tensor):
            return Tensor(value.data, _copy=False)
        return Tensor(_as_array(value), _copy=False)  # dtype kept as given

    def register_parameter(self, name: str, param) -> None:
        """Register ``param`` (a ``Parameter`` or None) under ``name``."""
        self._check_init(name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got {type(param).__name__}")
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, value, persistent: bool = True) -> None:
        """Register non-trainable state (array, Tensor or None); persistent buffers go into ``state_dict``."""
        self._check_init(name)
        if "." in name or not name:
            raise KeyError(f"buffer name {name!r} must be non-empty and contain no '.'")
        self._forget(name)
        self._buffers[name] = self._as_buffer(value)
        if not persistent:
            self._non_persistent.add(name)

    def register_module(self, name: str, module) -> None:
        self._check_init(name)
        self._forget(name)
        self._modules[name] = module

    add_module = register_module

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

    def named_children(self) -> Iterator:
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator:
        for _, m in self.named_children():
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

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True) -> Iterator:
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> "Module":
        """The submodule at dotted path ``target`` ("" is self)."""
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules or module._modules[part] is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (looking up {target!r})")
            module = module._modules[part]
        return module

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on every submodule (children first) and then on self, like torch; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

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
        """Move (``to("cuda")``) and/or cast (``to(np.float64)``) every parameter, gradient and buffer in place.

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

        for t in list(self.parameters()) + list(self.buffers()):
            t.data = convert(t.data)
            if t.grad is not None:
                t.grad = convert(t.grad)
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self) -> "Module":
        return self.to("cuda")

    def float(self) -> "Module":
        return self.to(dtype=np.float32)

    def double(self) -> "Module":
        return self.to(dtype=np.float64)

    # --- state ----------------------------------------------------------------------------------
    def _state_items(self):
        """(name, Tensor) in torch's state-dict order: per module, its parameters then persistent buffers."""
        for prefix, module in self.named_modules():
            dot = prefix + ("." if prefix else "")
            for name, p in module._parameters.items():
                if p is not None:
                    yield dot + name, p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    yield dot + name, b

    def state_dict(self) -> "collections.OrderedDict":
        """Ordered dict dotted name -> raw array (aliases, not copies), like torch's ``state_dict()``."""
        return collections.OrderedDict((name, t.data) for name, t in self._state_items())

    def load_state_dict(self, state, strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` (name -> NumPy / CuPy array, Tensor or torch tensor) into the parameters and buffers.

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
            value = _as_array(state[name])
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


# ----------------------------------------------------------------------------------------------
# Checkpoint files

_METADATA_KEY = "__metadata__"


def save_arrays(path, arrays, metadata=None) -> None:
    """Write ``arrays`` (name -> array on any device) to the .npz ``path`` atomically.

    The arrays are copied to the host explicitly; ``metadata`` (a JSON string, or anything ``json.dumps`` takes)
    is stored as a string under ``__metadata__``. The file is written to a temporary file in the same directory,
    flushed and fsync'ed, then renamed over ``path`` with ``os.replace``: a crash leaves either the old file or
    the new one, never a torn one.
    """
    path = os.fspath(path)
    host = {}
    for name, a in arrays.items():
        if name == _METADATA_KEY:
            raise KeyError(f"{_METADATA_KEY!r} is reserved for the metadata")
        host[name] = backend.to_numpy(_as_array(a))
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        host[_METADATA_KEY] = np.array(text)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **host)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (best effort: not every platform can open a directory)
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform dependent
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover - platform dependent
        pass
    finally:
        os.close(dir_fd)


def load_arrays(path):
    """Read an .npz written by ``save_arrays``: (ordered dict name -> host array, metadata or None).

    Metadata that is valid JSON is decoded (a dict, ...); any other string is returned as is. A missing file
    raises ``FileNotFoundError`` and an unreadable one ``CheckpointError``, both naming the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = collections.OrderedDict((name, z[name]) for name in z.files)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"checkpoint file {path!r} is corrupt or not an .npz checkpoint: {e}") from e
    metadata = arrays.pop(_METADATA_KEY, None)
    if metadata is not None:
        metadata = str(metadata[()])
        try:
            metadata = json.loads(metadata)
        except ValueError:
            pass
    return arrays, metadata


# ----------------------------------------------------------------------------------------------
# Containers


class ModuleList(Module):
    """A list of modules registered as "0", "1", ... (like ``torch.nn.ModuleList``)."""

    def __init__(self, modules=None):
        super().__init__()
        for m in modules or []:
            self.append(m)

    def append(self, module) -> "ModuleList":
        self.register_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def _index(self, i: int) -> str:
        n = len(self._modules)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a ModuleList of length {n}")
        return str(i % n)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return self._modules[self._index(i)]

    def __setitem__(self, i, module):
        self.register_module(self._index(i), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(): iterate over it")


class Sequential(ModuleList):
    """Modules applied one after another: ``Sequential(a, b, c)(x) == c(b(a(x)))``."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


class Identity(Module):
    def forward(self, x):
        return x


# ----------------------------------------------------------------------------------------------
# Layers


def _F():
    from . import functional  # imported at call time: the op families may be written after this file

    return functional


class Linear(Module):
    """y = x W^T + b. ``weight`` (out_features, in_features), ``bias`` (out_features) as in torch.

    Default init (torch's distribution): W and b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)); torch's
    kaiming_uniform_(a=sqrt(5)) has exactly this bound for W. ``init=False`` leaves zeros for an owner that
    initialises the layer itself (``reset_parameters(rng)`` draws the default later).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None, device=None, dtype=None,
                 init: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(np.zeros((out_features, in_features)), dtype=dtype, device=device)
        if bias:
            self.bias = Parameter(np.zeros(out_features), dtype=dtype, device=device)
        else:
            self.register_parameter("bias", None)
        if init:
            self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        """W, b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)), drawn from ``rng`` (or the module default)."""
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        _fill(self.weight, _uniform(rng, bound, self.weight.shape))
        if self.bias is not None:
            _fill(self.bias, _uniform(rng, bound, self.bias.shape))

    def forward(self, x):
        return _F().linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` axes; ``weight`` = 1, ``bias`` = 0 of that shape."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape), dtype=dtype, device=device)
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape), dtype=dtype, device=device)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self, rng=None) -> None:
        """weight = 1, bias = 0."""
        if self.weight is not None:
            _fill(self.weight, np.ones(self.weight.shape))
        if self.bias is not None:
            _fill(self.bias, np.zeros(self.bias.shape))

    def forward(self, x):
        return _F().layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalise (N, C, *) over each of ``num_groups`` channel groups and the trailing axes; per-channel affine."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps = float(eps)
        self.affine = bool(affine)
        if affine:
            self.weight = Parameter(np.ones(num_channels), dtype=dtype, device=device)
            self.bias = Parameter(np.zeros(num_channels), dtype=dtype, device=device)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    reset_parameters = LayerNorm.reset_parameters

    def forward(self, x):
        return _F().group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class Conv1d(Module):
    """1-D convolution (cross-correlation) over (N, C_in, T). ``weight`` (C_out, C_in/groups, K), ``bias`` (C_out).

    Default init (torch's distribution): W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in/groups * K.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding=0,
                 dilation: int = 1, groups: int = 1, bias: bool = True, rng=None, device=None, dtype=None,
                 init: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                             f"by groups ({groups})")
        if isinstance(kernel_size, (tuple, list)):
            (kernel_size,) = kernel_size
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, int(groups)
        self.weight = Parameter(np.zeros((out_channels, in_channels // groups, kernel_size)), dtype=dtype,
                                device=device)
        if bias:
            self.bias = Parameter(np.zeros(out_channels), dtype=dtype, device=device)
        else:
            self.register_parameter("bias", None)
        if init:
            self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        """W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in/groups * K, drawn from ``rng`` (or the default)."""
        fan_in = self.in_channels // self.groups * self.kernel_size
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        _fill(self.weight, _uniform(rng, bound, self.weight.shape))
        if self.bias is not None:
            _fill(self.bias, _uniform(rng, bound, self.bias.shape))

    def forward(self, x):
        return _F().conv1d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                           dilation=self.dilation, groups=self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")


class Dropout(Module):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p), in training mode only.

    Randomness: ``forward(x, mask=None, generator=None)``; an explicit ``mask`` (boolean keep-mask shaped like
    ``x``, on its device) makes the call reproducible; otherwise the mask is drawn from ``generator``, else from
    ``self.generator`` (a ``tinyw2v2.backend.default_rng(seed, device)``, or a function returning one: a model
    passes its own, so that reseeding or moving the model reaches every dropout), else from ``F.dropout``'s own
    default. In eval mode, or with p = 0, ``x`` is returned unchanged (the mask is ignored).
    """

    def __init__(self, p: float = 0.5, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = generator

    def forward(self, x, mask=None, generator=None):
        if not self.training or self.p == 0.0:
            return x
        if generator is None:
            generator = self.generator() if callable(self.generator) else self.generator
        return _F().dropout(x, self.p, training=True, mask=mask, generator=generator)

    def extra_repr(self):
        return f"p={self.p}"
