"""Data-parallel throughput on this machine: seconds of audio trained per second, one process against two ranks.

    python benchmarks/bench_distributed.py [--steps 60] [--rounds 2] [-- PRETRAIN ARGS]

Three ways to train the same updates (the default recipe with 24 crops of at most 1 s per update, twice the default
batch, so that each of two ranks holds the default's 12 s; the built-in synthetic corpus), each a fresh
``tinyw2v2 pretrain`` run:

    1 process x 1 thread     --threads 1 --batch-seconds 24
    1 process x 2 threads    --threads 2 --batch-seconds 24
    2 ranks x 1 thread       mpiexec -n 2 ... --threads 1 --batch-seconds 12   (12 s per rank, 24 s per update)

Every rank draws the update's batch from (seed, step), so the three runs train on the same crops; the audio of each
update is read back by replaying the sampler. The figure is training time alone (the log's ``seconds``: forward,
backward, all-reduce and update, evaluation not counted) over the steps after the first logged interval (warm-up),
best of ``--rounds`` processes. Run it on an idle machine (see bench_threads.py: a busy core stalls BLAS threads and
MPI ranks alike). Needs the distributed extra (mpiexec beside the interpreter, or on PATH).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {  # name: (ranks, BLAS threads per rank, --batch-seconds per rank)
    "1 process x 1 thread": (1, 1, 24.0),
    "1 process x 2 threads": (1, 2, 24.0),
    "2 ranks x 1 thread": (2, 1, 12.0),
}


def measure(ranks: int, threads: int, batch_seconds: float, steps: int, extra: list, out: Path) -> dict:
    """Steps per second of one fresh run, and the steps it timed."""
    log_every = max(1, steps // 6)
    cmd = [sys.executable, "-m", "tinyw2v2.cli", "pretrain", "--steps", str(steps), "--threads", str(threads),
           "--batch-seconds", str(batch_seconds), "--out", str(out), "--no-progress", "--log-every", str(log_every),
           "--eval-every", str(10 ** 9), "--checkpoint-every", str(10 ** 9), *extra]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("no mpiexec: pip install 'tinyw2v2[distributed]'")
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    timed = [r for r in records if r["step"] > 0 and "seconds" in r]
    first, last = timed[0], timed[-1]
    return {"rate": (last["step"] - first["step"]) / (last["seconds"] - first["seconds"]),
            "steps": range(first["step"], last["step"])}


def audio_per_update(steps: range, extra: list) -> float:
    """Seconds of audio in the updates ``steps`` on average, replaying the run's sampler (the same for all runs)."""
    from tinyw2v2.cli import build_parser, dataclass_from_options
    from tinyw2v2.train.corpus import prepare_corpus
    from tinyw2v2.train.pretrain import SAMPLE_RATE, BatchSampler, PretrainArgs, build_config, load_waveforms

    args = dataclass_from_options(PretrainArgs, build_parser().parse_args(["pretrain", *extra]))
    path = prepare_corpus(args) / "train" if args.data == "synthetic" else Path(args.data)
    waves, _ = load_waveforms(path, build_config(args).min_samples_to_mask(), False, args.normalize, report=False)
    if args.data != "synthetic" and args.eval_data is None:
        waves = waves[:-max(1, len(waves) // 10)]
    sampler = BatchSampler(waves, int(round(24.0 / args.crop_seconds)), int(args.crop_seconds * SAMPLE_RATE),
                           args.seed)
    return sum(sampler(s).size for s in steps) / SAMPLE_RATE / len(steps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more pretrain options, after --")
    a = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    best, timed = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for name in (list(RUNS) if r % 2 == 0 else list(RUNS)[::-1]):
                m = measure(*RUNS[name], a.steps, a.extra, Path(tmp) / f"{len(best)}-{r}-{RUNS[name][0]}")
                best[name], timed = max(best.get(name, 0.0), m["rate"]), m["steps"]
                print(f"  round {r + 1}, {name}: {m['rate']:.2f} updates/s")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    audio = audio_per_update(timed, a.extra)
    base = best["1 process x 1 thread"]
    print(f"| run | updates/s (best of {a.rounds}) | s of audio per s | speed-up over 1 x 1 |")
    print("|---|---:|---:|---:|")
    for name in RUNS:
        print(f"| {name} | {best[name]:.2f} | {best[name] * audio:.1f} | {best[name] / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
