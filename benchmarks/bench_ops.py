"""Time each op's forward and forward + backward next to torch, at the shapes the model uses.

    python benchmarks/bench_ops.py [--device cpu|cuda] [--threads N] [--only conv1d]

Each op family lists its benchmarks in ``benchmarks/ops_<family>.py`` (a ``BENCHES`` list).
"""
import importlib
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(__file__))

from harness import parse_args, run_table  # noqa: E402

FAMILIES = ["engine", "conv", "norm", "activation", "attention", "quantize", "contrastive", "cross_entropy", "ctc"]


def main():
    args = parse_args(__doc__.splitlines()[0])
    benches = []
    for fam in FAMILIES:
        benches += importlib.import_module(f"ops_{fam}").BENCHES
    if args.only:
        benches = [b for b in benches if any(o in b.op for o in args.only)]
    import numpy as np
    try:
        import torch
        tv = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        tv = "torch not installed"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}; {tv}; "
          f"device {args.device}\n")
    run_table(benches, args.device, args.repeat)


if __name__ == "__main__":
    main()
