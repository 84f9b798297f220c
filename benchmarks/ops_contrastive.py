"""Pretraining-loss benchmarks at the model's shapes (see bench_ops.py): contrastive loss, diversity loss, feature
penalty. BASE: B=8, T=249 frames (about 5 s of audio), G=2 groups of V=320 codewords, final_dim 256, K=100 negatives,
every frame masked (the real fraction is about half). tiny: T=99, V=32, 64 dims, K=20.
The torch side is transformers' code (Wav2Vec2ForPreTraining) in float32.
"""
import numpy as np
from harness import Bench

import tinyw2v2.functional as F


def _torch_contrastive(pred, tgt, neg, mask):
    import torch

    logits = torch.cosine_similarity(pred.float(), torch.cat([tgt[None], neg], 0).float(), dim=-1) / 0.1
    neg_is_pos = (tgt == neg).all(-1)
    if neg_is_pos.any():
        logits[1:][neg_is_pos] = float("-inf")
    logits = logits.transpose(0, 2).reshape(-1, logits.size(0))
    target = ((1 - mask.long()) * -100).transpose(0, 1).flatten()
    return torch.nn.functional.cross_entropy(logits, target, reduction="sum")


def _torch_diversity(G, V):
    def f(probs, mask):  # Wav2Vec2GumbelVectorQuantizer._compute_perplexity, then (GV - ppl) / GV
        import torch

        probs = probs.view(-1, G, V)
        m = mask.flatten()[:, None, None].expand(probs.shape)
        marginal = torch.where(m, probs, torch.zeros_like(probs)).sum(0) / mask.sum()
        ppl = torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1)).sum()
        return (G * V - ppl) / (G * V)
    return f


def _softmax_probs(rng, N, G, V):
    x = rng.standard_normal((N, G, V), dtype=np.float32)
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).reshape(N, G * V)


BENCHES = []
for name, B, T, V, dim, K in [("BASE", 8, 249, 320, 256, 100), ("tiny", 8, 99, 32, 64, 20)]:
    N, G = B * T, 2
    BENCHES += [
        Bench("contrastive_loss", f"{name} pred ({B},{T},{dim}) K={K} all masked",
              lambda r, B=B, T=T, dim=dim, K=K: (r.standard_normal((B, T, dim), dtype=np.float32),
                                                 r.standard_normal((B, T, dim), dtype=np.float32),
                                                 r.standard_normal((K, B, T, dim), dtype=np.float32),
                                                 np.ones((B, T), bool)),
              lambda x, y, n, m: F.contrastive_loss(x, y, n, 0.1, m), _torch_contrastive),
        Bench("diversity_loss", f"{name} probs ({N},2*{V}) half masked",
              lambda r, N=N, V=V: (_softmax_probs(r, N, 2, V), r.random(N) < 0.5),
              lambda p, m, V=V: F.diversity_loss(p, 2, V, m), _torch_diversity(G, V)),
    ]
BENCHES.append(Bench("feature_penalty", "BASE CNN out (8,512,249)",
                     lambda r: (r.standard_normal((8, 512, 249), dtype=np.float32),),
                     F.feature_penalty, lambda x: x.pow(2).mean()))
