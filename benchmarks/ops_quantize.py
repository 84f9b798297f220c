"""Quantiser benchmarks at the model's shapes (see bench_ops.py; the losses are in ops_contrastive.py).

BASE: B=8, T=249 frames (about 5 s of audio), G=2 groups of V=320 codewords, codevector_dim 256, K=100
negatives, final_dim 256, every frame masked (the real fraction is about half). tiny: T=99, V=32, 64 dims, K=20.
The torch side is transformers' code (Wav2Vec2GumbelVectorQuantizer, Wav2Vec2ForPreTraining) in float32.
"""
import numpy as np
from harness import Bench

import tinyw2v2.functional as F


def _torch_lookup(N, G, V):
    def f(p, cv):
        return (p.view(N, G * V, 1) * cv).view(N, G, V, -1).sum(-2).view(N, -1)
    return f


def _one_hot(rng, N, G, V):
    return np.eye(V, dtype=np.float32)[rng.integers(0, V, (N, G))].reshape(N, G * V)


BENCHES = []
for name, B, T, V, dim, K in [("BASE", 8, 249, 320, 256, 100), ("tiny", 8, 99, 32, 64, 20)]:
    N, G = B * T, 2
    BENCHES += [
        Bench("gumbel_softmax", f"{name} hard ({N}*2,{V}) tau=2, noise drawn",
              lambda r, N=N, V=V: (r.standard_normal((N * 2, V), dtype=np.float32),),
              lambda x: F.gumbel_softmax(x, 2.0, hard=True),
              lambda x: __import__("torch").nn.functional.gumbel_softmax(x, tau=2.0, hard=True)),
        Bench("codevector_lookup", f"{name} ({N},2*{V}) one-hot @ (1,{2 * V},{dim // 2})",
              lambda r, N=N, V=V, dim=dim: (_one_hot(r, N, 2, V), r.random((1, 2 * V, dim // 2), dtype=np.float32)),
              lambda p, cv: F.codevector_lookup(p, cv, 2), _torch_lookup(N, G, V)),
    ]
