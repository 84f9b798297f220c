"""Gradient checks of the CTC loss (tinyw2v2/ops/ctc.py) on awkward shape sets: odd T, a batch of 1,
varying input and target lengths, repeated labels (which need a blank between them), an empty target,
a target as long as its input allows (one alignment), an impossible alignment, 1-D concatenated targets,
a blank that is not class 0, and the log_softmax in front as the model uses it.

log_probs are differentiated as free inputs (random, not normalised): the gradient is the true derivative
d loss / d log_probs, which is what a finite difference measures."""
import numpy as np

from .. import ops
from ..ops.ctc import ctc_loss
from . import Case

CASES = []


def add(shapes, fn, make, **options):
    CASES.append(Case("ctc_loss", shapes, fn, make, "ctc", options))


def lp(T, N, C, normalised=False):
    def make(rng):
        x = rng.standard_normal((T, N, C))
        return x - np.log(np.exp(x).sum(-1, keepdims=True)) if normalised else x
    return make


def ints(*rows):
    return np.array(rows, dtype=np.int64)


add("T=7 N=3 C=5 S=3, lengths (7,6,5)/(3,2,1), repeats, none",
    lambda x, tg, il, tl: ctc_loss(x, tg, il, tl, reduction="none"),
    lambda rng: (lp(7, 3, 5)(rng), ints([1, 1, 2], [3, 4, 0], [2, 0, 0]), ints(7, 6, 5), ints(3, 2, 1)))
add("T=5 N=1 C=4 S=3, batch of 1, input length 4 = the target [2,2,3] with its blank (one alignment), sum",
    lambda x, tg, il, tl: ctc_loss(x, tg, il, tl, reduction="sum"),
    lambda rng: (lp(5, 1, 4)(rng), ints([2, 2, 3]), ints(4), ints(3)))
add("T=6 N=3 C=3 S=2, empty target and an impossible one, mean, zero_infinity",
    lambda x, tg, il, tl: ctc_loss(x, tg, il, tl, reduction="mean", zero_infinity=True),
    lambda rng: (lp(6, 3, 3)(rng), ints([1, 2], [0, 0], [1, 1]), ints(6, 3, 2), ints(2, 0, 2)))
add("T=5 N=2 C=4, impossible alignment without zero_infinity (loss inf, gradient 0), none",
    lambda x, tg, il, tl: ctc_loss(x, tg, il, tl, reduction="none"),
    lambda rng: (lp(5, 2, 4)(rng), ints([3, 3, 3], [1, 2, 0]), ints(4, 5), ints(3, 2)))
add("T=9 N=2 C=4 after log_softmax, 1-D targets, blank=3, mean",
    lambda x, tg, il, tl: ctc_loss(ops.log_softmax(x, -1), tg, il, tl, blank=3),
    lambda rng: (lp(9, 2, 4)(rng), ints(0, 0, 1, 2, 2, 1), ints(9, 8), ints(4, 2)))
add("T=11 N=2 C=6 S=4 log-probs, unequal lengths (11,4), sum",
    lambda x, tg, il, tl: ctc_loss(x, tg, il, tl, reduction="sum"),
    lambda rng: (lp(11, 2, 6, normalised=True)(rng), ints([5, 1, 5, 5], [2, 4, 0, 0]), ints(11, 4), ints(4, 2)))
