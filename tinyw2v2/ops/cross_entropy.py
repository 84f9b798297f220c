"""Cross-entropy: log_softmax + negative log-likelihood fused in one Function (derivation: docs/cross_entropy.md).

    loss_i = logsumexp_c(x_ic) - x_{i, t_i}          (x: logits, t: integer targets, class axis 1 like torch)

reduced by "mean" (over the rows whose target is not ``ignore_index``), "sum" or "none". The fused
backward is the textbook one:  dx_ic = w_i * (softmax(x_i)_c - [c = t_i]),  w_i = the upstream gradient
of row i (g_i, g, or g / count for the mean), and 0 for ignored rows.

-inf logits (a masked negative in the contrastive loss) get probability 0 and zero gradient. A row whose
target logit is -inf (this includes a row of only -inf) has loss +inf and zero gradient: the loss is +inf
whatever the finite logits are. A "mean" over zero non-ignored rows is NaN, as in torch (0 / 0).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..tensor import Function, Tensor
from .dispatch import pick

_REDUCTIONS = ("mean", "sum", "none")


class CrossEntropy(Function):
    """x (N, C) or (N, C, d1, ...), t (N) or (N, d1, ...) int; rows R = N * d1 * ..., viewed as x2 (R, C).

    Forward:  m_i = max_c x_ic  (the shift; 0 for a row of only -inf)
              e_ic = exp(x_ic - m_i),  s_i = sum_c e_ic,  lse_i = m_i + log s_i
              loss_i = lse_i - x_{i, t_i}  (0 if t_i = ignore_index, +inf if x_{i, t_i} = -inf)
              out = sum_i loss_i / count | sum_i loss_i | loss (shape of t)
    Backward: w_i = g / count | g | g_i   (0 for ignored rows and rows with infinite loss)
              dx_ic = w_i * e_ic / s_i - w_i [c = t_i]
    The tuned version (``ops.fast.cross_entropy``) only replaces ``shifted_exp``.
    """

    @staticmethod
    def shifted_exp(x2):
        """(m, e, s) of the rows of x2 (R, C): m = max_c x (0 for a row of only -inf), e = exp(x - m), s = sum_c e."""
        xp = get_array_module(x2)
        m = x2.max(axis=1, keepdims=True)                               # (R, 1)
        m = xp.where(xp.isfinite(m), m, xp.zeros((), dtype=x2.dtype))   # a row of only -inf: shift by 0
        e = xp.exp(x2 - m)                                              # (R, C), 0 at -inf
        return m, e, e.sum(axis=1, keepdims=True)                       # s (R, 1)

    def forward(self, x, t, reduction="mean", ignore_index=-100):
        xp = get_array_module(x)
        C = x.shape[1]
        x2 = x if x.ndim == 2 else xp.moveaxis(x, 1, -1).reshape(-1, C)  # (N, C, d...) -> (N, d..., C) -> (R, C)
        t1 = t.reshape(-1)                                              # (N, d...) -> (R,)
        valid = t1 != ignore_index                                      # (R,)
        tc = xp.where(valid, t1, 0)                                     # (R,) safe index for ignored rows
        m, e, s = self.shifted_exp(x2)                                  # shift (R, 1), e (R, C) fresh, s (R, 1)
        s += s == 0                                                     # row of only -inf: log 1 = 0, lse finite
        picked = x2[xp.arange(x2.shape[0]), tc]                         # (R,) x_{i, t_i}
        lse = (m + xp.log(s))[:, 0]                                     # (R, 1) -> (R,)
        loss = lse - picked                                             # (R,) +inf where x_t = -inf
        loss = xp.where(valid, loss, xp.zeros((), dtype=x.dtype))       # ignored rows: 0, as torch
        count = valid.sum() if reduction == "mean" else None            # () on the device, no sync
        self.reduction, self.shape = reduction, x.shape
        self.save_for_backward(e, s, tc, valid & (picked != -np.inf), count)
        if reduction == "none":
            return loss.reshape(t.shape)                                # (R,) -> (N, d...)
        total = loss.sum()
        if reduction == "sum":
            return total
        with backend.errstate(xp, invalid="ignore", divide="ignore"):
            return (total / count).astype(x.dtype)                      # 0 / 0 = NaN when every row is ignored

    def backward(self, g):
        e, s, tc, live, count = self.saved_tensors
        xp = get_array_module(e)
        if self.reduction == "none":
            w = g.reshape(-1)                                           # (N, d...) -> (R,)
        elif self.reduction == "sum":
            w = xp.broadcast_to(g, live.shape)                          # (R,)
        else:
            w = xp.broadcast_to(g / xp.maximum(count, 1).astype(g.dtype), live.shape)  # (R,)
        w = xp.where(live, w, xp.zeros((), dtype=g.dtype))              # (R,) no gradient for ignored / inf rows
        dx = e * (w[:, None] / s)                                       # (R, C) w_i * softmax(x_i), fresh
        dx[xp.arange(dx.shape[0]), tc] -= w                             # - w_i at the target (one per row)
        N, C = self.shape[0], self.shape[1]
        dx = dx.reshape((N,) + self.shape[2:] + (C,))                   # (R, C) -> (N, d..., C)
        return xp.moveaxis(dx, -1, 1), None                             # (N, d..., C) -> (N, C, d...)



def cross_entropy(input, target, reduction="mean", ignore_index=-100):
    """torch.nn.functional.cross_entropy without class weights or label smoothing.

    ``input``: logits (N, C) or (N, C, d1, ...); ``target``: class indices (N) or (N, d1, ...), int;
    ``reduction``: "mean" (over non-ignored rows) | "sum" | "none"; rows with ``target == ignore_index``
    contribute 0 loss and 0 gradient.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, not {reduction!r}")
    t = target.data if isinstance(target, Tensor) else target
    if not backend.is_array(t) or not np.issubdtype(t.dtype, np.integer):
        raise TypeError("target must be an integer array of class indices (probabilities are not supported)")
    shape = tuple(input.shape)
    if len(shape) < 2 or tuple(t.shape) != shape[:1] + shape[2:]:
        raise ValueError(f"target shape {tuple(t.shape)} does not match logits {shape} "
                         f"(expected {shape[:1] + shape[2:]})")
    return pick(CrossEntropy).apply(input, target, reduction=reduction, ignore_index=ignore_index)
