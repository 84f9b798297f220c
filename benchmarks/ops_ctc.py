"""CTC loss benchmarks at the fine-tuning shapes (see bench_ops.py).

T=249 frames (5 s of 16 kHz audio through the feature encoder), N=8, C=32 (the transformers character
vocabulary), S=40 labels; and T=99 (2 s), C=30, S=20. Lengths vary across the batch, as in a padded batch.
log_probs are log_softmax outputs, as the model feeds them.
"""
import numpy as np
from harness import Bench

from tinyw2v2.ops.ctc import ctc_loss


def make(T, N, C, S):
    def f(rng):
        x = rng.standard_normal((T, N, C), dtype="float32")
        log_probs = (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype("float32")  # (T, N, C)
        input_lengths = np.linspace(T, int(0.8 * T), N).astype(np.int64)  # (N,)
        target_lengths = np.linspace(S, int(0.6 * S), N).astype(np.int64)  # (N,)
        targets = rng.integers(1, C, (N, S))  # (N, S), blank = 0 never a label
        return log_probs, targets, input_lengths, target_lengths
    return f


def torch_ctc(lp, tg, il, tl):
    import torch.nn.functional as F
    return F.ctc_loss(lp, tg, il, tl)


BENCHES = [
    Bench("ctc_loss", f"T={T} N={N} C={C} S={S}", make(T, N, C, S), ctc_loss, torch_ctc, constants=(1, 2, 3))
    for T, N, C, S in [(249, 8, 32, 40), (99, 8, 30, 20)]
]
