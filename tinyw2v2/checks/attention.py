"""Gradient checks of scaled_dot_product_attention (family "attention").

Masks are data: the attention mask is a boolean array, the dropout keep-mask a boolean array (with its rate)
or a float multiplier wrapped in ``Const``. Shapes are (B, H, T, Dh) with T_q != T_k and D_v != D where it
matters, a batch of 1, a fully masked query row, transposed (B, T, H, Dh) projections and large scores.
"""
import numpy as np

from .. import ops
from ..ops.attention import scaled_dot_product_attention as sdpa
from . import Case, Const

CASES = []


def add(op, shapes, fn, make, **options):
    CASES.append(Case(op, shapes, fn, make, "attention", options))


def qkv(q_shape, k_shape, v_shape, spread=1.0):
    return lambda rng: (spread * rng.standard_normal(q_shape), spread * rng.standard_normal(k_shape),
                        rng.standard_normal(v_shape))


def padding_mask(lengths, T):
    """Key-padding mask (B, 1, 1, T): row b attends to its first lengths[b] keys."""
    return (np.arange(T)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]


add("scaled_dot_product_attention", "(1,1,3,2) batch 1", sdpa, qkv((1, 1, 3, 2), (1, 1, 3, 2), (1, 1, 3, 2)))
add("scaled_dot_product_attention", "q (2,2,3,4) k,v (2,2,5,4|3) Tq!=Tk Dv!=D scale 0.7",
    lambda q, k, v: sdpa(q, k, v, scale=0.7), qkv((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)))
add("scaled_dot_product_attention", "(2,2,4,3) key padding (2,1,1,4) lengths 4,2",
    lambda q, k, v, m: sdpa(q, k, v, attn_mask=m),
    lambda rng: qkv((2, 2, 4, 3), (2, 2, 4, 3), (2, 2, 4, 3))(rng) + (padding_mask([4, 2], 4),))
add("scaled_dot_product_attention", "(2,1,3,3) mask with a fully masked query row",
    lambda q, k, v, m: sdpa(q, k, v, attn_mask=m),
    lambda rng: qkv((2, 1, 3, 3), (2, 1, 5, 3), (2, 1, 5, 2))(rng)
    + (np.array([[[[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]],
                 [[[1, 1, 1, 1, 1], [1, 1, 0, 1, 1], [0, 1, 0, 0, 0]]]], bool),))
add("scaled_dot_product_attention", "(2,2,3,4) bool dropout keep-mask p=0.25 + key padding",
    lambda q, k, v, keep, m: sdpa(q, k, v, attn_mask=m, dropout_mask=keep, dropout_p=0.25),
    lambda rng: qkv((2, 2, 3, 4), (2, 2, 4, 4), (2, 2, 4, 4))(rng)
    + (rng.random((2, 2, 3, 4)) >= 0.25, padding_mask([3, 4], 4)))
add("scaled_dot_product_attention", "(1,2,4,3) float dropout multiplier (1,1,4,4) broadcast",
    lambda q, k, v, mult: sdpa(q, k, v, dropout_mask=mult),
    lambda rng: qkv((1, 2, 4, 3), (1, 2, 4, 3), (1, 2, 4, 3))(rng) + (Const((rng.random((1, 1, 4, 4)) >= 0.3) / 0.7),))
add("scaled_dot_product_attention", "(B,T,H,Dh) = (2,5,2,3) transposed to (B,H,T,Dh)",
    lambda q, k, v: sdpa(*(ops.swapaxes(x, 1, 2) for x in (q, k, v))), qkv((2, 5, 2, 3), (2, 5, 2, 3), (2, 5, 2, 3)))
add("scaled_dot_product_attention", "(1,2,3,4) large scores (inputs x3, scale 2)",
    lambda q, k, v: sdpa(q, k, v, scale=2.0), qkv((1, 2, 3, 4), (1, 2, 4, 4), (1, 2, 4, 2), spread=3.0))
add("scaled_dot_product_attention", "(3,4) 2-D, no batch axes", sdpa, qkv((3, 4), (5, 4), (5, 2)))
add("scaled_dot_product_attention", "q (2,2,3,4), k,v (2,1,4,4) broadcast over heads", sdpa,
    qkv((2, 2, 3, 4), (2, 1, 4, 4), (2, 1, 4, 4)))
