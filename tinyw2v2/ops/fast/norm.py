"""The tuned group_norm and layer_norm: the reference formulas of ``tinyw2v2/ops/norm.py``, computed block by block.

``GroupNorm`` and ``LayerNorm`` equal ``tinyw2v2.ops.norm.GroupNorm`` and ``LayerNorm`` (same inputs, same forward,
same gradients; ``tests/test_fast_ops.py`` checks every catalogue case in float64). What they change:

- cache blocks: the ~10 elementwise passes of each op run over blocks of rows of about
  ``TUNING.norm_block_elements`` elements, so that x is read from memory about once and the later passes hit
  the cache (one block on a GPU);
- the two-pass statistics (centre, then square) are taken per block while it is in the cache, with the row
  sums and row dot products as stacked matrix-vector products (one BLAS dot per row);
- saved arrays: forward saves x, mu and rstd like torch (nothing new of x's size, where the reference saves
  xhat), and backward rebuilds x - mu one block at a time, with the rstd factors folded into per-row
  coefficients.
Derivation and the code-to-maths tables: docs/norm.md.
"""
from __future__ import annotations

from math import prod

from ... import backend
from ...backend import get_array_module
from .. import norm as reference
from ..dispatch import tuned
from .kernels import (column_sums_kernel, complex_dtype, norm_dx_kernel, normalize_kernel, row_sums_kernel,
                      rstd_kernel, use_fused)
from .tuning import TUNING


def _row_blocks(x, rows, n):
    """Row ranges (r0, r1) of about TUNING.norm_block_elements elements each (at least one row); a single block
    on a GPU.

    Each op below runs its ~10 elementwise passes block by block, so that x is read from memory about once
    and the passes after the first hit the cache; the blocks are cache blocking over the flattened rows,
    not a loop over batch, channels or time.
    """
    if rows == 0:
        return [(0, 0)]                                  # an empty input: one empty block
    step = rows if backend.is_device_array(x) else max(1, TUNING.norm_block_elements // max(n, 1))
    return [(r0, min(r0 + step, rows)) for r0 in range(0, rows, step)]


def _rowsum(a, ones):
    """Row sums of a (R, N) as (R, 1): one stacked matrix-vector product, (R, 1, N) @ (N, 1)."""
    return (a[:, None, :] @ ones)[:, 0]                         # (R, 1, 1) -> (R, 1)


def _rowdot(a, b):
    """Row dot products sum_n a_rn b_rn as (R, 1): (R, 1, N) @ (R, N, 1)."""
    return (a[:, None, :] @ b[:, :, None])[:, 0]                # (R, 1, 1) -> (R, 1)


def _centre_rows(xb, out, ones, eps):
    """out <- xb - mu per row; returns mu and rstd = 1/sqrt(var + eps), both (r, 1). Two-pass variance."""
    xp = get_array_module(xb)
    n = xb.shape[1]
    mu = _rowsum(xb, ones) / n                                  # (r, 1)
    xp.subtract(xb, mu, out=out)                                # centre
    var = _rowdot(out, out) / n                                 # then square: mean((x - mu)^2)
    return mu, 1.0 / xp.sqrt(var + eps)


def _fused_forward(fn, x, weight, bias, axis, eps):
    """The fused forward on a device: ``xp.mean``, ``rstd_kernel``, ``normalize_kernel`` (3 launches). ``x`` is
    viewed so that ``axis`` are the statistics' axes and ``weight`` / ``bias`` broadcast against it."""
    xp = get_array_module(x)
    n = prod(x.shape[a] for a in axis)
    mu = xp.mean(x, axis=axis, keepdims=True)
    rstd = xp.empty(mu.shape, dtype=x.dtype)
    rstd_kernel(n, eps)(x, mu, axis=axis, out=rstd)
    y = xp.empty(x.shape, dtype=x.dtype)
    affine = weight is not None or bias is not None
    if affine:
        w = weight if weight is not None else xp.ones((), dtype=x.dtype)
        b = bias if bias is not None else xp.zeros((), dtype=x.dtype)
        normalize_kernel(True)(x, mu, rstd, w, b, y)
    else:
        normalize_kernel(False)(x, mu, rstd, y)
    fn.fused = (axis, n)
    fn.save_for_backward(x, mu, rstd, weight)
    return y


def _fused_backward(fn, g, column_axis):
    """The fused backward: ``row_sums_kernel`` (the row sums of dxhat and dxhat xhat as one complex pair),
    ``norm_dx_kernel``, ``column_sums_kernel`` (dweight and dbias as one pair): 3 launches. Returns the gradients
    in the viewed shapes: dx like x, dweight and dbias like the reduced ``column_axis`` (None where not needed)."""
    x, mu, rstd, w = fn.saved_tensors
    axis, n = fn.fused
    xp = get_array_module(g)
    need_x, need_w, need_b = fn.needs_input_grad
    dx = dw = db = None
    if need_x:
        pair = xp.empty(mu.shape, dtype=complex_dtype(g.dtype))
        extra = () if w is None else (w,)
        row_sums_kernel(g.dtype, w is not None)(g, x, mu, rstd, *extra, axis=axis, out=pair)
        dx = xp.empty(x.shape, dtype=g.dtype)
        norm_dx_kernel(n, w is not None)(g, x, mu, rstd, *extra, pair.real, pair.imag, dx)
    if need_w or need_b:
        shape = tuple(1 if a in column_axis else s for a, s in enumerate(x.shape))
        pair = xp.empty(shape, dtype=complex_dtype(g.dtype))
        column_sums_kernel(g.dtype)(g, x, mu, rstd, axis=column_axis, out=pair)
        dw = pair.real if need_w else None
        db = pair.imag if need_b else None
    return dx, dw, db


@tuned(reference.GroupNorm)
class GroupNorm(reference.GroupNorm):
    """``ops.norm.GroupNorm`` (same inputs, values and gradients), in cache blocks of group rows.

    x (B, C, *), C = G * Cg; statistics per (batch b, group k) over its Cg channels and all trailing axes
    (N = Cg * S elements, S = prod(*)); weight, bias (C,) or None.

    Forward:  xhat = (x - mu_bk) * rstd_bk,  y = xhat * weight_c + bias_c
    Backward: A_bc = sum_s g * xhat,  S_bc = sum_s g                        (sums over the trailing axes s)
              dweight_c = sum_b A_bc,  dbias_c = sum_b S_bc
              m1_bk = sum_{c in k} weight_c S_bc / N  = mean(dxhat)
              m2_bk = sum_{c in k} weight_c A_bc / N  = mean(dxhat * xhat)
              dx = rstd_bk * (g * weight_c - m1_bk - xhat * m2_bk)
    Saved: x, mu, rstd (like torch); backward rebuilds x - mu block by block.
    """

    def forward(self, x, weight, bias, num_groups, eps):
        xp = get_array_module(x)
        B, C, G = x.shape[0], x.shape[1], num_groups
        Cg, S = C // G, prod(x.shape[2:])
        N = Cg * S
        self.shape, self.G = x.shape, G
        if use_fused(x):                                              # on a device: 3 launches
            per_channel = lambda p: None if p is None else p.reshape(1, G, Cg, 1)  # (C,) -> (1, G, Cg, 1)
            x4 = x.reshape(B, G, Cg, S)                               # (B, C, *) -> (B, G, Cg, S)
            y = _fused_forward(self, x4, per_channel(weight), per_channel(bias), (2, 3), eps)
            return y.reshape(x.shape)                                 # (B, G, Cg, S) -> (B, C, *)
        self.fused = None
        x2 = x.reshape(B * G, N)                                      # (B, C, *) -> (B*G, N): one row per group
        y = xp.empty((B * G, N), dtype=x.dtype)
        mu = xp.empty((B * G, 1), dtype=x.dtype)
        rstd = xp.empty((B * G, 1), dtype=x.dtype)
        per_row = lambda p: xp.broadcast_to(p.reshape(1, G, Cg), (B, G, Cg)).reshape(B * G, Cg)  # (C,) -> (B*G, Cg)
        w_rows = None if weight is None else per_row(weight)
        b_rows = None if bias is None else per_row(bias)
        ones = xp.ones((N, 1), dtype=x.dtype)
        for r0, r1 in _row_blocks(x, B * G, N):
            yb = y[r0:r1]                                             # (k, N)
            mu[r0:r1], rstd[r0:r1] = m, rs = _centre_rows(x2[r0:r1], yb, ones, eps)
            yc = yb.reshape(-1, S)                                    # (k, N) -> (k*Cg, S): one row per channel
            if w_rows is None:
                yb *= rs                                              # xhat
            else:
                yc *= (rs * w_rows[r0:r1]).reshape(-1, 1)             # (k, Cg) -> (k*Cg, 1): rstd * weight_c
            if b_rows is not None:
                yc += b_rows[r0:r1].reshape(-1, 1)                    # (k, Cg) -> (k*Cg, 1)
        self.save_for_backward(x2, mu, rstd, w_rows)
        return y.reshape(x.shape)                                     # (B*G, N) -> (B, C, *)

    def backward(self, g):
        B, C = self.shape[0], self.shape[1]
        if self.fused is not None:
            x4 = self.saved_tensors[0]                                # (B, G, Cg, S)
            dx, dw, db = _fused_backward(self, g.reshape(x4.shape), column_axis=(0, 3))
            flat = lambda a: None if a is None else a.reshape(C)      # (1, G, Cg, 1) -> (C,)
            return (None if dx is None else dx.reshape(self.shape)), flat(dw), flat(db)
        x2, mu, rstd, w_rows = self.saved_tensors                    # (B*G, N), (B*G, 1) x2, (B*G, Cg) or None
        xp = get_array_module(g)
        BG, N = x2.shape
        Cg = C // self.G
        S = N // Cg
        has_w = w_rows is not None
        need_x, need_w, need_b = self.needs_input_grad               # False for an absent weight / bias
        g2 = g.reshape(BG, N)                                         # (B, C, *) -> (B*G, N)
        A = xp.empty((BG, Cg), dtype=g.dtype)                         # sum_s g * xhat per (b, c)
        Ssum = xp.empty((BG, Cg), dtype=g.dtype)                      # sum_s g per (b, c)
        dx = xp.empty((BG, N), dtype=g.dtype) if need_x else None
        blocks = _row_blocks(g, BG, N)
        xc = xp.empty((blocks[0][1], N), dtype=g.dtype)               # scratch: x - mu of one block
        t = xp.empty_like(xc) if need_x else None
        ones = xp.ones((S, 1), dtype=g.dtype)
        for r0, r1 in blocks:
            k = r1 - r0
            rs, xcb = rstd[r0:r1], xc[:k]
            xp.subtract(x2[r0:r1], mu[r0:r1], out=xcb)                # (k, N) x - mu
            gc = g2[r0:r1].reshape(k * Cg, S)                         # (k, N) -> (k*Cg, S): channel rows
            A[r0:r1] = _rowdot(gc, xcb.reshape(k * Cg, S)).reshape(k, Cg) * rs  # (k*Cg, 1) -> (k, Cg)
            Ssum[r0:r1] = _rowsum(gc, ones).reshape(k, Cg)
            if not need_x:
                continue
            Ab, Sb = A[r0:r1], Ssum[r0:r1]
            if has_w:
                Ab, Sb = Ab * w_rows[r0:r1], Sb * w_rows[r0:r1]       # sums of dxhat * xhat and of dxhat
            m2 = Ab.sum(axis=1, keepdims=True) / N                    # (k, 1) mean(dxhat * xhat)
            m1 = Sb.sum(axis=1, keepdims=True) / N                    # (k, 1) mean(dxhat)
            dxb = dx[r0:r1]
            scale = rs * w_rows[r0:r1] if has_w else xp.broadcast_to(rs, (k, Cg))
            xp.multiply(gc, scale.reshape(-1, 1), out=dxb.reshape(k * Cg, S))  # rstd * dxhat, channel rows
            tb = t[:k]
            xp.multiply(xcb, rs * rs * m2, out=tb)                    # rstd * xhat * m2
            tb += rs * m1                                             #   + rstd * m1
            dxb -= tb
        dweight = A.reshape(B, C).sum(axis=0) if need_w else None     # (B*G, Cg) -> (B, C) -> (C,)
        dbias = Ssum.reshape(B, C).sum(axis=0) if need_b else None
        dx = None if dx is None else dx.reshape(self.shape)           # (B*G, N) -> (B, C, *)
        return dx, dweight, dbias


@tuned(reference.LayerNorm)
class LayerNorm(reference.LayerNorm):
    """``ops.norm.LayerNorm`` (same inputs, values and gradients), in cache blocks of rows.

    x (..., *normalized_shape): statistics per row m over the N = prod(normalized_shape) trailing elements;
    weight, bias (normalized_shape) or None.

    Forward:  xhat = (x - mu_m) * rstd_m,  y = xhat * weight_n + bias_n          (x viewed as (M, N))
    Backward: dxhat = g * weight_n
              dx = rstd_m * (dxhat - mean_n(dxhat) - xhat * mean_n(dxhat * xhat))
              dweight_n = sum_m g * xhat,  dbias_n = sum_m g
    Saved: x, mu, rstd (like torch); backward rebuilds x - mu block by block.
    """

    def forward(self, x, weight, bias, n_axes, eps):
        xp = get_array_module(x)
        N = prod(x.shape[x.ndim - n_axes:])
        x2 = x.reshape(-1, N)                                         # (..., *norm) -> (M, N)
        M = x2.shape[0]
        w = None if weight is None else weight.reshape(N)             # (*norm) -> (N,)
        b = None if bias is None else bias.reshape(N)
        self.shape, self.wshape = x.shape, x.shape[x.ndim - n_axes:]
        if use_fused(x):                                              # on a device: 3 launches
            return _fused_forward(self, x2, w, b, (1,), eps).reshape(x.shape)   # (M, N) -> (..., *norm)
        self.fused = None
        y = xp.empty((M, N), dtype=x.dtype)
        mu = xp.empty((M, 1), dtype=x.dtype)
        rstd = xp.empty((M, 1), dtype=x.dtype)
        ones = xp.ones((N, 1), dtype=x.dtype)
        for r0, r1 in _row_blocks(x, M, N):
            yb = y[r0:r1]
            mu[r0:r1], rstd[r0:r1] = m, rs = _centre_rows(x2[r0:r1], yb, ones, eps)
            yb *= rs                                                  # xhat
            if w is not None:
                yb *= w
            if b is not None:
                yb += b
        self.save_for_backward(x2, mu, rstd, w)
        return y.reshape(x.shape)                                     # (M, N) -> (..., *norm)

    def backward(self, g):
        if self.fused is not None:
            x2 = self.saved_tensors[0]                                # (M, N)
            dx, dw, db = _fused_backward(self, g.reshape(x2.shape), column_axis=(0,))
            shaped = lambda a: None if a is None else a.reshape(self.wshape)   # (1, N) -> normalized_shape
            return (None if dx is None else dx.reshape(self.shape)), shaped(dw), shaped(db)
        x2, mu, rstd, w = self.saved_tensors                         # (M, N), (M, 1), (M, 1), (N,) or None
        xp = get_array_module(g)
        M, N = x2.shape
        has_w = w is not None
        need_x, need_w, need_b = self.needs_input_grad               # False for an absent weight / bias
        g2 = g.reshape(M, N)                                          # (..., *norm) -> (M, N)
        dx = xp.empty((M, N), dtype=g.dtype) if need_x else None
        dweight = xp.zeros(N, dtype=g.dtype) if need_w else None
        dbias = xp.zeros(N, dtype=g.dtype) if need_b else None
        blocks = _row_blocks(g, M, N)
        xc = xp.empty((blocks[0][1], N), dtype=g.dtype)               # scratch: x - mu of one block
        t = xp.empty_like(xc)
        ones = xp.ones((N, 1), dtype=g.dtype)
        for r0, r1 in blocks:
            k = r1 - r0
            gb, rs, xcb, tb = g2[r0:r1], rstd[r0:r1], xc[:k], t[:k]
            xp.subtract(x2[r0:r1], mu[r0:r1], out=xcb)                # (k, N) x - mu = xhat / rstd
            if need_w:
                xp.multiply(gb, xcb, out=tb)
                tb *= rs                                              # g * xhat
                dweight += tb.sum(axis=0)
            if need_b:
                dbias += gb.sum(axis=0)
            if need_x:
                dxb = dx[r0:r1]
                if has_w:
                    xp.multiply(gb, w, out=dxb)                       # dxhat
                else:
                    dxb[...] = gb                                     # dxhat = g (copied: never write into g)
                m1 = _rowsum(dxb, ones) / N                           # (k, 1) mean(dxhat)
                m2 = _rowdot(dxb, xcb) * (rs / N)                     # (k, 1) mean(dxhat * xhat)
                dxb *= rs                                             # rstd * dxhat
                xp.multiply(xcb, rs * rs * m2, out=tb)                # rstd * xhat * m2
                tb += rs * m1                                         #   + rstd * m1
                dxb -= tb
        dx = None if dx is None else dx.reshape(self.shape)           # (M, N) -> (..., *norm)
        if need_w:
            dweight = dweight.reshape(self.wshape)                    # (N,) -> normalized_shape
        if need_b:
            dbias = dbias.reshape(self.wshape)
        return dx, dweight, dbias
