"""A small timing harness: each op against torch on the same shapes, in the same run.

A ``Bench`` gives float32 NumPy inputs, our function of Tensors and torch's function of torch tensors.
``run_table`` times forward alone (no graph) and forward + backward (a random upstream gradient) for
both, takes the best of a few repeats, and prints a table with the ratio ours / torch.
Torch runs with as many threads as NumPy's BLAS uses here (``--threads``, default: all cores).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Bench:
    op: str
    shapes: str
    make: Callable          # rng -> tuple of NumPy arrays (float arrays are differentiated)
    ours: Callable          # (*tinyw2v2 Tensors / arrays) -> Tensor
    torch: Callable | None  # (*torch tensors) -> torch tensor
    constants: tuple = field(default_factory=tuple)  # positions of inputs that are not differentiated


def _best(fn, repeat, min_time=0.2):
    fn()  # warm-up
    times = []
    t_start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - t_start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_ours(b: Bench, rng, device="cpu", repeat=5):
    import tinyw2v2 as tw
    from tinyw2v2 import backend

    arrays = b.make(rng)
    diff = [i for i, a in enumerate(arrays) if i not in b.constants and isinstance(a, np.ndarray)
            and np.issubdtype(a.dtype, np.floating)]
    on_dev = [backend.to_device(a, device) if isinstance(a, np.ndarray) else a for a in arrays]

    def inputs(grad):
        return [tw.Tensor(a, requires_grad=grad and i in diff, _copy=False) if i in diff else a
                for i, a in enumerate(on_dev)]

    sync = (lambda: backend._cupy.cuda.Device().synchronize()) if device.startswith("cuda") else (lambda: None)

    def fwd():
        with tw.no_grad():
            b.ours(*inputs(False))
        sync()

    out = b.ours(*inputs(False))
    g = backend.to_device(rng.standard_normal(out.shape).astype(out.dtype), device)

    def fwd_bwd():
        y = b.ours(*inputs(True))
        y.backward(g)
        sync()

    return _best(fwd, repeat), _best(fwd_bwd, repeat)


def time_torch(b: Bench, rng, repeat=5):
    import torch

    arrays = b.make(rng)
    diff = [i for i, a in enumerate(arrays) if i not in b.constants and isinstance(a, np.ndarray)
            and np.issubdtype(a.dtype, np.floating)]

    def inputs(grad):
        return [torch.tensor(a, requires_grad=grad and i in diff) if isinstance(a, np.ndarray) else a
                for i, a in enumerate(arrays)]

    ins_f, ins_b = inputs(False), inputs(True)

    def fwd():
        with torch.no_grad():
            b.torch(*ins_f)

    out = b.torch(*inputs(False))
    g = torch.tensor(rng.standard_normal(tuple(out.shape)).astype(np.float32))

    def fwd_bwd():
        for t in ins_b:
            if isinstance(t, torch.Tensor):
                t.grad = None
        b.torch(*ins_b).backward(g)

    return _best(fwd, repeat), _best(fwd_bwd, repeat)


def run_table(benches, device="cpu", repeat=5, out=None):
    """Time every Bench and print a Markdown table; returns the rows."""
    try:
        import torch
        have_torch = True
    except ImportError:
        have_torch = False
    rows = []
    header = "| op | shapes | ours fwd ms | torch fwd ms | ratio | ours fwd+bwd ms | torch fwd+bwd ms | ratio |"
    print(header, file=out)
    print("|" + "---|" * 8, file=out)
    for b in benches:
        rng = np.random.default_rng(0)
        of, ob = time_ours(b, rng, device, repeat)
        if have_torch and b.torch is not None:
            tf, tb = time_torch(b, np.random.default_rng(0), repeat)
            rf, rb = f"{of / tf:.2f}", f"{ob / tb:.2f}"
            tfs, tbs = f"{tf * 1e3:.3f}", f"{tb * 1e3:.3f}"
        else:
            tf = tb = None
            rf = rb = tfs = tbs = "-"
        rows.append((b.op, b.shapes, of, tf, ob, tb))
        print(f"| {b.op} | {b.shapes} | {of * 1e3:.3f} | {tfs} | {rf} | {ob * 1e3:.3f} | {tbs} | {rb} |",
              file=out, flush=True)
    return rows


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", action="append", help="only ops whose name contains this (repeatable)")
    args = p.parse_args()
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    return args
