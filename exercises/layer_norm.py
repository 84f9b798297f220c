"""Exercise 2: the backward of LayerNorm over the last axis.

Forward (written for you), each row x_1 .. x_N of x (..., N) on its own:

    mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)
    xhat = (x - mu) * rstd,                 y = xhat * weight + bias       (weight, bias: (N,))

Your part: ``backward``, returning (dx, dweight, dbias). The derivation is in docs/norm.md, section "Backward":
start from dxhat = g * weight and the three partial derivatives of xhat.

Check it:  python -m exercises.check layer_norm
"""
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
        # TODO: dx (reshaped back to self.shape), dweight (N,), dbias (N,)
        raise NotImplementedError("fill in LayerNorm.backward")
