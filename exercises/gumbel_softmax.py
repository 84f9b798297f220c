"""Exercise 4: the Gumbel softmax with the straight-through estimator (forward and backward).

x: logits (..., V); g: Gumbel noise of the same shape (given, a constant); tau > 0; along the last axis:

    z = (x + g) / tau,   s = softmax(z)
    y = s                              if not hard
    y = onehot(argmax s)               if hard: exactly 0 and 1

Backward, in both modes: the gradient of the soft relaxation s. With hard=True the forward is piecewise constant,
so the straight-through estimator treats y as if it were s. No gradient for g: return None for it.
The derivation is in docs/quantize.md, section "gumbel_softmax(...)", paragraph "Backward".

Check it:  python -m exercises.check gumbel_softmax
"""
import numpy as np

from tinyw2v2 import Function


class GumbelSoftmax(Function):
    """y = softmax((x + g) / tau) along the last axis, or its one-hot argmax (hard=True, straight-through)."""

    def forward(self, x, g, tau=1.0, hard=True):
        # TODO: s (subtract the row max before exp), save what backward needs, return s or the one-hot
        raise NotImplementedError("fill in GumbelSoftmax.forward")

    def backward(self, dy):
        # TODO: dx from the soft s; return (dx, None)
        raise NotImplementedError("fill in GumbelSoftmax.backward")
