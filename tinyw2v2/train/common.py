"""What the pretraining and fine-tuning loops share: their error type, the guarded update, resume, the metrics log
(one JSON line per logged step, training figures as means over the logging interval) and the BLAS thread limit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from .. import backend, optim
from ..io import load_optimizer, read_checkpoint, write_text
from ..tensor import Tensor

SAMPLE_RATE = 16000


def arg(default, help: str):
    """A field of a run's argument dataclass with its command-line help (``tinyw2v2.cli`` builds the options)."""
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class RunArgs:
    """The options every training run takes alike (a base of PretrainArgs and FinetuneArgs)."""
    overrides: dict = arg({}, "model config fields to change (--set KEY=VALUE, repeatable)")
    betas: tuple = arg((0.9, 0.98), "AdamW's betas")
    clip_norm: float = arg(10.0, "clip the global gradient norm to this (0: measure only)")
    device: str = arg("cpu", "cpu or cuda[:N]")
    resume: bool = arg(False, "continue from OUT/checkpoint.npz")
    stop_at: int | None = arg(None, "stop (with a checkpoint) after this step, as if interrupted")
    normalize: bool = arg(False, "zero-mean, unit-variance each utterance")
    progress: bool = arg(True, "show a progress bar")


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, bad data, mismatched checkpoint); the message says what to do."""


def check_sizes(args, positive: tuple) -> None:
    """A size a run cannot take, as one clear TrainingError: ``--steps`` below 1, or one of ``positive`` (names of
    fields of ``args``, None meaning not set) zero or negative."""
    if args.steps is not None and args.steps < 1:
        raise TrainingError(f"--steps must be at least 1, got {args.steps}")
    for name in positive:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be positive, got {value:g}")


def value_of(v) -> float:
    """A Python float from a number or a 0-d array on any device (a sync point for a GPU array)."""
    return v.item() if hasattr(v, "item") else float(v)


class IntervalMeans:
    """Training metrics averaged over the steps since the last logged line (fairseq logs the same way).

    One batch of toy size is a noisy sample: a single crop full of silence can put many identical codes among the
    negatives. Each value is weighted: loss, parts, perplexities and lr by step, accuracy by masked frames,
    ``negatives_identical`` by sampled negatives; ``negatives_identical_batch_max`` keeps the worst single batch.
    Values may be Tensors or 0-d device arrays: they are summed in float64 where they live and read once per
    logged line, so the training step gains no host sync. The sums travel in the checkpoint, so a resumed run logs
    exactly what the uninterrupted one does.
    """

    def __init__(self, state: dict | None = None):
        self.sums, self.weights, self.maxima = ({}, {}, {}) if not state else (
            dict(state["sums"]), dict(state["weights"]), dict(state["maxima"]))

    def add(self, values: dict, weights: dict | None = None, maxima: tuple = ()):
        values = {k: as_float64(v) for k, v in values.items()}
        for k, v in values.items():
            w = (weights or {}).get(k, 1.0)
            self.sums[k] = self.sums.get(k, 0.0) + v * w
            self.weights[k] = self.weights.get(k, 0.0) + w
        for k in maxima:
            v = values[k]
            self.maxima[k] = v if k not in self.maxima else backend.get_array_module(v).maximum(self.maxima[k], v)

    def pop(self) -> dict:
        """The means (and maxima, as ``<name>_batch_max``) since the last pop; then start a new interval."""
        values = read_values({**self.sums, **{f"{k}_batch_max": v for k, v in self.maxima.items()}})
        means = {k: values[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}
        means.update({f"{k}_batch_max": values[f"{k}_batch_max"] for k in self.maxima})
        self.sums, self.weights, self.maxima = {}, {}, {}
        return means

    def state(self) -> dict:
        """The running sums as JSON numbers (for the checkpoint)."""
        values = read_values({**{("sum", k): v for k, v in self.sums.items()},
                              **{("max", k): v for k, v in self.maxima.items()}})
        return {"sums": {k: values[("sum", k)] for k in self.sums}, "weights": dict(self.weights),
                "maxima": {k: values[("max", k)] for k in self.maxima}}


def read_values(values: dict) -> dict:
    """{name: Python float} from numbers and 0-d arrays; the device arrays among them are read in one transfer
    (one sync per logged line, however many metrics are on the device)."""
    on_device = [k for k, v in values.items() if backend.is_device_array(v)]
    out = {k: value_of(v) for k, v in values.items() if k not in on_device}
    if on_device:
        xp = backend.get_array_module(values[on_device[0]])
        host = backend.to_numpy(xp.stack([values[k].astype(np.float64) for k in on_device]))   # one sync
        out.update({k: float(v) for k, v in zip(on_device, host)})
    return {k: out[k] for k in values}


def as_float64(v):
    """A Tensor, 0-d array or number as a float64 value to sum, left on its device."""
    v = v.data if isinstance(v, Tensor) else v
    return v.astype(np.float64) if hasattr(v, "astype") else float(v)


def guarded_update(loss, opt, clip_norm, step: int, ckpt_path: Path, bar=None, sum_gradients=None):
    """After the backward: clip the global gradient norm of ``opt``'s parameters, and take the optimiser step only if
    loss and norm are finite. ``sum_gradients(params)``, when given, first sums every gradient over the ranks of a
    data-parallel run (``train/distributed.py``); ``loss`` is then the whole update's loss, the same on every rank.

    Returns (loss, norm) as floats: one host sync per step, which is what guards the update. A NaN or Inf raises
    ``TrainingError`` before anything is changed, so the last checkpoint stays the last good state.
    """
    if sum_gradients is not None:
        sum_gradients(opt.params)                       # every rank: the gradient of the whole update's loss
    norm = opt.clip_grad_norm_(clip_norm)               # the optimiser's: a fused step folds it into its kernel
    loss_value, norm_value = float(loss), float(norm)   # sync point: guard before the update
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        if bar is not None:
            bar.close()
        raise TrainingError(
            f"step {step}: the loss is {loss_value} (gradient norm {norm_value}); the update was not applied. "
            f"The last good checkpoint is {ckpt_path if ckpt_path.exists() else 'not written yet'}. "
            "Lower --lr or raise the warm-up, then --resume")
    opt.step()
    return loss_value, norm_value


def restore_checkpoint(ckpt_path: Path, model, opt, config, log_path: Path | None, options: str,
                       check_state=None) -> dict:
    """``--resume``: load a run's checkpoint into the model and the optimiser and cut the metrics log back to its
    step (``log_path`` None: leave the log alone, as every rank but rank 0 does); returns the checkpoint's metadata. A checkpoint of another config is refused, naming ``options`` (the
    command-line options that fix the config); ``check_state(state)`` may refuse it for a clearer reason before
    the state is loaded."""
    state, optim_arrays, meta = read_checkpoint(ckpt_path)
    if meta["config"] != config.to_dict():
        raise TrainingError(f"{ckpt_path}: the checkpoint was made with another model config; resume with the "
                            f"same {options} options, or pick a new --out directory")
    if check_state is not None:
        check_state(state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise TrainingError(f"{ckpt_path}: {e}") from None
    load_optimizer(opt, optim_arrays, meta)
    if log_path is not None:
        truncate_metrics(log_path, int(meta["step"]))
    return meta


def start_or_resume(args, parallel, model, opt, config, out_dir: Path, options: str, check_state=None):
    """Where a run starts. With ``--resume`` and a checkpoint in ``out_dir`` (seen by any rank), every rank loads it
    (``restore_checkpoint``, with ``options`` and ``check_state``); otherwise step 0 and a fresh metrics log
    (``--resume`` without a checkpoint says so). Then every rank checks that it holds the same parameters, and rank 0
    writes config.json. Returns (start step, training seconds so far, the IntervalMeans of the open interval)."""
    ckpt_path, log_path = out_dir / "checkpoint.npz", out_dir / "metrics.jsonl"
    main = parallel.main                                      # rank 0 (the only one in a run of one process)
    start, train_seconds, interval = 0, 0.0, IntervalMeans()
    if args.resume and parallel.max(ckpt_path.exists()):     # every rank resumes if one sees a checkpoint
        meta = parallel.collective(restore_checkpoint, ckpt_path, model, opt, config, log_path if main else None,
                                   options, check_state=check_state)
        start, train_seconds = int(meta["step"]), float(meta.get("train_seconds", 0.0))
        interval = IntervalMeans(meta.get("interval"))
        if main:
            print(f"resumed from {ckpt_path} at step {start} ({train_seconds:.0f} s of training)")
    elif args.resume and main:
        print(f"--resume: no checkpoint in {out_dir}, so this run starts from scratch")
    elif main and log_path.exists():
        log_path.unlink()
    parallel.check_replicas(model.parameters(), start)       # every rank starts from the same parameters
    if main:
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    return start, train_seconds, interval


def blas_threads(n):
    """Limit the BLAS threads for the run (None: leave them as they are)."""
    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n), user_api="blas")



class _NoBar:
    """What a disabled progress bar does: nothing (and without importing tqdm, which warns in some notebooks)."""

    def set_postfix(self, **_):
        pass

    def update(self, _=1):
        pass

    def close(self):
        pass


def progress_bar(enabled: bool, **options):
    """A tqdm progress bar (``options`` are tqdm's), or one that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, **options)


# ----------------------------------------------------------------------------------------------
# the metrics log


def append_metrics(path, record) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the log lines up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    if not path.exists():
        return
    lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
    write_text(path, "".join(l + "\n" for l in lines))


def read_metrics(path) -> list:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
