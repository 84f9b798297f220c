"""Loss benchmarks: cross_entropy at the contrastive loss's shape (B * T = 8 * 250 frames, 1 positive +
100 negatives, target 0, unmasked frames ignored as in HF) and at a 32-class shape (see bench_ops.py)."""
import numpy as np
from harness import Bench

from tinyw2v2.ops.cross_entropy import cross_entropy


def logits_targets(R, C, ignored=0.0, zero_target=False):
    def make(r):
        x = r.standard_normal((R, C), dtype="float32") * 3
        t = np.zeros(R, dtype=np.int64) if zero_target else r.integers(0, C, size=R)
        t[r.random(R) < ignored] = -100
        return x, t
    return make


def torch_ce(reduction):
    def f(x, t):
        import torch.nn.functional as F
        return F.cross_entropy(x, t, reduction=reduction)
    return f


BENCHES = [
    Bench("cross_entropy", "(2000,101) target 0, 50% ignored, sum", logits_targets(2000, 101, 0.5, True),
          lambda x, t: cross_entropy(x, t, reduction="sum"), torch_ce("sum")),
    Bench("cross_entropy", "(2000,101) mean", logits_targets(2000, 101),
          lambda x, t: cross_entropy(x, t), torch_ce("mean")),
    Bench("cross_entropy", "(2000,32) mean", logits_targets(2000, 32),
          lambda x, t: cross_entropy(x, t), torch_ce("mean")),
]
