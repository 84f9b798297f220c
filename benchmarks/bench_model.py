"""One wav2vec 2.0 pretraining step (forward, backward, AdamW) and the forward alone: tinyw2v2 next to
transformers + torch on the CPU, same config, same masks and negatives, same thread count, same run.

    python benchmarks/bench_model.py [--threads N] [--repeat 3] [--only tiny] [--device cpu]

Cases: the ``tiny`` preset at batch 8 x 16000 samples and the ``base`` preset at batch 2 x 16000.
Both frameworks run in train mode for the step (the preset's dropouts; layerdrop 0 so that every step does
the same work) and in eval mode under no_grad for the forward. Every (framework, case, mode) runs in its
own subprocess, so that peak memory is that measurement's alone:

- time: the median of ``--repeat`` calls after one warm-up call, in the best of ``--rounds`` processes
  (the frameworks alternate, so that a busy machine hurts both alike);
- step memory: the peak resident set size during the calls minus the RSS just before them (model,
  optimiser and inputs built; on Linux the kernel's peak counter VmHWM is reset at that point), i.e. what
  the calls add: activations saved for backward, gradients, optimiser moments, temporaries;
- peak RSS: the process's peak during the calls, imports and model included (torch's import alone is
  several hundred MB).

NumPy's BLAS and torch get the same thread count (``OMP_NUM_THREADS`` etc. are set before NumPy loads).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CASES = [("tiny", 8, 16000), ("base", 2, 16000)]


# ----------------------------------------------------------------------------------------------
# worker: one measurement in a fresh process


def _status_mb(field: str):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2 ** 10
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:  # pragma: no cover - not Linux / not permitted
        return False


def _peak_mb() -> float:
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource  # pragma: no cover - not Linux

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


def model_config(preset):
    """The preset with layerdrop 0 (every step does the same work); bench_cuda.py uses it too."""
    from tinyw2v2.models.wav2vec2 import Wav2Vec2Config

    return Wav2Vec2Config.preset(preset, layerdrop=0.0)


def model_inputs(cfg, batch, length):
    """(waveforms, mask, negatives) from a fixed seed; bench_cuda.py uses them too."""
    import numpy as np

    from tinyw2v2.models.wav2vec2 import compute_mask_indices, sample_negative_indices

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, length)).astype(np.float32)
    T = cfg.num_frames(length)
    mask = compute_mask_indices((batch, T), cfg.mask_time_prob, cfg.mask_time_length,
                                min_masks=cfg.mask_time_min_masks, rng=rng)
    negatives = sample_negative_indices((batch, T), cfg.num_negatives, mask, rng)
    return x, mask, negatives


def _ours(cfg, x, mask, negatives, mode, device):
    import tinyw2v2 as tw
    from tinyw2v2 import backend, optim
    from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining

    model = Wav2Vec2ForPreTraining(cfg, seed=0).to(device)
    x = backend.to_device(x, device)
    sync = (lambda: backend._cupy.cuda.Device().synchronize()) if device.startswith("cuda") else (lambda: None)
    if mode == "train":
        model.train()
        opt = optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)

        def call():
            out = model(x, mask_time_indices=mask, sampled_negative_indices=negatives)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            sync()
    else:
        model.eval()

        def call():
            with tw.no_grad():
                model(x, mask_time_indices=mask, sampled_negative_indices=negatives)
            sync()
    return call


def _torch(cfg, x, mask, negatives, mode, threads):
    import torch
    import transformers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    values = {k: v for k, v in cfg.to_dict().items() if k not in ("architectures",)}
    model = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**values))
    xt, mt, nt = torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(negatives)
    if mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)

        def call():
            out = model(xt, mask_time_indices=mt, sampled_negative_indices=nt)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
    else:
        model.eval()

        def call():
            with torch.no_grad():
                model(xt, mask_time_indices=mt, sampled_negative_indices=nt)
    return call


def worker(framework, preset, batch, length, mode, threads, repeat, device):
    cfg = model_config(preset)
    x, mask, negatives = model_inputs(cfg, batch, length)
    call = _ours(cfg, x, mask, negatives, mode, device) if framework == "ours" else \
        _torch(cfg, x, mask, negatives, mode, threads)
    rss0 = _status_mb("VmRSS")
    if rss0 is None or not _reset_peak():  # pragma: no cover - not Linux: peak since start
        rss0 = 0.0
    call()  # warm-up (also allocates the optimiser moments)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    times.sort()
    peak = _peak_mb()
    print(json.dumps({"time": times[len(times) // 2], "min": times[0], "peak_mb": peak, "step_mb": peak - rss0}))


# ----------------------------------------------------------------------------------------------
# driver


def _measure(framework, preset, batch, length, mode, args):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, preset, str(batch), str(length), mode,
           "--threads", str(args.threads), "--repeat", str(args.repeat), "--device", args.device]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{framework} {preset} {mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=3, help="timed calls per process (after one warm-up)")
    p.add_argument("--rounds", type=int, default=2, help="processes per framework, alternating; best kept")
    p.add_argument("--device", default="cpu", help="device for tinyw2v2 (torch always runs on the CPU)")
    p.add_argument("--only", action="append", help="only these presets (repeatable)")
    p.add_argument("--worker", nargs=5, metavar=("FRAMEWORK", "PRESET", "BATCH", "LENGTH", "MODE"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        framework, preset, batch, length, mode = args.worker
        worker(framework, preset, int(batch), int(length), mode, args.threads, args.repeat, args.device)
        return
    try:
        import torch
        import transformers
        versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
        have_torch = True
    except ImportError:
        versions, have_torch = "torch / transformers not installed", False
    import numpy as np

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}; "
          f"{versions}; {args.threads} threads; tinyw2v2 on {args.device}; median of {args.repeat} calls, "
          f"best of {args.rounds} processes\n")
    print("| preset | batch x samples | mode | ours s | torch s | time ratio | ours peak RSS MB | torch peak RSS MB "
          "| ours step MB | torch step MB | step-memory ratio |")
    print("|" + "---|" * 11)
    for preset, batch, length in CASES:
        if args.only and preset not in args.only:
            continue
        for mode in ("train", "forward"):
            ours = theirs = None
            for _ in range(args.rounds):  # alternate the frameworks, keep each one's best round
                o = _measure("ours", preset, batch, length, mode, args)
                ours = o if ours is None or o["time"] < ours["time"] else ours
                if have_torch:
                    t = _measure("torch", preset, batch, length, mode, args)
                    theirs = t if theirs is None or t["time"] < theirs["time"] else theirs
            if theirs:
                cells = (f"{theirs['time']:.3f}", f"{ours['time'] / theirs['time']:.2f}",
                         f"{theirs['peak_mb']:.0f}", f"{theirs['step_mb']:.0f}",
                         f"{ours['step_mb'] / max(theirs['step_mb'], 1e-9):.2f}")
            else:
                cells = ("-",) * 5
            print(f"| {preset} | {batch} x {length} | {'train step' if mode == 'train' else 'forward'} "
                  f"| {ours['time']:.3f} | {cells[0]} | {cells[1]} | {ours['peak_mb']:.0f} | {cells[2]} "
                  f"| {ours['step_mb']:.0f} | {cells[3]} | {cells[4]} |", flush=True)


if __name__ == "__main__":
    main()
