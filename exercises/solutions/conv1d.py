"""Solution of exercise 6: conv1d as im2col + one GEMM; backward as two GEMMs + col2im."""
import numpy as np

from tinyw2v2 import Function


def im2col(xpad, K, stride):
    """xpad (B, C, Tp) -> cols (C*K, B*T'), cols[(c, k), (b, t)] = xpad[b, c, t*stride + k]."""
    B, C, Tp = xpad.shape
    T_out = (Tp - K) // stride + 1
    cols = np.empty((C, K, B, T_out), dtype=xpad.dtype)
    for k in range(K):                                          # tap k reads frames k, k + stride, ...
        cols[:, k] = xpad[:, :, k:k + stride * (T_out - 1) + 1:stride].transpose(1, 0, 2)  # (B, C, T') -> (C, B, T')
    return cols.reshape(C * K, B * T_out)


def col2im(dcols, B, C, Tp, K, stride):
    """The adjoint of im2col: dcols (C*K, B*T') -> dxpad (B, C, Tp), summing where windows overlap."""
    T_out = dcols.shape[1] // B
    d = dcols.reshape(C, K, B, T_out)
    dxpad = np.zeros((B, C, Tp), dtype=dcols.dtype)
    for k in range(K):                                          # within one tap the T' positions are distinct
        dxpad[:, :, k:k + stride * (T_out - 1) + 1:stride] += d[:, k].transpose(1, 0, 2)  # (C, B, T') -> (B, C, T')
    return dxpad


class Conv1d(Function):
    """y = conv1d(x, w, bias, stride, padding) as above; bias may be None."""

    def forward(self, x, w, bias=None, stride=1, padding=0):
        B, C, T = x.shape
        O, _, K = w.shape
        xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding)))  # (B, C, Tp)
        cols = im2col(xpad, K, stride)                          # (C*K, B*T')
        W = w.reshape(O, C * K)
        Y = W @ cols                                            # (O, B*T')
        T_out = Y.shape[1] // B
        y = Y.reshape(O, B, T_out).transpose(1, 0, 2)           # (B, O, T')
        if bias is not None:
            y = y + bias[:, None]
        self.sizes = (B, C, T, K, stride, padding)
        self.save_for_backward(cols, W)
        return y

    def backward(self, gy):
        cols, W = self.saved_tensors
        B, C, T, K, stride, padding = self.sizes
        O = W.shape[0]
        gY = gy.transpose(1, 0, 2).reshape(O, -1)               # (B, O, T') -> (O, B*T'), arranged like Y
        dw = (gY @ cols.T).reshape(O, C, K)                     # Y = W cols: dW = gY cols^T
        dcols = W.T @ gY                                        #             dcols = W^T gY
        dxpad = col2im(dcols, B, C, T + 2 * padding, K, stride)
        dx = dxpad[:, :, padding:padding + T]                   # the padding's gradient is dropped
        db = gy.sum(axis=(0, 2)) if self.needs_input_grad[2] else None
        return dx, dw, db
