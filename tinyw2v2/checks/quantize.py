"""Gradient checks of the quantiser and the pretraining losses (family "quantize").

Randomness is data: Gumbel noise is a ``Const``, masks and ``neg_is_pos`` are boolean arrays. Two ops
have a gradient that is not the derivative of their forward, so their cases compare against a function
whose *value* varies like the intended gradient:
- hard Gumbel-softmax (straight-through): f(x) = ST(x) - stop(ST(x)) + stop(soft(x)); its value is soft(x)
  (the one-hots cancel exactly), its analytic gradient flows only through ST: both give the soft Jacobian.
- grad_scale: f(x) = grad_scale(x, a) - (1 - a) stop(x) has value a x and analytic gradient a.
The contrastive cases pass ``neg_is_pos`` explicitly: finite differences would otherwise perturb a
duplicate negative away from its positive and switch its -inf logit back on.
"""
import numpy as np

from .. import ops
from ..ops.contrastive import (codevector_perplexity, contrastive_loss, cosine_similarity, diversity_loss,
                               feature_penalty, grad_scale)
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

# --- cosine_similarity -----------------------------------------------------------------------------
add("cosine_similarity", "(3,5),(3,5)", cosine_similarity, lambda rng: (n(rng, 3, 5), n(rng, 3, 5)))
add("cosine_similarity", "(2,1,4),(3,4) broadcast", cosine_similarity, lambda rng: (n(rng, 2, 1, 4), n(rng, 3, 4)))
add("cosine_similarity", "(2,3,4) vs (3,2,3,4) as in transformers", cosine_similarity,
    lambda rng: (n(rng, 2, 3, 4), n(rng, 3, 2, 3, 4)))
add("cosine_similarity", "T(4,3),(3,4) axis 0", lambda a, b: cosine_similarity(T(a), b, axis=0),
    lambda rng: (n(rng, 4, 3), n(rng, 3, 4)))
add("cosine_similarity", "(3,1),(3,4) size-1 feature axis", cosine_similarity,
    lambda rng: (n(rng, 3, 1), n(rng, 3, 4)))


# --- contrastive_loss ------------------------------------------------------------------------------
def contrastive_inputs(B, T, D, K, masked, duplicates=(), scale=1.0):
    """predictions, targets, negatives, mask (B, T) and neg_is_pos (K, B, T) with planted duplicates."""
    def make(rng):
        x, y, negs = n(rng, B, T, D), n(rng, B, T, D), scale * n(rng, K, B, T, D)
        mask = np.zeros((B, T), bool)
        mask.reshape(-1)[list(masked)] = True
        for k, b, t in duplicates:
            negs[k, b, t] = y[b, t]
        nip = (y[None] == negs).all(-1)
        return x, y, negs, mask, nip
    return make


add("contrastive_loss", "B=2 T=5 D=4 K=3 tau=0.1 duplicates",
    lambda x, y, ng, m, d: contrastive_loss(x, y, ng, 0.1, m, d),
    contrastive_inputs(2, 5, 4, 3, [0, 2, 3, 6, 7, 9], duplicates=[(1, 0, 2), (0, 1, 1), (2, 1, 1)]))
add("contrastive_loss", "B=1 T=3 K=1 tau=5 single masked frame",
    lambda x, y, ng, m, d: contrastive_loss(x, y, ng, 5.0, m, d),
    contrastive_inputs(1, 3, 5, 1, [1]))
add("contrastive_loss", "B=2 T=3 K=2 all negatives duplicates in a frame",
    lambda x, y, ng, m, d: contrastive_loss(x, y, ng, 0.5, m, d),
    contrastive_inputs(2, 3, 3, 2, [0, 1, 3, 4, 5], duplicates=[(0, 0, 1), (1, 0, 1), (1, 1, 2)]))
add("contrastive_loss", "B=2 T=3 K=4 no mask, reduction mean",
    lambda x, y, ng, m, d: contrastive_loss(x, y, ng, 0.1, None, d, reduction="mean"),
    contrastive_inputs(2, 3, 3, 4, [], scale=0.3))
add("contrastive_loss", "B=3 T=2 K=2 reduction none",
    lambda x, y, ng, m, d: contrastive_loss(x, y, ng, 2.0, m, d, reduction="none"),
    contrastive_inputs(3, 2, 4, 2, [0, 3, 4, 5], duplicates=[(1, 2, 0)]))

# --- diversity_loss / codevector_perplexity --------------------------------------------------------
add("diversity_loss", "(6,2*3) G=2 V=3 masked", lambda p, m: diversity_loss(p, 2, 3, m),
    lambda rng: (probs(rng, 6, 6), np.array([1, 0, 1, 1, 0, 1], bool)))
add("diversity_loss", "(5,7) G=1 V=7 no mask", lambda p: diversity_loss(p, 1, 7), lambda rng: (probs(rng, 5, 7),))
add("diversity_loss", "(2,3,2*4) mask (2,3) eps=1e-7", lambda p, m: diversity_loss(p, 2, 4, m, eps=1e-7),
    lambda rng: (probs(rng, 2, 3, 8), np.array([[0, 1, 0], [1, 1, 0]], bool)))
add("diversity_loss", "softmax chain (4,2,5) single masked frame",
    lambda x, m: diversity_loss(ops.softmax(x, -1), 2, 5, m),
    lambda rng: (n(rng, 4, 2, 5), np.array([0, 0, 1, 0], bool)))
add("codevector_perplexity", "(7,2*3) masked", lambda p, m: codevector_perplexity(p, 2, 3, m),
    lambda rng: (probs(rng, 7, 6), np.array([1, 1, 0, 1, 0, 1, 1], bool)))
add("codevector_perplexity", "(3,1*5) G=1", lambda p: codevector_perplexity(p, 1, 5), lambda rng: (probs(rng, 3, 5),))
add("codevector_perplexity", "T(6,4) G=2 V=3 eps=1e-7", lambda p: codevector_perplexity(T(p), 2, 3, eps=1e-7),
    lambda rng: (probs(rng, 6, 4),))

# --- grad_scale / feature_penalty ------------------------------------------------------------------
for alpha, shape in [(0.1, (3, 4)), (10.0, (2, 1, 5)), (-0.5, (1,))]:
    add("grad_scale", f"{shape} alpha={alpha}",
        lambda x, a=alpha: grad_scale(x, a) - (1 - a) * x.detach(), lambda rng, s=shape: (n(rng, *s),))
add("grad_scale", "T(4,3) alpha=0.1", lambda x: grad_scale(T(x), 0.1) - 0.9 * T(x).detach(),
    lambda rng: (n(rng, 4, 3),))
add("feature_penalty", "(2,3,5)", feature_penalty, lambda rng: (n(rng, 2, 3, 5),))
add("feature_penalty", "(1,7)", feature_penalty, lambda rng: (n(rng, 1, 7),))
add("feature_penalty", "T(4,3)", lambda x: feature_penalty(T(x)), lambda rng: (n(rng, 4, 3),))
