"""Exercise 1: the backward of GELU, exact (erf) form.

Forward (written for you):

    y = x Phi(x),     Phi(x) = (1 + erf(x / sqrt 2)) / 2      the standard normal CDF

Your part: ``backward``, dx = g * dy/dx. Derive dy/dx first: docs/activation.md, section "gelu"
(Phi' is the normal density phi(x) = exp(-x^2 / 2) / sqrt(2 pi)).

Check it:  python -m exercises.check gelu
"""
import math

import numpy as np

from tinyw2v2 import Function
from tinyw2v2.backend import erf  # SciPy's exact erf in float64


class Gelu(Function):
    """y = x Phi(x), elementwise; x any shape."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * (1 + erf(x / math.sqrt(2))) / 2

    def backward(self, g):
        (x,) = self.saved_tensors
        # TODO: dx = g * dy/dx, with dy/dx from the product rule
        raise NotImplementedError("fill in Gelu.backward")
