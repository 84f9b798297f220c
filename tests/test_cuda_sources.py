"""The CUDA sources of the fused kernels, compiled and run without a GPU: each kernel's CUDA C is wrapped the way CuPy
wraps it (an ``ElementwiseKernel`` body runs once per element with its inputs as values and its outputs as
references; a ``ReductionKernel`` maps, reduces and post-maps over the reduced axes; a ``RawKernel`` runs as one
thread of one block), compiled as C++ with g++, run on small arrays, and compared with the kernel's NumPy twin.

This catches what the twins cannot: a typo, a wrong type or a wrong formula in the CUDA strings, before a GPU is lent.
What it cannot catch: nvcc-only errors and CUDA's own maths library (their results differ from glibc's in the last
bits). Skipped where g++ is missing.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from tinyw2v2 import backend
from tinyw2v2.ops.fast import ctc as fast_ctc
from tinyw2v2.ops.fast import kernels as K

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

PRELUDE = r"""
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdio>
#include <cstddef>
using namespace std;
#define __device__
#define __global__
#define __forceinline__ inline
template <class T> T rsqrt(T x) { return T(1) / sqrt(x); }
struct Dim { unsigned x; };
static Dim threadIdx = {0}, blockDim = {1};
inline void __syncthreads() {}
"""
CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int32): "int",
         np.dtype(np.uint64): "unsigned long long", np.dtype(np.complex64): "complex<float>",
         np.dtype(np.complex128): "complex<double>"}
NAMED = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "uint64": np.uint64,
         "complex64": np.complex64, "complex128": np.complex128}


def _literal(v, dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return f"{CTYPE[dtype]}({_literal(v.real, v.real.dtype)}, {_literal(v.imag, v.real.dtype)})"
    if dtype.kind == "f":
        return float(v).hex() + ("f" if dtype == np.float32 else "")
    return str(int(v)) + ("ULL" if dtype == np.uint64 else "")


def _array(name, a) -> str:
    a = np.ascontiguousarray(a).ravel()
    return f"static {CTYPE[a.dtype]} {name}[] = {{{', '.join(_literal(v, a.dtype) for v in a) or '0'}}};\n"


def _params(spec: str):
    """'T x, raw T coef, int32 seg' -> [(raw, type, name)]."""
    out = []
    for part in spec.split(","):
        words = part.split()
        raw = words[0] == "raw"
        out.append((raw, words[-2], words[-1]))
    return out


def _run(program: str, tmp_path, n_out: int, out_dtypes):
    src = tmp_path / "k.cpp"
    src.write_text(PRELUDE + program)
    exe = tmp_path / "k"
    build = subprocess.run(["g++", "-std=c++17", "-O1", "-o", str(exe), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:] + "\n" + program[-3000:]
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    values = [float.fromhex(v) for v in lines]
    outs, k = [], 0
    for n, dtype in zip(n_out, out_dtypes):
        if np.dtype(dtype).kind == "c":
            outs.append(np.array(values[k:k + 2 * n:2]) + 1j * np.array(values[k + 1:k + 2 * n:2]))
            k += 2 * n
        else:
            outs.append(np.array(values[k:k + n]))
            k += n
    return outs


def _print(name, dtype, n) -> str:
    if np.dtype(dtype).kind == "c":
        return (f"for (long long _k = 0; _k < {n}; ++_k) printf(\"%a %a\\n\", (double){name}[_k].real(), "
                f"(double){name}[_k].imag());\n")
    return f"for (long long _k = 0; _k < {n}; ++_k) printf(\"%a\\n\", (double){name}[_k]);\n"


def run_elementwise(kernel, args, tmp_path):
    """Run an ElementwiseKernel's CUDA body over broadcast host arrays; returns its outputs."""
    params = _params(kernel.in_params) + _params(kernel.out_params)
    n_in = len(_params(kernel.in_params))
    outs = args[n_in:]
    shape = outs[0].shape
    T = next((np.dtype(a.dtype) for (raw, t, _), a in zip(params, args) if t == "T" and hasattr(a, "dtype")),
             np.dtype(outs[0].dtype))
    code = f"typedef {CTYPE[T]} T;\n{kernel.preamble}\n"
    body = ""
    for (raw, t, name), a in zip(params, args):
        dtype = T if t == "T" else np.dtype(NAMED[t])
        if not isinstance(a, np.ndarray):                           # a scalar parameter
            code += f"static const {CTYPE[dtype]} {name} = {_literal(np.asarray(a, dtype), dtype)};\n"
            continue
        arr = np.asarray(a, dtype) if raw else np.broadcast_to(np.asarray(a, dtype), shape)
        code += _array(f"_raw_{name}", arr)
        if raw:
            body += f"{CTYPE[dtype]}* {name} = _raw_{name};\n"
        elif (raw, t, name) in params[n_in:]:
            body += f"{CTYPE[dtype]}& {name} = _raw_{name}[i];\n"
        else:
            body += f"const {CTYPE[dtype]} {name} = _raw_{name}[i];\n"
    n = int(np.prod(shape))
    code += (f"int main() {{\nfor (ptrdiff_t i = 0; i < {n}; ++i) {{\n{body}{kernel.operation};\n}}\n"
             + "".join(_print(f"_raw_{name}", T if t == "T" else NAMED[t], n) for _, t, name in params[n_in:])
             + "}\n")
    got = _run(code, tmp_path, [n] * len(outs), [o.dtype for o in outs])
    return [g.reshape(shape) for g in got]


def run_reduction(kernel, args, axis, out_shape, out_dtype, tmp_path):
    """Run a ReductionKernel's map / reduce / post-map over the reduced axes of the broadcast inputs."""
    params = _params(kernel.in_params)
    arrays = np.broadcast_arrays(*args)
    T = np.dtype(args[0].dtype)
    axis = tuple(a % arrays[0].ndim for a in axis)
    keep = [d for d in range(arrays[0].ndim) if d not in axis]
    moved = [np.moveaxis(a, keep + list(axis), range(a.ndim)).reshape(int(np.prod(out_shape)), -1) for a in arrays]
    n_out, n_red = moved[0].shape
    (_, out_t, out_name), = _params(kernel.out_params)
    out_c = CTYPE[np.dtype(out_dtype)] if out_t != "T" else CTYPE[T]
    reduce_c = kernel.reduce_type or out_c
    code = f"typedef {CTYPE[T]} T;\n{kernel.preamble}\n"
    code += "".join(_array(f"_raw_{name}", m) for (_, _, name), m in zip(params, moved))
    code += f"static {out_c} _raw_{out_name}[{n_out}];\n"
    code += f"#define REDUCE(a, b) ({kernel.reduce_expr})\n#define POST_MAP(a) ({kernel.post_map_expr})\n"
    loads = "".join(f"const T {name} = _raw_{name}[_o * {n_red} + _j];\n" for _, _, name in params)
    code += (f"int main() {{\nfor (long long _o = 0; _o < {n_out}; ++_o) {{\n"
             f"typedef {reduce_c} _type_reduce;\n_type_reduce _s = _type_reduce({kernel.identity});\n"
             f"for (long long _j = 0; _j < {n_red}; ++_j) {{\n{loads}"
             f"_type_reduce _a = static_cast<_type_reduce>({kernel.map_expr});\n_s = REDUCE(_s, _a);\n}}\n"
             f"{out_c}& {out_name} = _raw_{out_name}[_o];\nPOST_MAP(_s);\n}}\n"
             + _print(f"_raw_{out_name}", out_dtype, n_out) + "}\n")
    (got,) = _run(code, tmp_path, [n_out], [out_dtype])
    return got.reshape(out_shape)


def _close(got, want, dtype, scale=1.0):
    tol = 1e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


RNG = np.random.default_rng(3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_source(approximate, dtype, tmp_path):
    x = (3 * RNG.standard_normal(40)).astype(dtype)
    kernel = K.gelu_kernel(approximate, True)
    y, d = np.empty_like(x), np.empty_like(x)
    kernel.twin(x, y, d)
    gy, gd = run_elementwise(kernel, [x, np.empty_like(x), np.empty_like(x)], tmp_path)
    _close(gy, y, dtype, 3)
    _close(gd, d, dtype, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_sources(dtype, tmp_path):
    """The six norm kernels on a GroupNorm-shaped view (B, G, Cg, S): statistics over (2, 3), columns over (0, 3)."""
    x = RNG.standard_normal((2, 3, 2, 5)).astype(dtype)
    w, b = (RNG.standard_normal((1, 3, 2, 1)).astype(dtype) for _ in range(2))
    g = RNG.standard_normal(x.shape).astype(dtype)
    axis, n, eps = (2, 3), 10, 1e-5
    mu = x.mean(axis=axis, keepdims=True)
    rstd = np.empty_like(mu)
    kernel = K.rstd_kernel(n, eps)
    kernel.twin(x, mu, axis=axis, out=rstd)
    _close(run_reduction(kernel, [x, mu], axis, mu.shape, dtype, tmp_path), rstd, dtype)

    y = np.empty_like(x)
    kernel = K.normalize_kernel(True)
    kernel.twin(x, mu, rstd, w, b, y)
    (got,) = run_elementwise(kernel, [x, mu, rstd, w, b, np.empty_like(x)], tmp_path)
    _close(got, y, dtype, 3)

    cdtype = K.complex_dtype(dtype)
    pair = np.empty(mu.shape, cdtype)
    kernel = K.row_sums_kernel(dtype, True)
    kernel.twin(g, x, mu, rstd, w, axis=axis, out=pair)
    _close(run_reduction(kernel, [g, x, mu, rstd, w], axis, mu.shape, cdtype, tmp_path), pair, cdtype, 10)

    dx = np.empty_like(x)
    kernel = K.norm_dx_kernel(n, True)
    kernel.twin(g, x, mu, rstd, w, pair.real, pair.imag, dx)
    (got,) = run_elementwise(kernel, [g, x, mu, rstd, w, pair.real.copy(), pair.imag.copy(), np.empty_like(x)],
                             tmp_path)
    _close(got, dx, dtype, 3)

    cols = np.empty(w.shape, cdtype)
    kernel = K.column_sums_kernel(dtype)
    kernel.twin(g, x, mu, rstd, axis=(0, 3), out=cols)
    _close(run_reduction(kernel, [g, x, mu, rstd], (0, 3), w.shape, cdtype, tmp_path), cols, cdtype, 10)


def test_gradient_norm_source(tmp_path):
    g = RNG.standard_normal(300).astype(np.float32)
    out = np.empty(1, np.float32)
    kernel = K.norm_kernel()
    kernel.twin(g, axis=0, out=out)
    _close(run_reduction(kernel, [g], (0,), (1,), np.float32, tmp_path), out, np.float32)


@pytest.mark.parametrize("decoupled, torch_eps", [(True, True), (True, False), (False, True)])
def test_adamw_source(decoupled, torch_eps, tmp_path):
    """One fused step over 3 parameters, one of them without a gradient (left alone), with clipping active."""
    sizes = [4, 3, 5]
    n = sum(sizes)
    seg = np.repeat(np.arange(3, dtype=np.int32), sizes)
    coef = np.array([[1, 0.999, 0.3, 0.01], [0, 1, 1, 0], [1, 0.999, 0.2, 0.02]], np.float32)
    g = RNG.standard_normal(n).astype(np.float32)
    w, m, v = RNG.standard_normal(n).astype(np.float32), RNG.standard_normal(n).astype(np.float32), \
        RNG.random(n).astype(np.float32)
    norm = np.array([4.0], np.float32)
    kernel = K.adamw_kernel(decoupled, torch_eps)
    want = [w.copy(), m.copy(), v.copy()]
    kernel.twin(g, seg, coef, norm, 2.0, 0.9, 0.98, 1e-6, *want)
    got = run_elementwise(kernel, [g, seg, coef, norm, 2.0, 0.9, 0.98, 1e-6, w.copy(), m.copy(), v.copy()],
                          tmp_path)
    for a, b in zip(got, want):
        _close(a, b, np.float32, 10)
    np.testing.assert_array_equal(got[0][4:7], w[4:7])             # the parameter without a gradient


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counter_random_source(dtype, tmp_path):
    """The squares hash and the uniforms: bit for bit."""
    kernel = backend._uniform_kernel(np.dtype(dtype))
    want = np.empty(64, dtype)
    kernel.twin(np.uint64(1000), np.uint64(0x9E3779B97F4A7C15), want)
    (got,) = run_elementwise(kernel, [np.uint64(1000), np.uint64(0x9E3779B97F4A7C15), np.empty(64, dtype)], tmp_path)
    np.testing.assert_array_equal(got.astype(dtype), want)


def test_ctc_recursion_source(tmp_path):
    """The RawKernel as one thread of one block: the same alpha as the NumPy loop."""
    K_, M = 7, 12
    E = np.maximum(np.log(RNG.random((K_, M))), -30).astype(np.float64)
    mask = np.where(RNG.random(M) < 0.5, 0.0, -1e30)
    A = np.full((K_ + 1, M + 2), -1e30)
    A[0, 2] = 0.0
    want = A.copy()
    fast_ctc._loop(E, mask, want)
    source = fast_ctc._KERNEL.source
    name = re.search(r'extern "C" __global__ void (\w+)', source).group(1)
    code = ("typedef double scalar_t;\n" + source + _array("E_", E) + _array("mask_", mask) + _array("A_", A)
            + f"int main() {{\n{name}(E_, mask_, A_, {K_}, {M});\n" + _print("A_", np.float64, A.size) + "}\n")
    (got,) = _run(code, tmp_path, [A.size], [np.float64])
    np.testing.assert_allclose(got.reshape(A.shape)[1:, 2:], want[1:, 2:], rtol=1e-12)
