"""The losses of wav2vec 2.0 pretraining and their helpers.

cosine_similarity   a.b / (max(|a|, eps) max(|b|, eps)) along an axis, broadcasting (torch's formula)
contrastive_loss    InfoNCE over [target; K negatives] with cosine logits / temperature, fused in one Function
diversity_loss      (G*V - perplexity) / (G*V) of the codeword marginals (transformers' / fairseq's L_d)
codevector_perplexity  the perplexity alone (same Function)
grad_scale          identity forward, alpha * g backward (fairseq's GradMultiply)
feature_penalty     mean(x^2) (fairseq's features_pen)

Derivations of every backward: docs/contrastive.md.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..tensor import Function, Tensor
from .dispatch import pick


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _on_device_of(mask, ref, dtype=bool):
    """A mask (array, Tensor, list) as an array of ``dtype`` on ``ref``'s device (explicit copy if needed)."""
    mask = _data(mask)
    if not backend.is_array(mask):
        mask = np.asarray(mask)
    mask = backend.to_device(mask, backend.device_of(ref))
    return mask if mask.dtype == dtype else mask.astype(dtype)


def _safe_inverse(x):
    """1 / x where x > 0, else 0 (torch's norm backward is 0 at a zero vector)."""
    xp = get_array_module(x)
    positive = x > 0
    return positive.astype(x.dtype) / xp.where(positive, x, xp.ones((), dtype=x.dtype))


# ----------------------------------------------------------------------------------------------
# cosine similarity


class CosineSimilarity(Function):
    """s = a.b / (na nb) along ``axis``, with na = max(|a|, eps), nb = max(|b|, eps); a, b broadcast.

    Forward   s = sum_d a_d b_d / (na nb)
    Backward  da = ds * (b / (na nb) - s a / (na |a|)),   db = ds * (a / (na nb) - s b / (nb |b|))
    (torch's gradient: the norm's derivative a/|a| is kept even where the eps clamp is active; 0 at a = 0).
    """

    def forward(self, a, b, axis=-1, eps=1e-8):
        xp = get_array_module(a, b)
        nd = max(a.ndim, b.ndim)
        a = a.reshape((1,) * (nd - a.ndim) + a.shape)          # (...) -> (1, ..., ...): align for broadcasting
        b = b.reshape((1,) * (nd - b.ndim) + b.shape)
        ax = self.axis = axis % nd
        D = max(a.shape[ax], b.shape[ax])
        eps = a.dtype.type(eps)
        # |a| of the broadcast a: an axis of size 1 broadcast to D repeats its value D times
        na_t = xp.sqrt((a * a).sum(axis=ax, keepdims=True) * a.dtype.type(D // a.shape[ax]))  # (..., 1, ...)
        nb_t = xp.sqrt((b * b).sum(axis=ax, keepdims=True) * b.dtype.type(D // b.shape[ax]))
        na, nb = xp.maximum(na_t, eps), xp.maximum(nb_t, eps)
        s = (a * b).sum(axis=ax, keepdims=True) / (na * nb)   # (..., 1, ...)
        self.save_for_backward(a, b, na, nb, na_t, nb_t, s)
        return s.squeeze(ax)

    def backward(self, ds):
        a, b, na, nb, na_t, nb_t, s = self.saved_tensors
        xp = get_array_module(ds)
        ds = xp.expand_dims(ds, self.axis)                     # (...) -> (..., 1, ...)
        c = ds / (na * nb)                                     # ds / (na nb)
        da = db = None
        if self.needs_input_grad[0]:
            da = b * c - a * (ds * s / na * _safe_inverse(na_t))  # ds (b/(na nb) - s a/(na |a|))
        if self.needs_input_grad[1]:
            db = a * c - b * (ds * s / nb * _safe_inverse(nb_t))  # ds (a/(na nb) - s b/(nb |b|))
        return da, db  # broadcast shapes: the engine sums them back to a's and b's shapes


def cosine_similarity(a, b, axis=-1, eps=1e-8):
    """Cosine similarity along ``axis`` like ``torch.nn.functional.cosine_similarity(a, b, dim, eps)``:
    a.b / (max(|a|, eps) * max(|b|, eps)), a and b broadcast against each other, ``axis`` removed."""
    return CosineSimilarity.apply(a, b, axis=axis, eps=float(eps))


# ----------------------------------------------------------------------------------------------
# contrastive loss


class ContrastiveLoss(Function):
    """InfoNCE over 1 + K candidates, fused: cosine logits, -inf for duplicates, log-softmax, target 0.

    Inputs (leading shape L = (B, T), N = prod(L) frames): predictions x (L, D), targets y_0 (L, D),
    negatives y_1..y_K (K, L, D); constants: mask (L) bool, neg_is_pos (K, L) bool, temperature tau.
    Forward, per frame n, candidate c = 0..K:
        s_c = x.y_c / (nx n_c),  nx = max(|x|, eps), n_c = max(|y_c|, eps)
        l_c = s_c / tau, and l_c = -inf for c >= 1 where neg_is_pos
        loss_n = logsumexp_c(l_c) - l_0,  summed over the masked frames (reduction "sum")
    Backward, with p = softmax_c(l) (0 at -inf) and w_n = upstream * mask_n:
        dl_c = w_n (p_c - [c = 0]),  ds_c = dl_c / tau
        dx   = sum_c ds_c y_c / (nx n_c) - (sum_c ds_c s_c) x / (nx |x|)
        dy_c = ds_c / n_c * (x / nx - s_c y_c / |y_c|)
    Also returns, without gradient: the accuracy over the masked frames (the positive has the largest logit,
    and not all logits are equal: fairseq's rule) and the number of masked frames' negatives that equal their
    positive (the -inf logits), both 0-d arrays on the inputs' device (no host sync).
    """

    def forward(self, x, y0, yk, temperature=0.1, mask=None, neg_is_pos=None, eps=1e-8, reduction="sum"):
        xp = get_array_module(x, y0, yk)
        dt = x.dtype.type
        K, lead, D = yk.shape[0], x.shape[:-1], x.shape[-1]
        if y0.shape != x.shape or yk.shape[1:] != x.shape:
            raise ValueError(f"contrastive_loss: predictions {x.shape}, targets {y0.shape} and negatives {yk.shape} "
                             "must be (..., D), (..., D) and (K, ..., D)")
        N = int(np.prod(lead, dtype=np.int64))
        self.lead, self.shapes, self.reduction, self.tau = lead, (x.shape, y0.shape, yk.shape), reduction, temperature
        x = x.reshape(N, D)                                    # (..., D) -> (N, D)
        y0 = y0.reshape(N, D)                                  # (..., D) -> (N, D)
        yk = yk.reshape(K, N, D)                               # (K, ..., D) -> (K, N, D)
        eps = dt(eps)
        # norms and dot products: one pass over the negatives each
        nx_t = xp.sqrt(xp.einsum("nd,nd->n", x, x))             # |x|      (N,)
        n0_t = xp.sqrt(xp.einsum("nd,nd->n", y0, y0))           # |y_0|    (N,)
        nk_t = xp.sqrt(xp.einsum("knd,knd->kn", yk, yk))        # |y_k|    (K, N)
        nx, n0, nk = xp.maximum(nx_t, eps), xp.maximum(n0_t, eps), xp.maximum(nk_t, eps)
        s = xp.empty((K + 1, N), dtype=x.dtype)                # cosines, candidate-major (1+K, N)
        s[0] = xp.einsum("nd,nd->n", x, y0) / (nx * n0)
        s[1:] = xp.einsum("knd,nd->kn", yk, x) / (nx * nk)
        logits = s / dt(temperature)                           # (1+K, N)
        if neg_is_pos is not None:                             # duplicates of the positive: never a candidate
            xp.copyto(logits[1:], dt(-np.inf), where=neg_is_pos.reshape(K, N))  # (K, ...) -> (K, N); no host sync
        m = logits.max(axis=0)                                 # (N,), finite: l_0 is never -inf
        p = logits - m
        xp.exp(p, out=p)                                       # exp(l - m), 0 at -inf
        total = p.sum(axis=0)                                  # (N,)
        p /= total                                             # p = softmax over the 1+K candidates
        loss_n = m + xp.log(total) - logits[0]                 # logsumexp(l) - l_0   (N,)
        w = xp.ones(N, dtype=x.dtype) if mask is None else mask.reshape(N).astype(x.dtype)  # (N,) 0/1
        count = w.sum()
        loss_n *= w
        if reduction == "sum":
            out = loss_n.sum()
        elif reduction == "mean":  # over the masked frames (torch's ignore_index mean; 0, not NaN, when none)
            out = loss_n.sum() / xp.maximum(count, dt(1))
        elif reduction == "none":
            out = loss_n.reshape(lead)                         # (N,) -> (...)
        else:
            raise ValueError(f"contrastive_loss: reduction must be 'sum', 'mean' or 'none', not {reduction!r}")
        correct = (logits.argmax(axis=0) == 0) & (logits.argmin(axis=0) != 0) & (w > 0)
        accuracy = xp.asarray(correct.sum() / xp.maximum(count, dt(1)), dtype=x.dtype)
        identical = (xp.zeros((), dtype=np.int64) if neg_is_pos is None
                     else (neg_is_pos.reshape(K, N) & (w > 0)).sum())   # masked frames' duplicate negatives
        self.save_for_backward(x, y0, yk, nx, nx_t, n0, n0_t, nk, nk_t, s, p, w, count)
        return out, accuracy, identical

    def backward(self, g):
        x, y0, yk, nx, nx_t, n0, n0_t, nk, nk_t, s, p, w, count = self.saved_tensors
        xp = get_array_module(g)
        dt = x.dtype.type
        K, N = nk.shape
        if self.reduction == "none":
            gn = g.reshape(N) * w                              # (...) -> (N,)
        elif self.reduction == "mean":
            gn = w * (g / xp.maximum(count, dt(1)))
        else:
            gn = w * g
        ds = p * gn                                            # dl_c = w_n (p_c - [c = 0])
        ds[0] -= gn
        ds /= dt(self.tau)                                     # ds_c = dl_c / tau   (1+K, N)
        inv_nx_t, inv_n0_t, inv_nk_t = _safe_inverse(nx_t), _safe_inverse(n0_t), _safe_inverse(nk_t)
        dx = dy0 = dyk = None
        if self.needs_input_grad[0]:
            # sum_c ds_c y_c / (nx n_c)  -  (sum_c ds_c s_c) x / (nx |x|)
            dx = y0 * (ds[0] / (nx * n0))[:, None]
            dx += xp.einsum("kn,knd->nd", ds[1:] / (nx * nk), yk)
            dx -= x * ((ds * s).sum(axis=0) / nx * inv_nx_t)[:, None]
            dx = dx.reshape(self.shapes[0])                    # (N, D) -> (..., D)
        xn = x / nx[:, None] if any(self.needs_input_grad[1:]) else None  # x / nx   (N, D)
        if self.needs_input_grad[1]:
            dy0 = y0 * (-s[0] * inv_n0_t)[:, None]             # -s_0 y_0 / |y_0|
            dy0 += xn
            dy0 *= (ds[0] / n0)[:, None]                        # ds_0 / n_0 * (x / nx - s_0 y_0 / |y_0|)
            dy0 = dy0.reshape(self.shapes[1])                  # (N, D) -> (..., D)
        if self.needs_input_grad[2]:
            dyk = yk * (-s[1:] * inv_nk_t)[:, :, None]         # -s_k y_k / |y_k|   (K, N, D), fresh
            dyk += xn                                          # in place: + x / nx (broadcast over K)
            dyk *= (ds[1:] / nk)[:, :, None]                    # * ds_k / n_k
            dyk = dyk.reshape(self.shapes[2])                  # (K, N, D) -> (K, ..., D)
        return dx, dy0, dyk


def contrastive_loss(predictions, targets, negatives, temperature, mask_time_indices=None, neg_is_pos=None,
                     reduction="sum", eps=1e-8, return_metrics=False):
    """wav2vec 2.0's contrastive (InfoNCE) loss, as transformers' ``Wav2Vec2ForPreTraining`` computes it.

    predictions (B, T, D) (``project_hid`` output), targets (B, T, D) (``project_q`` of the quantised
    features), negatives (K, B, T, D) (targets gathered at the sampled negative indices).
    logits = cosine_similarity(predictions, [targets; negatives]) / temperature -> (1+K, B, T); a negative
    equal to its positive in every feature gets logit -inf (``neg_is_pos``: (K, B, T) bool, by default
    computed as ``(targets == negatives).all(-1)``, transformers PR #11306); the loss is the cross-entropy
    with target index 0, summed over the frames where ``mask_time_indices`` (B, T) is True (all frames when
    None), like ``F.cross_entropy(logits, target, reduction="sum")`` with target -100 at unmasked frames.
    reduction: "sum" (default), "mean" (over masked frames) or "none" ((B, T), 0 at unmasked frames).
    return_metrics: return (loss, accuracy, negatives_identical), the two metrics 0-d Tensors without gradient
    and without a host sync: the fraction of masked frames whose positive has the largest logit, not counting
    frames where all logits are equal (fairseq's rule), and how many of their negatives equal the positive.
    """
    ref = _data(predictions)
    mask = None if mask_time_indices is None else _on_device_of(mask_time_indices, ref)
    if neg_is_pos is None:
        neg_is_pos = pick(duplicates_of_positive)(_data(targets), _data(negatives))
    else:
        neg_is_pos = _on_device_of(neg_is_pos, ref)
    loss, accuracy, identical = ContrastiveLoss.apply(predictions, targets, negatives, temperature=float(temperature),
                                                      mask=mask, neg_is_pos=neg_is_pos, eps=float(eps),
                                                      reduction=reduction)
    return (loss, accuracy, identical) if return_metrics else loss


def duplicates_of_positive(targets, negatives):
    """neg_is_pos = (targets[None] == negatives).all(-1): (K, B, T) True where a negative equals its positive in
    every feature. The tuned version (``ops.fast.contrastive``) compares in full only where the first feature
    matches."""
    return (targets[None] == negatives).all(axis=-1)  # (1, B, T, D) == (K, B, T, D) -> (K, B, T)


def contrastive_logits(predictions, targets, negatives, temperature, neg_is_pos=None, eps=1e-8):
    """The (1+K, B, T) logits of ``contrastive_loss``, composed from ``cosine_similarity`` (for inspection
    and as a second opinion in tests; the loss itself never materialises [targets; negatives])."""
    from .elementwise import masked_fill
    from .shape import concatenate, reshape

    candidates = concatenate([reshape(targets, (1,) + tuple(targets.shape)), negatives], 0)  # (1+K, B, T, D)
    logits = cosine_similarity(predictions, candidates, axis=-1, eps=eps) / float(temperature)  # (1+K, B, T)
    if neg_is_pos is None:
        neg_is_pos = pick(duplicates_of_positive)(_data(targets), _data(negatives))
    xp = get_array_module(_data(predictions))
    neg_is_pos = _on_device_of(neg_is_pos, _data(predictions))
    duplicate = xp.concatenate([xp.zeros((1,) + neg_is_pos.shape[1:], dtype=bool), neg_is_pos], 0)  # (1+K, B, T)
    return masked_fill(logits, duplicate, -np.inf)


# ----------------------------------------------------------------------------------------------
# diversity loss / perplexity


class Perplexity(Function):
    """out = offset + scale * ppl,  ppl = sum_g exp(H_g),  H_g = -sum_v m_gv log(m_gv [+ eps]).

    probs p (N, G*V) (or any shape holding N*G*V values, group-major), mask (N,) bool (all when None);
    m_gv = sum_n mask_n p_ngv / M, M = number of masked frames (the marginal codeword distribution).
    eps = 0: m log m with 0 log 0 = 0 (transformers 5: ``torch.xlogy``); eps = 1e-7: fairseq.
    Backward  dppl/dm_gv = -exp(H_g) (log(m_gv + eps) + m_gv / (m_gv + eps))   (eps = 0: log m + 1, 0 at m = 0)
              dp_ngv = g * scale * dppl/dm_gv * mask_n / M
    """

    def forward(self, probs, mask=None, num_groups=2, num_vars=320, eps=0.0, offset=0.0, scale=1.0):
        xp = get_array_module(probs)
        dt = probs.dtype.type
        G, V = num_groups, num_vars
        self.shape, self.scale = probs.shape, scale
        P = probs.reshape(-1, G * V)                           # (..., G, V) -> (N, G*V)
        N = P.shape[0]
        if mask is None:
            w = None
            count = dt(N)
            m = P.sum(axis=0) / count                          # (G*V,)
        else:
            w = mask.reshape(N).astype(probs.dtype)            # (B, T) -> (N,)
            count = xp.maximum(w.sum(), dt(1))                 # no masked frame: marginal 0, not NaN
            m = (w @ P) / count                                # (N,) @ (N, G*V) -> (G*V,)
        m = m.reshape(G, V)                                    # (G*V,) -> (G, V)
        if eps == 0:
            positive = m > 0
            logm = xp.log(xp.where(positive, m, xp.ones((), dtype=m.dtype)))  # log m, 0 where m = 0
            H = -(m * logm).sum(axis=1)                        # 0 log 0 = 0 (xlogy)
            dm = -(logm + positive)                            # dH/dm = -(log m + 1), 0 at m = 0
        else:
            logm = xp.log(m + dt(eps))
            H = -(m * logm).sum(axis=1)                        # (G,)
            dm = -(logm + m / (m + dt(eps)))
        expH = xp.exp(H)                                       # (G,) per-group perplexity
        self.save_for_backward(dm * expH[:, None], w, count)   # dppl/dm  (G, V)
        return dt(offset) + dt(scale) * expH.sum()

    def backward(self, g):
        dppl_dm, w, count = self.saved_tensors
        xp = get_array_module(dppl_dm)
        row = (g * self.scale / count) * dppl_dm.reshape(1, -1)     # (1, G*V): d out / d p_n for a masked n
        if w is None:
            dp = xp.broadcast_to(row, (int(np.prod(self.shape)) // row.shape[1], row.shape[1]))
        else:
            dp = w[:, None] * row                              # (N, 1) * (1, G*V) -> (N, G*V)
        return dp.reshape(self.shape)                          # (N, G*V) -> probs' shape


def _groups_mask(probs, mask):
    return None if mask is None else _on_device_of(mask, _data(probs))


def codevector_perplexity(probs, num_groups, num_vars, mask=None, eps=0.0):
    """sum_g exp(-sum_v m_gv log m_gv), m = mean of ``probs`` over the (masked) frames per group.

    probs: softmax probabilities (N, G*V), (B, T, G*V) or (N, G, V); mask: (N,) or (B, T) bool.
    transformers' ``Wav2Vec2GumbelVectorQuantizer._compute_perplexity`` (eps=0, xlogy); fairseq's
    ``prob_perplexity`` uses log(m + 1e-7): pass eps=1e-7. Maximum G*V (all codewords equally used).
    """
    return Perplexity.apply(probs, mask=_groups_mask(probs, mask), num_groups=int(num_groups),
                            num_vars=int(num_vars), eps=float(eps))


def diversity_loss(probs, num_groups, num_vars, mask=None, eps=0.0):
    """(G*V - perplexity) / (G*V), perplexity as in ``codevector_perplexity``: 0 when every codeword is used
    equally, close to 1 when one codeword per group takes everything. transformers then multiplies it by
    the number of masked frames (and by diversity_loss_weight = 0.1); that stays with the caller."""
    GV = int(num_groups) * int(num_vars)
    return Perplexity.apply(probs, mask=_groups_mask(probs, mask), num_groups=int(num_groups),
                            num_vars=int(num_vars), eps=float(eps), offset=1.0, scale=-1.0 / GV)


# ----------------------------------------------------------------------------------------------
# gradient scaling and feature penalty


class GradScale(Function):
    """y = x;  dx = alpha * dy (fairseq's GradMultiply: the CNN's gradient is scaled by 0.1)."""

    def forward(self, x, alpha=1.0):
        self.alpha = alpha
        return x

    def backward(self, dy):
        return dy * dy.dtype.type(self.alpha)


def grad_scale(x, alpha):
    """Identity in the forward pass; multiplies the gradient by ``alpha`` in the backward pass."""
    return GradScale.apply(x, alpha=float(alpha))


class FeaturePenalty(Function):
    """y = mean(x^2) = sum_i x_i^2 / n over all n elements;  dx = dy * 2 x / n."""

    def forward(self, x):
        self.save_for_backward(x)
        flat = x.reshape(-1)                                   # (...) -> (n,), a view when contiguous
        return get_array_module(x).dot(flat, flat) * x.dtype.type(1.0 / x.size)  # one BLAS dot, no temporary

    def backward(self, dy):
        (x,) = self.saved_tensors
        return x * (dy * x.dtype.type(2.0 / x.size))


def feature_penalty(features):
    """fairseq's ``features_pen``: the mean of the squared CNN features (all elements), weight 10 in BASE."""
    return FeaturePenalty.apply(features)
