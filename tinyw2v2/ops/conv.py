"""1-D convolution (im2col + GEMMs) and weight normalisation, each with a hand-written backward.

conv1d:      the wav2vec 2.0 feature encoder (7 strided convolutions) and the positional convolution
             (kernel 128, padding 64, 16 groups).
weight_norm: w = g * v / ||v||, the reparametrisation of the positional convolution's weight.

Derivations: docs/conv.md. Notation: B batch, C input channels, O output channels, G groups,
Cg = C / G and Og = O / G channels per group, K taps, T input length, Tp = T + padding, T' output length.
The reference ``Conv1d`` and ``WeightNorm`` below are the page's formulas; the tuned ones (taps in chunks, other
GEMM layouts, the stride-1 backward as a convolution; sums as einsum contractions) are in ``ops.fast.conv``.
"""
from __future__ import annotations

import math

from .. import backend
from ..backend import get_array_module
from ..tensor import Function
from .dispatch import pick


def _single(value, name) -> int:
    """An int, or a 1-tuple / 1-list of one (torch accepts both for conv1d)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"conv1d: {name} must be an int or a 1-tuple, got {value!r}")
        value = value[0]
    value = int(value)
    if value < 0 or (value == 0 and name != "padding"):
        raise ValueError(f"conv1d: {name} must be {'>= 0' if name == 'padding' else '> 0'}, got {value}")
    return value


def padding_sides(padding, kernel_span: int, stride: int) -> tuple:
    """(left, right) zero padding from an int, a 1-tuple, 'valid' or 'same' (stride 1 only, as in torch)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            if stride != 1:
                raise ValueError("conv1d: padding='same' needs stride 1 (as in torch)")
            total = kernel_span - 1  # dilation * (K - 1)
            return total // 2, total - total // 2  # torch puts the odd extra zero on the right
        raise ValueError(f"conv1d: padding must be an int, 'valid' or 'same', got {padding!r}")
    p = _single(padding, "padding")
    return p, p


def conv_output_length(T: int, K: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """T' = floor((T + 2 padding - dilation (K - 1) - 1) / stride) + 1."""
    return (T + 2 * padding - dilation * (K - 1) - 1) // stride + 1


def check_output_length(x_shape, w_shape, stride, padding, dilation, groups) -> int:
    """T' for x (B, C, T), w (O, Cg, K) and (left, right) padding; ValueError if the shapes do not fit."""
    B, C, T = x_shape
    O, Cg, K = w_shape
    if C != Cg * groups or O % groups:
        raise ValueError(f"conv1d: input has {C} channels and weight {tuple(w_shape)} with groups={groups}: "
                         f"need C = weight.shape[1] * groups and out channels divisible by groups")
    Tp = T + padding[0] + padding[1]
    span = dilation * (K - 1) + 1  # input frames one output frame sees
    if Tp < span:
        raise ValueError(f"conv1d: input of length {T} (padded {Tp}) is shorter than the kernel span {span}")
    return (Tp - span) // stride + 1


def _im2col(xpad, K, stride, dilation, groups):
    """cols[g, (c, k), (b, t)] = xpad[b, g*Cg + c, t*stride + k*dilation]:  xpad (B, C, Tp) -> (G, Cg*K, B*T').

    The windows are a strided view of xpad (no copy); one copy turns them into the column matrix.
    """
    B, C, Tp = xpad.shape
    span = dilation * (K - 1) + 1  # input frames one window spans
    windows = backend.sliding_window(xpad, span, stride, axis=2)  # (B, C, T', span), a view
    windows = windows[..., ::dilation]  # (B, C, T', K): the frames the taps read, still a view
    T_out = windows.shape[2]
    cols = windows.transpose(1, 3, 0, 2)  # (B, C, T', K) -> (C, K, B, T'), a view
    return cols.reshape(groups, C // groups * K, B * T_out)  # (C, K, B, T') -> (G, Cg*K, B*T'): the one copy


class Conv1d(Function):
    """y[b, o, t] = bias[o] + sum_{c < Cg, k < K} w[o, c, k] * xpad[b, g(o)*Cg + c, t*stride + k*dilation]

    x (B, C, T), w (O, Cg, K), bias (O,) or None -> y (B, O, T'), where xpad is x zero-padded to
    Tp = T + left + right, T' = (Tp - dilation (K-1) - 1) // stride + 1, and output channel o belongs to
    group g(o) = o // Og, which sees input channels [g*Cg, (g+1)*Cg).

    forward:
        cols[g, (c, k), (b, t)] = xpad[b, g*Cg + c, t*stride + k*dilation]     (G, Cg*K, B*T')
        W[g] = w[g*Og:(g+1)*Og].reshape(Og, Cg*K)                              (G, Og, Cg*K)
        Y[g] = W[g] @ cols[g]                                                  (G, Og, B*T')
        y[b, g*Og + o, t] = Y[g, o, (b, t)] + bias[g*Og + o]                   (B, O, T')
    backward (gY[g, o, (b, t)] = gy[b, g*Og + o, t], the upstream gradient arranged like Y):
        dW[g] = gY[g] @ cols[g]^T                                              (G, Og, Cg*K) -> (O, Cg, K)
        dbias[o] = sum_{b, t} gy[b, o, t]                                      (O,)
        dcols[g] = W[g]^T @ gY[g]                                              (G, Cg*K, B*T')
        col2im, a loop over the K taps:
            dxpad[b, g*Cg + c, t*stride + k*dilation] += dcols[g, (c, k), (b, t)]   (B, C, Tp)
        dx = dxpad without its padding                                         (B, C, T)
    """

    def forward(self, x, w, bias=None, stride=1, padding=(0, 0), dilation=1, groups=1):
        xp = get_array_module(x, w, bias)
        B, C, T = x.shape
        O, Cg, K = w.shape
        G, Og = groups, O // groups
        T_out = check_output_length(x.shape, w.shape, stride, padding, dilation, groups)
        left, right = padding
        xpad = xp.zeros((B, C, left + T + right), dtype=x.dtype)  # (B, C, Tp)
        xpad[:, :, left:left + T] = x
        cols = _im2col(xpad, K, stride, dilation, G)  # (G, Cg*K, B*T')
        W = w.reshape(G, Og, Cg * K)  # (O, Cg, K) -> (G, Og, Cg*K)
        Y = W @ cols  # (G, Og, B*T')
        y = Y.reshape(G, Og, B, T_out).transpose(2, 0, 1, 3).reshape(B, O, T_out)  # (G, Og, B, T') -> (B, O, T')
        if bias is not None:
            y = y + bias.reshape(O, 1)  # (O,) -> (O, 1): the same bias for every b and t
        self.save_for_backward(cols, W)  # dW needs the columns, dcols the weight
        self.sizes = (B, C, T, K, left, right, stride, dilation)
        return y

    def backward(self, gy):
        cols, W = self.saved_tensors
        B, C, T, K, left, right, stride, dilation = self.sizes
        G, Og, _ = W.shape
        T_out = gy.shape[2]
        needs = self.needs_input_grad
        gY = gy.reshape(B, G, Og, T_out).transpose(1, 2, 0, 3).reshape(G, Og, B * T_out)  # (B, O, T') -> (G, Og, B*T')
        dw = None
        if needs[1]:
            dW = gY @ cols.swapaxes(1, 2)  # (G, Og, B*T') @ (G, B*T', Cg*K) -> (G, Og, Cg*K)
            dw = dW.reshape(G * Og, C // G, K)  # (G, Og, Cg*K) -> (O, Cg, K)
        db = gy.sum(axis=(0, 2)) if needs[2] else None  # (B, O, T') -> (O,)
        dx = None
        if needs[0]:
            dcols = W.swapaxes(1, 2) @ gY  # (G, Cg*K, Og) @ (G, Og, B*T') -> (G, Cg*K, B*T')
            dx = self._col2im(dcols)
        return dx, dw, db

    def _col2im(self, dcols):
        """dxpad[b, g*Cg + c, t*stride + k*dilation] += dcols[g, (c, k), (b, t)], one tap k at a time; then dx.

        Tap k touched the T' distinct positions k*dilation + t*stride (t < T'), one strided slice: an ordinary
        vectorised += on it loses nothing.
        """
        B, C, T, K, left, right, stride, dilation = self.sizes
        xp = get_array_module(dcols)
        T_out = conv_output_length(left + T + right, K, stride, dilation=dilation)  # T' (B may be 0)
        dcols = dcols.reshape(C, K, B, T_out).transpose(1, 2, 0, 3)  # (G, Cg*K, B*T') -> (K, B, C, T'), a view
        dxpad = xp.zeros((B, C, left + T + right), dtype=dcols.dtype)  # (B, C, Tp)
        for k in range(K):
            start = k * dilation
            dxpad[:, :, start:start + stride * (T_out - 1) + 1:stride] += dcols[k]  # (B, C, T') at the tap's positions
        return dxpad[:, :, left:left + T]  # (B, C, Tp) -> (B, C, T): drop the padding


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Like ``torch.nn.functional.conv1d``: input (B, C, T), weight (O, C/groups, K), bias (O,) -> (B, O, T').

    ``padding``: an int (zeros on both sides), a 1-tuple, 'valid' or 'same' (stride 1).
    T' = floor((T + 2 padding - dilation (K - 1) - 1) / stride) + 1.
    """
    stride, dilation, groups = _single(stride, "stride"), _single(dilation, "dilation"), _single(groups, "groups")
    K = weight.shape[-1]
    pads = padding_sides(padding, dilation * (K - 1) + 1, stride)
    if input.ndim != 3 or weight.ndim != 3:
        raise ValueError(f"conv1d: input must be (B, C, T) and weight (O, C/groups, K), "
                         f"got {tuple(input.shape)} and {tuple(weight.shape)}")
    return pick(Conv1d).apply(input, weight, bias, stride=stride, padding=pads, dilation=dilation,
                                           groups=groups)


def _norm_shapes(shape: tuple, dim) -> tuple:
    """(shape3, nshape): v viewed as (before, D, after) around axis ``dim``, and n's shape (size 1 except at dim).

    dim=None or -1 means one norm over the whole tensor (torch's convention): D = 1.
    """
    ndim = len(shape)
    size = math.prod(shape)
    if dim is None or dim == -1:
        return (1, 1, size), (1,) * ndim
    if not -ndim <= dim < ndim:
        raise ValueError(f"weight_norm: dim {dim} out of range for {ndim} axes")
    dim %= ndim
    before = math.prod(shape[:dim])
    nshape = tuple(n if a == dim else 1 for a, n in enumerate(shape))
    return (before, shape[dim], size // max(before * shape[dim], 1)), nshape


class WeightNorm(Function):
    """w = g * v / n,  n = ||v||_2 over every axis except ``dim`` (kept as size 1: n has g's shape).

    backward (echoes the forward; gw is the upstream gradient of w, sums run over the normed axes):
        s  = sum(gw * v)                      (shape of n)
        dg = s / n
        dv = (g / n) * (gw - v * s / n^2)
    The tuned version (``ops.fast.conv.WeightNorm``) sums with einsum and builds dv in place.
    """

    @staticmethod
    def normed_sum(a, b):
        """sum of a * b over the normed axes, for a and b viewed as (before, D, after): -> (D,)."""
        return (a * b).sum(axis=(0, 2))

    def forward(self, v, g, dim=0):
        xp = get_array_module(v, g)
        self.shape3, nshape = _norm_shapes(v.shape, dim)
        v3 = v.reshape(self.shape3)  # (before, D, after): the normed axes around dim
        n = xp.sqrt(self.normed_sum(v3, v3)).reshape(nshape)  # ||v|| per index of dim, shape of n
        self.g_shape = g.shape
        g = g.reshape(nshape)  # (O,) or (1, 1, K) ... -> n's shape
        scale = g / n  # g / n, shape of n
        w = v * scale
        self.save_for_backward(v, n, scale)
        return w

    def backward(self, gw):
        v, n, scale = self.saved_tensors
        s = self.normed_sum(gw.reshape(self.shape3), v.reshape(self.shape3)).reshape(n.shape)  # sum(gw * v)
        dg = (s / n).reshape(self.g_shape) if self.needs_input_grad[1] else None  # s / n
        dv = scale * (gw - v * (s / (n * n))) if self.needs_input_grad[0] else None  # (g / n) * (gw - v s / n^2)
        return dv, dg


def weight_norm(v, g, dim=0):
    """w = g * v / ||v||, the norm over every axis except ``dim`` (like ``torch._weight_norm(v, g, dim)``).

    g has v's size on axis ``dim`` (e.g. (1, 1, K) for dim=2 on a (O, C, K) weight, as in wav2vec 2.0's
    positional convolution). As in torch, dim=-1 (or None) means one norm over the whole tensor (g of size 1).
    """
    return pick(WeightNorm).apply(v, g, dim=dim)
