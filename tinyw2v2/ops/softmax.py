"""softmax, log_softmax and logsumexp along one axis, stable for large values and for -inf.

Rows that are entirely -inf (every candidate masked) give logsumexp = -inf, softmax = 0,
log_softmax = -inf, and zero gradients: no NaN appears anywhere.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..tensor import Function


def _logsumexp(x, axis):
    """log sum_j exp(x_j) along ``axis`` (kept as size 1), shifting by the row max; -inf for all -inf rows."""
    xp = get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros((), dtype=x.dtype))  # all -inf row: shift by 0
    s = xp.exp(x - m).sum(axis=axis, keepdims=True)
    with _quiet(xp):
        return m + xp.log(s)  # log(0) = -inf for an all -inf row


def _softmax(x, axis):
    xp = get_array_module(x)
    lse = _logsumexp(x, axis)
    finite = xp.isfinite(lse)
    lse = xp.where(finite, lse, xp.zeros((), dtype=x.dtype))
    return xp.exp(x - lse) * finite  # all -inf rows: exp(-inf) = 0


class _quiet:
    """Silence NumPy's divide-by-zero warning for log(0) (CuPy does not warn)."""

    def __init__(self, xp):
        self.ctx = xp.errstate(divide="ignore") if hasattr(xp, "errstate") else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


class Softmax(Function):
    """y_i = exp(x_i) / sum_j exp(x_j);  dx = y * (g - sum_j g_j y_j)."""

    def forward(self, x, axis=-1):
        self.axis = axis
        y = _softmax(x, axis)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y_i = x_i - logsumexp(x);  dx = g - softmax(x) * sum_j g_j  (0 where x = -inf)."""

    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        lse = _logsumexp(x, axis)
        y = x - xp.where(xp.isfinite(lse), lse, xp.zeros((), dtype=x.dtype))  # all -inf row stays -inf
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        xp = get_array_module(y)
        p = xp.exp(y)  # softmax(x), 0 where x = -inf
        dx = g - p * g.sum(axis=self.axis, keepdims=True)
        return xp.where(xp.isneginf(y), xp.zeros((), dtype=dx.dtype), dx)


class LogSumExp(Function):
    """y = log sum_j exp(x_j);  dx = g * softmax(x)."""

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
        finite = xp.isfinite(lse)
        p = xp.exp(x - xp.where(finite, lse, xp.zeros((), dtype=x.dtype))) * finite
        return g * p


def softmax(x, axis=-1):
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    return LogSoftmax.apply(x, axis=axis)


def logsumexp(x, axis=-1, keepdims=False):
    return LogSumExp.apply(x, axis=axis, keepdims=keepdims)
