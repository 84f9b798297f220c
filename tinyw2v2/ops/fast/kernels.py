"""The fused kernels of the GPU path: GELU, LayerNorm / GroupNorm statistics, normalisation and backward, the
gradient norm and the AdamW update, each written twice through the backend's one seam
(``backend.ElementwiseKernel`` / ``ReductionKernel`` / ``RawKernel``): CUDA C that CuPy compiles (one launch each), and a
NumPy twin that computes the same on the host.

Which op uses which kernel, and what each costs on a device (launches; ``benchmarks/device_work.py`` counts them):

| op | forward | backward |
|---|---|---|
| GELU (``ops/fast/activation.py``) | ``gelu_kernel``: y and dy/dx in 1 | ``g * d``: 1 |
| LayerNorm, GroupNorm (``ops/fast/norm.py``) | ``xp.mean``, ``rstd_kernel``, ``normalize_kernel``: 3 | ``row_sums_kernel``, ``column_sums_kernel``, ``norm_dx_kernel``: 3 |
| gradient clipping (``optim.AdamW``'s fused step, ``ops/fast/optim.py``) | gather the gradients (1, plus 1 upload of pointers), ``norm_kernel``: 1 | |
| AdamW step (same) | coefficients of every parameter (1 upload), ``adamw_kernel``: 1 | |
| CTC's alpha and beta recursion (``ops/fast/ctc.py``) | ``ctc_recursion_kernel``: 1 for all frames | |

The twins run on the host for the emulated device (each counted as one launch, as the CUDA kernel) and on NumPy
when a test asks for them; the CPU's ops keep their cache-blocked code (docs/performance.md). ``tests/
test_kernels.py`` checks every twin against the reference op; the CUDA sources are checked on a GPU
(``benchmarks/gpu_check.sh``). ``TUNING.fused_kernels = False`` (or ``TINYW2V2_FUSED=0``) turns them off.

A pair of sums is one reduction: it is carried as a complex number, (sum a) + i (sum b), so that the pair costs
one launch and ``.real`` / ``.imag`` are views of its result.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ... import backend
from .tuning import TUNING

_COMPLEX = {np.dtype(np.float32): ("complex<float>", np.complex64),
            np.dtype(np.float64): ("complex<double>", np.complex128)}


def use_fused(x) -> bool:
    """Whether an op runs its fused kernels for ``x``: on a device (CuPy or emulated), float32 or float64, while
    ``TUNING.fused_kernels`` is on."""
    return TUNING.fused_kernels and backend.is_device_array(x) and x.dtype in _COMPLEX


def complex_dtype(dtype):
    """The complex dtype that carries a pair of ``dtype`` sums."""
    return _COMPLEX[np.dtype(dtype)][1]


# ----------------------------------------------------------------------------------------------
# GELU: y = x Phi(x) and its derivative d = Phi(x) + x phi(x) in one pass (ops/activation.py has the maths)

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_K = 0.044715


def _gelu_twin(approximate: str, derivative: bool):
    def twin(x, y, d=None):
        if approximate == "tanh":
            th = np.tanh(_TANH_C * (x + _TANH_K * x * x * x))
            y[...] = x / 2 * (1 + th)
            if derivative:
                d[...] = (1 + th) / 2 + x / 2 * (1 - th * th) * _TANH_C * (1 + 3 * _TANH_K * (x * x))
        else:
            import scipy.special

            cdf = (1 + scipy.special.erf(x * x.dtype.type(_SQRT1_2))) / 2
            y[...] = x * cdf
            if derivative:
                d[...] = cdf + x * (np.exp(-(x * x) / 2) * x.dtype.type(_INV_SQRT_2PI))
    return twin


@functools.lru_cache(maxsize=None)
def gelu_kernel(approximate: str = "none", derivative: bool = True):
    """``kernel(x, y[, d])``: y = gelu(x) and, with ``derivative``, d = dy/dx (what backward multiplies by)."""
    if approximate == "tanh":
        body = (f"T th = tanh((T){_TANH_C!r} * (x + (T){_TANH_K!r} * x * x * x));\n"
                "y = x / 2 * (1 + th);\n")
        deriv = f"d = (1 + th) / 2 + x / 2 * (1 - th * th) * (T){_TANH_C!r} * (1 + 3 * (T){_TANH_K!r} * (x * x));"
    else:
        body = (f"T cdf = (1 + erf(x * (T){_SQRT1_2!r})) / 2;\n"
                "y = x * cdf;\n")
        deriv = f"d = cdf + x * (exp(-(x * x) / 2) * (T){_INV_SQRT_2PI!r});"
    return backend.ElementwiseKernel(
        f"tinyw2v2_gelu_{approximate}{'_d' if derivative else ''}", "T x", "T y, T d" if derivative else "T y",
        body + (deriv if derivative else ""), _gelu_twin(approximate, derivative))


# ----------------------------------------------------------------------------------------------
# LayerNorm and GroupNorm (ops/norm.py has the maths). x is viewed so that the statistics reduce over
# ``axis`` and mu, rstd, w, b broadcast against it: LayerNorm x (M, N), axis 1, w (N,);
# GroupNorm x (B, G, Cg, S), axis (2, 3), w (1, G, Cg, 1).


@functools.lru_cache(maxsize=None)
def rstd_kernel(n: int, eps: float):
    """``kernel(x, mu, axis=..., out=rstd)``: rstd = 1 / sqrt(mean((x - mu)^2) + eps) over ``axis`` (two-pass
    variance: mu comes first, from ``xp.mean``)."""
    def twin(x, mu, axis, out):
        xc = x - mu
        out[...] = 1 / np.sqrt(np.sum(xc * xc, axis=axis, keepdims=True) * x.dtype.type(1 / n) + x.dtype.type(eps))

    return backend.ReductionKernel(
        "tinyw2v2_norm_rstd", "T x, T mu", "T rstd", "(x - mu) * (x - mu)", "a + b",
        f"rstd = rsqrt(a * (T){1 / n!r} + (T){eps!r})", "0", twin)


@functools.lru_cache(maxsize=None)
def normalize_kernel(affine: bool):
    """``kernel(x, mu, rstd[, w, b], y)``: y = (x - mu) rstd (* w + b)."""
    if affine:
        def twin(x, mu, rstd, w, b, y):
            y[...] = (x - mu) * rstd * w + b
        return backend.ElementwiseKernel("tinyw2v2_norm_affine", "T x, T mu, T rstd, T w, T b", "T y",
                                         "y = (x - mu) * rstd * w + b", twin)

    def twin(x, mu, rstd, y):
        y[...] = (x - mu) * rstd
    return backend.ElementwiseKernel("tinyw2v2_norm", "T x, T mu, T rstd", "T y", "y = (x - mu) * rstd", twin)


def _pair_twin(first, second):
    def twin(*arrays, axis, out):
        a, b = first(*arrays), second(*arrays)
        out.real[...] = np.sum(a, axis=axis, keepdims=True)
        out.imag[...] = np.sum(b, axis=axis, keepdims=True)
    return twin


@functools.lru_cache(maxsize=None)
def row_sums_kernel(dtype, affine: bool):
    """``kernel(g, x, mu, rstd[, w], axis=..., out=pair)``: pair = sum(dxhat) + i sum(dxhat xhat) per row, with
    dxhat = g w (g without a weight) and xhat = (x - mu) rstd: the two row sums of the backward."""
    ctype, cdtype = _COMPLEX[np.dtype(dtype)]
    dxhat = "g * w" if affine else "g"
    params = "T g, T x, T mu, T rstd, T w" if affine else "T g, T x, T mu, T rstd"
    first = (lambda g, x, mu, rstd, w: g * w) if affine else (lambda g, x, mu, rstd: g)
    second = ((lambda g, x, mu, rstd, w: g * w * ((x - mu) * rstd)) if affine
              else (lambda g, x, mu, rstd: g * ((x - mu) * rstd)))
    return backend.ReductionKernel(
        f"tinyw2v2_norm_row_sums{'_affine' if affine else ''}", params, f"{np.dtype(cdtype)} pair",
        f"{ctype}({dxhat}, {dxhat} * ((x - mu) * rstd))", "a + b", "pair = a", f"{ctype}(0, 0)",
        _pair_twin(first, second), reduce_type=ctype)


@functools.lru_cache(maxsize=None)
def column_sums_kernel(dtype):
    """``kernel(g, x, mu, rstd, axis=..., out=pair)``: pair = sum(g xhat) + i sum(g) over the rows: dweight and
    dbias in one launch."""
    ctype, cdtype = _COMPLEX[np.dtype(dtype)]
    return backend.ReductionKernel(
        "tinyw2v2_norm_column_sums", "T g, T x, T mu, T rstd", f"{np.dtype(cdtype)} pair",
        f"{ctype}(g * ((x - mu) * rstd), g)", "a + b", "pair = a", f"{ctype}(0, 0)",
        _pair_twin(lambda g, x, mu, rstd: g * ((x - mu) * rstd), lambda g, x, mu, rstd: g), reduce_type=ctype)


@functools.lru_cache(maxsize=None)
def norm_dx_kernel(n: int, affine: bool):
    """``kernel(g, x, mu, rstd[, w], s1, s2, dx)``: dx = rstd (dxhat - (s1 + xhat s2) / n), with s1 = sum(dxhat)
    and s2 = sum(dxhat xhat) per row (the ``.real`` and ``.imag`` of ``row_sums_kernel``'s pair)."""
    dxhat = "g * w" if affine else "g"
    params = "T g, T x, T mu, T rstd, T w, T s1, T s2" if affine else "T g, T x, T mu, T rstd, T s1, T s2"

    def twin(*arrays):
        if affine:
            g, x, mu, rstd, w, s1, s2, dx = arrays
            d = g * w
        else:
            g, x, mu, rstd, s1, s2, dx = arrays
            d = g
        dx[...] = rstd * (d - (s1 + (x - mu) * rstd * s2) * x.dtype.type(1 / n))

    return backend.ElementwiseKernel(
        f"tinyw2v2_norm_dx{'_affine' if affine else ''}", params, "T dx",
        f"dx = rstd * ({dxhat} - (s1 + (x - mu) * rstd * s2) * (T){1 / n!r})", twin)


# ----------------------------------------------------------------------------------------------
# Gradient norm and AdamW over one flat buffer of all parameters (optim.py has the maths)


@functools.lru_cache(maxsize=None)
def norm_kernel():
    """``kernel(g, axis=0, out=norm)``: norm = sqrt(sum g^2) of a flat gradient (1-d g, out of shape (1,))."""
    def twin(g, axis, out):
        out[...] = np.sqrt(np.sum(g * g, axis=axis, keepdims=True))
    return backend.ReductionKernel("tinyw2v2_grad_norm", "T g", "T norm", "g * g", "a + b", "norm = sqrt(a)", "0",
                                   twin)


def _adamw_twin(decoupled: bool, torch_eps: bool):
    def twin(g, seg, coef, norm, max_norm, beta1, beta2, eps, w, m, v):
        # per element: its parameter's [active, decay or L2 weight, denominator scale, step size]
        c = coef[seg]                                        # (n, 4): gathered per element
        active = c[:, 0] != 0
        clip = np.minimum(max_norm / (norm[0] + 1e-6), 1.0)  # the clipping coefficient, from the device's norm
        gg = g * clip
        if not decoupled:
            gg = gg + c[:, 1] * w                            # L2: g + wd p
        new_m = m * beta1
        new_m += (1 - beta1) * gg
        tmp = gg * gg
        tmp *= 1 - beta2
        new_v = v * beta2
        new_v += tmp
        denom = np.sqrt(new_v)
        if torch_eps:
            denom /= c[:, 2]
            denom += eps
        else:
            denom += eps
        update = new_m / denom
        update *= c[:, 3]
        new_w = w * c[:, 1] if decoupled else w.copy()
        new_w -= update
        m[active], v[active], w[active] = new_m[active], new_v[active], new_w[active]
    return twin


@functools.lru_cache(maxsize=None)
def adamw_kernel(decoupled: bool = True, torch_eps: bool = True):
    """``kernel(g, seg, coef, norm, max_norm, beta1, beta2, eps, w, m, v)``: one Adam(W) step of every parameter at once, in
    place on the flat w, m, v. ``seg`` (int32, per element) numbers the parameter an element belongs to; ``coef``
    (P, 4) holds per parameter [active (0: no gradient this step, left alone), decoupled decay 1 - lr wd (or the
    L2 weight wd), denominator scale sqrt(1 - beta2^t) (torch's eps placement), step size]; ``norm`` (1,) the
    gradient norm on the device, so that the clipping coefficient min(1, max_norm / (norm + 1e-6)) is taken
    inside the kernel (``max_norm`` inf: no clipping)."""
    gg = ("T gg = g * min(max_norm / (norm[0] + (T)1e-6), (T)1);\n"
          + ("" if decoupled else "gg = gg + c[1] * w;\n"))
    denom = "sqrt(v) / c[2] + eps" if torch_eps else "sqrt(v) + eps"
    decay = "w * c[1]" if decoupled else "w"
    op = ("const T* c = &coef[4 * seg];\n"
          "if (c[0] != 0) {\n"
          f"  {gg}"
          "  m = m * beta1 + (1 - beta1) * gg;\n"
          "  v = v * beta2 + (gg * gg) * (1 - beta2);\n"
          f"  w = {decay} - (m / ({denom})) * c[3];\n"
          "}")
    return backend.ElementwiseKernel(
        f"tinyw2v2_adam{'w' if decoupled else ''}_{'torch' if torch_eps else 'fairseq'}",
        "T g, int32 seg, raw T coef, raw T norm, T max_norm, T beta1, T beta2, T eps", "T w, T m, T v", op,
        _adamw_twin(decoupled, torch_eps))


# ----------------------------------------------------------------------------------------------
# The CTC recursion over time in one launch (ops/fast/ctc.py has the maths and the NumPy loop)

_CTC_RECURSION = r"""
extern "C" __global__ void tinyw2v2_ctc_recursion(const scalar_t* E, const scalar_t* mask, scalar_t* A, int K,
                                                   int M) {
    // A (K+1, M+2): row t+1 = alpha[t] in cells 2.., rows and the two padding cells filled by the caller.
    // One block: every thread owns the cells j = threadIdx.x + k blockDim.x; a barrier between frames.
    for (int t = 0; t < K; ++t) {
        const scalar_t* prev = A + (long long)t * (M + 2);
        scalar_t* cur = A + (long long)(t + 1) * (M + 2);
        for (int j = threadIdx.x; j < M; j += blockDim.x) {
            scalar_t z0 = prev[j] + mask[j], z1 = prev[j + 1], z2 = prev[j + 2];
            scalar_t m = max(max(z0, z1), z2);
            cur[j + 2] = E[(long long)t * M + j] + m + log(exp(z0 - m) + exp(z1 - m) + exp(z2 - m));
        }
        __syncthreads();
    }
}
"""


def ctc_recursion_kernel(twin):
    """``kernel(E, mask, A, K, M, grid=1, block=...)``: the alpha recursion of every row and every frame in one
    launch (one block; threads over the M cells, a barrier per frame), ``twin`` the NumPy loop."""
    return backend.RawKernel("tinyw2v2_ctc_recursion", _CTC_RECURSION, twin)


__all__ = ["ctc_recursion_kernel", "use_fused", "complex_dtype", "gelu_kernel", "rstd_kernel", "normalize_kernel", "row_sums_kernel",
           "column_sums_kernel", "norm_dx_kernel", "norm_kernel", "adamw_kernel"]
