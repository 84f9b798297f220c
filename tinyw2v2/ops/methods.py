"""The Tensor's operators and methods, each attached to the op that computes it (tinygrad's way: one line an op).

``tinyw2v2/tensor.py`` defines the engine (``Tensor``, ``Function``, backward) and imports no op; this module, imported
by ``tinyw2v2.ops``, gives ``Tensor`` its Python operators (``x + y``, ``x @ w``, ``x[i]``, ``x < y``) and methods
(``x.sum()``, ``x.reshape(...)``, ``x.softmax(-1)``, ``x.to(dtype)``, ...).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor
from .elementwise import Cast, abs, add, clip, div, exp, log, masked_fill, mul, neg, pow, sigmoid, sqrt, sub, tanh
from .matmul import matmul
from .reduce import max, mean, sum, var
from .shape import getitem, reshape, swapaxes, transpose
from .softmax import log_softmax, logsumexp, softmax


def _shape(args):
    """``x.reshape(2, 3)`` and ``x.reshape((2, 3))`` alike."""
    return args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


def _compare(op):
    """A comparison: a plain (non-differentiable) boolean array wrapped in a Tensor."""
    return lambda self, other: Tensor(op(self.data, other.data if isinstance(other, Tensor) else other), _copy=False)


def to(self, device=None, dtype=None) -> Tensor:
    """Copy to ``device`` and/or cast to ``dtype``; differentiable for dtype casts on one device."""
    out = self
    if dtype is not None and np.dtype(dtype) != self.dtype:
        out = Cast.apply(out, dtype=np.dtype(dtype))
    if device is not None and backend.normalize_device(device) != self.device:
        out = Tensor(backend.to_device(out.data, device), requires_grad=out.requires_grad and out.is_leaf, _copy=False)
    return out


# Python operators
Tensor.__add__ = lambda self, other: add(self, other)
Tensor.__radd__ = lambda self, other: add(other, self)
Tensor.__sub__ = lambda self, other: sub(self, other)
Tensor.__rsub__ = lambda self, other: sub(other, self)
Tensor.__mul__ = lambda self, other: mul(self, other)
Tensor.__rmul__ = lambda self, other: mul(other, self)
Tensor.__truediv__ = lambda self, other: div(self, other)
Tensor.__rtruediv__ = lambda self, other: div(other, self)
Tensor.__neg__ = lambda self: neg(self)
Tensor.__pow__ = lambda self, exponent: pow(self, exponent)
Tensor.__matmul__ = lambda self, other: matmul(self, other)
Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
Tensor.__getitem__ = lambda self, index: getitem(self, index)
Tensor.__lt__ = _compare(lambda a, b: a < b)
Tensor.__le__ = _compare(lambda a, b: a <= b)
Tensor.__gt__ = _compare(lambda a, b: a > b)
Tensor.__ge__ = _compare(lambda a, b: a >= b)
Tensor.__hash__ = object.__hash__            # defining comparisons would otherwise drop hashing

# methods
Tensor.exp = lambda self: exp(self)
Tensor.log = lambda self: log(self)
Tensor.sqrt = lambda self: sqrt(self)
Tensor.tanh = lambda self: tanh(self)
Tensor.sigmoid = lambda self: sigmoid(self)
Tensor.abs = lambda self: abs(self)
Tensor.clip = lambda self, min=None, max=None: clip(self, min, max)
Tensor.sum = lambda self, axis=None, keepdims=False: sum(self, axis, keepdims)
Tensor.mean = lambda self, axis=None, keepdims=False: mean(self, axis, keepdims)
Tensor.max = lambda self, axis=None, keepdims=False: max(self, axis, keepdims)
Tensor.var = lambda self, axis=None, keepdims=False, ddof=0: var(self, axis, keepdims, ddof)
Tensor.reshape = lambda self, *shape: reshape(self, _shape(shape))
Tensor.transpose = lambda self, *axes: transpose(self, _shape(axes) or None)
Tensor.permute = Tensor.transpose
Tensor.swapaxes = lambda self, a, b: swapaxes(self, a, b)
Tensor.T = property(lambda self: transpose(self, None))
Tensor.softmax = lambda self, axis=-1: softmax(self, axis)
Tensor.log_softmax = lambda self, axis=-1: log_softmax(self, axis)
Tensor.logsumexp = lambda self, axis=-1, keepdims=False: logsumexp(self, axis, keepdims)
Tensor.masked_fill = lambda self, mask, value: masked_fill(self, mask, value)
Tensor.to = to
Tensor.float = lambda self: self.to(dtype=np.float32)
Tensor.double = lambda self: self.to(dtype=np.float64)
