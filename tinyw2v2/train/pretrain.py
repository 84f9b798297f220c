"""Contrastive pretraining of wav2vec 2.0: the loop behind ``tinyw2v2 pretrain``.

One step (fairseq's recipe, at toy scale):
    x (B, L) crops of similar length  ->  model(x): masks and negatives sampled, loss summed over masked frames
    loss / N  (gradients averaged over the N masked frames, as fairseq divides by the sample size)
    backward, clip the global gradient norm, AdamW step; lr and Gumbel temperature follow their schedules.

Every random choice of step s (which utterances, where to crop, masks, negatives, dropout, Gumbel noise)
is drawn from generators seeded with (seed, s), so ``--resume`` continues from a checkpoint to exactly the
numbers an uninterrupted run gives. Held-out evaluation uses fixed crops, masks and negatives in eval mode
(argmax codes, no noise), so its accuracy is comparable across steps and runs.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import backend, optim
from ..data import AudioDataset, generate_corpus
from ..models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
from ..models.wav2vec2.masking import compute_mask_indices, sample_negative_indices
from ..tensor import Tensor, no_grad
from .checkpoint import load_optimizer, read_checkpoint, save_checkpoint

SAMPLE_RATE = 16000


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, bad data, mismatched checkpoint); the message says what to do."""


@dataclass
class PretrainArgs:
    data: str = "synthetic"            # "synthetic", or a LibriSpeech dir / fairseq .tsv / folder of audio
    eval_data: str | None = None       # held-out audio; default: the synthetic corpus's unseen speakers
    corpus_dir: str = "data/synthetic"  # where the synthetic corpus is generated (once)
    corpus_speakers: int = 24
    corpus_heldout: int = 4
    corpus_utterances: int = 100
    corpus_seed: int = 0
    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)
    steps: int = 1000
    batch_seconds: float = 24.0        # audio per batch (before cropping to the shortest)
    crop_seconds: float = 2.0
    lr: float = 1e-3
    warmup: float = 0.08               # fraction of the steps
    schedule: str = "linear"           # linear (warm-up, linear decay to 0) | constant (after warm-up)
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    adam_eps: float = 1e-6
    clip_norm: float = 10.0
    max_temperature: float = 2.0
    min_temperature: float = 0.5
    anneal_fraction: float = 1.0       # the temperature reaches its minimum after this fraction of the steps
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/pretrain"
    log_every: int = 10
    eval_every: int = 100
    eval_utterances: int = 48
    eval_seconds: float = 1.5
    eval_batch: int = 16
    checkpoint_every: int = 250
    resume: bool = False
    stop_at: int | None = None         # stop (with a checkpoint) after this step, as if interrupted
    strict: bool = False
    normalize: bool = False
    progress: bool = True


# ----------------------------------------------------------------------------------------------
# data


def prepare_corpus(args: PretrainArgs) -> Path:
    """Generate the synthetic corpus into ``corpus_dir`` unless it is already there; returns its path."""
    root = Path(args.corpus_dir)
    spec = {"speakers": args.corpus_speakers, "heldout": args.corpus_heldout,
            "utterances": args.corpus_utterances, "seed": args.corpus_seed}
    stamp = root / "tinyw2v2-corpus.json"
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return root
    t0 = time.perf_counter()
    generate_corpus(root, num_speakers=args.corpus_speakers, utterances_per_speaker=args.corpus_utterances,
                    seed=args.corpus_seed, heldout_speakers=args.corpus_heldout)
    stamp.write_text(json.dumps(spec))
    print(f"generated the synthetic corpus in {root} ({time.perf_counter() - t0:.0f} s)")
    return root


def load_waveforms(path, min_samples: int, strict: bool, normalize: bool, limit: int | None = None,
                   why: str = "masking"):
    """All usable utterances of a dataset as float32 arrays (bad or too-short files reported and skipped)."""
    ds = AudioDataset.from_path(path, strict=strict, normalize=normalize)
    waves, ids, skipped_short = [], [], 0
    for i in range(len(ds)):
        item = ds[i]
        if item is None:
            continue
        audio = item["audio"]
        if audio.shape[0] < min_samples:
            skipped_short += 1
            if strict:
                raise TrainingError(f"{item['id']}: {audio.shape[0]} samples, fewer than the {min_samples} needed to "
                                    "mask spans and draw negatives; drop the file or pass a longer one")
            continue
        waves.append(audio.astype(np.float32, copy=False))
        ids.append(item["id"])
        if limit and len(waves) >= limit:
            break
    bad = len(ds.skipped)
    if bad or skipped_short:
        print(f"{path}: skipped {bad} bad files (unreadable, empty, NaN/Inf or under one frame) and {skipped_short} "
              f"shorter than the {min_samples} samples needed for {why}, of {len(ds)} "
              f"(the reasons are logged; use --strict to stop on the first one)")
    if not waves:
        raise TrainingError(f"{path}: no usable audio (need files of at least {min_samples} samples = "
                            f"{min_samples / SAMPLE_RATE:.2f} s)")
    return waves, ids


class BatchSampler:
    """Batches for step s, drawn from a generator seeded with (seed, s): a random window of utterances of
    similar length (sorted by length), each cropped at a random offset to the window's shortest, at most
    ``crop`` samples. No padding, so group-norm models see no padding zeros (as fairseq crops)."""

    def __init__(self, waves, batch_size: int, crop: int, seed: int):
        self.waves, self.batch_size, self.crop, self.seed = waves, min(batch_size, len(waves)), crop, seed
        self.order = np.argsort([w.shape[0] for w in waves], kind="stable")

    def __call__(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step, 0])
        start = int(rng.integers(0, len(self.order) - self.batch_size + 1))
        chosen = self.order[start:start + self.batch_size]
        L = min(self.crop, min(self.waves[i].shape[0] for i in chosen))
        batch = np.empty((len(chosen), L), dtype=np.float32)
        for row, i in enumerate(rng.permutation(chosen)):
            offset = int(rng.integers(0, self.waves[i].shape[0] - L + 1))
            batch[row] = self.waves[i][offset:offset + L]
        return batch


def make_eval_set(waves, config: Wav2Vec2Config, num: int, samples: int, seed: int = 1234):
    """Fixed held-out crops (B, samples) with fixed masks (B, T) and negatives (B, T, K)."""
    rng = np.random.default_rng(seed)
    long_enough = [w for w in waves if w.shape[0] >= samples]
    if not long_enough:
        raise TrainingError(f"no held-out utterance is {samples / SAMPLE_RATE:.2f} s long (--eval-seconds)")
    pick = rng.choice(len(long_enough), size=min(num, len(long_enough)), replace=False)
    x = np.stack([long_enough[i][:samples] for i in sorted(pick)]).astype(np.float32)   # (B, samples)
    T = config.num_frames(samples)
    mask = compute_mask_indices((len(x), T), config.mask_time_prob, config.mask_time_length,
                                min_masks=config.mask_time_min_masks, rng=rng)
    negatives = sample_negative_indices((len(x), T), config.num_negatives, mask, rng)
    return x, mask, negatives


# ----------------------------------------------------------------------------------------------
# metrics


def negatives_identical(out):
    """Share of sampled negatives whose quantised target equals the positive's (masked to -inf in the loss),
    as a 0-d array on the model's device: reading it is left to the caller (a sync point on a GPU)."""
    q = out.projected_quantized_states.data
    xp = backend.get_array_module(q)
    B, T, P = q.shape
    frames = np.flatnonzero(out.mask_time_indices)
    neg = out.sampled_negative_indices.reshape(B * T, -1)[frames]          # (N, K) host
    q_flat = q.reshape(B * T, P)                                           # (B, T, P) -> (B*T, P)
    pos = q_flat[backend.to_device(frames, backend.device_of(q))]          # (N, P)
    negs = q_flat[backend.to_device(neg, backend.device_of(q))]            # (N, K, P)
    return xp.all(negs == pos[:, None, :], axis=-1).mean()


def _value(v) -> float:
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
        values = {k: _float64(v) for k, v in values.items()}
        for k, v in values.items():
            w = (weights or {}).get(k, 1.0)
            self.sums[k] = self.sums.get(k, 0.0) + v * w
            self.weights[k] = self.weights.get(k, 0.0) + w
        for k in maxima:
            v = values[k]
            self.maxima[k] = v if k not in self.maxima else backend.get_array_module(v).maximum(self.maxima[k], v)

    def pop(self) -> dict:
        """The means (and maxima, as ``<name>_batch_max``) since the last pop; then start a new interval."""
        means = {k: _value(self.sums[k]) / self.weights[k] for k in self.sums if self.weights[k] > 0}
        means.update({f"{k}_batch_max": _value(v) for k, v in self.maxima.items()})
        self.sums, self.weights, self.maxima = {}, {}, {}
        return means

    def state(self) -> dict:
        """The running sums as JSON numbers (for the checkpoint)."""
        return {"sums": {k: _value(v) for k, v in self.sums.items()}, "weights": dict(self.weights),
                "maxima": {k: _value(v) for k, v in self.maxima.items()}}


def _float64(v):
    """A Tensor, 0-d array or number as a float64 value to sum, left on its device."""
    v = v.data if isinstance(v, Tensor) else v
    return v.astype(np.float64) if hasattr(v, "astype") else float(v)


def evaluate(model, eval_set, batch_size: int = 16) -> dict:
    """Eval-mode accuracy, loss per masked frame and code perplexity on the fixed held-out set."""
    x, mask, negatives = eval_set
    was_training = model.training
    model.eval()
    correct = total = loss = ppl = identical = n_negatives = 0.0
    with no_grad():
        for s in range(0, len(x), batch_size):
            T = mask.shape[1]
            out = model(x[s:s + batch_size], mask_time_indices=mask[s:s + batch_size],
                        sampled_negative_indices=negatives[s:s + batch_size] - s * T)  # flat b*T+t, rebased
            n = out.num_masked
            correct += float(out.accuracy) * n
            loss += float(out.contrastive_loss)
            ppl += float(out.code_perplexity) * n
            k = out.sampled_negative_indices.shape[-1]
            identical += _value(negatives_identical(out)) * n * k
            n_negatives += n * k
            total += n
    model.train(was_training)
    return {"eval_accuracy": correct / total, "eval_loss": loss / total, "eval_code_perplexity": ppl / total,
            "eval_negatives_identical": identical / n_negatives}


# ----------------------------------------------------------------------------------------------
# the run


def guarded_update(loss, params, opt, clip_norm, step: int, ckpt_path: Path, bar=None):
    """backward, clip the global gradient norm, and take the optimiser step only if loss and norm are finite.

    Returns (loss, norm) as floats: one host sync per step, which is what guards the update. A NaN or Inf raises
    ``TrainingError`` before anything is changed, so the last checkpoint stays the last good state.
    """
    opt.zero_grad()
    loss.backward()
    norm = optim.clip_grad_norm_(params, clip_norm)
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


def restore_checkpoint(ckpt_path: Path, model, opt, config, log_path: Path, options: str,
                       check_state=None) -> dict:
    """``--resume``: load a run's checkpoint into the model and the optimiser and cut the metrics log back to its
    step; returns the checkpoint's metadata. A checkpoint of another config is refused, naming ``options`` (the
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
    _truncate_log(log_path, int(meta["step"]))
    return meta


def _schedule(args: PretrainArgs):
    warmup = int(round(args.warmup * args.steps))
    if args.schedule == "linear":
        return optim.LinearWarmupDecay(args.lr, warmup, max(args.steps, warmup + 1))
    if args.schedule == "constant":
        return optim.PolynomialDecay(args.lr, warmup, 10 ** 12, end_lr=args.lr, power=1.0)
    raise ValueError(f"unknown schedule {args.schedule!r}: use 'linear' or 'constant'")


def build_config(args: PretrainArgs) -> Wav2Vec2Config:
    decay_steps = max(1, int(args.anneal_fraction * args.steps))
    decay = (args.min_temperature / args.max_temperature) ** (1.0 / decay_steps)
    values = dict(max_gumbel_temperature=args.max_temperature, min_gumbel_temperature=args.min_temperature,
                  gumbel_temperature_decay=decay)
    values.update(args.overrides)
    return Wav2Vec2Config.preset(args.preset, **values)


def pretrain(args: PretrainArgs) -> dict:
    """Run (or resume) a pretraining; returns the last metrics. Writes into ``args.out``:
    metrics.jsonl, checkpoint.npz, config.json, plots/*.png."""
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out_dir / "checkpoint.npz", out_dir / "metrics.jsonl"

    config = build_config(args)
    min_samples = config.min_samples_to_mask()
    if args.data == "synthetic":
        root = prepare_corpus(args)
        train_path, eval_path = root / "train", Path(args.eval_data) if args.eval_data else root / "test"
    else:
        train_path, eval_path = Path(args.data), Path(args.eval_data) if args.eval_data else None
    waves, _ = load_waveforms(train_path, min_samples, args.strict, args.normalize)
    eval_samples = int(args.eval_seconds * SAMPLE_RATE)
    if eval_path is not None:
        eval_waves, _ = load_waveforms(eval_path, eval_samples, args.strict, args.normalize,
                                       why=f"an eval crop of {args.eval_seconds} s")
    else:  # no held-out set given: the last 10% of the training utterances
        split = max(1, len(waves) // 10)
        waves, eval_waves = waves[:-split], waves[-split:]
    eval_set = make_eval_set(eval_waves, config, args.eval_utterances, eval_samples)
    batch_size = max(1, int(round(args.batch_seconds / args.crop_seconds)))
    sampler = BatchSampler(waves, batch_size, int(args.crop_seconds * SAMPLE_RATE), args.seed)

    model = Wav2Vec2ForPreTraining(config, seed=args.seed).to(args.device)
    opt = optim.AdamW(model.parameters(), lr=args.lr, betas=tuple(args.betas), eps=args.adam_eps,
                      weight_decay=args.weight_decay)
    schedule = _schedule(args)
    start = 0
    interval = IntervalMeans()                                # training metrics since the last logged line
    if args.resume and ckpt_path.exists():
        meta = restore_checkpoint(ckpt_path, model, opt, config, log_path, "--preset/--set")
        start = int(meta["step"])
        interval = IntervalMeans(meta.get("interval"))
        print(f"resumed from {ckpt_path} at step {start}")
    elif log_path.exists():
        log_path.unlink()
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    (out_dir / "args.json").write_text(json.dumps(asdict(args), indent=2))

    def checkpoint(step):
        save_checkpoint(ckpt_path, model, opt, {"config": config.to_dict(), "step": step, "args": asdict(args),
                                                "interval": interval.state()})

    if start == 0:
        _append(log_path, {"step": 0, **evaluate(model, eval_set, args.eval_batch)})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    bar = _progress(args, start)
    last = {}
    t_run = time.perf_counter()
    for step in range(start, args.steps):
        x = sampler(step)
        model.manual_seed([args.seed, step, 1])
        tau = model.update_gumbel_temperature(step)
        lr = schedule(step)
        opt.set_lr(lr)
        out = model(x)
        n = out.num_masked
        loss = out.loss * (1.0 / n)                           # average over masked frames (fairseq)
        loss_value, norm_value = guarded_update(loss, params, opt, args.clip_norm, step, ckpt_path, bar)
        done = step + 1
        k = out.sampled_negative_indices.shape[-1]
        interval.add({"loss": loss_value, "contrastive_loss": out.contrastive_loss.data.astype(np.float64) / n,  # read when logged
                      "diversity_loss": out.diversity_loss.data.astype(np.float64) / n, "feature_penalty": out.feature_penalty,
                      "accuracy": out.accuracy, "code_perplexity": out.code_perplexity,
                      "prob_perplexity": out.prob_perplexity, "negatives_identical": negatives_identical(out),
                      "grad_norm": norm_value, "num_masked": n},
                     weights={"accuracy": n, "negatives_identical": n * k}, maxima=("negatives_identical",))
        if done % args.log_every == 0 or done == args.steps:
            last = {"step": done, **interval.pop(), "temperature": tau, "lr": lr,
                    "seconds": round(time.perf_counter() - t_run, 3)}
            if done % args.eval_every == 0 or done == args.steps:
                last.update(evaluate(model, eval_set, args.eval_batch))
            _append(log_path, last)
            bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{last['accuracy']:.2f}",
                            ppl=f"{last['code_perplexity']:.0f}",
                            **({"eval_acc": f"{last['eval_accuracy']:.2f}"} if "eval_accuracy" in last else {}))
        bar.update(1)
        if done % args.checkpoint_every == 0 or done == args.steps or done == args.stop_at:
            checkpoint(done)
        if done == args.stop_at:
            break
    bar.close()
    from .plots import plot_pretraining

    plots = plot_pretraining(log_path, out_dir / "plots", num_codevectors=config.num_codevectors)
    return {"metrics": last, "plots": [str(p) for p in plots], "checkpoint": str(ckpt_path)}


def _progress(args, start):
    from tqdm.auto import tqdm

    return tqdm(total=args.steps, initial=start, disable=not args.progress, desc="pretrain", unit="step",
                dynamic_ncols=True)


def _append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int):
    """Keep only the log lines up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    if not path.exists():
        return
    lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(l + "\n" for l in lines))
    os.replace(tmp, path)


def read_metrics(path) -> list:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
