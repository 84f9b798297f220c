"""The tuned GELU: the exact-form float32 GELU and its derivative fused into ~20 in-place passes over cache-sized
blocks, instead of the reference's erf call and a dozen temporaries of x's size.

``Gelu`` equals ``tinyw2v2.ops.activation.Gelu`` (same forward, same saved derivative, same backward) to within
1e-6 absolute in float32 (``tests/test_ops_activation.py``); other dtypes and the tanh form run the reference.
Why it pays and what it costs: docs/performance.md.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend
from ...backend import ERF_AS_COEFFICIENTS, ERF_AS_P, get_array_module
from .. import activation as reference
from ..dispatch import tuned
from .kernels import gelu_kernel, use_fused
from .tuning import TUNING

# Phi from Abramowitz & Stegun 7.1.26 (the same form as backend.erf), fused into GELU. For a = |x|:
#   1 - Phi(a) = Q(a) = P(t) exp(-a^2/2),  t = 1 / (1 + p a / sqrt2),  P(t) = sum_i (a_i/2) t^i,
# |error| of Q <= 7.5e-8 in exact arithmetic. Rewritten so that each step is one NumPy pass:
#   t = r / (r + a)              with r = sqrt2 / p
#   P(t) = h5 * t (t^4 + d4 t^3 + d3 t^2 + d2 t + d1),   h_i = a_i / 2, d_i = h_i / h5   (monic Horner)
#   h5 exp(-a^2/2) = exp2(L - (s a)^2)  with s^2 = 1 / (2 ln 2), L = log2(h5)   (exp2 is ~2x cheaper than exp)
_f32 = np.float32
_H = [c / 2.0 for c in ERF_AS_COEFFICIENTS]                               # h1..h5
_R = _f32(math.sqrt(2.0) / ERF_AS_P)
_D = [_f32(h / _H[4]) for h in _H[:4]]                      # d1..d4
_S = _f32(math.sqrt(1.0 / (2.0 * math.log(2.0))))
_L = _f32(math.log2(_H[4]))
_PHI_C = _f32(1.0 / math.sqrt(2.0 * math.pi) / _H[4])       # phi(x) = _PHI_C * h5 exp(-x^2/2)
_SIGN_BIT = np.int32(-2 ** 31)


def _q_and_exp(xp, a, t, e):
    """For a = |x| (float32): e <- Q = 1 - Phi(a),  t <- h5 exp(-a^2/2). All in place on the scratch t, e."""
    xp.add(a, _R, out=t)
    xp.divide(_R, t, out=t)                                 # t = 1 / (1 + p a / sqrt2)
    xp.add(t, _D[3], out=e)                                 # monic Horner: e = t + d4
    for d in (_D[2], _D[1], _D[0]):
        e *= t
        e += d
    e *= t                                                  # e = P(t) / h5
    xp.multiply(a, _S, out=t)
    t *= t
    xp.subtract(_L, t, out=t)
    xp.exp2(t, out=t)                                       # t = h5 exp(-a^2/2)
    e *= t                                                  # e = Q(a)


def _gelu_block(xp, x, y, d, a, t, e):
    """One block of the float32 GELU: y <- x Phi(x) and, if d is given, d <- Phi(x) + x phi(x).

    With R = 1/2 - Q(|x|) = Phi(|x|) - 1/2:  Phi(x) = 1/2 + sign(x) R,  so  x Phi(x) = x/2 + |x| R.
    """
    xp.abs(x, out=a)
    _q_and_exp(xp, a, t, e)
    xp.subtract(_f32(0.5), e, out=e)                        # e = R
    xp.multiply(e, a, out=y)                                # y = |x| R
    xp.multiply(x, _f32(0.5), out=a)
    y += a                                                  # y = x/2 + |x| R = gelu(x)
    if d is None:
        return
    sign = a.view(np.int32)                                 # a is free: reuse it as int32 scratch
    xp.bitwise_and(x.view(np.int32), _SIGN_BIT, out=sign)   # the sign bit of x
    xp.bitwise_xor(e.view(np.int32), sign, out=e.view(np.int32))  # e = sign(x) R (np.copysign is 3x slower)
    t *= x
    t *= _PHI_C                                             # t = x phi(x)
    e += t
    xp.add(e, _f32(0.5), out=d)                             # d = 1/2 + sign(x) R + x phi(x) = Phi(x) + x phi(x)


def _gelu_float32(x, want_derivative):
    """Exact-form GELU in float32 (|error| < 1e-6) and optionally its derivative, in cache-sized blocks.

    Blocks keep the ~20 passes over memory inside the cache and reuse three scratch buffers instead of
    allocating (and page-faulting) fresh arrays of x's size; on a GPU the whole array is one block.
    """
    xp = get_array_module(x)
    xf = x.reshape(-1)                                      # (...) -> (n,), a copy only if x is strided
    n = xf.size
    y = xp.empty_like(xf)
    d = xp.empty_like(xf) if want_derivative else None
    chunk = max(n, 1) if backend.is_device_array(x) else TUNING.gelu_block_elements
    m = max(1, min(chunk, n))
    a, t, e = (xp.empty(m, dtype=xf.dtype) for _ in range(3))
    for s in range(0, n, max(chunk, 1)):                    # cache blocking over the flat array
        k = min(chunk, n - s)
        _gelu_block(xp, xf[s:s + k], y[s:s + k], None if d is None else d[s:s + k], a[:k], t[:k], e[:k])
    return y.reshape(x.shape), (None if d is None else d.reshape(x.shape))


@tuned(reference.Gelu)
class Gelu(reference.Gelu):
    """``ops.activation.Gelu`` with the fused float32 kernel above for the exact form on the CPU, and on a device
    the one-launch ``kernels.gelu_kernel`` (both forms, float32 and float64); otherwise identical."""

    def forward(self, x, approximate="none"):
        if use_fused(x):                                    # on a device: y and dy/dx in one kernel
            xp = get_array_module(x)
            need = any(self.needs_input_grad)
            y = xp.empty_like(x)
            d = xp.empty_like(x) if need else None
            gelu_kernel(approximate, need)(x, y, *((d,) if need else ()))
            self.save_for_backward(d)
            return y
        if approximate != "none" or x.dtype != np.float32:
            return super().forward(x, approximate)
        y, d = _gelu_float32(x, want_derivative=any(self.needs_input_grad))  # dy/dx only if a gradient is needed
        self.save_for_backward(d)
        return y
