"""Gradient checks of the pretraining losses: cosine similarity, the contrastive loss, the diversity loss and
perplexity, grad_scale and the feature penalty (family "contrastive").

Masks and ``neg_is_pos`` are boolean arrays. grad_scale has a gradient that is not the derivative of its forward,
so its cases compare against f(x) = grad_scale(x, a) - (1 - a) stop(x), whose value a x has the analytic
gradient a. The contrastive cases pass ``neg_is_pos`` explicitly: finite differences would otherwise perturb a
duplicate negative away from its positive and switch its -inf logit back on.
"""
import numpy as np

from .. import ops
from ..ops.contrastive import (codevector_perplexity, contrastive_loss, cosine_similarity, diversity_loss,
                               feature_penalty, grad_scale)
from . import Case

CASES = []


def add(op, shapes, fn, make, **options):
    CASES.append(Case(op, shapes, fn, make, "contrastive", options))


def n(rng, *shape):
    return rng.standard_normal(shape)


def T(x):
    return ops.swapaxes(x, -1, -2)


def probs(rng, *shape):
    """Positive 'probabilities' away from 0 (the check perturbs them freely; they need not sum to 1)."""
    return rng.uniform(0.05, 1.0, shape)


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
