"""Attention benchmarks at the model's shapes: B = 8, T from 49 to 500 frames, D = H * Dh from 128 to 768
(BASE: H = 12, Dh = 64; small configs: H = 4, Dh = 32; LARGE-like: H = 16, Dh = 64), see bench_ops.py."""
import numpy as np
from harness import Bench

import tinyw2v2.ops as ops
from tinyw2v2.ops.attention import scaled_dot_product_attention


def qkv(B, H, T, Dh):
    return lambda r: tuple(r.standard_normal((B, H, T, Dh), dtype="float32") for _ in range(3))


def qkv_padded(B, H, T, Dh):
    """q, k, v and a key-padding mask (B, 1, 1, T): row b keeps its first len_b frames (len from T/2 to T)."""
    def make(r):
        lengths = r.integers(T // 2, T + 1, size=B)
        lengths[0] = T
        mask = (np.arange(T)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T)
        return qkv(B, H, T, Dh)(r) + (mask,)
    return make


def projected(B, H, T, Dh):
    """q, k, v as the model makes them: (B, T, H, Dh) projections, transposed to (B, H, T, Dh) views."""
    return lambda r: tuple(r.standard_normal((B, T, H, Dh), dtype="float32") for _ in range(3))


def torch_sdpa(q, k, v, mask=None):
    import torch.nn.functional as F
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def torch_sdpa_t(q, k, v):
    return torch_sdpa(*(x.transpose(1, 2) for x in (q, k, v)))


def ours_t(q, k, v):
    return scaled_dot_product_attention(*(ops.swapaxes(x, 1, 2) for x in (q, k, v)))


BENCHES = [Bench("attention", f"B=8 H={H} T={T} Dh={Dh}", qkv(8, H, T, Dh), scaled_dot_product_attention, torch_sdpa)
           for H, T, Dh in [(12, 49, 64), (12, 500, 64), (4, 49, 32), (4, 500, 32)]]
BENCHES += [
    Bench("attention", "B=8 H=16 T=250 Dh=64 key-padding mask", qkv_padded(8, 16, 250, 64),
          lambda q, k, v, m: scaled_dot_product_attention(q, k, v, attn_mask=m), torch_sdpa, constants=(3,)),
    Bench("attention", "B=8 H=12 T=500 Dh=64 from (B,T,H,Dh) (transposed views)", projected(8, 12, 500, 64),
          ours_t, torch_sdpa_t),
]
