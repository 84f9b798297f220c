"""The tuned scaled dot-product attention: the reference formulas of ``tinyw2v2.ops.attention`` with the passes
over the (Tq, Tk) matrices skipped or folded into the matmuls (NumPy-friendly, each step in place on a fresh
array; the (Tq, Tk) arrays are what cost):

- the scale is applied to Q (Tq, D), not to the scores (Tq, Tk);
- P is never normalised in full: E = exp(S - shift) and r = sum_j E_j are kept, and 1 / r is applied to
  the (Tq, Dv) output (and, in backward, to dO before its matmuls) instead of to the (Tq, Tk) matrix;
- small appended columns move whole passes into the matmuls (key padding, row sums, the softmax backward's
  subtraction);
- on NumPy the max-shift is skipped when |S| <= 60 is guaranteed (``_scores_bounded``; knob
  ``TUNING.skip_bounded_shift``), and then, without a mask, exp runs as exp2 on scores times log2 e.

``ScaledDotProductAttention`` equals the reference Function of the same name (same output, same gradients, the
same zeros for fully masked rows) up to rounding: ``tests/test_fast_ops.py`` on the gradient-check catalogue,
``tests/test_ops_attention.py`` at a model-like size with padding and dropout. Derivation: docs/attention.md
("What the code computes" describes this version).
"""
from __future__ import annotations

import math

import numpy as np

from ...backend import get_array_module
from .. import attention as reference
from ..dispatch import tuned
from .tuning import TUNING

_NO_SHIFT_BOUND = 60.0  # |S| <= 60 everywhere: exp(S) lies in [e^-60, e^60], no shift needed (float32 and 64)
_LOG2E = 1.4426950408889634
_MASKED = -1e30          # a masked key's score inside a matmul (-inf there would make 0 * -inf = NaN in padding)


def _append_column(x, value, lead=None):
    """[x, value] along the last axis: (..., n, d) -> (..., n, d + 1); ``value`` broadcasts to (..., n, 1).

    ``lead``: broadcast the leading axes of x to this shape first (when ``value`` has more of them)."""
    xp = get_array_module(x)
    if lead is not None:
        x = xp.broadcast_to(x, tuple(lead) + x.shape[-2:])                       # (..., n, d) -> (lead, n, d)
    col = xp.broadcast_to(xp.asarray(value, dtype=x.dtype), x.shape[:-1] + (1,))  # (lead, n, 1)
    return xp.concatenate([x, col], axis=-1)                                      # (lead, n, d + 1)


def _scores_bounded(q, k, scale):
    """True when scale * max_i |q_i| * max_j |k_j| <= 60, which bounds every |S_ij| (Cauchy-Schwarz). NumPy
    only: the comparison needs the value on the host, a sync point on a GPU, where the shift pass is cheap.
    Always False when ``TUNING.skip_bounded_shift`` is off (then every row is shifted by its max)."""
    if not TUNING.skip_bounded_shift or get_array_module(q, k) is not np:
        return False
    qq = np.einsum("...d,...d->...", q, q).max()     # max_i |q_i|^2
    kk = np.einsum("...d,...d->...", k, k).max()     # max_j |k_j|^2
    return bool(qq * kk * scale ** 2 <= _NO_SHIFT_BOUND ** 2)  # False for inf / NaN too


@tuned(reference.ScaledDotProductAttention)
class ScaledDotProductAttention(reference.ScaledDotProductAttention):
    """``ops.attention.ScaledDotProductAttention``: O = (P * M) V, P = softmax(scale Q K^T masked to -inf), computed
    without ever normalising P.

    Forward (E: unnormalised probabilities, r: their row sums, P = E / r; M = c * keep with c = 1 / (1 - p),
    or keep = M, c = 1 for a float multiplier, or keep = c = 1 without dropout):
        S   = (scale Q) K^T                                (..., Tq, Tk)   (times log2 e, then exp2, when unmasked
                                                                           and unshifted: the same E, faster)
        S   = -inf where not attn_mask
        E   = exp(S - sh)                                  (0 at masked keys)
              (a key-padding mask adds -1e30 instead of -inf inside the matmul: exp gives 0 all the same)
        r   = sum_j E_j   (1 for a fully masked row)       (..., Tq, 1)
        O   = ((E * keep) V) * c / r                       (..., Tq, Dv)
        with the shift sh = max_j S_ij, or sh = 0 when |S| <= 60 is guaranteed (softmax is shift-invariant).
    Backward (G = dO; write Gr = c G / r, so every (Tq, Tk) matrix below is the true one divided by r):
        dV  = (E * keep)^T Gr                              (= P'^T dO)
        dPr = (Gr V^T) * keep                              (= dP / r, where dP = (dO V^T) * M)
        delta = sum_d G_d O_d                              (= sum_j dP_j P_j, from the small output)
        dS  = E * (dPr - delta / r)                        (= P * (dP - sum_j dP_j P_j))
        dQ  = scale * dS K,   dK = scale * dS^T Q
    Without dropout the subtraction of delta / r happens inside the dPr matmul: [Gr, -delta / r] [V, 1]^T.
    A key-padding mask (constant over queries) enters the S matmul the same way: [scale Q, 1] [K, bias]^T with
    bias_j = 0 or -1e30, and the row sums r come out of the O matmul as [E V, E 1] = E [V, 1].
    """

    def forward(self, q, k, v, attn_mask=None, dropout_mask=None, dropout_p=0.0, scale=None):
        xp = get_array_module(q, k, v)
        dtype = q.dtype
        Dv = v.shape[-1]
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        shift = not _scores_bounded(q, k, scale)
        # NumPy's exp2 is twice as fast as exp, but slow when results underflow: base 2 only without shift or mask
        base2 = not shift and attn_mask is None                       # then |S log2 e| <= 87: no underflow
        qs = q * dtype.type(scale * _LOG2E if base2 else scale)       # (..., Tq, D) (log2 e: scores in base 2)
        if attn_mask is not None and (attn_mask.ndim < 2 or attn_mask.shape[-2] == 1):
            # key padding: [qs, 1] [K, bias]^T = S + bias, bias = 0 or -1e30: no pass over the (Tq, Tk) scores
            bias = xp.where(attn_mask, dtype.type(0), dtype.type(_MASKED))          # (..., 1, Tk)
            bias = bias.reshape(bias.shape[:-2] + (-1, 1)) if bias.ndim >= 2 else bias[:, None]  # (..., Tk, 1)
            lead = np.broadcast_shapes(k.shape[:-2], bias.shape[:-2])
            s = _append_column(qs, 1.0) @ _append_column(k, bias, lead).swapaxes(-1, -2)   # (..., Tq, Tk)
        else:
            s = qs @ k.swapaxes(-1, -2)                               # (..., Tq, D) @ (..., D, Tk) -> (..., Tq, Tk)
            if attn_mask is not None:
                xp.copyto(s, dtype.type(-np.inf), where=~attn_mask)   # masked keys -> -inf
        del qs
        if shift:
            m = s.max(axis=-1, keepdims=True)                         # (..., Tq, 1)
            m = xp.where(m > _MASKED / 2, m, xp.zeros((), dtype=dtype))  # fully masked row (-inf / -1e30): shift by 0
            s -= m
        e = xp.exp2(s, out=s) if base2 else xp.exp(s, out=s)          # (..., Tq, Tk) E, 0 at masked keys
        if dropout_mask is None:
            va = _append_column(v, 1.0)                               # (..., Tk, Dv + 1) [V, 1]
            oa = e @ va                                               # (..., Tq, Dv + 1) [E V, r]
            o, r = oa[..., :Dv], oa[..., Dv:]                         # (..., Tq, Dv), (..., Tq, 1) views
            keep_scale = 1.0
        else:
            va = v
            r = xp.einsum("...j->...", e)[..., None]                  # (..., Tq, 1) row sums
            if dropout_mask.dtype != np.bool_:
                dropout_mask = dropout_mask.astype(dtype, copy=False)  # a float multiplier, already scaled
            keep_scale = 0.0 if dropout_p >= 1 else 1.0 / (1.0 - dropout_p)  # c (p = 1: all dropped)
            o = (e * dropout_mask) @ v                                # (..., Tq, Tk) @ (..., Tk, Dv) -> (..., Tq, Dv)
        inv = r + (r == 0)                                            # fully masked row: E = 0, divide by 1
        xp.reciprocal(inv, out=inv)                                   # (..., Tq, 1) 1 / r
        o *= inv * dtype.type(keep_scale)                             # (E keep V) * c / r
        self.scale, self.keep_scale = scale, keep_scale
        self.save_for_backward(q, k, va, e, inv, dropout_mask, o)
        return o

    def backward(self, g):
        q, k, va, e, inv, keep, o = self.saved_tensors
        xp = get_array_module(g)
        need_q, need_k, need_v = self.needs_input_grad[:3]
        Dv = o.shape[-1]
        delta = xp.einsum("...d,...d->...", g, o)[..., None]          # (..., Tq, 1) sum_j dP_j P_j
        gr = g * (inv * inv.dtype.type(self.keep_scale))             # (..., Tq, Dv) c * dO / r
        if keep is None:
            gr = _append_column(gr, -delta * inv)                     # (..., Tq, Dv + 1) [Gr, -delta / r]
        dq = dk = dv = None
        if need_v:
            ed = e if keep is None else e * keep                      # (..., Tq, Tk) E * keep (recomputed)
            dv = ed.swapaxes(-1, -2) @ gr[..., :Dv]                   # (..., Tk, Tq) @ (..., Tq, Dv) -> (..., Tk, Dv)
            del ed
        if need_q or need_k:
            ds = gr @ va.swapaxes(-1, -2)                             # (.., Tq, Dv(+1)) @ (.., Dv(+1), Tk) -> (.., Tq, Tk)
            if keep is not None:                                      # ds = dP / r; with dropout subtract here
                ds *= keep                                            # dP = c * keep * (dO V^T)
                ds -= delta * inv
            ds *= e                                                   # dS = P * (dP - sum_j dP_j P_j)
            if need_q:
                dq = ds @ k                                           # (..., Tq, Tk) @ (..., Tk, D) -> (..., Tq, D)
                dq *= dq.dtype.type(self.scale)
            if need_k:
                dk = ds.swapaxes(-1, -2) @ q                          # (..., Tk, Tq) @ (..., Tq, D) -> (..., Tk, D)
                dk *= dk.dtype.type(self.scale)
        return dq, dk, dv
