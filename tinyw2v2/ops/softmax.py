"""softmax, log_softmax and logsumexp along one axis, stable for large values and for -inf (docs/engine.md).

For one row x_1 .. x_n along the axis:

    m = max_j x_j  (0 if every x_j = -inf),   e_i = exp(x_i - m),   s = sum_j e_j
    logsumexp(x) = m + log s,   softmax(x)_i = e_i / s,   log_softmax(x)_i = x_i - (m + log s)

Rows that are entirely -inf (every candidate masked) give logsumexp = -inf, softmax = 0,
log_softmax = -inf, and zero gradients: no NaN appears anywhere.

These are the reference Functions, the formulas of the docs in plain array code. The tuned ones that run by
default (in-place buffers, einsum row sums, no shift when every |x| <= 60) are in ``ops/fast/softmax.py``.
"""
from __future__ import annotations

from .. import backend
from ..backend import get_array_module
from ..tensor import Function
from .dispatch import pick


def _shifted_exp_rows(x, axis):
    """(m, e, s): m = max_j x_j (0 for an all -inf row), e = exp(x - m), s = sum_j e_j, kept as size 1."""
    xp = get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(m == -xp.inf, x.dtype.type(0), m)        # all -inf row: shift by 0, so e = exp(-inf) = 0
    e = xp.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    return m, e, s


def softmax_rows(x, axis):
    """softmax(x)_i = e_i / s along ``axis``; 0 for an all -inf row (e = 0 there, divided by 1 instead of s = 0)."""
    xp = get_array_module(x)
    _, e, s = _shifted_exp_rows(x, axis)
    return e / xp.where(s == 0, x.dtype.type(1), s)


class Softmax(Function):
    """y_i = e_i / s;  dx = y * (g - sum_j g_j y_j).  The tuned version: ``ops.fast.softmax.Softmax``."""

    def forward(self, x, axis=-1):
        self.axis = axis
        y = softmax_rows(x, axis)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y_i = x_i - (m + log s);  dx = g - softmax(x) * sum_j g_j, with softmax(x) = exp(y) (0 where x = -inf)."""

    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        m, e, s = _shifted_exp_rows(x, axis)
        lse = m + xp.log(xp.where(s == 0, x.dtype.type(1), s))  # all -inf row: m = 0, s = 0 -> lse = 0, y = -inf
        y = x - lse
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        xp = get_array_module(y)
        dx = g - xp.exp(y) * g.sum(axis=self.axis, keepdims=True)
        return xp.where(y == -xp.inf, y.dtype.type(0), dx)  # a -inf input is a constant: no gradient


class LogSumExp(Function):
    """y = m + log s  (-inf for an all -inf row);  dx = g * softmax(x)."""

    def forward(self, x, axis=-1, keepdims=False):
        xp = get_array_module(x)
        self.axis, self.keepdims = axis, keepdims
        m, e, s = _shifted_exp_rows(x, axis)
        with backend.errstate(xp, divide="ignore"):
            lse = m + xp.log(s)                               # log 0 = -inf for an all -inf row
        self.save_for_backward(e / xp.where(s == 0, x.dtype.type(1), s))  # softmax(x), 0 on an all -inf row
        return lse if keepdims else lse.squeeze(axis)

    def backward(self, g):
        (p,) = self.saved_tensors
        xp = get_array_module(p)
        if not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        return g * p


def softmax(x, axis=-1):
    return pick(Softmax).apply(x, axis=axis)


def log_softmax(x, axis=-1):
    return pick(LogSoftmax).apply(x, axis=axis)


def logsumexp(x, axis=-1, keepdims=False):
    return pick(LogSumExp).apply(x, axis=axis, keepdims=keepdims)
