"""Exercise 6: conv1d by im2col, forward and backward (stride and padding; one group, no dilation).

    y[b, o, t] = bias[o] + sum_{c < C, k < K} w[o, c, k] * xpad[b, c, t * stride + k]

x (B, C, T), w (O, C, K), bias (O,) or None; xpad is x with ``padding`` zeros on both sides (length
Tp = T + 2 padding); y (B, O, T') with T' = (Tp - K) // stride + 1. As in torch: no kernel flip.

The plan (docs/conv.md, sections "Forward" and "Backward" of conv1d; notebook 3 runs it step by step):

    cols[(c, k), (b, t)] = xpad[b, c, t * stride + k]       im2col: (C*K, B*T'), row c*K + k, column b*T' + t
    Y = W @ cols,  W = w.reshape(O, C*K)                      (O, B*T'), then y = Y as (B, O, T') + bias
    backward: through the matrix product, then col2im (the adjoint of im2col) into dxpad; drop the padding.

Check it:  python -m exercises.check conv1d
"""
import numpy as np

from tinyw2v2 import Function


def im2col(xpad, K, stride):
    """xpad (B, C, Tp) -> cols (C*K, B*T'), cols[(c, k), (b, t)] = xpad[b, c, t*stride + k]."""
    # TODO: a loop over the K taps is fine (each tap k is the strided slice xpad[:, :, k : ... : stride])
    raise NotImplementedError("fill in im2col")


def col2im(dcols, B, C, Tp, K, stride):
    """The adjoint of im2col: dcols (C*K, B*T') -> dxpad (B, C, Tp), summing where windows overlap."""
    # TODO
    raise NotImplementedError("fill in col2im")


class Conv1d(Function):
    """y = conv1d(x, w, bias, stride, padding) as above; bias may be None."""

    def forward(self, x, w, bias=None, stride=1, padding=0):
        # TODO: pad, im2col, one matrix product, reshape to (B, O, T'), add the bias; save what backward needs
        raise NotImplementedError("fill in Conv1d.forward")

    def backward(self, gy):
        # TODO: return dx, dw, db (db = None when there is no bias)
        raise NotImplementedError("fill in Conv1d.backward")
