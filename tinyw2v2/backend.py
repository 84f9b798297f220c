"""Array backends: the one place that knows about CuPy.

Every op asks ``get_array_module(*arrays)`` for ``xp`` (NumPy, CuPy, or the emulated device used in
tests) and computes with it, so one code path serves the CPU and the GPU (DeZero's idea).

Devices are named by strings:

- ``"cpu"``: NumPy arrays.
- ``"cuda"`` (or ``"cuda:N"``): CuPy arrays, when CuPy is installed and a GPU answers.
- ``"emulated"``: NumPy arrays behind a wrapper that behaves like a device array library: it refuses
  implicit conversion to NumPy and refuses to mix with host arrays (see ``tinyw2v2/_emulated.py``).
  Tests run on it so that host-copy bugs that CuPy would raise are caught on machines without a GPU.

Host copies happen only through ``to_numpy`` (and ``Tensor.item()`` / ``float()``), each a sync point.
``count_device_work()`` counts, on the emulated device, the kernel launches and syncs a GPU would pay.
"""
from __future__ import annotations


import numpy as np

from . import _emulated

try:  # CuPy is optional: ``pip install "tinyw2v2[cuda12]"`` or ``"tinyw2v2[cuda13]"``.
    import cupy as _cupy
    import cupyx as _cupyx
    import cupyx.scipy.special as _cupy_special
except Exception:  # pragma: no cover - depends on the machine
    _cupy = None
    _cupyx = None
    _cupy_special = None

_cuda_ok: bool | None = None


def cuda_available() -> bool:
    """True when CuPy imports *and* a tiny allocation on the GPU works (CuPy imports without a GPU)."""
    global _cuda_ok
    if _cuda_ok is None:
        if _cupy is None:
            _cuda_ok = False
        else:
            try:
                _cupy.zeros(1).sum().item()
                _cuda_ok = True
            except Exception:  # pragma: no cover - depends on the machine
                _cuda_ok = False
    return _cuda_ok


def is_cupy_array(a) -> bool:
    return _cupy is not None and isinstance(a, _cupy.ndarray)


def is_device_array(a) -> bool:
    """True for arrays on a device (CuPy, or the emulated device): the ops choose their GPU code paths for these, so
    that the emulated device runs, and tests, what a GPU would run."""
    return isinstance(a, _emulated.DeviceArray) or is_cupy_array(a)


def is_array(a) -> bool:
    """True for any array this library computes with (host, emulated device or CuPy)."""
    return isinstance(a, (np.ndarray, _emulated.DeviceArray)) or is_cupy_array(a)


def get_array_module(*arrays):
    """Return ``numpy``, ``cupy`` or the emulated-device namespace for the given arrays.

    Non-arrays (Python scalars, None) are ignored. Mixing host and device arrays raises ``TypeError``.
    """
    found = None
    for a in arrays:
        if is_cupy_array(a):
            xp = _cupy
        elif isinstance(a, _emulated.DeviceArray):
            xp = _emulated.xp
        elif isinstance(a, (np.ndarray, np.generic)):
            xp = np
        else:
            continue
        if found is None:
            found = xp
        elif xp is not found:
            raise TypeError(
                "arrays live on different devices "
                f"({_name(found)} and {_name(xp)}); move them with Tensor.to(device) first"
            )
    return np if found is None else found


def _name(xp) -> str:
    return {np: "cpu"}.get(xp, "cuda" if xp is _cupy else "emulated")


def device_of(a) -> str:
    """The device string of an array: 'cpu', 'cuda:N' or 'emulated'."""
    if is_cupy_array(a):
        return f"cuda:{a.device.id}"
    if isinstance(a, _emulated.DeviceArray):
        return "emulated"
    return "cpu"


def count_device_work():
    """Count what a GPU would pay for the emulated-device work done inside the block.

    ``with backend.count_device_work() as work: ...`` yields an object with

    - ``work.launches``: kernel launches (and other queued stream operations) CuPy would make for the same calls:
      1 per ufunc call (``out=`` and reductions included), per NumPy function or array method that makes a fresh
      array or writes in place, per array creation that fills (``zeros``, ``arange``; ``empty`` is 0), per indexing
      that gathers or scatters; 0 for views and metadata; ``matmul`` and ``einsum`` as CuPy runs them (the copies
      of non-contiguous operands, batch-pointer kernels, the GEMM);
    - ``work.syncs``: device-to-host reads, each a wait for the stream: ``float()``, ``int()``, ``bool()``, ``.item()``,
      ``.tolist()``, ``to_numpy`` of a device array, and those CuPy makes itself: boolean-mask indexing and assignment,
      ``nonzero``, ``argwhere``, one-argument ``where``, ``unique``, ``sliding_window_view``;
    - ``work.uploads``: host-to-device copies (``to_device``, ``xp.asarray`` of host data or Python scalars, Python
      lists used as indices), also counted in ``launches``;
    - ``work.by_name`` / ``work.syncs_by_name``: ``collections.Counter`` breakdowns, and ``work.table()``.

    Only emulated-device work is counted (NumPy and CuPy arrays are not); the full rules are in the docstring
    of ``tinyw2v2/_emulated.py``. Blocks may nest.
    """
    return _emulated.count_work()


class DeviceError(RuntimeError):
    """A device that does not exist or cannot be used here (the message says what to use instead)."""


def _no_gpu(device) -> DeviceError:
    return DeviceError(f"device {device!r} asked for, but no GPU is usable here (install CuPy with the extra "
                       "matching your CUDA: pip install 'tinyw2v2[cuda12]' or 'tinyw2v2[cuda13]', and check "
                       "`nvidia-smi`); use --device cpu")


def normalize_device(device) -> str:
    device = str(device)
    if device == "cuda":
        return "cuda:0"
    if device in ("cpu", "emulated") or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise DeviceError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'emulated'")


def check_device(device) -> str:
    """``device`` normalised ('cuda' -> 'cuda:0') if this machine can use it; else a DeviceError that says why."""
    device = normalize_device(device)
    if device.startswith("cuda:") and not cuda_available():
        raise _no_gpu(device)
    return device


def to_device(a, device):
    """Explicit copy of an array (or anything ``np.asarray`` takes) to ``device``."""
    device = normalize_device(device)
    if device_of(a) == device and is_array(a):
        return a
    host = to_numpy(a)
    if device == "cpu":
        return host
    if device == "emulated":
        return _emulated.upload(host)
    if not cuda_available():
        raise _no_gpu(device)
    use_device(device)
    return _cupy.asarray(host)


def use_device(device) -> None:
    """Make ``cuda:N`` the current CuPy device, so that the arrays the ops create land beside their inputs (CuPy
    allocates on the current device); a no-op for the CPU and the emulated device."""
    device = normalize_device(device)
    if device.startswith("cuda:") and cuda_available():
        _cupy.cuda.Device(int(device.split(":")[1])).use()  # pragma: no cover - GPU only


def to_numpy(a) -> np.ndarray:
    """Explicit host copy (a sync point on a GPU)."""
    if is_cupy_array(a):
        return _cupy.asnumpy(a)
    if isinstance(a, _emulated.DeviceArray):
        return _emulated.to_host(a)
    return np.asarray(a)


def check_same_device(arrays, where: str) -> None:
    """Raise a clear error when ``arrays`` mix host and device arrays."""
    devices = {device_of(a) for a in arrays if is_array(a)}
    if len(devices) > 1:
        raise TypeError(
            f"{where}: inputs live on different devices {sorted(devices)}; "
            "move them to one device with Tensor.to(device) (nothing is copied implicitly)"
        )


# ----------------------------------------------------------------------------------------------
# Primitives that differ between backends


def scatter_add(target, indices, values) -> None:
    """``target[indices] += values`` that accumulates repeated indices (like ``numpy.add.at``), in place."""
    xp = get_array_module(target)
    if xp is np:
        np.add.at(target, indices, values)
    elif xp is _emulated.xp:
        _emulated.add_at(target, indices, values)
    else:  # pragma: no cover - GPU only
        _cupyx.scatter_add(target, indices, values)


def sliding_window(x, window: int, step: int, axis: int = -1):
    """Read-only strided view of windows along ``axis``: (..., T, ...) -> (..., T_out, ..., window).

    Window index is the last axis, T_out = (T - window) // step + 1 windows starting every ``step``. Built with
    ``as_strided`` from shapes and strides computed on the host, so that on CuPy it launches nothing and reads
    nothing back (CuPy 14's ``sliding_window_view`` uploads the window shape and reads a value back: a sync).
    """
    xp = get_array_module(x)
    if xp is _emulated.xp:
        return _emulated.apply_host(lambda a: sliding_window(a, window, step, axis), x, name="as_strided",
                                    launches=0)
    ax = axis % x.ndim
    T = x.shape[ax]
    if window < 1 or window > T:
        raise ValueError(f"sliding_window: window {window} does not fit an axis of length {T}")
    count = (T - window) // step + 1
    shape = x.shape[:ax] + (count,) + x.shape[ax + 1:] + (window,)
    strides = x.strides[:ax] + (x.strides[ax] * step,) + x.strides[ax + 1:] + (x.strides[ax],)
    if xp is np:
        return np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)
    return _cupy.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)  # pragma: no cover - GPU only


# erf: exact (SciPy / cupyx) for float64, and a fast rational approximation for float32.
# Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7 in exact arithmetic, <= 1e-6 evaluated in float32
# (a few float32 ulps of 1; what matters in GELU's 1 + erf), and it costs one exp.
ERF_AS_P = 0.3275911
ERF_AS_COEFFICIENTS = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(x, exact: bool | None = None):
    """Error function. float64 (or ``exact=True``) is exact; float32 uses a rational form (|error| <= 1e-6).

    ``scipy.special.erf`` costs about 9 exps per element, which would dominate a small model's forward.
    """
    xp = get_array_module(x)
    if exact is None:
        exact = x.dtype != np.float32
    if exact:
        if xp is np:
            import scipy.special

            return scipy.special.erf(x)
        if xp is _emulated.xp:
            return _emulated.apply_host(lambda a: erf(a, exact=True), x, name="cupyx.scipy.special.erf")
        return _cupy_special.erf(x)  # pragma: no cover - GPU only
    dtype = x.dtype
    # in place on fresh temporaries: each step is one pass over memory
    a = xp.abs(x)
    t = a * dtype.type(ERF_AS_P)
    t += 1
    xp.reciprocal(t, out=t)                      # t = 1 / (1 + p|x|)
    poly = t * dtype.type(ERF_AS_COEFFICIENTS[4])
    for c in ERF_AS_COEFFICIENTS[3::-1]:                       # Horner: ((a5 t + a4) t + a3) t ...
        poly += dtype.type(c)
        poly *= t
    a *= a
    xp.negative(a, out=a)
    xp.exp(a, out=a)                             # exp(-x^2)
    poly *= a
    xp.subtract(1, poly, out=poly)               # erf(|x|) = 1 - poly * exp(-x^2)
    xp.copysign(poly, x, out=poly)               # erf is odd
    return poly


# ----------------------------------------------------------------------------------------------
# Fused kernels: the one seam between an op and hand-written GPU code


class ElementwiseKernel:
    """One fused elementwise kernel, written twice: CUDA C for CuPy (``cupy.ElementwiseKernel``: one launch over
    the broadcast inputs) and ``twin``, the same computation in NumPy for the host.

    ``kernel(*inputs, *outputs)``: every output is allocated by the caller (``xp.empty``: no launch) and written in
    place; inputs broadcast against the outputs' shape. ``in_params``, ``out_params`` and ``operation`` are CuPy's
    (``"T x, T mu"``, ``"T y"``, ``"y = x - mu"``); ``twin(*inputs, *outputs)`` gets NumPy arrays and writes its
    outputs. On CuPy arrays the CUDA kernel runs (compiled once per dtype); on the emulated device the twin runs on
    the host arrays and counts as one launch, as the CUDA kernel would; on NumPy arrays the twin runs (the CPU's
    ops keep their own cache-blocked code; tests compare the twin with the reference op).
    """

    def __init__(self, name: str, in_params: str, out_params: str, operation: str, twin, preamble: str = ""):
        self.name, self.in_params, self.out_params = name, in_params, out_params
        self.operation, self.twin, self.preamble = operation, twin, preamble
        self._cuda = None

    def __call__(self, *arrays) -> None:
        xp = get_array_module(*[a for a in arrays if is_array(a)])
        if xp is np:
            self.twin(*arrays)
        elif xp is _emulated.xp:
            _emulated.apply_host(self.twin, *arrays, name=self.name, launches=1)
        else:  # pragma: no cover - GPU only
            if self._cuda is None:
                self._cuda = _cupy.ElementwiseKernel(self.in_params, self.out_params, self.operation, self.name,
                                                     preamble=self.preamble)
            self._cuda(*arrays)


class ReductionKernel:
    """One fused reduction, written twice: CUDA C for CuPy (``cupy.ReductionKernel``: map, reduce, post-map in one
    launch) and ``twin``, the same in NumPy.

    ``kernel(*inputs, axis=..., out=...)`` reduces the broadcast inputs over ``axis`` into ``out`` (allocated by the
    caller with the kept dimensions: ``keepdims=True``); ``twin(*inputs, axis=axis, out=out)`` writes ``out``.
    A pair of sums comes back in one launch as a complex number (``reduce_type="complex<float>"``, ``out`` a
    complex array whose ``.real`` and ``.imag`` are views: no launch). Counted like ``ElementwiseKernel``.
    """

    def __init__(self, name: str, in_params: str, out_params: str, map_expr: str, reduce_expr: str,
                 post_map_expr: str, identity: str, twin, reduce_type: str | None = None, preamble: str = ""):
        self.name, self.in_params, self.out_params = name, in_params, out_params
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
        self.identity, self.reduce_type, self.preamble, self.twin = identity, reduce_type, preamble, twin
        self._cuda = None

    def __call__(self, *arrays, axis, out) -> None:
        xp = get_array_module(out)
        if xp is np:
            self.twin(*arrays, axis=axis, out=out)
        elif xp is _emulated.xp:
            _emulated.apply_host(lambda *a: self.twin(*a[:-1], axis=axis, out=a[-1]), *arrays, out,
                                 name=self.name, launches=1)
        else:  # pragma: no cover - GPU only
            if self._cuda is None:
                self._cuda = _cupy.ReductionKernel(self.in_params, self.out_params, self.map_expr, self.reduce_expr,
                                                   self.post_map_expr, self.identity, self.name,
                                                   reduce_type=self.reduce_type, preamble=self.preamble)
            self._cuda(*arrays, axis=axis, keepdims=True, out=out)


class RawKernel:
    """A hand-written CUDA kernel for what is neither elementwise nor one reduction (a recursion over time), with
    its NumPy ``twin``. ``source`` is CUDA C with ``scalar_t`` for the floating type and one ``extern "C"`` function
    named ``name``; ``kernel(*args, grid=..., block=...)`` launches it on CuPy arrays (ints become int32) and runs
    ``twin(*args)`` on the host, one launch on the emulated device."""

    def __init__(self, name: str, source: str, twin):
        self.name, self.source, self.twin = name, source, twin
        self._cuda = {}

    def __call__(self, *args, grid: int, block: int) -> None:
        arrays = [a for a in args if is_array(a)]
        xp = get_array_module(*arrays)
        if xp is np:
            self.twin(*args)
        elif xp is _emulated.xp:
            _emulated.apply_host(self.twin, *args, name=self.name, launches=1)
        else:  # pragma: no cover - GPU only
            dtype = np.dtype(arrays[0].dtype)
            if dtype not in self._cuda:
                ctype = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[dtype]
                self._cuda[dtype] = _cupy.RawKernel(f"typedef {ctype} scalar_t;\n" + self.source, self.name)
            self._cuda[dtype]((grid,), (block,), tuple(np.int32(a) if isinstance(a, int) else a for a in args))


def errstate(xp, **kinds):
    """``numpy.errstate(**kinds)`` for NumPy (and the emulated device); a no-op where the library does not warn
    (CuPy). Used to silence expected warnings such as log(0) = -inf for a fully masked row."""
    import contextlib

    return np.errstate(**kinds) if xp is np or xp is _emulated.xp else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Random numbers: one generator per device


def default_rng(seed=None, device="cpu"):
    """A random Generator that draws directly on ``device`` (NumPy's, CuPy's, or emulated).

    The same seed gives different streams on each: the emulated device draws from NumPy's Philox (and offers only
    CuPy's Generator methods), so that tests compare random runs within one device, as they must with CuPy."""
    device = normalize_device(device)
    if device == "cpu":
        return np.random.default_rng(seed)
    if device == "emulated":
        return _emulated.Generator(seed)
    if not cuda_available():
        raise _no_gpu(device)
    use_device(device)                           # pragma: no cover - GPU only
    return _cupy.random.default_rng(seed)  # pragma: no cover - GPU only


class CounterRandom:
    """A counter-based random stream on a device (CuPy or emulated): draw k of a stream is a hash of (key, k), so
    restarting the stream from a seed costs no device work, and no generator state is built per step.

    The hash is Widynski's "squares" (2020): four rounds of squaring a 64-bit counter times the key, 32 random
    bits per counter; float32 uniforms take 24 of them, float64 53 from two counters. ``random(shape, dtype)``
    (NumPy's and CuPy's ``Generator.random``) is one fused kernel (``ElementwiseKernel``) and the counter advances
    on the host. The same seed gives the same numbers on CUDA and on the emulated device, and other numbers than
    NumPy's generators on the CPU (as CuPy's own would)."""

    def __init__(self, seed=None, device: str = "emulated"):
        self.device = normalize_device(device)
        self.reseed(seed)

    def reseed(self, seed) -> None:
        """Restart the stream from ``seed`` (an int, a list of ints or a SeedSequence): host work only."""
        seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        lo, hi = (int(w) for w in seq.generate_state(2, dtype=np.uint32))
        self.key = ((hi << 32) | lo) | 1                 # an odd 64-bit key
        self.counter = 0

    def random(self, size=None, dtype=np.float32):
        """Uniform [0, 1) of ``size`` (a tuple, or None for one number as a 0-d array) in float32 or float64."""
        shape = () if size is None else (tuple(size) if isinstance(size, (tuple, list)) else (int(size),))
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"random: dtype must be float32 or float64, not {dtype}")
        xp = _emulated.xp if self.device == "emulated" else _cupy
        out = xp.empty(shape, dtype=dtype)
        n = int(np.prod(shape, dtype=np.int64))
        _uniform_kernel(dtype)(np.uint64(self.counter), np.uint64(self.key), out)
        self.counter += n * (1 if dtype == np.float32 else 2)
        return out


_SQUARES = """
__device__ unsigned int tinyw2v2_squares32(unsigned long long ctr, unsigned long long key) {
    unsigned long long x = ctr * key, y = x, z = y + key;
    x = x * x + y; x = (x >> 32) | (x << 32);
    x = x * x + z; x = (x >> 32) | (x << 32);
    x = x * x + y; x = (x >> 32) | (x << 32);
    return (unsigned int)((x * x + z) >> 32);
}
"""


def _squares32(ctr, key):
    """NumPy twin of tinyw2v2_squares32 (uint64 arithmetic wraps as in C)."""
    key = np.uint64(key)
    x = ctr * key
    y = x.copy()
    z = y + key
    for add in (y, z, y):
        x = x * x + add
        x = (x >> np.uint64(32)) | (x << np.uint64(32))
    return ((x * x + z) >> np.uint64(32)).astype(np.uint32)


def _uniform_twin(ctr, key, out):
    n = out.size
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        if out.dtype == np.float32:
            bits = _squares32(np.uint64(ctr) + i, key)
            out.reshape(-1)[...] = (bits >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
        else:
            hi = _squares32(np.uint64(ctr) + 2 * i, key) >> np.uint32(5)           # 27 bits
            lo = _squares32(np.uint64(ctr) + 2 * i + np.uint64(1), key) >> np.uint32(6)   # 26 bits
            out.reshape(-1)[...] = (hi.astype(np.float64) * 67108864.0 + lo) * (2.0 ** -53)


def _uniform_kernel(dtype):
    if dtype == np.float32:
        op = "u = (float)(tinyw2v2_squares32(ctr + i, key) >> 8) * 5.9604644775390625e-08f;"
    else:
        op = ("unsigned long long j = ctr + 2 * (unsigned long long)i;\n"
              "u = ((double)(tinyw2v2_squares32(j, key) >> 5) * 67108864.0 "
              "+ (double)(tinyw2v2_squares32(j + 1, key) >> 6)) * 1.1102230246251565e-16;")
    if dtype not in _UNIFORM_KERNELS:
        _UNIFORM_KERNELS[dtype] = ElementwiseKernel(f"tinyw2v2_uniform_{dtype}", "uint64 ctr, uint64 key",
                                                    f"{'float32' if dtype == np.float32 else 'float64'} u", op,
                                                    _uniform_twin, preamble=_SQUARES)
    return _UNIFORM_KERNELS[dtype]


_UNIFORM_KERNELS: dict = {}



# ----------------------------------------------------------------------------------------------
# several processes (tinyw2v2/train/distributed.py): the GPUs seen, waiting for a device's work, NCCL


def device_count() -> int:
    """The GPUs CuPy sees (0 without CuPy or without a GPU)."""
    return int(_cupy.cuda.runtime.getDeviceCount()) if cuda_available() else 0


def synchronize(device) -> None:
    """Wait until the work queued on ``device`` is done: before a library that knows nothing of CuPy's streams (MPI)
    reads the device's memory. A no-op for the CPU and the emulated device."""
    if normalize_device(device).startswith("cuda:") and cuda_available():
        _cupy.cuda.get_current_stream().synchronize()  # pragma: no cover - GPU only


def nccl_available() -> bool:
    """True when CuPy was built with NCCL and a GPU answers."""
    if not cuda_available():
        return False
    from cupy.cuda import nccl  # pragma: no cover - GPU only

    return bool(nccl.available)  # pragma: no cover - GPU only


def nccl_communicator(world: int, rank: int):
    """NCCL among ``world`` processes, this one ``rank`` on its current GPU (``use_device`` first): CuPy's
    ``cupyx.distributed`` communicator, bootstrapped over MPI (mpi4py). ``comm.all_reduce(a, a, "sum")`` sums the
    device array ``a`` over the processes, in place, on the current stream."""
    import cupyx.distributed  # pragma: no cover - GPU only

    return cupyx.distributed.init_process_group(world, rank, use_mpi=True)  # pragma: no cover - GPU only
