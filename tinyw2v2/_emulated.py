"""An emulated device array library, for testing the CPU/GPU discipline without a GPU.

``DeviceArray`` wraps a NumPy array and behaves the way CuPy arrays behave towards NumPy:

- implicit conversion to NumPy (``np.asarray(a)``, ``np.array(a)``) raises ``TypeError``;
- mixing with a host ``numpy.ndarray`` in any operation raises ``TypeError``;
- only NumPy's own ufuncs and functions dispatch to it (a SciPy ufunc such as ``scipy.special.erf``
  raises, as it would on CuPy, where ``cupyx.scipy.special`` must be used);
- ``float()``, ``int()``, ``bool()``, ``.item()`` and ``.tolist()`` work: those are explicit sync points on a GPU;
- reductions return 0-d device arrays, not NumPy scalars (as CuPy does).

The namespace ``xp`` mirrors the NumPy functions that create arrays (``xp.zeros``, ``xp.asarray``, ...), which
put their result on the device. Everything else is NumPy itself, reached through ``__array_function__``.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin


class DeviceArray(NDArrayOperatorsMixin):
    """A NumPy array that pretends to live on another device."""

    __slots__ = ("_a",)
    __array_priority__ = 1000

    def __init__(self, a):
        if isinstance(a, DeviceArray):
            a = a._a
        self._a = np.asarray(a)

    # --- refusal of implicit host conversion ---------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "implicit conversion of an emulated device array to NumPy is not allowed "
            "(CuPy would refuse it too); copy explicitly with tinyw2v2.backend.to_numpy"
        )

    # --- NumPy protocols ------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if getattr(np, ufunc.__name__, None) is not ufunc:
            raise TypeError(f"ufunc {ufunc.__name__!r} is not a NumPy ufunc and has no device implementation")
        inputs = _unwrap(inputs, f"np.{ufunc.__name__}")
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"], f"np.{ufunc.__name__}(out=)")
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        name = getattr(func, "__name__", str(func))
        args = _unwrap(args, f"np.{name}")
        kwargs = _unwrap(kwargs, f"np.{name}")
        return _wrap(func(*args, **kwargs))

    # --- attributes -------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: DeviceArray(self._a.T))
    device = "emulated"

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r}, device='emulated')"

    # explicit sync points, allowed as on CuPy
    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __bool__(self):
        return bool(self._a)

    def item(self, *args):
        return self._a.item(*args)

    def tolist(self):
        return self._a.tolist()

    # --- indexing ----------------------------------------------------------------------------------
    def __getitem__(self, index):
        return _wrap(self._a[_unwrap(index, "indexing")])

    def __setitem__(self, index, value):
        self._a[_unwrap(index, "indexing")] = _unwrap(value, "assignment")

    def __iter__(self):
        for row in self._a:
            yield _wrap(row)

    # --- methods: forwarded to NumPy, results stay on the device ------------------------------------
    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__, __dlpack__, ...: no back door to the host
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, f".{name}"), **_unwrap(kwargs, f".{name}")))

        return method


def _unwrap(obj, where):
    """DeviceArray -> its NumPy array; a host ndarray is refused."""
    if isinstance(obj, DeviceArray):
        return obj._a
    if isinstance(obj, np.ndarray):
        raise TypeError(
            f"{where}: a host numpy.ndarray was mixed with an emulated device array "
            "(CuPy would refuse this); move it to the device explicitly first"
        )
    if isinstance(obj, tuple):
        return tuple(_unwrap(o, where) for o in obj)
    if isinstance(obj, list):
        return [_unwrap(o, where) for o in obj]
    if isinstance(obj, dict):
        return {k: _unwrap(v, where) for k, v in obj.items()}
    return obj


def _wrap(obj):
    if isinstance(obj, np.ndarray):
        return DeviceArray(obj)
    if isinstance(obj, np.generic) and not isinstance(obj, (np.str_, np.bytes_)):
        return DeviceArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def to_host(a: DeviceArray) -> np.ndarray:
    """Explicit copy to the host."""
    return a._a.copy()


def apply_host(fn, *arrays):
    """Run ``fn`` on the underlying NumPy arrays (for backend primitives such as strided views)."""
    return _wrap(fn(*(a._a if isinstance(a, DeviceArray) else a for a in arrays)))


def add_at(target: DeviceArray, indices, values) -> None:
    np.add.at(target._a, _unwrap(indices, "scatter_add"), _unwrap(values, "scatter_add"))


class _Namespace:
    """``xp`` for the emulated device: array creation lands on the device, the rest is NumPy."""

    _CREATE = {"asarray", "array", "ascontiguousarray", "zeros", "ones", "empty", "full", "arange",
               "linspace", "eye", "zeros_like", "ones_like", "empty_like", "full_like", "frombuffer"}

    def __init__(self):
        self.newaxis = None
        self.random = _RandomModule()

    def __getattr__(self, name):
        obj = getattr(np, name)
        if name in self._CREATE:
            def create(*args, **kwargs):
                args = tuple(to_host(a) if isinstance(a, DeviceArray) else a for a in args)
                return DeviceArray(obj(*args, **kwargs))
            return create
        return obj

    def __repr__(self):
        return "<emulated device array namespace>"


class Generator:
    """A NumPy Generator whose draws land on the emulated device."""

    def __init__(self, seed=None):
        self._g = np.random.default_rng(seed)

    def __getattr__(self, name):
        fn = getattr(self._g, name)

        def draw(*args, **kwargs):
            return _wrap(fn(*_unwrap(args, f"rng.{name}"), **_unwrap(kwargs, f"rng.{name}")))

        return draw


class _RandomModule:
    def default_rng(self, seed=None):
        return Generator(seed)


xp = _Namespace()

__all__ = ["DeviceArray", "xp", "to_host", "apply_host", "add_at", "Generator"]
