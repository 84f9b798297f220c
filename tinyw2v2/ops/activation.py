"""The feed-forward pieces: gelu, linear and dropout (names and signatures of torch.nn.functional).

gelu:    y = x * Phi(x), Phi the standard normal CDF (exact erf form, as wav2vec 2.0 uses), or the tanh form.
linear:  y = x @ W^T + b over any leading axes, one GEMM forward and one per gradient.
dropout: inverted dropout y = x * mask / (1 - p) with a boolean keep-mask that can be drawn with
         ``dropout_mask`` and passed in, so that a model can record it (and a gradcheck can fix it).
Derivations: docs/activation.md.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..tensor import Function, Tensor
from .dispatch import pick

# ----------------------------------------------------------------------------------------------
# GELU

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_K = 0.044715


class Gelu(Function):
    """y = x Phi(x) = x/2 (1 + erf(x / sqrt2)), or the tanh form y = x/2 (1 + tanh u), u = c (x + k x^3); x any shape.

    Forward saves the local derivative d = dy/dx (the size of x, like saving x itself) when a gradient is needed:
        exact: d = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi)                      (product rule)
        tanh:  d = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) c (1 + 3 k x^2)       (tanh' = 1 - tanh^2, never 1/cosh^2)
    Backward: dx = g * d.
    The tuned float32 kernel is ``ops.fast.activation.Gelu``.
    """

    def forward(self, x, approximate="none"):
        xp = get_array_module(x)
        if approximate == "tanh":
            u = _TANH_C * (x + _TANH_K * x * x * x)
            th = xp.tanh(u)
            y = x / 2 * (1 + th)
            d = (1 + th) / 2 + x / 2 * (1 - th * th) * _TANH_C * (1 + 3 * _TANH_K * (x * x))
        else:
            Phi = (1 + backend.erf(x * _SQRT1_2)) / 2
            phi = xp.exp(-(x * x) / 2) * _INV_SQRT_2PI
            y = x * Phi
            d = Phi + x * phi
        self.save_for_backward(d)
        return y

    def backward(self, g):
        (d,) = self.saved_tensors
        return g * d


def gelu(x, approximate="none"):
    """GELU like ``torch.nn.functional.gelu``: approximate="none" (exact erf form) or "tanh"."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return pick(Gelu).apply(x, approximate=approximate)


# ----------------------------------------------------------------------------------------------
# Linear


class Linear(Function):
    """y = x W^T + b:  x (..., in), W (out, in), b (out,) or absent -> y (..., out).

    With X = x as (M, in) and G = g as (M, out):  dX = G W,  dW = G^T X,  db = sum_m G.
    """

    def forward(self, x, weight, bias=None):
        x2 = x.reshape(-1, x.shape[-1])                       # (..., in) -> (M, in)
        y = x2 @ weight.T                                     # (M, in) @ (in, out) -> (M, out)
        if bias is not None:
            y += bias
        self.shape = x.shape
        self.save_for_backward(x2, weight)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))   # (M, out) -> (..., out)

    def backward(self, g):
        x2, weight = self.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])                       # (..., out) -> (M, out)
        dx = (g2 @ weight).reshape(self.shape) if self.needs_input_grad[0] else None  # (M, out) @ (out, in)
        dw = g2.T @ x2 if self.needs_input_grad[1] else None  # (out, M) @ (M, in) -> (out, in)
        db = g2.sum(axis=0) if self.needs_input_grad[2] else None  # (out,)
        return dx, dw, db


def linear(x, weight, bias=None):
    """Affine map like ``torch.nn.functional.linear``: x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    return Linear.apply(x, weight, bias)


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
