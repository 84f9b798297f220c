"""Gradient checks of group_norm and layer_norm: groups = 1, > 1 and = C, odd channel counts, a batch of 1,
single-element groups (zero variance: y = bias, dx = 0), a variance of the order of eps, transposed
(non-contiguous) inputs, 4-D inputs, two normalised axes, and weight / bias absent."""
from ..ops.norm import group_norm, layer_norm
from ..ops.shape import swapaxes
from . import Case

CASES = []


def add(op, shapes, fn, make, **options):
    CASES.append(Case(op, shapes, fn, make, "norm", options))


def n(*shape, scale=1.0, shift=0.0):
    return lambda rng: shift + scale * rng.standard_normal(shape)


def inputs(*makers):
    return lambda rng: tuple(m(rng) for m in makers)


def gn(groups, eps=1e-5):
    return lambda x, w, b: group_norm(x, groups, w, b, eps)


add("group_norm", "(2,6,5) G=3", gn(3), inputs(n(2, 6, 5), n(6), n(6)))
add("group_norm", "(1,5,7) G=C=5 batch 1, odd C", gn(5), inputs(n(1, 5, 7), n(5), n(5)))
add("group_norm", "(2,4,3) G=1", gn(1), inputs(n(2, 4, 3, shift=2.0), n(4), n(4)))
add("group_norm", "(2,3,2,3) G=3 4-D", gn(3), inputs(n(2, 3, 2, 3), n(3), n(3)))
add("group_norm", "(3,2,1) G=2 T=1: one-element groups", gn(2), inputs(n(3, 2, 1), n(2), n(2)))
add("group_norm", "(2,4,6) G=2 var ~ eps=1e-3", gn(2, eps=1e-3), inputs(n(2, 4, 6, scale=0.03), n(4), n(4)))
add("group_norm", "T(2,7,4) G=2 transposed", lambda x, w, b: group_norm(swapaxes(x, 1, 2), 2, w, b),
    inputs(n(2, 7, 4), n(4), n(4)))
add("group_norm", "(2,4,5) G=2 no weight, no bias", lambda x: group_norm(x, 2), inputs(n(2, 4, 5)))
add("group_norm", "(2,3,4) G=3 bias only", lambda x, b: group_norm(x, 3, None, b), inputs(n(2, 3, 4), n(3)))

add("layer_norm", "(2,3,5) over 5", lambda x, w, b: layer_norm(x, 5, w, b), inputs(n(2, 3, 5), n(5), n(5)))
add("layer_norm", "(2,3,4,5) over (4,5)", lambda x, w, b: layer_norm(x, (4, 5), w, b),
    inputs(n(2, 3, 4, 5), n(4, 5), n(4, 5)))
add("layer_norm", "(1,7) batch 1, odd, no affine", lambda x: layer_norm(x, 7), inputs(n(1, 7, shift=-3.0)))
add("layer_norm", "T(5,2,3) over 2 transposed", lambda x, w, b: layer_norm(swapaxes(x, 1, 2), 2, w, b),
    inputs(n(5, 2, 3), n(2), n(2)))
add("layer_norm", "(4,1) over 1: one-element rows", lambda x, w, b: layer_norm(x, 1, w, b),
    inputs(n(4, 1), n(1), n(1)))
add("layer_norm", "(3,6) var ~ eps=1e-3", lambda x, w, b: layer_norm(x, 6, w, b, 1e-3),
    inputs(n(3, 6, scale=0.03), n(6), n(6)))
add("layer_norm", "(2,3,4) weight only", lambda x, w: layer_norm(x, 4, w), inputs(n(2, 3, 4), n(4)))
