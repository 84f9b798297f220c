"""Checks of exercise gelu: ``Gelu`` against ``tinyw2v2.functional.gelu`` (exact form)."""
import math

import numpy as np

import tinyw2v2.functional as F
from tinyw2v2.backend import erf

from .common import Case, FunctionExercise


def _values(rng):
    return {"x": np.array([-8.0, -3.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 8.0])}


class GeluExercise(FunctionExercise):
    name = "gelu"
    title = "GELU (exact erf form): backward"
    needs = ("Gelu",)
    docs = 'docs/activation.md, section "gelu"'
    library = "forward and dx against tinyw2v2.functional.gelu, and gradcheck, in float64"
    grads = ("x",)
    returns = "dx"
    cases = [
        Case("x (10,): -8 ... 8 with 0 and +-1e-3", _values),
        Case("x (2, 3, 4) ~ 3 N(0, 1)", lambda rng: {"x": 3 * rng.standard_normal((2, 3, 4))}),
        Case("x (1,) = 0.7", lambda rng: {"x": np.array([0.7])}),
        Case("x (3,) = -40, 30, 40 (erf saturated)", lambda rng: {"x": np.array([-40.0, 30.0, 40.0])},
             "far from 0, Phi is 0 or 1 and phi is 0: dy/dx is 0 or 1"),
    ]

    def student(self, module, t):
        return module.Gelu.apply(t["x"])

    def reference(self, t):
        return F.gelu(t["x"])

    def backward_mistakes(self, inputs, v):
        x = inputs["x"]
        Phi = (1 + erf(x / math.sqrt(2))) / 2
        phi = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        c, k = math.sqrt(2 / math.pi), 0.044715
        th = np.tanh(c * (x + k * x ** 3))
        tanh_form = (1 + th) / 2 + x / 2 * (1 - th * th) * c * (1 + 3 * k * x * x)
        return {"x": [
            (v * Phi, "dy/dx is Phi(x) + x phi(x): y = x Phi(x) is a product, so the product rule gives two terms"),
            (v * x * phi, "dy/dx is Phi(x) + x phi(x): the term Phi(x) (from differentiating the factor x) is missing"),
            (v * (Phi + phi), "the second term of dy/dx is x phi(x), not phi(x)"),
            (v * (Phi + x * phi * math.sqrt(2 * math.pi)), "phi(x) = exp(-x^2 / 2) / sqrt(2 pi): the 1/sqrt(2 pi) is missing"),
            (v * (Phi + x * np.exp(-x * x) / math.sqrt(2 * math.pi)), "phi(x) = exp(-x^2 / 2) / sqrt(2 pi): the exponent is -x^2 / 2"),
            (v * tanh_form, "that is the derivative of the tanh approximation; this exercise is the exact erf form"),
        ]}
