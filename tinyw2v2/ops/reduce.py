"""Reductions over axes: sum, mean, max, var (each with ``keepdims``)."""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..tensor import Function


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % ndim for a in axis))


def _expand(g, axes, keepdims):
    """Put back the reduced axes as size-1 axes so that g broadcasts against the input."""
    if keepdims:
        return g
    for a in axes:
        g = get_array_module(g).expand_dims(g, a)
    return g


class Sum(Function):
    """y = scale * sum_axes x;  dx = scale * g broadcast back over the reduced axes."""

    def forward(self, x, axis=None, keepdims=False, scale=1.0):
        self.axes, self.keepdims, self.scale, self.shape = _axes(axis, x.ndim), keepdims, scale, x.shape
        y = x.sum(axis=self.axes, keepdims=keepdims)
        return y * scale if scale != 1.0 else y

    def backward(self, g):
        g = _expand(g, self.axes, self.keepdims)
        if self.scale != 1.0:
            g = g * self.scale
        return get_array_module(g).broadcast_to(g, self.shape)


class Max(Function):
    """y = max_axes x;  dx = g at the positions holding the max (split evenly among ties)."""

    def forward(self, x, axis=None, keepdims=False):
        self.axes, self.keepdims = _axes(axis, x.ndim), keepdims
        y = x.max(axis=self.axes, keepdims=True)
        self.save_for_backward(x, y)
        return y if keepdims else y.reshape([n for i, n in enumerate(y.shape) if i not in self.axes])

    def backward(self, g):
        x, y = self.saved_tensors
        hit = (x == y).astype(g.dtype)
        count = hit.sum(axis=self.axes, keepdims=True)
        return _expand(g, self.axes, self.keepdims) * hit / count


class Var(Function):
    """y = sum_axes (x - mean)^2 / (n - ddof) (two passes);  dx = g * 2 (x - mean) / (n - ddof)."""

    def forward(self, x, axis=None, keepdims=False, ddof=0):
        self.axes, self.keepdims = _axes(axis, x.ndim), keepdims
        n = int(np.prod([x.shape[a] for a in self.axes]))
        self.denom = n - ddof
        xc = x - x.mean(axis=self.axes, keepdims=True)
        self.save_for_backward(xc)
        return (xc * xc).sum(axis=self.axes, keepdims=keepdims) / self.denom

    def backward(self, g):
        (xc,) = self.saved_tensors
        return _expand(g, self.axes, self.keepdims) * (2.0 / self.denom) * xc


def sum(x, axis=None, keepdims=False):
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean over axes: a Sum scaled by 1/n (so its backward is the same code)."""
    shape = x.shape
    n = int(np.prod([shape[a] for a in _axes(axis, len(shape))]))
    return Sum.apply(x, axis=axis, keepdims=keepdims, scale=1.0 / n)


def max(x, axis=None, keepdims=False):
    return Max.apply(x, axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False, ddof=0):
    """Variance with NumPy's convention (``ddof=0``: divide by n; torch's default is ddof=1)."""
    return Var.apply(x, axis=axis, keepdims=keepdims, ddof=ddof)
