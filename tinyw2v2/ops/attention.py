"""Scaled dot-product attention: one Function, batched matmuls, no loops (derivation: docs/attention.md).

    S = scale * Q K^T,  S_ij = -inf where attn_mask_ij is False,  P = softmax_j(S),  P' = P * M,  O = P' V
    M = keep / (1 - p) (dropout), or 1

Shapes: Q (..., Tq, D), K (..., Tk, D), V (..., Tk, Dv) -> O (..., Tq, Dv); the leading axes broadcast
(usually (B, H)). Multi-head attention reshapes the projections (B, T, H*Dh) -> (B, T, H, Dh) and
transposes to (B, H, T, Dh): such strided views go straight into the matmuls (no copies).

Masks are data, not drawn here:
- ``attn_mask``: boolean, True = attend (torch's boolean semantics), broadcastable to (..., Tq, Tk),
  typically a key-padding mask (B, 1, 1, Tk). A query row with every key masked gives O = 0 and zero
  gradients (torch gives NaN there).
- ``dropout_mask``: attention dropout on the probabilities, P' = P * M with M broadcastable to (..., Tq, Tk):
  either a boolean keep-mask plus its rate ``dropout_p`` (M = keep / (1 - p); the convention of
  ``F.dropout`` / ``F.dropout_mask``, 1 byte per entry), or a float multiplier already scaled (``dropout_p``
  left at 0). ``dropout_p > 0`` without a mask is refused: the caller draws the mask (reproducible).

``ScaledDotProductAttention`` here is the reference: the docs' "Forward" and "Backward", line by line. The tuned
version that runs by default (``ops/fast/attention.py``) never normalises P, folds the scale, key padding and
row sums into the matmuls and skips the max-shift when the scores are bounded.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..tensor import Function, Tensor
from .dispatch import pick
from .softmax import softmax_rows


class ScaledDotProductAttention(Function):
    """O = (P * M) V with P = softmax(scale * Q K^T, masked to -inf where attn_mask is False).

    Forward:
        S  = scale Q K^T                          (..., Tq, Tk)
        S  = -inf where not attn_mask
        P  = softmax_j(S)                         (a fully masked row: P = 0, hence O = 0 and zero gradients)
        P' = P * M                                M = c keep (c = 1 / (1 - p)), a float multiplier, or 1
        O  = P' V                                 (..., Tq, Dv)
    Backward (G = dO):
        dV  = P'^T G
        dP' = G V^T
        dP  = dP' * M
        dS  = P * (dP - sum_j dP_j P_j)
        dQ  = scale dS K,   dK = scale dS^T Q
    Gradients come out with the broadcast leading axes of S; the engine sums them down to each input's shape.
    """

    def forward(self, q, k, v, attn_mask=None, dropout_mask=None, dropout_p=0.0, scale=None):
        xp = get_array_module(q, k, v)
        dtype = q.dtype
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        s = (q @ k.swapaxes(-1, -2)) * dtype.type(scale)               # (..., Tq, Tk)
        if attn_mask is not None:
            s = xp.where(attn_mask, s, dtype.type(-np.inf))             # masked keys -> -inf
        p = softmax_rows(s, -1)                                        # (..., Tq, Tk), 0 on a fully masked row
        if dropout_mask is None:
            mult = None                                                 # M = 1
        elif dropout_mask.dtype == np.bool_:
            c = 0.0 if dropout_p >= 1 else 1.0 / (1.0 - dropout_p)      # p = 1: everything dropped
            mult = dropout_mask * dtype.type(c)                         # M = c keep
        else:
            mult = dropout_mask.astype(dtype, copy=False)               # a float multiplier, already scaled
        pd = p if mult is None else p * mult                            # P' = P * M
        o = pd @ v                                                      # (..., Tq, Tk) @ (..., Tk, Dv)
        self.scale = scale
        self.save_for_backward(q, k, v, p, mult)
        return o

    def backward(self, g):
        q, k, v, p, mult = self.saved_tensors
        need_q, need_k, need_v = self.needs_input_grad[:3]
        dq = dk = dv = None
        if need_v:
            pd = p if mult is None else p * mult                        # P'
            dv = pd.swapaxes(-1, -2) @ g                                # dV = P'^T G        (..., Tk, Dv)
        if need_q or need_k:
            dpd = g @ v.swapaxes(-1, -2)                                # dP' = G V^T        (..., Tq, Tk)
            dp = dpd if mult is None else dpd * mult                    # dP = dP' * M
            ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))        # dS = P (dP - sum_j dP_j P_j)
            if need_q:
                dq = (ds @ k) * q.dtype.type(self.scale)                # dQ = scale dS K    (..., Tq, D)
            if need_k:
                dk = (ds.swapaxes(-1, -2) @ q) * q.dtype.type(self.scale)  # dK = scale dS^T Q  (..., Tk, D)
        return dq, dk, dv


def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_mask=None, dropout_p=0.0, scale=None):
    """softmax(scale * q k^T, masked) with dropout, times v: q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv).

    ``attn_mask``: bool, True = attend, broadcastable to (..., Tq, Tk) (e.g. key padding (B, 1, 1, Tk)).
    ``dropout_mask`` / ``dropout_p``: a boolean keep-mask (``F.dropout_mask(shape, p, like=q)``) and its rate
    p (kept probabilities are scaled by 1 / (1 - p)), or a float multiplier already scaled (p = 0).
    ``scale``: default 1 / sqrt(D). Fully masked query rows give 0 (not NaN) and no gradient.
    """
    attn_mask, dropout_mask = _raw(attn_mask), _raw(dropout_mask)
    arrays = [_raw(q), _raw(k), _raw(v)]
    if attn_mask is not None:
        if attn_mask.dtype != np.bool_:
            raise TypeError(f"attn_mask must be boolean (True = attend), got {attn_mask.dtype}")
        arrays.append(attn_mask)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1], got {dropout_p}")
    if dropout_mask is None:
        if dropout_p > 0:
            raise ValueError("dropout_p > 0 needs an explicit dropout_mask "
                             "(draw it with F.dropout_mask(shape, p, like=q))")
    else:
        if dropout_mask.dtype != np.bool_ and dropout_p != 0:
            raise ValueError("a float dropout_mask is the multiplier keep / (1 - p) already: leave dropout_p at 0")
        arrays.append(dropout_mask)
    backend.check_same_device(arrays, "scaled_dot_product_attention")
    return pick(ScaledDotProductAttention).apply(
        q, k, v, attn_mask=attn_mask, dropout_mask=dropout_mask, dropout_p=float(dropout_p), scale=scale)
