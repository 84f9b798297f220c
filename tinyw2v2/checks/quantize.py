"""Gradient checks of the quantiser: gumbel_softmax and codevector_lookup (family "quantize").

Randomness is data: Gumbel noise is a ``Const``. The hard Gumbel-softmax (straight-through) has a gradient that
is not the derivative of its forward, so its cases compare against a function whose *value* varies like the
intended gradient: f(x) = ST(x) - stop(ST(x)) + stop(soft(x)); its value is soft(x) (the one-hots cancel
exactly), its analytic gradient flows only through ST: both give the soft Jacobian.
"""
import numpy as np

from .. import ops
from ..ops.quantize import codevector_lookup, gumbel_softmax
from . import Case, Const

CASES = []


def add(op, shapes, fn, make, **options):
    CASES.append(Case(op, shapes, fn, make, "quantize", options))


def n(rng, *shape):
    return rng.standard_normal(shape)


def gumbel(rng, *shape):
    return Const(-np.log(-np.log(rng.uniform(1e-6, 1 - 1e-6, shape))))


def T(x):
    return ops.swapaxes(x, -1, -2)


def straight_through(x, g, tau, axis=-1):
    hard = gumbel_softmax(x, tau, hard=True, axis=axis, noise=g)
    soft = gumbel_softmax(x, tau, hard=False, axis=axis, noise=g)
    return hard - hard.detach() + soft.detach()


def probs(rng, *shape):
    """Positive 'probabilities' away from 0 (the check perturbs them freely; they need not sum to 1)."""
    return rng.uniform(0.05, 1.0, shape)


# --- gumbel_softmax -----------------------------------------------------------------------------
add("gumbel_softmax", "(3,5) tau=1", lambda x, g: gumbel_softmax(x, 1.0, noise=g),
    lambda rng: (n(rng, 3, 5), gumbel(rng, 3, 5)))
add("gumbel_softmax", "(2,7,3) axis=1 V=7 tau=0.1", lambda x, g: gumbel_softmax(x, 0.1, axis=1, noise=g),
    lambda rng: (0.05 * n(rng, 2, 7, 3), Const(0.05 * gumbel(rng, 2, 7, 3).value)))
add("gumbel_softmax", "(4,5) tau=5 with -inf logits", lambda x, g: gumbel_softmax(x, 5.0, noise=g),
    lambda rng: (np.where(np.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 0], [0, 0, 0, 0, 1]], bool),
                          -np.inf, n(rng, 4, 5)), gumbel(rng, 4, 5)))
add("gumbel_softmax", "T(5,4) transposed tau=2", lambda x, g: gumbel_softmax(T(x), 2.0, noise=g),
    lambda rng: (n(rng, 5, 4), gumbel(rng, 4, 5)))
add("gumbel_softmax", "hard ST (6,5) tau=2", lambda x, g: straight_through(x, g, 2.0),
    lambda rng: (n(rng, 6, 5), gumbel(rng, 6, 5)))
add("gumbel_softmax", "hard ST (1,7,3) axis=1 V=7 tau=0.5", lambda x, g: straight_through(x, g, 0.5, axis=1),
    lambda rng: (n(rng, 1, 7, 3), gumbel(rng, 1, 7, 3)))

# --- codevector_lookup ---------------------------------------------------------------------------
add("codevector_lookup", "(4,2*3) soft, cv (1,6,2) G=2 V=3", lambda p, c: codevector_lookup(p, c, 2),
    lambda rng: (probs(rng, 4, 6), n(rng, 1, 6, 2)))
add("codevector_lookup", "(5,7) G=1 V=7, cv (1,7,3)", lambda p, c: codevector_lookup(p, c, 1),
    lambda rng: (probs(rng, 5, 7), n(rng, 1, 7, 3)))
add("codevector_lookup", "(2,3,2*5) lead dims, cv (10,4)", lambda p, c: codevector_lookup(p, c, 2),
    lambda rng: (probs(rng, 2, 3, 10), n(rng, 10, 4)))
add("codevector_lookup", "T(6,4) transposed, G=3 V=2", lambda p, c: codevector_lookup(T(p), c, 3),
    lambda rng: (probs(rng, 6, 4), n(rng, 1, 6, 1)))
add("codevector_lookup", "one-hot probs (const) (5,2*3)", lambda p, c: codevector_lookup(p, c, 2),
    lambda rng: (Const(np.eye(3)[rng.integers(0, 3, (5, 2))].reshape(5, 6)), n(rng, 1, 6, 4)))
add("codevector_lookup", "quantiser: hard ST (3,2*5) tau=2 -> lookup",
    lambda x, g, c: (lambda q_st, q_soft: q_st - q_st.detach() + q_soft.detach())(
        codevector_lookup(gumbel_softmax(x.reshape(6, 5), 2.0, hard=True, noise=g).reshape(3, 10), c, 2),
        codevector_lookup(gumbel_softmax(x.reshape(6, 5), 2.0, noise=g).reshape(3, 10), c, 2)),
    lambda rng: (n(rng, 3, 10), gumbel(rng, 6, 5), Const(n(rng, 1, 10, 3))))
