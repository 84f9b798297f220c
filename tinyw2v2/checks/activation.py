"""Gradient checks of gelu (exact and tanh forms, tails out to |x| = 6), linear (any leading axes, no bias,
a vector input, transposed inputs) and dropout (the keep-mask enters as data: fixed, broadcast, p = 1)."""
import numpy as np

from ..ops.activation import dropout, gelu, linear
from ..ops.shape import swapaxes
from . import Case

CASES = []


def add(op, shapes, fn, make, **options):
    CASES.append(Case(op, shapes, fn, make, "activation", options))


def n(*shape, scale=1.0):
    return lambda rng: scale * rng.standard_normal(shape)


def inputs(*makers):
    return lambda rng: tuple(m(rng) for m in makers)


def keep(*shape, p):
    return lambda rng: rng.random(shape) >= p


for approx in ("none", "tanh"):
    add("gelu", f"(3,4) {approx}", lambda x, a=approx: gelu(x, a), inputs(n(3, 4)))
    add("gelu", f"(2,1,5) |x| up to 6 {approx}", lambda x, a=approx: gelu(x, a),
        lambda rng: (rng.uniform(-6, 6, (2, 1, 5)),))
    add("gelu", f"T(4,3) transposed {approx}", lambda x, a=approx: gelu(swapaxes(x, 0, 1), a), inputs(n(4, 3)))
add("gelu", "(7,) near 0", gelu, lambda rng: (rng.uniform(-1e-3, 1e-3, 7),))

add("linear", "(3,4)->5 bias", linear, inputs(n(3, 4), n(5, 4), n(5)))
add("linear", "(2,3,4)->2 no bias", linear, inputs(n(2, 3, 4), n(2, 4)))
add("linear", "(4,)->3 vector", linear, inputs(n(4), n(3, 4), n(3)))
add("linear", "T(2,4,3)->5 transposed", lambda x, w, b: linear(swapaxes(x, 1, 2), w, b),
    inputs(n(2, 4, 3), n(5, 4), n(5)))
add("linear", "(1,1,2,3)->1", linear, inputs(n(1, 1, 2, 3), n(1, 3), n(1)))

add("dropout", "(3,4) p=0.3", lambda x, m: dropout(x, 0.3, mask=m), inputs(n(3, 4), keep(3, 4, p=0.3)))
add("dropout", "(2,3,4) mask (2,1,4) broadcast p=0.5", lambda x, m: dropout(x, 0.5, mask=m),
    inputs(n(2, 3, 4), keep(2, 1, 4, p=0.5)))
add("dropout", "T(4,3) p=0.9", lambda x, m: dropout(swapaxes(x, 0, 1), 0.9, mask=m),
    inputs(n(4, 3), keep(3, 4, p=0.9)))
add("dropout", "(2,5) p=1: all dropped", lambda x, m: dropout(x, 1.0, mask=m),
    lambda rng: (rng.standard_normal((2, 5)), np.zeros((2, 5), bool)))
