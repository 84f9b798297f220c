"""The tuned softmax, log_softmax and logsumexp: the reference formulas of ``tinyw2v2.ops.softmax`` with fewer
passes and no temporaries.

- Each op allocates one full-size array (its output, or the gradient) and works in place on it (``out=``).
- Row sums and row dot products are ``einsum`` contractions (``_rowsum``): no temporary for sum_j g_j y_j, and
  faster than ``sum`` on short rows.
- On NumPy the max-shift is skipped when every |x| <= 60 (``shifted_exp``; knob ``TUNING.skip_bounded_shift``).

``Softmax``, ``LogSoftmax`` and ``LogSumExp`` equal the reference Functions of the same names (same forward, same
backward, same -inf behaviour) up to rounding: ``tests/test_fast_ops.py`` on the gradient-check catalogue and
``tests/test_ops_attention.py`` on large and -inf rows, on both shift paths. Derivations: docs/engine.md.
"""
from __future__ import annotations

import importlib

import numpy as np

from ... import backend
from ...backend import get_array_module
from ..dispatch import tuned
from .tuning import TUNING

reference = importlib.import_module("tinyw2v2.ops.softmax")   # the module (tinyw2v2.ops.softmax is also a function)

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_NO_SHIFT_BOUND = 60.0


def _rowsum(axis, *arrays):
    """sum_j prod_k arrays[k]_j along ``axis``, kept as size 1 (one einsum: no temporary for the product)."""
    a = arrays[0]
    xp = get_array_module(a)
    ax = axis % a.ndim
    sub = _LETTERS[:a.ndim]
    out = xp.einsum(",".join([sub] * len(arrays)) + "->" + sub.replace(sub[ax], ""), *arrays)  # (..., [1 removed])
    return xp.expand_dims(out, ax)  # (..., 1, ...)


def shifted_exp(x, axis):
    """(m, e, s): the shift m, e = exp(x - m) (a fresh array) and s = sum_j e_j along ``axis``.

    m is the row max (0 for an all -inf row), except on NumPy when every entry lies in [-60, 60] (and
    ``TUNING.skip_bounded_shift`` is on): then exp(x) can neither overflow nor lose a row's largest term
    (e^-60 is a normal float), and the shift is skipped (m = 0), which saves a reduction and a pass on short
    rows. Two global reductions decide it; the comparison needs their values on the host, a sync point on a
    GPU, so CuPy always shifts.
    """
    xp = get_array_module(x)
    if (TUNING.skip_bounded_shift and xp is np and x.size
            and -_NO_SHIFT_BOUND <= x.min() and x.max() <= _NO_SHIFT_BOUND):  # False for NaN, -inf
        m, e = xp.zeros((), dtype=x.dtype), xp.exp(x)
    else:
        m = x.max(axis=axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, xp.zeros((), dtype=x.dtype))  # all -inf row: shift by 0 (small array)
        e = x - m
        xp.exp(e, out=e)  # exp(-inf) = 0
    return m, e, _rowsum(axis, e)


def _logsumexp(x, axis):
    """log sum_j exp(x_j) along ``axis`` (kept as size 1), shifting by the row max; -inf for all -inf rows."""
    xp = get_array_module(x)
    m, _, s = shifted_exp(x, axis)
    with backend.errstate(xp, divide="ignore"):
        return m + xp.log(s)  # log(0) = -inf for an all -inf row


def _softmax(x, axis):
    xp = get_array_module(x)
    _, y, s = shifted_exp(x, axis)
    s += s == 0  # all -inf row: y is all 0, divide by 1 instead of 0
    xp.reciprocal(s, out=s)
    y *= s
    return y


@tuned(reference.Softmax)
class Softmax(reference.Softmax):
    """``ops.softmax.Softmax`` in place: y = e * (1 / s) on the exp buffer, dx = (g - rowsum(g, y)) * y."""

    def forward(self, x, axis=-1):
        self.axis = axis
        y = _softmax(x, axis)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        dx = g - _rowsum(self.axis, g, y)  # g - sum_j g_j y_j (fresh array)
        dx *= y
        return dx


@tuned(reference.LogSoftmax)
class LogSoftmax(reference.LogSoftmax):
    """``ops.softmax.LogSoftmax`` with the output written into the exp buffer and an in-place backward."""

    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        m, e, s = shifted_exp(x, axis)
        with backend.errstate(xp, divide="ignore"):
            lse = m + xp.log(s)  # (..., 1, ...)
        lse = xp.where(xp.isfinite(lse), lse, xp.zeros((), dtype=x.dtype))  # all -inf row stays -inf
        y = xp.subtract(x, lse, out=e)  # reuse the exp buffer for the output
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        xp = get_array_module(y)
        dx = xp.exp(y)  # softmax(x), 0 where x = -inf
        dx *= _rowsum(self.axis, g)
        xp.subtract(g, dx, out=dx)  # g - p * sum_j g_j
        xp.copyto(dx, xp.zeros((), dtype=dx.dtype), where=(y == -xp.inf))  # no gradient into -inf inputs
        return dx


@tuned(reference.LogSumExp)
class LogSumExp(reference.LogSumExp):
    """``ops.softmax.LogSumExp`` saving x and lse (no array of x's size), softmax recomputed in backward."""

    def forward(self, x, axis=-1, keepdims=False):
        self.axis, self.keepdims = axis, keepdims
        lse = _logsumexp(x, axis)
        self.save_for_backward(x, lse)
        return lse if keepdims else lse.squeeze(axis)

    def backward(self, g):
        x, lse = self.saved_tensors
        xp = get_array_module(x)
        if not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        lse = xp.where(xp.isfinite(lse), lse, xp.full((), xp.inf, dtype=x.dtype))  # all -inf row: exp(-inf) = 0
        p = x - lse
        xp.exp(p, out=p)  # softmax(x)
        p *= g
        return p
