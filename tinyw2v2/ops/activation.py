"""The feed-forward pieces: gelu, linear and dropout (names and signatures of torch.nn.functional).

gelu:    y = x * Phi(x), Phi the standard normal CDF (exact erf form, as wav2vec 2.0 uses), or the tanh form.
linear:  y = x @ W^T + b over any leading axes, one GEMM forward and one per gradient.
dropout: inverted dropout y = x * mask / (1 - p) with a boolean keep-mask that can be drawn with
         ``dropout_mask`` and passed in, so that a model can record it (and a gradcheck can fix it).
Derivations: docs/activations.md.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..backend import _AS_A, _AS_P, get_array_module
from ..tensor import Function, Tensor

# ----------------------------------------------------------------------------------------------
# GELU

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_K = 0.044715

# float32 fast path: Phi from Abramowitz & Stegun 7.1.26 (the same form as backend.erf), fused into GELU.
# For a = |x|:   1 - Phi(a) = Q(a) = P(t) exp(-a^2/2),  t = 1 / (1 + p a / sqrt2),  P(t) = sum_i (a_i/2) t^i,
# |error| of Q <= 7.5e-8 in exact arithmetic. Rewritten so that each step is one NumPy pass:
#   t = r / (r + a)              with r = sqrt2 / p
#   P(t) = h5 * t (t^4 + d4 t^3 + d3 t^2 + d2 t + d1),   h_i = a_i / 2, d_i = h_i / h5   (monic Horner)
#   h5 exp(-a^2/2) = exp2(L - (s a)^2)  with s^2 = 1 / (2 ln 2), L = log2(h5)   (exp2 is ~2x cheaper than exp)
_f32 = np.float32
_H = [c / 2.0 for c in _AS_A]                               # h1..h5
_R = _f32(math.sqrt(2.0) / _AS_P)
_D = [_f32(h / _H[4]) for h in _H[:4]]                      # d1..d4
_S = _f32(math.sqrt(1.0 / (2.0 * math.log(2.0))))
_L = _f32(math.log2(_H[4]))
_PHI_C = _f32(_INV_SQRT_2PI / _H[4])                        # phi(x) = _PHI_C * h5 exp(-x^2/2)
_SIGN_BIT = np.int32(-2 ** 31)
_CHUNK = 1 << 16                                            # elements per block: a few blocks fit in L2


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
    chunk = n if backend.is_cupy_array(x) else _CHUNK
    m = max(1, min(chunk, n))
    a, t, e = (xp.empty(m, dtype=xf.dtype) for _ in range(3))
    for s in range(0, n, chunk):                            # cache blocking over the flat array
        k = min(chunk, n - s)
        _gelu_block(xp, xf[s:s + k], y[s:s + k], None if d is None else d[s:s + k], a[:k], t[:k], e[:k])
    return y.reshape(x.shape), (None if d is None else d.reshape(x.shape))


def _gelu_exact(x, want_derivative):
    """GELU through backend.erf: exact (SciPy / cupyx) in float64."""
    xp = get_array_module(x)
    Phi = backend.erf(x * _SQRT1_2)
    Phi += 1.0
    Phi *= 0.5                                              # Phi(x) = (1 + erf(x / sqrt2)) / 2
    y = x * Phi
    if not want_derivative:
        return y, None
    d = xp.exp(-0.5 * (x * x))
    d *= _INV_SQRT_2PI
    d *= x
    d += Phi                                                # Phi(x) + x phi(x)
    return y, d


def _gelu_tanh(x, want_derivative):
    """y = x/2 (1 + tanh u),  u = c (x + k x^3);  dy/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) c (1 + 3 k x^2)."""
    xp = get_array_module(x)
    x2 = x * x
    u = x2 * _TANH_K
    u += 1.0
    u *= x
    u *= _TANH_C                                            # u = c (x + k x^3)
    th = xp.tanh(u, out=u)
    half = th + 1.0
    half *= 0.5                                             # (1 + tanh u) / 2
    y = x * half
    if not want_derivative:
        return y, None
    du = x2 * (3.0 * _TANH_K)
    du += 1.0
    du *= _TANH_C                                           # du/dx = c (1 + 3 k x^2)
    th *= th
    xp.subtract(1.0, th, out=th)                            # 1 - tanh^2 u (never 1/cosh^2: cosh overflows)
    du *= th
    du *= x
    du *= 0.5
    du += half
    return y, du


class Gelu(Function):
    """y = x Phi(x) = x/2 (1 + erf(x / sqrt2)), or the tanh form; x any shape.

    Forward saves the local derivative d = dy/dx (the size of x, like saving x itself) when a gradient is needed:
        exact: d = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi)
        tanh:  d = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) c (1 + 3 k x^2)
    Backward: dx = g * d.
    float32 (exact form) runs the fused fast path above; float64 uses SciPy's exact erf, for checks.
    """

    def forward(self, x, approximate="none"):
        want = any(self.needs_input_grad)                     # forward also makes dy/dx only if needed
        if approximate == "tanh":
            y, d = _gelu_tanh(x, want)
        elif x.dtype == np.float32:
            y, d = _gelu_float32(x, want)
        else:
            y, d = _gelu_exact(x, want)
        self.save_for_backward(d)
        return y

    def backward(self, g):
        (d,) = self.saved_tensors
        return g * d


def gelu(x, approximate="none"):
    """GELU like ``torch.nn.functional.gelu``: approximate="none" (exact erf form) or "tanh"."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return Gelu.apply(x, approximate=approximate)


# ----------------------------------------------------------------------------------------------
# Linear


class Linear(Function):
    """y = x W^T + b:  x (..., in), W (out, in), b (out,) or absent -> y (..., out).

    With X = x as (M, in) and G = g as (M, out):  dX = G W,  dW = G^T X,  db = sum_m G.
    """

    def forward(self, x, weight, *bias):
        x2 = x.reshape(-1, x.shape[-1])                       # (..., in) -> (M, in)
        y = x2 @ weight.T                                     # (M, in) @ (in, out) -> (M, out)
        if bias:
            y += bias[0]
        self.shape = x.shape
        self.save_for_backward(x2, weight)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))   # (M, out) -> (..., out)

    def backward(self, g):
        x2, weight = self.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])                       # (..., out) -> (M, out)
        dx = (g2 @ weight).reshape(self.shape) if self.needs_input_grad[0] else None  # (M, out) @ (out, in)
        dw = g2.T @ x2 if self.needs_input_grad[1] else None  # (out, M) @ (M, in) -> (out, in)
        if len(self.inputs) == 2:
            return dx, dw
        db = g2.sum(axis=0) if self.needs_input_grad[2] else None  # (out,)
        return dx, dw, db


def linear(x, weight, bias=None):
    """Affine map like ``torch.nn.functional.linear``: x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


# ----------------------------------------------------------------------------------------------
# Dropout


class Dropout(Function):
    """y = x * mask / (1 - p);  dx = g * mask / (1 - p).  mask: boolean keep-mask broadcastable with x."""

    def forward(self, x, mask, p):
        self.scale = x.dtype.type(0.0 if p == 1 else 1.0 / (1.0 - p))
        y = x * mask                                          # bool mask: dropped entries become 0
        y *= self.scale
        self.save_for_backward(mask)
        return y

    def backward(self, g):
        (mask,) = self.saved_tensors
        dx = g * mask
        dx *= self.scale
        return dx, None


_default_generators: dict = {}


def _default_generator(device):
    """One lazily made generator per device, used when dropout gets neither a mask nor a generator."""
    device = backend.normalize_device(device)
    if device not in _default_generators:
        _default_generators[device] = backend.default_rng(None, device)
    return _default_generators[device]


def dropout_mask(shape, p, generator=None, like=None):
    """A boolean keep-mask of ``shape`` (True with probability 1 - p), drawn on ``like``'s device.

    ``generator``: a ``backend.default_rng(seed, device)`` on that device (default: one per device, unseeded).
    ``like``: a Tensor or array whose device the mask goes to (default: the generator's, or the CPU).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if like is not None:
        device = backend.device_of(like.data if isinstance(like, Tensor) else like)
    else:
        device = "cpu"
    gen = generator if generator is not None else _default_generator(device)
    u = gen.random(tuple(shape), dtype=np.float32)        # uniform [0, 1), drawn on the device
    return u >= p


def dropout(x, p=0.5, training=True, mask=None, generator=None):
    """Inverted dropout like ``torch.nn.functional.dropout``: y = x * keep / (1 - p).

    ``mask``: an explicit boolean keep-mask (array or Tensor, broadcastable to x) makes the result
    reproducible and recordable; otherwise one is drawn with ``dropout_mask(x.shape, p, generator, like=x)``.
    p = 0 or training=False returns x itself (no copy, no graph node).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if mask is None:
        mask = dropout_mask(x.shape, p, generator, like=x)
    elif isinstance(mask, Tensor):
        mask = mask.data
    return Dropout.apply(x, mask, p=p)
