"""Steps per second of the pretraining loop at 1, 2, ... BLAS threads: which default is faster here?

    python benchmarks/bench_threads.py [--threads 1 2] [--steps 80] [--rounds 2] [--preset tiny] [-- PRETRAIN ARGS]

Each measurement is a fresh process running ``tinyw2v2 pretrain`` (the default recipe, the built-in synthetic
corpus) with ``--threads N``, held-out evaluation only at the start and the end. The figure is training time
alone (the ``seconds`` of the log: forward, backward and update, evaluation not counted) over the steps after
the first logged interval (warm-up), best of ``--rounds`` processes, thread counts alternating. Run it on an idle
machine: OpenBLAS's threads stall whenever another process holds a core, which is a measurement of the machine,
not of the thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(threads: int, steps: int, extra: list, out: Path) -> float:
    """Training steps per second of one fresh ``tinyw2v2 pretrain`` process."""
    log_every = max(1, steps // 8)
    cmd = [sys.executable, "-m", "tinyw2v2.cli", "pretrain", "--steps", str(steps), "--threads", str(threads),
           "--out", str(out), "--no-progress", "--log-every", str(log_every), "--eval-every", str(10 ** 9),
           "--checkpoint-every", str(10 ** 9), *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    timed = [r for r in records if r["step"] > 0 and "seconds" in r]
    first, last = timed[0], timed[-1]
    return (last["step"] - first["step"]) / (last["seconds"] - first["seconds"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more pretrain options, after --")
    a = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for n in (a.threads if r % 2 == 0 else a.threads[::-1]):
                rate = measure(n, a.steps, a.extra, Path(tmp) / f"t{n}-r{r}")
                best[n] = max(best.get(n, 0.0), rate)
                print(f"  round {r + 1}, {n} thread(s): {rate:.2f} steps/s")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print("| BLAS threads | steps/s (best of %d) |" % a.rounds)
    print("|---|---|")
    for n in a.threads:
        print(f"| {n} | {best[n]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
