"""An emulated device array library, for testing the CPU/GPU discipline without a GPU.

``DeviceArray`` wraps a NumPy array and behaves the way CuPy arrays behave towards NumPy:

- implicit conversion to NumPy (``np.asarray(a)``, ``np.array(a)``) raises ``TypeError``;
- mixing with a host ``numpy.ndarray`` in any operation raises ``TypeError``;
- only NumPy's own ufuncs and functions dispatch to it (a SciPy ufunc such as ``scipy.special.erf``
  raises; CuPy would map it to ``cupyx.scipy.special.erf``, but code is meant to call that through
  ``tinyw2v2.backend``);
- ``float()``, ``int()``, ``bool()``, ``.item()``, ``.tolist()`` and ``.get()`` work: those are explicit sync
  points on a GPU;
- reductions return 0-d device arrays, not NumPy scalars (as CuPy does).

Where CuPy is stricter than NumPy, so is the emulation:

- no ``__index__`` (``range(n)`` or ``operator.index`` of a device array raises; use ``int(n)``, a sync);
- a boolean mask mixed with integer-array indices in one subscript raises ``IndexError``;
- a 0-d integer device array used as an index gives a copy, not a view (CuPy treats it as an array index);
- ``scatter_add`` accepts only the dtypes CuPy's atomic add accepts (see ``SCATTER_ADD_DTYPES``);
- only what CuPy 14.2 has is there: ``xp.name``, ``array.name``, a NumPy function called on a device array
  (mapped as CuPy's ``__array_function__`` maps it: ``numpy.linalg.norm`` -> ``cupy.linalg.norm``) and a NumPy
  ufunc (with its ``reduce`` / ``accumulate`` / ``reduceat`` / ``at`` only where CuPy implements them) are checked
  against the names read off CuPy itself (``tinyw2v2/_cupy_api.py``, with how it was made); anything else raises
  ``AttributeError`` or ``TypeError`` (``NotImplementedError`` for a ufunc method, as on CuPy); a few names get a
  longer explanation (``REFUSED_NAMES``);
- the random generator has only CuPy's ``Generator`` methods, and its stream is NumPy's Philox, not NumPy's
  default PCG64: the same seed gives different numbers on the CPU and on the device, as it does on CUDA.

The namespace ``xp`` mirrors the NumPy functions that create arrays (``xp.zeros``, ``xp.asarray``, ...), which
put their result on the device. Everything else is NumPy itself, reached through ``__array_function__``,
for the names CuPy has.

Counting device work
--------------------
Inside ``with count_work() as work:`` every emulated-device operation adds what CuPy would pay for it:
``work.launches`` (kernels and other stream operations a GPU queues, each ~5-15 us of launch overhead),
``work.syncs`` (device-to-host reads: the host waits for the stream) and ``work.uploads`` (host-to-device
copies; also counted in ``launches``), with ``work.by_name`` / ``work.syncs_by_name`` breaking them down.
The rules, read against CuPy 14's sources (``cupy/_core``), one call at a time:

- every ufunc call is 1 launch, with ``out=`` or not, and so are its methods (``reduce``, ``accumulate``,
  ``outer``, ``at``); ``matmul`` is 1 GEMM plus the copies CuPy makes: an operand of another dtype, a 2-d
  operand that is neither C- nor F-contiguous, an operand of a >2-d product that is not C-contiguous, and
  3 x (ndim - 2) pointer kernels when a >2-d product broadcasts its batch axes (a ``(B, T, D) @ (D, E)``);
- a NumPy function (``__array_function__``) is 1 launch when it returns a fresh array (or returns nothing,
  writing in place: ``copyto``), 0 when every array it returns is a view of its inputs (``reshape`` that can,
  ``transpose``, ``broadcast_to``, ``moveaxis``, ``expand_dims``, ``split``, ...) or when it returns no array at
  all (``shape``, ``ndim``, ``result_type``); the exceptions (``_count_function``, ``_FIXED_FUNCTION_COSTS``):
  ``einsum`` follows CuPy's algorithm (one sum per operand axis summed alone, then per pair: copies where the
  batch-major transpose cannot be a view, and a batched GEMM), ``concatenate``/``stack`` copy once per array
  (a single kernel and an upload beyond 8 small arrays), ``var`` 2, ``std`` 3, ``empty_like`` 0;
- the calls CuPy itself synchronises in: ``nonzero``, ``argwhere``, ``flatnonzero``, one-argument ``where``
  (a scan, then the count is read back: 1 sync), ``unique``, ``sliding_window_view`` (its window shape is
  uploaded and a value read back), ``array_equal``/``allclose`` (0-d device results here, as on CuPy; the
  ``bool()`` that reads them is the sync);
- array creation: ``zeros``, ``ones``, ``full``, ``arange``, ``linspace``, ``*_like`` 1 launch, ``eye`` 2,
  ``empty``/``empty_like`` 0 (CuPy allocates from its pool and launches nothing); ``asarray`` of a device array
  0 (1 if it must convert or copy), of host data 1 upload;
- array methods follow the function rule: 1 launch for a fresh result (``sum``, ``copy``, ``astype`` with a
  copy, ``reshape`` that must copy, ...), 0 for a view, 1 for one that works in place (``fill``, ``sort``);
  ``put`` in its default mode also syncs (CuPy checks the bounds on the device and reads the flag back);
- indexing: basic indices (integers, slices, ``None``, ``...``) give a view, 0 launches; one integer-array
  index 1 (a take), k of them k + 2; a boolean mask 1 scan (2 when it does not cover the whole array),
  1 sync and 1 gather; assignment is the same with a scatter for the gather, and 1 launch (a fill or a copy)
  through basic indices; a Python list in an index, or a Python scalar assigned through an array index, is
  one more upload;
- random draws: 1 launch each (``random``, ``standard_normal``), ``integers`` 2, ``uniform`` 6 (its bounds are
  uploaded), and 1 for making a generator (CuPy runs ``curand_init``);
- syncs: ``float()``, ``int()``, ``bool()``, ``.item()``, ``.tolist()``, ``.get()``, ``repr``/``str`` (printing), and an
  explicit host copy (``to_host``, i.e. ``backend.to_numpy``); uploads: ``backend.to_device(host, "emulated")``.

These are kernel counts, not costs: a launch of 10 elements and one of 10 million count the same.
"""
from __future__ import annotations

import contextlib
from collections import Counter

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from . import _cupy_api

# ----------------------------------------------------------------------------------------------
# Counting what a GPU would pay


class DeviceWork:
    """Launches, syncs and uploads counted inside one ``count_work()`` block (see the module docstring)."""

    def __init__(self):
        self.launches = 0
        self.syncs = 0
        self.uploads = 0
        self.by_name: Counter = Counter()        # name -> launches
        self.syncs_by_name: Counter = Counter()  # name -> syncs

    def __repr__(self):
        return f"DeviceWork(launches={self.launches}, syncs={self.syncs}, uploads={self.uploads})"

    def table(self, top: int | None = None) -> str:
        """The breakdown, most launches first, as text."""
        rows = [f"{n:6d}  {name}" for name, n in self.by_name.most_common(top)]
        rows += [f"{n:6d}  sync: {name}" for name, n in self.syncs_by_name.most_common()]
        return "\n".join(rows)


_active: list = []


def _launch(name: str, n: int = 1) -> None:
    if n:
        for w in _active:
            w.launches += n
            w.by_name[name] += n


def _launch_counts(counts) -> None:
    for name, n in counts.items():
        _launch(name, n)


def _upload(name: str, n: int = 1) -> None:
    if n:
        _launch(f"upload: {name}", n)
        for w in _active:
            w.uploads += n


def _sync(name: str) -> None:
    for w in _active:
        w.syncs += 1
        w.syncs_by_name[name] += 1


@contextlib.contextmanager
def count_work():
    """Count the emulated-device work done inside the block; yields a ``DeviceWork``. Blocks may nest: each
    counts everything done inside it."""
    work = DeviceWork()
    _active.append(work)
    try:
        yield work
    finally:
        _active.remove(work)


def _arrays_in(obj) -> list:
    """The NumPy arrays (and scalars) in a (nested) result or argument list."""
    if isinstance(obj, (np.ndarray, np.generic)):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for o in obj for a in _arrays_in(o)]
    if isinstance(obj, dict):
        return [a for o in obj.values() for a in _arrays_in(o)]
    return []


def _is_view_of(results: list, inputs: list) -> bool:
    """True when every result array shares memory with an input (no kernel made it)."""
    inputs = [a for a in inputs if isinstance(a, np.ndarray)]
    return all(isinstance(r, np.ndarray) and any(np.may_share_memory(r, i) for i in inputs) for r in results)


def _reshapes_as_view(a: np.ndarray, shape) -> bool:
    try:
        np.reshape(a, shape, copy=False)
        return True
    except ValueError:
        return False
    except TypeError:  # pragma: no cover - NumPy < 2.1 has no copy= in reshape
        v = a.view()
        try:
            v.shape = shape
            return True
        except AttributeError:
            return False


# --- matmul and einsum, as CuPy runs them -----------------------------------------------------------


def _matmul_kernels(a, b, out=None, prefix="matmul") -> Counter:
    """cupy.matmul: the copies it makes of its operands (and output), pointer kernels when a >2-d product
    broadcasts its batch axes, and one (batched) GEMM."""
    k = Counter()
    a, b = np.asarray(a), np.asarray(b)
    if isinstance(out, tuple):
        out = out[0] if out else None
    if a.ndim == 0 or b.ndim == 0:
        return k  # NumPy raises
    if a.size == 0 or b.size == 0:
        k[f"{prefix} (fill)"] += 1
        return k
    dtype = np.result_type(a.dtype, b.dtype)
    nd = max(a.ndim, b.ndim)
    for x in (a, b):
        if x.dtype != dtype:
            k[f"{prefix} (copy)"] += 1
        elif nd <= 2 and not (x.flags.c_contiguous or x.flags.f_contiguous):
            k[f"{prefix} (copy)"] += 1
        elif nd > 2 and not x.flags.c_contiguous:
            k[f"{prefix} (copy)"] += 1
    if nd > 2:
        batch_a = (1,) * (nd - max(a.ndim, 2)) + a.shape[:-2]
        batch_b = (1,) * (nd - max(b.ndim, 2)) + b.shape[:-2]
        if batch_a != batch_b:
            k[f"{prefix} (batch pointers)"] += 3 * (nd - 2)
    k[prefix] += 1
    if out is not None and isinstance(out, np.ndarray):
        if (not out.flags.c_contiguous or out.dtype != dtype or np.may_share_memory(out, a)
                or np.may_share_memory(out, b)):
            k[f"{prefix} (copy)"] += 1
    return k


def _einsum_kernels(args) -> Counter:
    """cupy.einsum (optimize=False): size-1 axes squeezed, one sum per operand for the axes only it has,
    dtype casts, then per pair of operands either a multiply (nothing contracted) or a batch-major transpose
    and reshape of each (a copy where that cannot be a view) and a batched GEMM through cupy.matmul."""
    k = Counter()
    try:
        from numpy._core.einsumfunc import _parse_einsum_input

        inputs, output, ops = _parse_einsum_input(list(args))
    except Exception:  # pragma: no cover - a NumPy without the parser: count the call
        k["einsum"] += 1
        return k
    subs = [list(s) for s in inputs.split(",")]
    output = list(output)
    ops = [np.asarray(o) for o in ops]
    dtype = np.result_type(*ops)
    if len(ops) >= 2:
        if any(o.size == 0 for o in ops):
            k["einsum (zeros)"] += 1
            return k
        for i, o in enumerate(ops):
            axes = tuple(ax for ax, n in enumerate(o.shape) if n == 1)
            if axes:
                subs[i] = [s for ax, s in enumerate(subs[i]) if ax not in axes]
                ops[i] = np.squeeze(o, axis=axes)
    for i, sub in enumerate(subs):
        others = set(output).union(*(subs[j] for j in range(len(subs)) if j != i))
        keep = [ax for ax, s in enumerate(sub) if s in others]
        if len(keep) < len(sub):
            k["einsum (sum)"] += 1
            ops[i] = np.empty(tuple(ops[i].shape[ax] for ax in keep), dtype)
            subs[i] = [sub[ax] for ax in keep]
    for i, o in enumerate(ops):
        if o.dtype != dtype:
            k["einsum (astype)"] += 1
            ops[i] = np.empty(o.shape, dtype)
    n = len(ops)
    pairs = []
    if n >= 2:
        pairs.append((n - 1, n - 2))
        pairs += [(-1, idx) for idx in range(n - 3, -1, -1)]
    for i0, i1 in pairs:
        a0, s0 = ops.pop(i0), subs.pop(i0)
        a1, s1 = ops.pop(i1), subs.pop(i1)
        others = output + [s for sub in subs for s in sub]
        out, sub_out = _binary_einsum_kernels(a0, s0, a1, s1, others, dtype, k)
        ops.append(out)
        subs.append(sub_out)
    return k


def _binary_einsum_kernels(a0, s0, a1, s1, others, dtype, k):
    extent = dict(zip(s0, a0.shape))
    extent.update(zip(s1, a1.shape))
    if not s0 or not s1:
        k["einsum (multiply)"] += 1
        return np.empty(np.broadcast_shapes(a0.shape, a1.shape), dtype), s0 + s1
    shared = set(s0) & set(s1)
    batch = shared & set(others)
    contract = shared - batch

    def axes(sub, labels):
        return [ax for _, ax in sorted((s, ax) for ax, s in enumerate(sub) if s in labels)]

    rest0 = set(s0) - shared
    rest1 = set(s1) - shared
    bs0, cs0, ts0 = axes(s0, batch), axes(s0, contract), axes(s0, rest0)
    bs1, cs1, ts1 = axes(s1, batch), axes(s1, contract), axes(s1, rest1)
    sub_out = [s0[ax] for ax in bs0] + [s0[ax] for ax in ts0] + [s1[ax] for ax in ts1]
    if not contract:
        if len(sub_out) == len(others):
            sub_out = list(others)
        k["einsum (multiply)"] += 1
        return np.empty(tuple(extent[s] for s in sub_out), dtype), sub_out

    def flat(a, groups):
        t = a.transpose([ax for g in groups for ax in g])
        shape = tuple(int(np.prod([a.shape[ax] for ax in g], dtype=np.int64)) for g in groups)
        if _reshapes_as_view(t, shape):
            return np.reshape(t, shape)
        k["einsum (copy)"] += 1
        return np.empty(shape, dtype)

    t0 = flat(a0, [bs0, ts0, cs0])
    t1 = flat(a1, [bs1, cs1, ts1])
    k.update(_matmul_kernels(t0, t1, prefix="einsum (matmul)"))
    return np.empty(tuple(extent[s] for s in sub_out), dtype), sub_out


# --- the other NumPy functions whose cost is not "1 launch for a fresh result" ----------------------


def _concatenate_kernels(args, kwargs, result) -> Counter:
    arrays = [a for a in (args[0] if args else kwargs.get("arrays", ())) if isinstance(a, (np.ndarray, np.generic))]
    n = len(arrays)
    dtype = result.dtype if isinstance(result, np.ndarray) else None
    if n > 8 and all(a.dtype == dtype for a in arrays) and sum(a.nbytes for a in arrays) < 2 * 1024 * 1024 * n:
        return Counter({"concatenate": 1, "upload: concatenate (pointers)": 1})
    return Counter({"concatenate (copy per array)": n})


def _nonzero_kernels(x) -> Counter:
    """not_equal (for a non-boolean input), a scan, the count read back (a sync), a fill kernel."""
    x = np.asarray(x)
    if x.size == 0:
        return Counter()
    k = Counter({"nonzero (scan)": 1 + (x.dtype != np.bool_)})
    if np.count_nonzero(x):
        k["nonzero (fill)"] += 1
    return k


_SYNC_FUNCTIONS = {"unique", "trim_zeros", "extract", "compress"}  # (and nonzero & co., sliding_window_view)
_FIXED_FUNCTION_COSTS = {"var": 2, "std": 3, "nanvar": 3, "nanstd": 4, "empty_like": 0, "average": 2,
                         "array_equal": 2, "array_equiv": 2, "allclose": 2, "pad": 2}
# NumPy returns a host bool where CuPy returns a 0-d device array (whose bool() is the sync)
_HOST_RESULT_FUNCTIONS = {"array_equal", "array_equiv", "allclose"}


def _count_function(name, args, kwargs, result) -> None:
    if name == "einsum":
        _launch_counts(_einsum_kernels(args))
    elif name in ("dot", "inner", "vdot"):
        _launch_counts(_matmul_kernels(args[0], args[1], kwargs.get("out"), prefix=name))
    elif name in ("concatenate", "stack", "vstack", "hstack", "column_stack", "row_stack"):
        _launch_counts(_concatenate_kernels(args, kwargs, result))
    elif name in ("nonzero", "argwhere", "flatnonzero") or (name == "where" and len(args) + len(kwargs) == 1):
        _launch_counts(_nonzero_kernels(args[0] if args else next(iter(kwargs.values()))))
        _sync(f"np.{name}")
    elif name == "sliding_window_view":
        _upload("sliding_window_view (window shape)")
        _sync("np.sliding_window_view")
    elif name in _SYNC_FUNCTIONS:
        _launch(f"np.{name}", 3 if name == "unique" else 2)  # a scan (or a sort) and the count read back
        _sync(f"np.{name}")
    elif name in ("take_along_axis", "put_along_axis"):   # an arange per other axis, then multi-array indexing
        _launch(f"np.{name}", 2 * np.ndim(args[0]) + 1)
    elif name in _FIXED_FUNCTION_COSTS:
        _launch(f"np.{name}", _FIXED_FUNCTION_COSTS[name])
    elif result is None or kwargs.get("out") is not None:  # in place (copyto, place) or into out=
        _launch(f"np.{name}")
    else:
        results = _arrays_in(result)
        if results and not _is_view_of(results, _arrays_in(args) + _arrays_in(kwargs)):
            _launch(f"np.{name}")                  # else metadata (shape, ndim, result_type) or a view


# --- indexing ------------------------------------------------------------------------------------


def _index_parts(index):
    """(masks, integer arrays, uploads, has a 0-d integer array) of an unwrapped subscript."""
    parts = index if isinstance(index, tuple) else (index,)
    masks, ints, uploads, zero_d = [], [], 0, False
    for p in parts:
        if p is None or p is Ellipsis or isinstance(p, slice):
            continue
        if isinstance(p, (bool, np.bool_)):
            masks.append(np.asarray(p))
            continue
        if isinstance(p, (int, np.integer)):
            continue
        if not isinstance(p, np.ndarray):  # a (nested) list: host data that CuPy uploads
            p = np.asarray(p)
            uploads += 1
        if p.dtype == np.bool_:
            masks.append(p)
        else:
            ints.append(p)
            zero_d = zero_d or p.ndim == 0
    if masks and ints:
        raise IndexError("a boolean mask mixed with integer-array indices in one subscript: CuPy refuses this; "
                         "turn the mask into indices (on the host, then move them) or index in two steps")
    return masks, ints, uploads, zero_d


def _mask_scans(a: np.ndarray, mask: np.ndarray) -> int:
    return 1 if mask.ndim == a.ndim else 2


def _getitem_counts(a: np.ndarray, masks, ints, uploads, result) -> None:
    _upload("index list", uploads)
    if masks:
        if len(masks) == 1:
            mask = masks[0]
            if mask.size:
                _launch("getitem mask (scan)", _mask_scans(a, mask))
                _sync("x[mask]")
                if np.size(result):
                    _launch("getitem mask (gather)")
            return
        for m in masks:                          # several masks: each through argwhere
            _launch_counts(_nonzero_kernels(m))
            _sync("x[mask, mask]")
        _launch("getitem multiple index arrays", 2 + sum(m.ndim for m in masks))
        return
    if ints:
        _launch("getitem take" if len(ints) == 1 else "getitem take (multiple index arrays)",
                1 if len(ints) == 1 else len(ints) + 2)


def _setitem_counts(a: np.ndarray, masks, ints, uploads, index, value) -> None:
    _upload("index list", uploads)
    if not masks and not ints:
        if isinstance(value, np.ndarray):
            target = a[index]
            if (target.shape, target.strides, target.__array_interface__["data"]) == \
                    (value.shape, value.strides, value.__array_interface__["data"]):
                return                           # x[...] = x: CuPy skips it
            _launch("setitem copy")
        elif isinstance(value, (list, tuple)):
            _upload("setitem value")
            _launch("setitem copy")
        else:
            _launch("setitem fill")
        return
    if not isinstance(value, np.ndarray):
        _upload("setitem value")
    elif value.dtype != a.dtype:
        _launch("setitem (astype)")
    if masks:
        mask = masks[0]
        if mask.size:
            _launch("setitem mask (scan)", _mask_scans(a, mask) if len(masks) == 1 else 2 * len(masks))
            _sync("x[mask] = v")
            _launch("setitem mask (scatter)")
        return
    _launch("setitem scatter" if len(ints) == 1 else "setitem scatter (multiple index arrays)",
            1 if len(ints) == 1 else len(ints) + 2)


# ----------------------------------------------------------------------------------------------
# The array


# attributes of numpy.ndarray that a device array does not give: a host buffer
_REFUSED_ATTRIBUTES = {
    "ctypes": "a host pointer; CuPy arrays have none (their .data is a device MemoryPointer)",
    "data": "NumPy's .data is the host buffer; CuPy's is a device MemoryPointer: copy with backend.to_numpy",
    "itemset": "not a CuPy method",
}
_SYNC_METHODS = {"tobytes", "tofile", "dump", "dumps"}

_UFUNC_METHODS = {"__call__", "outer", "at", "reduce", "accumulate", "reduceat"}


def _check_ufunc(name: str, method: str) -> None:
    """Refuse a NumPy ufunc (or ufunc method) that CuPy's ``__array_ufunc__`` cannot run."""
    if name not in _cupy_api.NAMESPACE and name not in _cupy_api.SPECIAL:
        raise TypeError(f"np.{name} on an emulated device array: CuPy {_cupy_api.VERSION} has no ufunc {name!r} "
                        "(its __array_ufunc__ returns NotImplemented)")
    if method not in _UFUNC_METHODS:
        raise TypeError(f"np.{name}.{method} on an emulated device array: CuPy's __array_ufunc__ does not "
                        f"handle {method!r}")
    if method in _cupy_api.UFUNC_METHODS and name not in _cupy_api.UFUNC_METHODS[method]:
        raise NotImplementedError(f"`cupy_{name}.{method}` is not supported by CuPy {_cupy_api.VERSION} "
                                  f"(only {', '.join(sorted(_cupy_api.UFUNC_METHODS[method]))}): on the device, "
                                  "use the function form (max, min, cumsum, ...) instead")


def _check_function(func) -> None:
    """Refuse a NumPy function that CuPy's ``__array_function__`` cannot map (``func.__module__`` under
    ``cupy``, then ``func.__name__``)."""
    name = getattr(func, "__name__", None)
    module = getattr(func, "__module__", None) or ""
    parts = module.split(".")
    path = ".".join(parts[1:])
    names = (_cupy_api.NAMESPACE if not path else _cupy_api.SUBMODULES.get(path)) if parts[0] == "numpy" else None
    if name is None or names is None or name not in names:
        cupy_name = "cupy." + (path + "." if path else "") + str(name)
        raise TypeError(f"{module}.{name} on an emulated device array: CuPy {_cupy_api.VERSION} has no "
                        f"{cupy_name} (its __array_function__ returns NotImplemented)")


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

    # No __index__ (CuPy arrays have none): range(n), operator.index(n) and list[n] raise TypeError for a device
    # array n; read it with int(n), an explicit sync point.

    # --- NumPy protocols ------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if getattr(np, ufunc.__name__, None) is not ufunc:
            raise TypeError(f"ufunc {ufunc.__name__!r} is not a NumPy ufunc and has no device implementation")
        _check_ufunc(ufunc.__name__, method)
        inputs = _unwrap(inputs, f"np.{ufunc.__name__}")
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"], f"np.{ufunc.__name__}(out=)")
        if _active:
            if ufunc is np.matmul and method == "__call__":
                _launch_counts(_matmul_kernels(inputs[0], inputs[1], kwargs.get("out")))
            else:
                _launch(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        name = getattr(func, "__name__", str(func))
        _check_function(func)
        args = _unwrap(args, f"np.{name}")
        kwargs = _unwrap(kwargs, f"np.{name}")
        result = func(*args, **kwargs)
        if _active:
            _count_function(name, args, kwargs, result)
        if name in _HOST_RESULT_FUNCTIONS:
            result = np.asarray(result)
        return _wrap(result)

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
        _sync("repr")
        return f"DeviceArray({self._a!r}, device='emulated')"

    def __str__(self):
        _sync("str")
        return str(self._a)

    def __format__(self, spec):
        _sync("format")
        return format(self._a, spec) if self._a.ndim == 0 else format(str(self._a), spec)

    # explicit sync points, allowed as on CuPy
    def __float__(self):
        _sync("float()")
        return float(self._a)

    def __int__(self):
        _sync("int()")
        return int(self._a)

    def __bool__(self):
        _sync("bool()")
        return bool(self._a)

    def __complex__(self):
        _sync("complex()")
        return complex(self._a)

    def item(self, *args):
        _sync(".item()")
        return self._a.item(*args)

    def tolist(self):
        _sync(".tolist()")
        return self._a.tolist()

    def get(self):
        """An explicit host copy, as ``cupy.ndarray.get()``."""
        return to_host(self)

    # --- indexing ----------------------------------------------------------------------------------
    def __getitem__(self, index):
        index = _unwrap(index, "indexing")
        if isinstance(index, (np.ndarray, list, tuple)) or _active:
            masks, ints, uploads, zero_d = _index_parts(index)
        else:  # a slice, an integer, None or Ellipsis: a view
            return DeviceArray(self._a[index])
        result = self._a[index]
        if zero_d and isinstance(result, np.ndarray) and np.may_share_memory(result, self._a):
            result = result.copy()  # CuPy treats a 0-d integer array as an array index: a copy, not a view
        if _active:
            _getitem_counts(self._a, masks, ints, uploads, result)
        return _wrap(result)

    def __setitem__(self, index, value):
        index = _unwrap(index, "indexing")
        value = _unwrap(value, "assignment")
        masks, ints, uploads, _ = _index_parts(index)
        if _active:
            _setitem_counts(self._a, masks, ints, uploads, index, value)
        self._a[index] = value

    def __iter__(self):
        for row in self._a:
            yield _wrap(row)

    # --- methods: forwarded to NumPy, results stay on the device ------------------------------------
    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__, __dlpack__, ...: no back door to the host
            raise AttributeError(name)
        if name in _REFUSED_ATTRIBUTES:
            raise AttributeError(f"emulated device arrays have no .{name}: {_REFUSED_ATTRIBUTES[name]}")
        if name not in _cupy_api.NDARRAY:
            raise AttributeError(f"emulated device arrays have no .{name}: cupy.ndarray ({_cupy_api.VERSION}) "
                                 "has no such attribute")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        a = self._a

        def method(*args, **kwargs):
            args = _unwrap(args, f".{name}")
            kwargs = _unwrap(kwargs, f".{name}")
            result = attr(*args, **kwargs)
            if _active:
                _count_method(name, a, args, kwargs, result)
            return _wrap(result)

        return method


_FIXED_METHOD_COSTS = {"var": 2, "std": 3}


def _count_method(name, a, args, kwargs, result) -> None:
    if name in _SYNC_METHODS:
        _sync(f".{name}()")
    elif name == "nonzero":
        _launch_counts(_nonzero_kernels(a))
        _sync(".nonzero()")
    elif name == "dot":
        _launch_counts(_matmul_kernels(a, args[0], kwargs.get("out"), prefix="dot"))
    elif name == "put":
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "raise")
        _launch(".put", 2 if mode == "raise" else 1)
        if mode == "raise":
            _sync(".put(mode='raise')")
    elif name in _FIXED_METHOD_COSTS:
        _launch(f".{name}", _FIXED_METHOD_COSTS[name])
    elif result is None or kwargs.get("out") is not None:  # in place (fill, sort) or into out=
        _launch(f".{name}")
    else:
        results = _arrays_in(result)
        if results and not _is_view_of(results, [a]):
            _launch(f".{name}")


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
    """Explicit copy to the host (a sync)."""
    _sync("to host")
    return a._a.copy()


def upload(host) -> DeviceArray:
    """Explicit copy of host data to the device (one upload)."""
    _upload("to device")
    return DeviceArray(np.array(host, copy=True))


def apply_host(fn, *arrays, name: str = "apply", launches: int = 1):
    """Run ``fn`` on the underlying NumPy arrays, counted as ``launches`` kernels (for backend primitives that
    CuPy implements differently: a strided view is 0, cupyx's erf 1)."""
    _launch(name, launches)
    return _wrap(fn(*(a._a if isinstance(a, DeviceArray) else a for a in arrays)))


# cupyx.scatter_add (CuPy's atomicAdd): int32, float16, float32, float64, uint32, uint64 (cupy/_core/
# _routines_indexing.pyx, _scatter_op_single); int64 and bool raise TypeError there, so they do here.
SCATTER_ADD_DTYPES = frozenset(np.dtype(t) for t in (np.int32, np.float16, np.float32, np.float64, np.uint32,
                                                     np.uint64))


def add_at(target: DeviceArray, indices, values) -> None:
    """``cupyx.scatter_add(target, indices, values)``: accumulates repeated indices, in place."""
    if target.dtype not in SCATTER_ADD_DTYPES:
        raise TypeError(f"scatter_add on {target.dtype}: CuPy's scatter_add supports only "
                        f"{', '.join(sorted(str(d) for d in SCATTER_ADD_DTYPES))}")
    indices = _unwrap(indices, "scatter_add")
    values = _unwrap(values, "scatter_add")
    masks, ints, uploads, _ = _index_parts(indices)
    if _active:
        _setitem_counts(target._a, masks, ints, uploads, indices, values)
    np.add.at(target._a, indices, values)


# ----------------------------------------------------------------------------------------------
# The namespace


# NumPy names CuPy 14 does not have, with why (any other name outside _cupy_api.NAMESPACE is refused too):
REFUSED_NAMES = {
    "errstate": "CuPy has no floating-point error state (float errors are silent on the GPU); "
                "use tinyw2v2.backend.errstate(xp, ...), a no-op there",
    "seterr": "CuPy has no floating-point error state",
    "geterr": "CuPy has no floating-point error state",
    "nditer": "CuPy has no element iterator (it would walk device memory from the host)",
    "ndenumerate": "CuPy has no element iterator (it would walk device memory from the host)",
    "ma": "CuPy has no masked arrays: use a mask array and where()",
}
_ARRAY_LIKE = {"asarray", "array", "ascontiguousarray", "asanyarray", "asfortranarray"}
_CREATION_LAUNCHES = {"zeros": 1, "ones": 1, "full": 1, "arange": 1, "linspace": 1, "logspace": 2, "eye": 2,
                      "identity": 2, "tri": 1, "empty": 0, "zeros_like": 1, "ones_like": 1, "full_like": 1,
                      "empty_like": 0}
_UPLOADS = {"frombuffer", "fromiter"}
_SHAPE_FROM_ARGS = {"zeros", "ones", "empty", "full", "eye", "identity", "tri"}


def _has_device_array(obj) -> bool:
    if isinstance(obj, DeviceArray):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_has_device_array(o) for o in obj)
    return False


def _array_like(fn, name):
    def create(a, *args, **kwargs):
        if isinstance(a, DeviceArray):
            r = fn(a._a, *args, **kwargs)
            if r is a._a:
                return a                                     # CuPy's asarray returns the same array
            if not np.may_share_memory(r, a._a):
                _launch(f"{name} (copy)")
            return DeviceArray(r)
        if _has_device_array(a):                             # a list of device arrays: copied on the device
            parts = _unwrap(a, name)
            _launch(f"{name} (copy per array)", len(parts))
            return DeviceArray(fn(parts, *args, **kwargs))
        r = fn(a, *args, **kwargs)                           # host data: one upload
        if isinstance(a, np.ndarray) and np.may_share_memory(r, a):
            r = r.copy()
        _upload(name)
        return DeviceArray(r)

    create.__name__ = name
    return create


def _creation(fn, name, launches):
    def create(*args, **kwargs):
        if name in _SHAPE_FROM_ARGS and (_has_device_array(args[:1] if name == "full" else args)
                                         or _has_device_array(list(kwargs.get(k) for k in ("shape", "N", "M")))):
            raise TypeError(f"xp.{name}: shapes must be host integers, not device arrays (CuPy cannot read them "
                            "without a sync); read them with int(n) first")
        if name in ("arange", "linspace", "logspace") and (_has_device_array(args)
                                                           or _has_device_array(list(kwargs.values()))):
            _sync(f"xp.{name}(device bounds)")   # CuPy computes the length on the host: int() of a device value
        _launch(name, launches)
        return DeviceArray(fn(*_unwrap(args, name), **_unwrap(kwargs, name)))

    create.__name__ = name
    return create


def _uploaded(fn, name):
    def create(*args, **kwargs):
        _upload(name)
        return DeviceArray(np.array(fn(*args, **kwargs), copy=True))

    create.__name__ = name
    return create


class _Namespace:
    """``xp`` for the emulated device: array creation lands on the device, the rest is NumPy."""

    def __init__(self):
        self.newaxis = None
        self.random = _RandomModule()

    def __getattr__(self, name):
        if name in REFUSED_NAMES:
            raise AttributeError(f"the emulated device (like CuPy) has no {name!r}: {REFUSED_NAMES[name]}")
        if name not in _cupy_api.NAMESPACE:
            raise AttributeError(f"the emulated device (like CuPy {_cupy_api.VERSION}) has no {name!r}")
        try:
            obj = getattr(np, name)
        except AttributeError:
            raise AttributeError(f"cupy.{name} is CuPy's own; the emulated device does not offer it "
                                 "(reach it through tinyw2v2.backend)") from None
        if name in _ARRAY_LIKE:
            obj = _array_like(obj, name)
        elif name in _CREATION_LAUNCHES:
            obj = _creation(obj, name, _CREATION_LAUNCHES[name])
        elif name in _UPLOADS:
            obj = _uploaded(obj, name)
        self.__dict__[name] = obj  # cached: __getattr__ runs once per name
        return obj

    def __repr__(self):
        return "<emulated device array namespace>"


# ----------------------------------------------------------------------------------------------
# Random numbers


# CuPy's Generator methods (cupy/random/_generator_api.pyx) and the launches each makes
GENERATOR_METHODS = {"random": 1, "standard_normal": 1, "standard_exponential": 1, "integers": 2, "uniform": 6,
                     "exponential": 2, "standard_gamma": 1, "gamma": 2, "beta": 1, "binomial": 1, "poisson": 1,
                     "geometric": 1, "hypergeometric": 1, "logseries": 1, "chisquare": 2, "dirichlet": 3, "f": 5,
                     "power": 4}


class Generator:
    """A random Generator that draws on the emulated device: CuPy's ``Generator`` methods (``random``,
    ``standard_normal``, ``integers``, ``uniform``, ...; no ``normal``, ``choice``, ``permutation``, ``shuffle``),
    drawing from NumPy's Philox bit generator seeded with the same seed. The stream differs from
    ``numpy.random.default_rng(seed)`` (PCG64) on purpose: on CUDA, CuPy's streams differ from NumPy's too, so a
    test that relies on equal draws on the CPU and the device fails here as it would there."""

    def __init__(self, seed=None):
        self._g = np.random.Generator(np.random.Philox(seed))
        _launch("random (generator init)")   # CuPy's default_rng runs curand_init for its state

    def __getattr__(self, name):
        if name not in GENERATOR_METHODS or name not in _cupy_api.GENERATOR:
            raise AttributeError(f"CuPy's random Generator has no {name!r} (it has {', '.join(sorted(GENERATOR_METHODS))}); "
                                 "draw on the host and move the result, or build it from random()")
        fn = getattr(self._g, name)
        launches = GENERATOR_METHODS[name]

        def draw(*args, **kwargs):
            _launch(f"random.{name}", launches)
            return _wrap(fn(*_unwrap(args, f"rng.{name}"), **_unwrap(kwargs, f"rng.{name}")))

        return draw


class _RandomModule:
    def default_rng(self, seed=None):
        return Generator(seed)


xp = _Namespace()

__all__ = ["DeviceArray", "DeviceWork", "count_work", "xp", "to_host", "upload", "apply_host", "add_at", "Generator",
           "SCATTER_ADD_DTYPES", "REFUSED_NAMES", "GENERATOR_METHODS"]
