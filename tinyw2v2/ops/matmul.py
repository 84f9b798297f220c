"""Batched, broadcasting matrix product."""
from __future__ import annotations

from ..tensor import Function


class MatMul(Function):
    """Y = A @ B with A (..., M, K), B (..., K, N) -> Y (..., M, N), batch axes broadcast.

    dA = G @ B^T and dB = A^T @ G (^T swaps the last two axes); the engine sums broadcast batch axes.
    """

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a @ b

    def backward(self, g):
        a, b = self.saved_tensors
        da = g @ b.swapaxes(-1, -2) if self.needs_input_grad[0] else None  # (..., M, N) @ (..., N, K)
        db = a.swapaxes(-1, -2) @ g if self.needs_input_grad[1] else None  # (..., K, M) @ (..., M, N)
        return da, db


def matmul(a, b):
    """Matrix product like ``numpy.matmul``: 1-D operands are promoted to matrices and squeezed after."""
    from .shape import reshape

    a_vec, b_vec = a.ndim == 1, b.ndim == 1
    if a_vec:
        a = reshape(a, (1, a.shape[0]))  # (K,) -> (1, K)
    if b_vec:
        b = reshape(b, (b.shape[0], 1))  # (K,) -> (K, 1)
    y = MatMul.apply(a, b)
    if a_vec or b_vec:
        shape = y.shape[:-2] + (() if a_vec else y.shape[-2:-1]) + (() if b_vec else y.shape[-1:])
        y = reshape(y, shape)
    return y
