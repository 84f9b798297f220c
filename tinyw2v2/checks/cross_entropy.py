"""Gradient checks of cross_entropy (family "cross_entropy").

Targets are integer arrays (constants); ignored rows, -inf logits (a masked negative), a target whose logit
is -inf (loss +inf: left out of the check's sum, its gradient must be 0), trailing axes after the class
axis, a transposed input and large logits.
"""
import numpy as np

from .. import ops
from ..ops.cross_entropy import cross_entropy
from . import Case

CASES = []


def add(op, shapes, fn, make, **options):
    CASES.append(Case(op, shapes, fn, make, "cross_entropy", options))


def ce(reduction="mean", ignore_index=-100):
    return lambda x, t: cross_entropy(x, t, reduction=reduction, ignore_index=ignore_index)


add("cross_entropy", "(5,4) mean, 2 rows ignored", ce(),
    lambda rng: (rng.standard_normal((5, 4)), np.array([1, -100, 3, 0, -100])))
add("cross_entropy", "(3,4,5) class axis 1, sum", ce("sum"),
    lambda rng: (rng.standard_normal((3, 4, 5)), rng.integers(0, 4, (3, 5))))
add("cross_entropy", "(2,3,2,2) none, ignore_index=1", ce("none", ignore_index=1),
    lambda rng: (rng.standard_normal((2, 3, 2, 2)), rng.integers(0, 3, (2, 2, 2))))
add("cross_entropy", "(4,5) none, -inf negatives, a -inf target", ce("none"),
    lambda rng: (np.where(np.array([[0, 1, 0, 0, 1], [0, 0, 0, 1, 1], [0, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool),
                          -np.inf, rng.standard_normal((4, 5))), np.array([0, 2, 0, 0])))
add("cross_entropy", "(3,6) sum, -inf negatives, target 0 (contrastive)", ce("sum"),
    lambda rng: (np.where(rng.random((3, 6)) < 0.3, -np.inf, 0) + np.concatenate(
        [np.zeros((3, 1)), rng.standard_normal((3, 5))], 1), np.zeros(3, dtype=np.int64)))
add("cross_entropy", "(1,7) mean, large logits x50", ce(),
    lambda rng: (50 * rng.standard_normal((1, 7)), np.array([3])))
add("cross_entropy", "T(4,6) transposed, mean", lambda x, t: cross_entropy(ops.swapaxes(x, 0, 1), t),
    lambda rng: (rng.standard_normal((4, 6)), rng.integers(0, 4, 6)))
