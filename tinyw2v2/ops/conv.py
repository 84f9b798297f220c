"""1-D convolution (im2col + GEMMs) and weight normalisation, each with a hand-written backward.

conv1d:      the wav2vec 2.0 feature encoder (7 strided convolutions) and the positional convolution
             (kernel 128, padding 64, 16 groups).
weight_norm: w = g * v / ||v||, the reparametrisation of the positional convolution's weight.

Derivations: docs/conv.md. Notation: B batch, C input channels, O output channels, G groups,
Cg = C / G and Og = O / G channels per group, K taps, T input length, Tp = T + padding, T' output length.
"""
from __future__ import annotations

import math

from .. import backend
from ..backend import get_array_module
from ..tensor import Function


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


def _padding(padding, kernel_span: int, stride: int) -> tuple:
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


_LONG = 512  # output length from which a batched input is multiplied one (b, g) block at a time (NumPy)
_CHUNK = 1 << 24  # elements of the column matrix built at once: taps are processed in chunks of about this size
_MIN_REDUCTION = 512  # ...but each chunk's product sums over at least this many (c, k) pairs (GEMM efficiency)


def conv_output_length(T: int, K: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """T' = floor((T + 2 padding - dilation (K - 1) - 1) / stride) + 1."""
    return (T + 2 * padding - dilation * (K - 1) - 1) // stride + 1


def _tap_chunks(K: int, Cg: int, per_tap: int) -> list:
    """Split the taps 0..K-1 into chunks whose column matrix (per_tap elements per tap) stays near _CHUNK."""
    size = min(K, max(1, _CHUNK // max(per_tap, 1), -(-_MIN_REDUCTION // Cg)))
    return [(k0, min(K, k0 + size)) for k0 in range(0, K, size)]


def _batch_major(x, B: int, T_out: int) -> bool:
    """NumPy hands strided (b, g) blocks to BLAS, so long batched outputs skip a transposed copy; CuPy's batched
    matmul would copy strided operands, so there the batch is always folded into the GEMM's columns."""
    return B > 1 and T_out >= _LONG and not backend.is_cupy_array(x)


def _im2col(xpad, k0, k1, G, stride, dilation, T_out, buf):
    """cols[g, (c, k), (b, t)] = xpad[b, g*Cg + c, t*stride + k*dilation] for the taps k0 <= k < k1.

    Written into the flat buffer ``buf`` (reused from chunk to chunk, so memory is touched once per call).
    """
    B, C, _ = xpad.shape
    span = dilation * (k1 - 1 - k0) + 1  # frames the chunk's taps span
    start = k0 * dilation
    windows = backend.sliding_window(xpad[:, :, start:start + span + stride * (T_out - 1)], span, stride,
                                     axis=2)  # (B, C, T', span), a view
    if dilation > 1:
        windows = windows[..., ::dilation]  # (B, C, T', kc), still a view
    cols = buf[:C * (k1 - k0) * B * T_out].reshape(C, k1 - k0, B, T_out)  # (C, kc, B, T') == (G, Cg*kc, B*T')
    cols[...] = windows.transpose(1, 3, 0, 2)  # (B, C, T', kc) -> (C, kc, B, T'): the im2col copy
    return cols.reshape(G, -1, B * T_out)  # (G, Cg*kc, B*T'), a view


def _taps(w, G, k0, k1):
    """The weight's taps k0 <= k < k1 as the GEMM's left operand: (O, Cg, K) -> (G, Og, Cg*kc)."""
    O, Cg, K = w.shape
    if k1 - k0 < K:
        w = w[:, :, k0:k1]  # (O, Cg, kc), a strided view: the reshape below copies it
    return w.reshape(G, O // G, Cg * (k1 - k0))  # (O, Cg, kc) -> (G, Og, Cg*kc)


def _conv(xpad, w, G, stride, dilation, T_out):
    """y[b, o, t] = sum_{c, k} w[o, c, k] xpad[b, g(o)*Cg + c, t*stride + k*dilation]: im2col + GEMMs, no bias.

    xpad (B, C, Tp) (already padded), w (O, Cg, K) -> y (B, O, T'), a fresh array.
    """
    xp = get_array_module(xpad, w)
    B, C, _ = xpad.shape
    O, Cg, K = w.shape
    Og = O // G
    batch_major = _batch_major(xpad, B, T_out)
    chunks = _tap_chunks(K, Cg, C * B * T_out)
    buf = xp.empty(C * (chunks[0][1] - chunks[0][0]) * B * T_out, dtype=xpad.dtype)  # the first chunk is the largest
    y = Y = tmp = None
    for k0, k1 in chunks:
        cols = _im2col(xpad, k0, k1, G, stride, dilation, T_out, buf)  # (G, Cg*kc, B*T')
        Wc = _taps(w, G, k0, k1)  # (G, Og, Cg*kc)
        if batch_major:  # Wc @ cols[b] written straight into y[b] viewed as (B, G, Og, T')
            if y is None:
                out = y = xp.empty((B, O, T_out), dtype=xpad.dtype)  # (B, O, T')
            else:
                out = tmp = xp.empty((B, O, T_out), dtype=xpad.dtype) if tmp is None else tmp
            xp.matmul(Wc, cols.reshape(G, -1, B, T_out).transpose(2, 0, 1, 3),  # (G,Og,CgKc) @ (B,G,CgKc,T')
                      out=out.reshape(B, G, Og, T_out))  # -> (B, G, Og, T'), a view of out
            if out is tmp:
                y += tmp  # the next chunk of taps
        elif Y is None:
            Y = Wc @ cols  # (G,Og,Cg*kc) @ (G,Cg*kc,B*T') -> (G, Og, B*T'): one GEMM per group, batched
        else:
            Y += Wc @ cols  # the next chunk of taps
    if not batch_major:
        y = Y.reshape(G, Og, B, T_out).transpose(2, 0, 1, 3).reshape(B, O, T_out)  # -> (B, O, T'); copy if B > 1
    return y


class Conv1d(Function):
    """y[b, o, t] = bias[o] + sum_{c < Cg, k < K} w[o, c, k] * xpad[b, g(o)*Cg + c, t*stride + k*dilation]

    x (B, C, T), w (O, Cg, K), bias (O,) or absent -> y (B, O, T'), where xpad is x zero-padded to
    Tp = T + left + right, T' = (Tp - dilation (K-1) - 1) // stride + 1, and output channel o belongs to
    group g(o) = o // Og, which sees input channels [g*Cg, (g+1)*Cg).

    forward (im2col: one copy of the windows into a column matrix, then one batched GEMM over the G groups):
        cols[g, (c, k), (b, t)] = xpad[b, g*Cg + c, t*stride + k*dilation]     (G, Cg*K, B*T')
        Y[g] = W[g] @ cols[g],   W[g] = w[g*Og:(g+1)*Og].reshape(Og, Cg*K)      (G, Og, B*T')
        y[b, g*Og + o, t] = Y[g, o, (b, t)] + bias[g*Og + o]
    backward (echoes the forward; gY is the upstream gradient gy arranged like Y):
        dW[g] = gY[g] @ cols[g]^T   (computed as (cols[g] @ gY[g]^T)^T)         (G, Og, Cg*K)
        dbias[o] = sum_{b, t} gy[b, o, t]
        stride > 1 (col2im, a loop over the K taps):
            dcols[g] = W[g]^T @ gY[g]                                           (G, Cg*K, B*T')
            dxpad[b, g*Cg + c, t*stride + k*dilation] += dcols[g, (c, k), (b, t)]
            dx = dxpad without its padding
        stride 1 (the same sum read as a convolution of gy with the flipped, transposed kernel):
            dx[b, g*Cg + c, j] = sum_{o < Og, k} wT[g*Cg + c, o, k] gyp[b, g*Og + o, j + k*dilation]
            wT[g*Cg + c, o, k] = w[g*Og + o, c, K-1-k],  gyp = gy shifted right by (K-1)*dilation - left
    The sums over k split into chunks of taps (Y = sum over chunks of W[:, :, chunk] @ cols[chunk]), so the
    column matrix, K times the input, is never built whole for the 128-tap positional convolution; the backward
    rebuilds the columns from xpad instead of keeping them. On NumPy, when B > 1 and T' is long, the products
    run one (b, g) block at a time straight into y's and dcols' layouts (no transposed copy of the output).
    """

    def forward(self, x, w, bias=None, stride=1, padding=(0, 0), dilation=1, groups=1):
        xp = get_array_module(x, w, bias)
        B, C, T = x.shape
        O, Cg, K = w.shape
        G = groups
        if C != Cg * G or O % G:
            raise ValueError(f"conv1d: input has {C} channels and weight {tuple(w.shape)} with groups={G}: "
                             f"need C = weight.shape[1] * groups and out channels divisible by groups")
        left, right = padding
        Tp = T + left + right
        span = dilation * (K - 1) + 1  # input frames one output frame sees
        T_out = (Tp - span) // stride + 1
        if T_out < 1:
            raise ValueError(f"conv1d: input of length {T} (padded {Tp}) is shorter than the kernel span {span}")

        if left or right:
            xpad = xp.zeros((B, C, Tp), dtype=x.dtype)  # (B, C, Tp)
            xpad[:, :, left:left + T] = x
        else:
            xpad = x  # (B, C, T), possibly non-contiguous: the window view handles any strides
        y = _conv(xpad, w, G, stride, dilation, T_out)  # (B, O, T'), fresh
        if bias is not None:
            y += bias.reshape(O, 1)  # in place: y is a fresh array; (O,) -> (O, 1)

        self.shape = (B, C, T, O, Cg, K, G, O // G, T_out, Tp, left, stride, dilation)
        if self._recording:
            needs = self.needs_input_grad
            self.xpad = xpad if needs[1] else None  # dW rebuilds the columns from it
            self.w = w if needs[0] else None        # dx needs the weight
            self._free = ("xpad", "w")              # the engine drops them after backward
        return y

    def backward(self, gy):
        B, C, T, O, Cg, K, G, Og, T_out, Tp, left, stride, dilation = self.shape
        needs = self.needs_input_grad
        dx = dw = db = None
        if needs[1]:
            dw = self._grad_weight(gy)
        if needs[0]:
            dx = self._grad_input_stride1(gy) if stride == 1 else self._grad_input_col2im(gy)
        if len(needs) > 2 and needs[2]:
            db = gy.sum(axis=(0, 2))  # (B, O, T') -> (O,)
        return (dx, dw) if len(needs) == 2 else (dx, dw, db)

    def _grad_weight(self, gy):
        """dW[g] = gY[g] @ cols[g]^T, chunk by chunk of taps: (O, Cg, K)."""
        B, C, T, O, Cg, K, G, Og, T_out, Tp, left, stride, dilation = self.shape
        xp = get_array_module(gy)
        chunks = _tap_chunks(K, Cg, C * B * T_out)
        gy4 = gy.reshape(B, G, Og, T_out)  # (B, O, T') -> (B, G, Og, T')
        per_b = _batch_major(gy, B, T_out) and Cg * (chunks[0][1] - chunks[0][0]) <= T_out
        if not per_b:
            gY = gy4.transpose(1, 2, 0, 3).reshape(G, Og, B * T_out)  # (G, Og, B*T'); a copy if B > 1
        dw = xp.empty((G, Og, Cg, K), dtype=gy.dtype)  # (O, Cg, K) in memory
        buf = xp.empty(C * (chunks[0][1] - chunks[0][0]) * B * T_out, dtype=gy.dtype)  # column buffer
        for k0, k1 in chunks:
            kc = k1 - k0
            cols = _im2col(self.xpad, k0, k1, G, stride, dilation, T_out, buf)  # (G, Cg*kc, B*T'), rebuilt
            if per_b:  # per-(b, g) products, then a sum over b: no transposed copy of gy (temporary <= y's size)
                colsT = cols.reshape(G, Cg * kc, B, T_out).transpose(2, 0, 3, 1)  # (B, G, T', Cg*kc), a view
                dWc = (gy4 @ colsT).sum(axis=0)  # (B,G,Og,T') @ (B,G,T',Cg*kc) -> (G, Og, Cg*kc)
            else:  # dW^T = cols @ gY^T keeps the big operand contiguous (CuPy would copy a transposed one)
                dWc = (cols @ gY.swapaxes(1, 2)).swapaxes(1, 2)  # (G,Cg*kc,B*T') @ (G,B*T',Og) -> (G, Og, Cg*kc)
            dw[..., k0:k1] = dWc.reshape(G, Og, Cg, kc)  # the chunk's taps of dW
        return dw.reshape(O, Cg, K)  # (G, Og, Cg, K) -> (O, Cg, K), a view

    def _grad_input_col2im(self, gy):
        """dcols = W^T @ gY, then dxpad[.., t*stride + k*dilation] += dcols[.., k, .., t], one tap at a time."""
        B, C, T, O, Cg, K, G, Og, T_out, Tp, left, stride, dilation = self.shape
        xp = get_array_module(gy)
        batch_major = _batch_major(gy, B, T_out)
        gy4 = gy.reshape(B, G, Og, T_out)  # (B, O, T') -> (B, G, Og, T')
        if not batch_major:
            gY = gy4.transpose(1, 2, 0, 3).reshape(G, Og, B * T_out)  # (G, Og, B*T'); a copy if B > 1
        dxpad = xp.zeros((B, C, Tp), dtype=gy.dtype)  # (B, C, Tp)
        last = stride * (T_out - 1) + 1
        for k0, k1 in _tap_chunks(K, Cg, C * B * T_out):
            kc = k1 - k0
            WcT = _taps(self.w, G, k0, k1).swapaxes(1, 2)  # (G, Cg*kc, Og)
            if batch_major:
                dcols = xp.empty((C, kc, B, T_out), dtype=gy.dtype)  # (C, kc, B, T') == (G, Cg*kc, B, T')
                xp.matmul(WcT, gy4, out=dcols.reshape(G, Cg * kc, B, T_out).transpose(2, 0, 1, 3))  # (B,G,CgKc,T')
            else:
                dcols = WcT @ gY  # (G,Cg*kc,Og) @ (G,Og,B*T') -> (G, Cg*kc, B*T')
            dcols = dcols.reshape(C, kc, B, T_out).transpose(1, 2, 0, 3)  # -> (kc, B, C, T'), a view
            for j in range(kc):  # col2im: tap k touched xpad[:, :, k*dilation + t*stride] for t < T'
                start = (k0 + j) * dilation
                dxpad[:, :, start:start + last:stride] += dcols[j]  # (B, C, T'): distinct positions, += is safe
        return dxpad[:, :, left:left + T]  # (B, C, Tp) -> (B, C, T), drop the padding

    def _grad_input_stride1(self, gy):
        """Stride 1: dx is a convolution of gy (shifted by (K-1)*dilation - left) with the flipped kernel."""
        B, C, T, O, Cg, K, G, Og, T_out, Tp, left, stride, dilation = self.shape
        xp = get_array_module(gy)
        shift = (K - 1) * dilation - left  # gyp[m] = gy[m - shift]; negative: gy's first frames touch only padding
        L = T + (K - 1) * dilation  # frames that T outputs of a K-tap, stride-1 convolution read
        gyp = xp.zeros((B, O, L), dtype=gy.dtype)  # (B, O, L)
        lo, hi = max(shift, 0), min(L, shift + T_out)  # where gy lands in gyp
        gyp[:, :, lo:hi] = gy[:, :, lo - shift:hi - shift]
        wT = self.w.reshape(G, Og, Cg, K)[..., ::-1].transpose(0, 2, 1, 3).reshape(C, Og, K)  # (C, Og, K), a copy
        return _conv(gyp, wT, G, 1, dilation, T)  # (B, O, L) * (C, Og, K) -> (B, C, T)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Like ``torch.nn.functional.conv1d``: input (B, C, T), weight (O, C/groups, K), bias (O,) -> (B, O, T').

    ``padding``: an int (zeros on both sides), a 1-tuple, 'valid' or 'same' (stride 1).
    T' = floor((T + 2 padding - dilation (K - 1) - 1) / stride) + 1.
    """
    stride, dilation, groups = _single(stride, "stride"), _single(dilation, "dilation"), _single(groups, "groups")
    K = weight.shape[-1]
    pads = _padding(padding, dilation * (K - 1) + 1, stride)
    if input.ndim != 3 or weight.ndim != 3:
        raise ValueError(f"conv1d: input must be (B, C, T) and weight (O, C/groups, K), "
                         f"got {tuple(input.shape)} and {tuple(weight.shape)}")
    params = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
    if bias is None:
        return Conv1d.apply(input, weight, **params)
    return Conv1d.apply(input, weight, bias, **params)


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
    """

    def forward(self, v, g, dim=0):
        xp = get_array_module(v, g)
        self.shape3, nshape = _norm_shapes(v.shape, dim)
        v3 = v.reshape(self.shape3)  # (before, D, after)
        n = xp.sqrt(xp.einsum("adb,adb->d", v3, v3)).reshape(nshape)  # sum of squares without a v*v temporary
        self.g_shape = g.shape
        g = g.reshape(nshape)  # (O,) or (1, 1, K) ... -> n's shape
        scale = g / n  # g / n, shape of n
        w = v * scale
        self.save_for_backward(v, n, scale)
        return w

    def backward(self, gw):
        v, n, scale = self.saved_tensors
        xp = get_array_module(gw)
        s = xp.einsum("adb,adb->d", gw.reshape(self.shape3), v.reshape(self.shape3)).reshape(n.shape)  # sum(gw * v)
        dg = (s / n).reshape(self.g_shape) if self.needs_input_grad[1] else None  # s / n
        dv = None
        if self.needs_input_grad[0]:
            coef = s / (n * n)  # s / n^2
            dv = v * coef  # v * s / n^2, a fresh array
            xp.subtract(gw, dv, out=dv)  # gw - v s / n^2
            dv *= scale  # (g / n) * (gw - v s / n^2)
        return dv, dg


def weight_norm(v, g, dim=0):
    """w = g * v / ||v||, the norm over every axis except ``dim`` (like ``torch._weight_norm(v, g, dim)``).

    g has v's size on axis ``dim`` (e.g. (1, 1, K) for dim=2 on a (O, C, K) weight, as in wav2vec 2.0's
    positional convolution). As in torch, dim=-1 (or None) means one norm over the whole tensor (g of size 1).
    """
    return WeightNorm.apply(v, g, dim=dim)
