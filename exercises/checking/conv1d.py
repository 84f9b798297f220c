"""Checks of exercise conv1d: ``Conv1d`` against ``tinyw2v2.functional.conv1d``."""
import numpy as np

import tinyw2v2.functional as F

from .common import Case, FunctionExercise


def _inputs(x, w, stride=1, padding=0, bias=True):
    def make(rng):
        return {"x": rng.standard_normal(x), "w": rng.standard_normal(w),
                "bias": rng.standard_normal(w[0]) if bias else None, "stride": stride, "padding": padding}
    return make


def _cols(x, K, stride, padding):
    """An independent im2col: (C*K, B*T')."""
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(xpad, K, axis=2)[:, :, ::stride]  # (B, C, T', K)
    B, C, T_out, _ = windows.shape
    return windows.transpose(1, 3, 0, 2).reshape(C * K, B * T_out)


class Conv1dExercise(FunctionExercise):
    name = "conv1d"
    title = "conv1d via im2col (stride, padding): forward and backward"
    needs = ("Conv1d",)
    docs = 'docs/conv.md, sections "Forward" and "Backward" of conv1d'
    library = "forward and dx, dw, dbias against tinyw2v2.functional.conv1d, and gradcheck, in float64"
    grads = ("x", "w", "bias")
    returns = "(dx, dw, db), db = None without a bias"
    shape_hints = {"x": "dx has x's shape (B, C, T): col2im gives dxpad (B, C, Tp); drop the padding, "
                        "dxpad[:, :, padding:padding + T]",
                   "w": "dw has w's shape (O, C, K): reshape dW = gY @ cols^T, which is (O, C*K)",
                   "bias": "db has bias's shape (O,): sum gy over the batch and time axes, (0, 2)"}
    cases = [
        Case("x (2, 3, 8), w (4, 3, 3), stride 1, padding 0", _inputs((2, 3, 8), (4, 3, 3)),
             "windows overlap (K > stride): col2im must add (+=) the gradients of every window that read a frame"),
        Case("x (2, 2, 9), w (3, 2, 3), stride 2, padding 1", _inputs((2, 2, 9), (3, 2, 3), stride=2, padding=1)),
        Case("x (1, 2, 10), w (2, 2, 2), stride 3: frames 2, 5, 8, 9 are never read",
             _inputs((1, 2, 10), (2, 2, 2), stride=3),
             "frames no window reads get a zero gradient; T' = (T + 2 padding - K) // stride + 1 rounds down"),
        Case("kernel 1, no bias: x (2, 3, 4), w (5, 3, 1)", _inputs((2, 3, 4), (5, 3, 1), bias=False),
             "without a bias, forward gets bias=None: skip it (and return None as its gradient)"),
        Case("padding 2 with kernel 4, stride 2: x (1, 1, 5), w (2, 1, 4)",
             _inputs((1, 1, 5), (2, 1, 4), stride=2, padding=2)),
        Case("one output frame (K = Tp): x (2, 2, 3), w (3, 2, 5), padding 1", _inputs((2, 2, 3), (3, 2, 5), padding=1)),
    ]

    def student(self, module, t):
        return module.Conv1d.apply(t["x"], t["w"], t["bias"], stride=t["stride"], padding=t["padding"])

    def reference(self, t):
        return F.conv1d(t["x"], t["w"], t["bias"], stride=t["stride"], padding=t["padding"])

    def forward_shape_hint(self, inputs, got, expected):
        (B, _, T), (O, _, K) = inputs["x"].shape, inputs["w"].shape
        s, p = inputs["stride"], inputs["padding"]
        if tuple(got) == (O, B, expected[2]):
            return "y is (B, O, T'): Y = W @ cols is (O, B*T'); reshape it to (O, B, T') and swap the first two axes"
        if len(got) == 3 and got[2] == (T - K) // s + 1 and p:
            return "the padding is missing: pad x with `padding` zeros on both sides first"
        if len(got) == 3 and got[2] == T + 2 * p - K + 1 and s > 1:
            return "the stride is missing: the windows start at t * stride"
        return "y is (B, O, T') with T' = (T + 2 padding - K) // stride + 1"

    def forward_mistakes(self, inputs):
        x, w, b, s, p = (inputs[k] for k in ("x", "w", "bias", "stride", "padding"))
        O, B = w.shape[0], x.shape[0]
        Y = w.reshape(O, -1) @ _cols(x, w.shape[2], s, p)               # (O, B*T')
        bias = 0 if b is None else b[:, None]
        out = [(F.conv1d(x, w[:, :, ::-1].copy(), b, stride=s, padding=p).data,
                "you flipped the kernel: conv1d here (as in torch) is a cross-correlation, w[o, c, k] meets xpad[t*stride + k]"),
               (Y.reshape(B, O, -1) + bias,
                "Y = W @ cols is (O, B*T'), its columns ordered (b, t): reshape to (O, B, T'), then swap to (B, O, T')")]
        if b is not None:
            out.append((F.conv1d(x, w, None, stride=s, padding=p).data, "the bias is missing: add bias[o] to every y[b, o, t]"))
        return out

    def backward_mistakes(self, inputs, v):
        x, w, s, p = inputs["x"], inputs["w"], inputs["stride"], inputs["padding"]
        (B, C, T), (O, _, K) = x.shape, w.shape
        gY = v.transpose(1, 0, 2).reshape(O, -1)                         # (O, B*T')
        T_out = v.shape[2]
        dcols = (w.reshape(O, -1).T @ gY).reshape(C, K, B, T_out)
        assigned = np.zeros((B, C, T + 2 * p))
        for k in range(K):  # col2im with = instead of +=: overlapping windows overwrite each other
            assigned[:, :, k:k + s * (T_out - 1) + 1:s] = dcols[:, k].transpose(1, 0, 2)
        dw = (gY @ _cols(x, K, s, p).T).reshape(O, C, K)
        return {"x": [(assigned[:, :, p:p + T], "windows overlap (K > stride): col2im must add (+=) into dxpad, "
                                                 "not assign, so a frame read by several taps gets every gradient")],
                "w": [(dw[:, :, ::-1], "dw is flipped along the kernel axis: tap k of w met xpad[t*stride + k]"),
                      (np.swapaxes(dw.reshape(O, K, C), 1, 2),
                       "the (c, k) order of cols is c-major: cols row c*K + k; reshape dW (O, C*K) to (O, C, K)")]}
