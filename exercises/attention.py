"""Exercise 3: the backward of scaled dot-product attention (no mask, no dropout).

Forward (written for you), Q (..., Tq, D), K (..., Tk, D), V (..., Tk, Dv); the leading axes (say (B, H)) broadcast:

    S = scale * Q K^T       (..., Tq, Tk),  scale = 1 / sqrt(D) unless given
    P = softmax(S)          along the last axis (over the keys)
    O = P V                 (..., Tq, Dv)

Your part: ``backward``, returning (dQ, dK, dV). The derivation is in docs/attention.md, section "Backward"
(the softmax step is the one to get right). With leading axes, transpose only the last two: a.swapaxes(-1, -2).

Check it:  python -m exercises.check attention
"""
import math

import numpy as np

from tinyw2v2 import Function


class Attention(Function):
    """O = softmax(scale Q K^T) V over the last two axes of Q (..., Tq, D), K (..., Tk, D), V (..., Tk, Dv)."""

    def forward(self, q, k, v, scale=None):
        self.scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
        s = (q @ k.swapaxes(-1, -2)) * self.scale               # (..., Tq, Tk)
        e = np.exp(s - s.max(axis=-1, keepdims=True))           # shifted: no overflow
        p = e / e.sum(axis=-1, keepdims=True)                   # (..., Tq, Tk), rows sum to 1
        self.save_for_backward(q, k, v, p)
        return p @ v                                            # (..., Tq, Dv)

    def backward(self, g):
        q, k, v, p = self.saved_tensors
        # TODO: dv, then dp, then ds (softmax backward, row by row), then dq and dk
        raise NotImplementedError("fill in Attention.backward")
