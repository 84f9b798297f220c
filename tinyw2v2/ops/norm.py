"""Normalisation layers: group_norm and layer_norm (names and signatures of torch.nn.functional).

Both normalise groups of N elements with their own mean and variance, then apply a per-element affine:

    mu = mean(x),  var = mean((x - mu)^2)   (two passes: centre, then square)
    rstd = 1 / sqrt(var + eps),  xhat = (x - mu) * rstd,  y = xhat * weight + bias

and share one closed-form backward (derivation in docs/norm.md): with dxhat = g * weight,

    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dweight = sum g * xhat,  dbias = sum g

(means over the N elements of a group, sums over everything the parameter is shared across). The Functions
below are these formulas line for line and save xhat and rstd; the tuned ones of ``ops/fast/norm.py`` (the
default) compute the same in cache blocks and save x, mu and rstd like torch.
wav2vec 2.0 BASE uses group_norm(x, 512) on the first conv's (B, 512, T) output (each channel normalised over
time) and layer_norm over the 512 / 768 features of (B, T, D) everywhere else.
"""
from __future__ import annotations

from math import prod

from ..backend import get_array_module
from ..tensor import Function
from .dispatch import pick


class GroupNorm(Function):
    """x (B, C, *), C = G * Cg; statistics per (batch b, group k) over its Cg channels and all trailing axes
    (N = Cg * S elements, S = prod(*)); weight, bias (C,) or None (w = 1, b = 0).

    Forward:  xhat = (x - mu_bk) * rstd_bk,  y = xhat * weight_c + bias_c
    Backward: dxhat = g * weight_c
              dx = rstd_bk * (dxhat - mean_k(dxhat) - xhat * mean_k(dxhat * xhat))   (means over the group)
              dweight_c = sum_{b,s} g * xhat,  dbias_c = sum_{b,s} g       (sums over the batch and trailing axes)
    Saved: xhat (B, C, S), rstd (B, G, 1), weight. The tuned version is ``ops.fast.norm.GroupNorm``.
    """

    def forward(self, x, weight, bias, num_groups, eps):
        xp = get_array_module(x)
        B, C, G = x.shape[0], x.shape[1], num_groups
        S = prod(x.shape[2:])
        xg = x.reshape(B, G, -1)                                      # (B, C, *) -> (B, G, N): one row per group
        mu = xg.mean(axis=-1, keepdims=True)                          # (B, G, 1)
        var = ((xg - mu) ** 2).mean(axis=-1, keepdims=True)           # (B, G, 1): centre, then square
        rstd = 1 / xp.sqrt(var + eps)                                 # (B, G, 1)
        xhat = ((xg - mu) * rstd).reshape(B, C, S)                    # (B, G, N) -> (B, C, S): one row per channel
        y = xhat
        if weight is not None:
            y = y * weight.reshape(C, 1)                              # (C,) -> (C, 1): w_c along channel c's row
        if bias is not None:
            y = y + bias.reshape(C, 1)                                # (C,) -> (C, 1)
        self.shape, self.G = x.shape, G
        self.save_for_backward(xhat, rstd, weight)
        return y.reshape(x.shape)                                     # (B, C, S) -> (B, C, *)

    def backward(self, g):
        xhat, rstd, weight = self.saved_tensors                      # (B, C, S), (B, G, 1), (C,) or None
        B, C, S = xhat.shape
        g3 = g.reshape(B, C, S)                                       # (B, C, *) -> (B, C, S)
        dxhat = g3 if weight is None else g3 * weight.reshape(C, 1)   # (C,) -> (C, 1)
        dx = dweight = dbias = None
        if self.needs_input_grad[0]:
            d = dxhat.reshape(B, self.G, -1)                          # (B, C, S) -> (B, G, N): group rows
            xh = xhat.reshape(B, self.G, -1)                          # (B, C, S) -> (B, G, N)
            dx = rstd * (d - d.mean(axis=-1, keepdims=True) - xh * (d * xh).mean(axis=-1, keepdims=True))
            dx = dx.reshape(self.shape)                               # (B, G, N) -> (B, C, *)
        if self.needs_input_grad[1]:
            dweight = (g3 * xhat).sum(axis=(0, 2))                    # (B, C, S) -> (C,)
        if self.needs_input_grad[2]:
            dbias = g3.sum(axis=(0, 2))                               # (B, C, S) -> (C,)
        return dx, dweight, dbias


class LayerNorm(Function):
    """x (..., *normalized_shape): statistics per row m over the N = prod(normalized_shape) trailing elements;
    weight, bias (normalized_shape) or None (w = 1, b = 0).

    Forward:  xhat = (x - mu_m) * rstd_m,  y = xhat * weight_n + bias_n          (x viewed as (M, N))
    Backward: dxhat = g * weight_n
              dx = rstd_m * (dxhat - mean_n(dxhat) - xhat * mean_n(dxhat * xhat))
              dweight_n = sum_m g * xhat,  dbias_n = sum_m g
    Saved: xhat (M, N), rstd (M, 1), weight (N,). The tuned version is ``ops.fast.norm.LayerNorm``.
    """

    def forward(self, x, weight, bias, n_axes, eps):
        xp = get_array_module(x)
        nshape = x.shape[x.ndim - n_axes:]
        N = prod(nshape)
        x2 = x.reshape(-1, N)                                         # (..., *norm) -> (M, N): one row per position
        mu = x2.mean(axis=1, keepdims=True)                           # (M, 1)
        var = ((x2 - mu) ** 2).mean(axis=1, keepdims=True)            # (M, 1): centre, then square
        rstd = 1 / xp.sqrt(var + eps)                                 # (M, 1)
        xhat = (x2 - mu) * rstd                                       # (M, N)
        w = None if weight is None else weight.reshape(N)             # (*norm) -> (N,)
        y = xhat if w is None else xhat * w
        if bias is not None:
            y = y + bias.reshape(N)                                   # (*norm) -> (N,)
        self.shape, self.wshape = x.shape, nshape
        self.save_for_backward(xhat, rstd, w)
        return y.reshape(x.shape)                                     # (M, N) -> (..., *norm)

    def backward(self, g):
        xhat, rstd, w = self.saved_tensors                           # (M, N), (M, 1), (N,) or None
        g2 = g.reshape(xhat.shape)                                    # (..., *norm) -> (M, N)
        dxhat = g2 if w is None else g2 * w
        dx = dweight = dbias = None
        if self.needs_input_grad[0]:
            dx = rstd * (dxhat - dxhat.mean(axis=1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
            dx = dx.reshape(self.shape)                               # (M, N) -> (..., *norm)
        if self.needs_input_grad[1]:
            dweight = (g2 * xhat).sum(axis=0).reshape(self.wshape)    # (M, N) -> (N,) -> normalized_shape
        if self.needs_input_grad[2]:
            dbias = g2.sum(axis=0).reshape(self.wshape)               # (M, N) -> (N,) -> normalized_shape
        return dx, dweight, dbias


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """GroupNorm like ``torch.nn.functional.group_norm``: x (B, C, *) -> same shape; weight, bias (C,) or None.

    num_groups must divide C. num_groups = C normalises each channel on its own (wav2vec 2.0 BASE, C = 512).
    """
    C = x.shape[1]
    if C % num_groups:
        raise ValueError(f"group_norm: num_groups={num_groups} does not divide the {C} channels")
    return pick(GroupNorm).apply(x, weight, bias, num_groups=num_groups, eps=eps)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm like ``torch.nn.functional.layer_norm``: normalise over the trailing ``normalized_shape`` axes.

    x (..., *normalized_shape) -> same shape; weight, bias of shape normalized_shape, or None.
    """
    nshape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(nshape):]) != nshape:
        raise ValueError(f"layer_norm: input of shape {tuple(x.shape)} does not end with {nshape}")
    return pick(LayerNorm).apply(x, weight, bias, n_axes=len(nshape), eps=eps)
