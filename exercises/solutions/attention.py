"""Solution of exercise 3: attention's backward, through O = P V, the softmax and S = scale Q K^T."""
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
        dv = p.swapaxes(-1, -2) @ g                             # O = P V:  dV = P^T G       (..., Tk, Dv)
        dp = g @ v.swapaxes(-1, -2)                             #           dP = G V^T       (..., Tq, Tk)
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))    # softmax:  dS = P (dP - rowsum(dP P))
        dq = (ds @ k) * self.scale                              # S = scale Q K^T: dQ = scale dS K
        dk = (ds.swapaxes(-1, -2) @ q) * self.scale             #                  dK = scale dS^T Q
        return dq, dk, dv                                       # broadcast leading axes: the engine sums them
