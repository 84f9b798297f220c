"""Solution of exercise 2: LayerNorm's backward, dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))."""
import numpy as np

from tinyw2v2 import Function


class LayerNorm(Function):
    """x (..., N), weight (N,), bias (N,) -> y (..., N), normalised over the last axis."""

    def forward(self, x, weight, bias, eps=1e-5):
        N = x.shape[-1]
        x2 = x.reshape(-1, N)                                   # (..., N) -> (M, N): one row per position
        mu = x2.mean(axis=1, keepdims=True)                     # (M, 1)
        var = ((x2 - mu) ** 2).mean(axis=1, keepdims=True)      # (M, 1)
        rstd = 1 / np.sqrt(var + eps)                           # (M, 1)
        xhat = (x2 - mu) * rstd                                 # (M, N)
        self.shape = x.shape
        self.save_for_backward(xhat, rstd, weight)
        return (xhat * weight + bias).reshape(x.shape)

    def backward(self, g):
        xhat, rstd, weight = self.saved_tensors                 # (M, N), (M, 1), (N,)
        g2 = g.reshape(xhat.shape)                              # (..., N) -> (M, N)
        dxhat = g2 * weight
        m1 = dxhat.mean(axis=1, keepdims=True)                  # mean(dxhat): through mu
        m2 = (dxhat * xhat).mean(axis=1, keepdims=True)         # mean(dxhat * xhat): through rstd
        dx = rstd * (dxhat - m1 - xhat * m2)
        dweight = (g2 * xhat).sum(axis=0)                       # weight is used by every row
        dbias = g2.sum(axis=0)
        return dx.reshape(self.shape), dweight, dbias
