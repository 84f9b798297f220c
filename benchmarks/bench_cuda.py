"""tinyw2v2 on a GPU next to transformers + torch on the same GPU: one pretraining step (forward, backward, clipping,
AdamW) and the eval-mode forward, same config, masks and negatives, same run; plus the launches and syncs of our
step counted on the emulated device.

    python benchmarks/bench_cuda.py [--device cuda] [--repeat 10] [--only tiny-8x1s] [--out DIR]

Cases: tiny 8 x 1 s and 32 x 1 s, base 2 x 1 s and 8 x 4 s (layerdrop 0, so that every step does the same work).
Times are the median of ``--repeat`` calls after two warm-up calls, each call ended by a device synchronize, so
they include the launches and the waits. torch runs eager (no compile), float32, TF32 off (ours is strict float32).
``--device emulated`` checks the script's logic without a GPU (ours on the emulated device, torch on the CPU); the
times then mean nothing. Writes ``bench_cuda.json`` and ``bench_cuda.md`` to ``--out`` (default: print only), after
every row; a row that fails (a kernel that does not compile, memory) says so in the table and the others still run
(exit status 1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_model import model_config, model_inputs

CASES = {"tiny-8x1s": ("tiny", 8, 16000), "tiny-32x1s": ("tiny", 32, 16000),
         "base-2x1s": ("base", 2, 16000), "base-8x4s": ("base", 8, 64000)}


def ours(cfg, x, mask, negatives, mode, device):
    """A call that runs one step (or forward) of tinyw2v2 on ``device`` and waits for the device."""
    import tinyw2v2 as tw
    from tinyw2v2 import backend, optim
    from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining

    model = Wav2Vec2ForPreTraining(cfg, seed=0).to(device)
    xd = backend.to_device(x, device)
    sync = (lambda: backend._cupy.cuda.Device().synchronize()) if device.startswith("cuda") else (lambda: None)
    if mode == "train":
        model.train()
        opt = optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)

        def call():
            out = model(xd, mask_time_indices=mask, sampled_negative_indices=negatives)
            loss = out.loss * (1.0 / out.num_masked)
            opt.zero_grad()
            loss.backward()
            norm = opt.clip_grad_norm_(10.0)
            float(loss), float(norm)               # the training loop's NaN/Inf guard: its 2 syncs
            opt.step()
            sync()
    else:
        model.eval()

        def call():
            with tw.no_grad():
                model(xd, mask_time_indices=mask, sampled_negative_indices=negatives)
            sync()
    return call


def theirs(cfg, x, mask, negatives, mode, device):
    """The same with transformers + torch (eager, float32, TF32 off)."""
    import torch
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    values = {k: v for k, v in cfg.to_dict().items() if k not in ("architectures",)}
    model = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**values)).to(device)
    xt = torch.from_numpy(x).to(device)
    mt, nt = torch.from_numpy(mask).to(device), torch.from_numpy(negatives).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)

        def call():
            out = model(xt, mask_time_indices=mt, sampled_negative_indices=nt)
            loss = out.loss / mt.sum()
            opt.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            loss.item(), norm.item()
            opt.step()
            sync()
    else:
        model.eval()

        def call():
            with torch.no_grad():
                model(xt, mask_time_indices=mt, sampled_negative_indices=nt)
            sync()
    return call


def timed(call, repeat):
    call(), call()                                  # warm-up: kernels compiled, moments and caches allocated
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def device_work(cfg, x, mask, negatives):
    """Launches and syncs of our second training step, counted on the emulated device."""
    from tinyw2v2 import backend

    call = ours(cfg, x, mask, negatives, "train", "emulated")
    call()
    with backend.count_device_work() as work:
        call()
    return work.launches, work.syncs


def torch_device(device):
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        return None
    if device.startswith("cuda"):
        return device if torch.cuda.is_available() else None
    return "cpu"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--only", action="append", choices=list(CASES))
    p.add_argument("--modes", default="train,forward")
    p.add_argument("--count", default="tiny-8x1s,base-2x1s",
                   help="cases whose step is also counted on the emulated device (empty: none)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    tdev = torch_device(a.device)
    if a.device.startswith("cuda"):
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        name = name.decode() if isinstance(name, bytes) else name
        print(f"device: {name}, CuPy {cupy.__version__}; torch on {tdev or 'nothing (not installed)'}")
    else:
        name = a.device
    rows = []
    for case in a.only or list(CASES):
        preset, batch, length = CASES[case]
        cfg = model_config(preset)
        x, mask, negatives = model_inputs(cfg, batch, length)
        for mode in a.modes.split(","):
            row = {"case": case, "mode": mode, "ours_s": None, "torch_s": None, "ratio": None}
            try:   # a case that fails (a kernel, memory) is reported in its row; the others still run
                row["ours_s"] = timed(ours(cfg, x, mask, negatives, mode, a.device), a.repeat)
                row["torch_s"] = timed(theirs(cfg, x, mask, negatives, mode, tdev), a.repeat) if tdev else None
                if row["torch_s"] is not None:
                    row["ratio"] = row["ours_s"] / row["torch_s"]
                if mode == "train" and case in a.count.split(","):
                    row["launches"], row["syncs"] = device_work(cfg, x, mask, negatives)
            except Exception as e:                   # noqa: BLE001 - any failure is the row's result
                traceback.print_exc()
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
            rows.append(row)
            print(_line(row), flush=True)
            _write(a.out, name, rows)                # after every row: a run stopped at its limit keeps its rows
    print("\n".join(_table(rows)))
    failed = [r for r in rows if "error" in r]
    if failed:
        print(f"{len(failed)} of {len(rows)} rows failed")
    return 1 if failed else 0


def _ms(v):
    return "–" if v is None else f"{1e3 * v:.2f}"


def _line(r) -> str:
    ratio = "" if r["ratio"] is None else f"  ours/torch {r['ratio']:.2f}"
    counts = f"  {r['launches']} launches, {r['syncs']} syncs" if "launches" in r else ""
    theirs_s = "" if r["torch_s"] is None else f"  torch {_ms(r['torch_s']):>8s} ms"
    error = f"  FAILED {r['error']}" if "error" in r else ""
    return f"{r['case']:11s} {r['mode']:8s} ours {_ms(r['ours_s']):>8s} ms{theirs_s}{ratio}{counts}{error}"


def _table(rows) -> list:
    table = ["| case | mode | ours (ms) | transformers + torch (ms) | ours / torch | launches per step | syncs |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}"
        ours_ms = _ms(r["ours_s"]) if "error" not in r else f"failed: {r['error']}".replace("|", "/")
        table.append(f"| {r['case']} | {r['mode']} | {ours_ms} | {_ms(r['torch_s'])} | {ratio} | "
                     f"{r.get('launches', '–')} | {r.get('syncs', '–')} |")
    return table


def _write(out, name, rows) -> None:
    if not out:
        return
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench_cuda.json"), "w") as f:
        json.dump({"device": name, "rows": rows}, f, indent=1)
    with open(os.path.join(out, "bench_cuda.md"), "w") as f:
        f.write(f"{name}\n\n" + "\n".join(_table(rows)) + "\n")


if __name__ == "__main__":
    sys.exit(main())
