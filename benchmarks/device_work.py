"""Kernel launches and host syncs a GPU would pay, counted on the emulated device (no GPU needed).

    python benchmarks/device_work.py [--only gelu] [--no-ops] [--no-step] [--top 15]

1. Each op of the catalogue (the ``BENCHES`` of benchmarks/ops_*.py, at the shapes bench_ops.py times): the
   launches and syncs of its forward alone (no graph) and of forward + backward (an upstream gradient already on
   the device; the inputs are moved there before counting, and each op runs once before it is counted, so that
   lazily made generators are not counted).
2. One training step of the tiny preset with the pretraining defaults (8 x 1 s crops), phase by phase as
   tinyw2v2/train/pretrain.py runs them: reseed + sample the targets (host), forward (loss / N included),
   backward (zero_grad + loss.backward), clip_grad_norm_, the NaN/Inf guard (float(loss), float(norm)), the AdamW
   step and the metrics the loop keeps on the device. The step counted is the second one (AdamW's state exists).

The counting rules are in tinyw2v2/_emulated.py (``backend.count_device_work``): counts of kernels, not costs.
The project's targets: a tiny step <= 1,000 launches in all and <= 2 device-to-host reads (the guard); GELU
forward / backward 1 kernel each; LayerNorm / GroupNorm <= 3 kernels forward and <= 4 backward; AdamW and
clipping a handful of launches for all the parameters together.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np

import tinyw2v2 as tw
from tinyw2v2 import backend, optim

DEVICE = "emulated"
FAMILIES = ["engine", "conv", "norm", "activation", "attention", "quantize", "contrastive", "cross_entropy", "ctc"]


def _count(fn):
    with backend.count_device_work() as work:
        result = fn()
    return work, result


def op_counts(bench):
    """(forward work, forward + backward work) of one Bench on the emulated device."""
    rng = np.random.default_rng(0)
    arrays = bench.make(rng)
    diff = [i for i, a in enumerate(arrays) if i not in bench.constants and isinstance(a, np.ndarray)
            and np.issubdtype(a.dtype, np.floating)]
    on_dev = [backend.to_device(a, DEVICE) if isinstance(a, np.ndarray) else a for a in arrays]

    def inputs(grad):
        return [tw.Tensor(a, requires_grad=grad and i in diff, _copy=False) if i in diff else a
                for i, a in enumerate(on_dev)]

    def forward():
        with tw.no_grad():
            return bench.ours(*inputs(False))

    out = forward()                                   # warm-up (lazy generators), and the output's shape
    forward_work, _ = _count(forward)
    g = backend.to_device(rng.standard_normal(out.shape).astype(out.dtype), DEVICE)
    ins = inputs(True)

    def forward_backward():
        bench.ours(*ins).backward(g)

    backward_work, _ = _count(forward_backward)
    return forward_work, backward_work


def op_table(only=None, top=0):
    benches = []
    for fam in FAMILIES:
        benches += importlib.import_module(f"ops_{fam}").BENCHES
    if only:
        benches = [b for b in benches if any(o in b.op for o in only)]
    print("| op | shapes | fwd launches | fwd syncs | fwd+bwd launches | fwd+bwd syncs |")
    print("|---|---|---:|---:|---:|---:|")
    details = []
    for b in benches:
        f, fb = op_counts(b)
        print(f"| {b.op} | {b.shapes} | {f.launches} | {f.syncs} | {fb.launches} | {fb.syncs} |", flush=True)
        details.append((b, f, fb))
    if top:
        for b, f, fb in details:
            print(f"\n{b.op} {b.shapes}, forward + backward:\n{fb.table(top)}")


def training_step_counts(batch: int = 8, seconds: float = 1.0, seed: int = 0):
    """[(phase, DeviceWork)] of the second training step of the tiny preset on the emulated device."""
    from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining
    from tinyw2v2.train.common import IntervalMeans
    from tinyw2v2.train.pretrain import PretrainArgs, build_config

    args = PretrainArgs(device=DEVICE, seed=seed)
    model = Wav2Vec2ForPreTraining(build_config(args), seed=seed).to(DEVICE)
    opt = optim.AdamW(model.parameters(), lr=args.lr, betas=tuple(args.betas), eps=args.adam_eps,
                      weight_decay=args.weight_decay)
    model.train()
    x = (0.1 * np.random.default_rng(seed).standard_normal((batch, int(seconds * 16000)))).astype(np.float32)
    interval = IntervalMeans()
    phases = []

    def step(s, record):
        def phase(name, fn):
            work, result = _count(fn)
            if record:
                phases.append((name, work))
            return result

        def targets():
            model.manual_seed([seed, s, 1])
            model.set_gumbel_temperature(args.max_temperature)
            opt.set_lr(args.lr)
            return model.sample_targets(x.shape[0], model.num_frames(x.shape[1]))

        mask, negatives = phase("reseed + sample targets (host)", targets)

        def forward():
            out = model(x, mask_time_indices=mask, sampled_negative_indices=negatives)
            return out, out.loss * (1.0 / out.num_masked)

        out, loss = phase("forward (model + loss / N)", forward)

        def backward():
            opt.zero_grad()
            loss.backward()

        phase("backward", backward)
        norm = phase("clip_grad_norm_", lambda: opt.clip_grad_norm_(args.clip_norm))  # as guarded_update
        phase("guard: float(loss), float(norm)", lambda: (float(loss), float(norm)))
        phase("AdamW step", opt.step)
        n, k = out.num_masked, negatives.shape[-1]

        def metrics():
            interval.add({"contrastive_loss": out.contrastive_loss.data.astype(np.float64) / n,
                          "diversity_loss": out.diversity_loss.data.astype(np.float64) / n,
                          "feature_penalty": out.feature_penalty, "accuracy": out.accuracy,
                          "code_perplexity": out.code_perplexity, "prob_perplexity": out.prob_perplexity,
                          "negatives_identical": out.negatives_identical.data.astype(np.float64) / (n * k)},
                         weights={"accuracy": n, "negatives_identical": n * k}, maxima=("negatives_identical",))

        phase("metrics kept on the device (IntervalMeans.add)", metrics)

    step(0, record=False)
    step(1, record=True)
    return phases


def step_table(top=0):
    phases = training_step_counts()
    print("| phase of one tiny training step (8 x 1 s) | launches | syncs | uploads |")
    print("|---|---:|---:|---:|")
    for name, w in phases:
        print(f"| {name} | {w.launches} | {w.syncs} | {w.uploads} |")
    total = [sum(getattr(w, a) for _, w in phases) for a in ("launches", "syncs", "uploads")]
    print(f"| **total** | **{total[0]}** | **{total[1]}** | **{total[2]}** |", flush=True)
    if top:
        for name, w in phases:
            print(f"\n{name}:\n{w.table(top)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", help="only ops whose name contains this (repeatable)")
    p.add_argument("--no-ops", action="store_true", help="skip the per-op table")
    p.add_argument("--no-step", action="store_true", help="skip the training step")
    p.add_argument("--top", type=int, default=0, help="also print the N most frequent launch kinds of each row")
    args = p.parse_args()
    if not args.no_ops:
        op_table(args.only, args.top)
        print()
    if not args.no_step:
        step_table(args.top)


if __name__ == "__main__":
    main()
