"""The tuned conv1d: the reference's im2col + GEMMs, with the kernel taps in chunks, two GEMM layouts, the column
matrix rebuilt in the backward instead of kept, and the stride-1 dx as a convolution with the flipped kernel.

``Conv1d`` equals ``tinyw2v2.ops.conv.Conv1d`` (same output, same three gradients; float64 on every layout and
chunking: ``tests/test_fast_ops.py``, ``tests/test_ops_conv.py``). What each trick changes and why it pays:
docs/conv.md ("Layouts for speed"). The knobs that choose the code paths are ``TUNING.conv_layout``,
``conv_long_output``, ``conv_chunk_elements`` and ``conv_min_reduction`` (``tinyw2v2.ops.fast``).

Notation as in ``ops/conv.py``: B batch, C input channels, O output channels, G groups, Cg = C / G and
Og = O / G channels per group, K taps, kc taps in a chunk, Tp padded input length, T' output length.
"""
from __future__ import annotations

from ... import backend
from ...backend import get_array_module
from .. import conv as reference
from ..dispatch import tuned
from .tuning import TUNING, tuning

_KNOBS = ("conv_layout", "conv_long_output", "conv_chunk_elements", "conv_min_reduction")


def _tap_chunks(K: int, Cg: int, per_tap: int) -> list:
    """Split the taps 0..K-1 into chunks whose column matrix (per_tap elements per tap) stays near
    ``TUNING.conv_chunk_elements``, each chunk summing over at least ``TUNING.conv_min_reduction`` (c, k) pairs."""
    size = min(K, max(1, TUNING.conv_chunk_elements // max(per_tap, 1), -(-TUNING.conv_min_reduction // Cg)))
    return [(k0, min(K, k0 + size)) for k0 in range(0, K, size)]


def _batch_major(x, B: int, T_out: int) -> bool:
    """NumPy hands strided (b, g) blocks to BLAS, so long batched outputs skip a transposed copy; CuPy's batched
    matmul would copy strided operands, so there the batch is always folded into the GEMM's columns.

    ``TUNING.conv_layout``: "auto" is that rule (B > 1 and T' >= ``conv_long_output``); "batch_major" and
    "folded" force a layout on NumPy (CuPy folds in any case).
    """
    layout = TUNING.conv_layout
    if layout not in ("auto", "batch_major", "folded"):
        raise ValueError(f"TUNING.conv_layout must be 'auto', 'batch_major' or 'folded', not {layout!r}")
    if backend.is_device_array(x) or layout == "folded":
        return False
    return layout == "batch_major" or (B > 1 and T_out >= TUNING.conv_long_output)


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
    return cols.reshape(G, C // G * (k1 - k0), B * T_out)  # (G, Cg*kc, B*T'), a view (sizes named: B may be 0)


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
            xp.matmul(Wc, cols.reshape(G, Wc.shape[2], B, T_out).transpose(2, 0, 1, 3),  # (G,Og,CgKc) @ (B,G,CgKc,T')
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


@tuned(reference.Conv1d)
class Conv1d(reference.Conv1d):
    """``ops.conv.Conv1d`` computed in chunks of taps, in the faster GEMM layout, with less memory.

    - The sums over k split into chunks of taps (Y = sum over chunks of W[:, :, chunk] @ cols[chunk]), so the
      column matrix, K times the input, is never built whole for the 128-tap positional convolution.
    - On NumPy, when B > 1 and T' is long, the products run one (b, g) block at a time straight into y's and
      dcols' layouts (batch-major: no transposed copy of the output); otherwise the batch is folded into the
      GEMM's columns as in the reference.
    - The backward rebuilds the columns from xpad (saved only when w needs a gradient; x itself when there is no
      padding) instead of keeping them; dW is computed as (cols @ gY^T)^T (or per b and summed, batch-major).
    - stride 1: dx is the forward's convolution again, of gy shifted right by (K-1)*dilation - left with the
      kernel flipped in time and its channel axes swapped per group, instead of dcols and col2im:
          dx[b, g*Cg + c, j] = sum_{o < Og, k} wT[g*Cg + c, o, k] gyp[b, g*Og + o, j + k*dilation]
          wT[g*Cg + c, o, k] = w[g*Og + o, c, K-1-k]
      stride > 1: dcols = W^T @ gY chunk by chunk, then the reference's col2im, one tap at a time.
    """

    def forward(self, x, w, bias=None, stride=1, padding=(0, 0), dilation=1, groups=1):
        xp = get_array_module(x, w, bias)
        B, C, T = x.shape
        O, Cg, K = w.shape
        G = groups
        T_out = reference.check_output_length(x.shape, w.shape, stride, padding, dilation, groups)
        left, right = padding
        Tp = T + left + right

        if left or right:
            xpad = xp.zeros((B, C, Tp), dtype=x.dtype)  # (B, C, Tp)
            xpad[:, :, left:left + T] = x
        else:
            xpad = x  # (B, C, T), possibly non-contiguous: the window view handles any strides
        y = _conv(xpad, w, G, stride, dilation, T_out)  # (B, O, T'), fresh
        if bias is not None:
            y += bias.reshape(O, 1)  # in place: y is a fresh array; (O,) -> (O, 1)

        self.shape = (B, C, T, O, Cg, K, G, O // G, T_out, Tp, left, stride, dilation)
        if self.recording:
            needs = self.needs_input_grad
            self.xpad = xpad if needs[1] else None  # dW rebuilds the columns from it
            self.w = w if needs[0] else None        # dx needs the weight
            self._free = ("xpad", "w")              # the engine drops them after backward
            self.knobs = {k: getattr(TUNING, k) for k in _KNOBS}  # the backward takes the forward's code paths
        return y

    def backward(self, gy):
        stride = self.shape[11]
        needs = self.needs_input_grad
        dx = dw = db = None
        with tuning(**self.knobs):
            if needs[1]:
                dw = self._grad_weight(gy)
            if needs[0]:
                dx = self._grad_input_stride1(gy) if stride == 1 else self._grad_input_col2im(gy)
        if needs[2]:
            db = gy.sum(axis=(0, 2))  # (B, O, T') -> (O,)
        return dx, dw, db

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



@tuned(reference.WeightNorm)
class WeightNorm(reference.WeightNorm):
    """``ops.conv.WeightNorm`` whose two sums over the normed axes (n^2 = sum v^2 in the forward, s = sum gw * v in
    the backward) are one ``einsum`` each: multiplied and summed without a temporary of v's size; the backward
    builds dv in place."""

    @staticmethod
    def normed_sum(a, b):
        return get_array_module(a, b).einsum("adb,adb->d", a, b)  # (before, D, after) x 2 -> (D,)

    def backward(self, gw):
        """The reference's backward with dv built in one fresh array, in place (one temporary of v's size, not
        three); the same operations in the same order, so the same numbers."""
        v, n, scale = self.saved_tensors
        xp = get_array_module(gw)
        s = self.normed_sum(gw.reshape(self.shape3), v.reshape(self.shape3)).reshape(n.shape)  # sum(gw * v)
        dg = (s / n).reshape(self.g_shape) if self.needs_input_grad[1] else None  # s / n
        dv = None
        if self.needs_input_grad[0]:
            dv = v * (s / (n * n))                  # v s / n^2, a fresh array
            xp.subtract(gw, dv, out=dv)             # gw - v s / n^2
            dv *= scale                             # (g / n) * (gw - v s / n^2)
        return dv, dg
