"""Elementwise operations: y = f(a, b) or y = f(x), with broadcasting.

Each backward multiplies the upstream gradient g by the local derivative; the engine then sums the
result down to each input's shape (``tensor.unbroadcast``), so broadcasting costs nothing here.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..tensor import Function


class Add(Function):
    """y = a + b;  da = g, db = g."""

    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    """y = a - b;  da = g, db = -g."""

    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b;  da = g * b, db = g * a."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved_tensors
        return (g * b if self.needs_input_grad[0] else None,
                g * a if self.needs_input_grad[1] else None)


class Div(Function):
    """y = a / b;  da = g / b, db = -g * a / b^2."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved_tensors
        ga = g / b
        return (ga if self.needs_input_grad[0] else None,
                -ga * a / b if self.needs_input_grad[1] else None)


class Neg(Function):
    """y = -x;  dx = -g."""

    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Pow(Function):
    """y = x^p for a constant p;  dx = g * p * x^(p-1)."""

    def forward(self, x, p: float):
        self.save_for_backward(x)
        self.p = p
        return x ** p

    def backward(self, g):
        (x,) = self.saved_tensors
        return g * self.p * x ** (self.p - 1)


class Exp(Function):
    """y = e^x;  dx = g * y."""

    def forward(self, x):
        y = get_array_module(x).exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return g * y


class Log(Function):
    """y = log x;  dx = g / x."""

    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).log(x)

    def backward(self, g):
        (x,) = self.saved_tensors
        return g / x


class Sqrt(Function):
    """y = sqrt(x);  dx = g / (2 y)."""

    def forward(self, x):
        y = get_array_module(x).sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return g / (2 * y)


class Tanh(Function):
    """y = tanh x;  dx = g * (1 - y^2)."""

    def forward(self, x):
        y = get_array_module(x).tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return g * (1 - y * y)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x), computed as (1 + tanh(x/2)) / 2 (no overflow);  dx = g * y (1 - y)."""

    def forward(self, x):
        xp = get_array_module(x)
        y = 0.5 * (1 + xp.tanh(0.5 * x))
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return g * y * (1 - y)


class Abs(Function):
    """y = |x|;  dx = g * sign(x) (0 at x = 0)."""

    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).abs(x)

    def backward(self, g):
        (x,) = self.saved_tensors
        return g * get_array_module(x).sign(x)


class Maximum(Function):
    """y = max(a, b) elementwise;  the gradient goes to the larger input (split evenly on ties)."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return get_array_module(a, b).maximum(a, b)

    def backward(self, g):
        a, b = self.saved_tensors
        xp = get_array_module(a, b)
        share = xp.where(a > b, 1.0, xp.where(a == b, 0.5, 0.0)).astype(g.dtype)
        return (g * share if self.needs_input_grad[0] else None,
                g * (1 - share) if self.needs_input_grad[1] else None)


class Clip(Function):
    """y = min(max(x, lo), hi);  dx = g where lo <= x <= hi, else 0."""

    def forward(self, x, lo=None, hi=None):
        xp = get_array_module(x)
        inside = xp.ones(x.shape, dtype=bool)
        if lo is not None:
            inside &= x >= lo
        if hi is not None:
            inside &= x <= hi
        self.save_for_backward(inside)
        return xp.clip(x, lo, hi)

    def backward(self, g):
        (inside,) = self.saved_tensors
        return g * inside


class Where(Function):
    """y = cond ? a : b with a boolean array cond;  da = g where cond, db = g where not cond."""

    def forward(self, cond, a, b):
        self.save_for_backward(cond)
        return get_array_module(cond, a, b).where(cond, a, b)

    def backward(self, g):
        (cond,) = self.saved_tensors
        xp = get_array_module(g)
        zero = xp.zeros((), dtype=g.dtype)
        return (None,
                xp.where(cond, g, zero) if self.needs_input_grad[1] else None,
                xp.where(cond, zero, g) if self.needs_input_grad[2] else None)


class Cast(Function):
    """y = x as another floating dtype;  dx = g cast back."""

    def forward(self, x, dtype):
        self.src = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.src)


def _mask_array(mask):
    from ..tensor import Tensor
    return mask.data if isinstance(mask, Tensor) else mask


def where(cond, a, b):
    """Elementwise select: ``cond`` is a boolean array (or Tensor); a, b are Tensors or scalars."""
    return Where.apply(_mask_array(cond), a, b)


def masked_fill(x, mask, value: float):
    """x with ``value`` (e.g. -inf) where the boolean ``mask`` (broadcastable to x) is True; dx = g where not mask."""
    return Where.apply(_mask_array(mask), value, x)


def clip(x, min=None, max=None):
    return Clip.apply(x, lo=min, hi=max)


def maximum(a, b):
    return Maximum.apply(a, b)


def pow(x, p):
    if not np.isscalar(p):
        raise TypeError("pow: the exponent must be a Python number (use exp(log(x) * y) for tensor exponents)")
    return Pow.apply(x, p=p)


def add(a, b):
    return Add.apply(a, b)


def sub(a, b):
    return Sub.apply(a, b)


def mul(a, b):
    return Mul.apply(a, b)


def div(a, b):
    return Div.apply(a, b)


def neg(x):
    return Neg.apply(x)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def abs(x):
    return Abs.apply(x)
