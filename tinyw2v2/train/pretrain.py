"""Contrastive pretraining of wav2vec 2.0: the loop behind ``tinyw2v2 pretrain``.

One step (fairseq's recipe, at toy scale):
    x (B, L) crops of similar length  ->  model(x): masks and negatives sampled, loss summed over masked frames
    loss / N  (gradients averaged over the N masked frames, as fairseq divides by the sample size)
    backward, clip the global gradient norm, AdamW step; lr and Gumbel temperature follow their schedules.
With ``--accumulate K`` or under ``mpiexec -n R`` the batch is R x K micro-batches, N counts the masked frames of
all of them, and the gradients are summed over the ranks before the clipping (``train/distributed.py``).

Every random choice of step s (which utterances, where to crop, masks, negatives, dropout, Gumbel noise)
is drawn from generators seeded with (seed, s) (and the micro-batch), so ``--resume`` continues from a checkpoint
to exactly the numbers an uninterrupted run gives. Held-out evaluation uses fixed crops, masks and negatives in eval mode
(argmax codes, no noise), so its accuracy is comparable across steps and runs.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import optim
from ..data import AudioDataset, collate, make_batches
from ..io import save_checkpoint
from ..models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
from ..models.wav2vec2.masking import compute_mask_indices, sample_negative_indices
from ..tensor import no_grad
from .corpus import CorpusArgs, prepare_corpus
from .distributed import DataParallel, DataParallelArgs, data_parallel
from .plots import plot_pretraining
from .common import (SAMPLE_RATE, RunArgs, TrainingError, append_metrics, arg, as_float64, blas_threads,
                     check_sizes, guarded_update, progress_bar, read_metrics, start_or_resume, value_of)

@dataclass
class PretrainArgs(RunArgs, CorpusArgs, DataParallelArgs):
    """Everything a pretraining run takes; ``tinyw2v2 pretrain`` has one option per field (``--batch-seconds`` for
    ``batch_seconds``, ``--set KEY=VALUE`` for ``overrides``, ``--no-progress`` for ``progress``)."""
    data: str = arg("synthetic", "'synthetic' (the built-in corpus), or a LibriSpeech dir, a fairseq .tsv manifest "
                                 "or a folder of wav/flac/ogg files")
    eval_data: str | None = arg(None, "held-out audio (default: the synthetic corpus's unseen speakers, or the last "
                                      "10% of --data)")
    preset: str = arg("tiny", "model size: tiny | base | large")
    steps: int | None = arg(900, "training steps (with --minutes: whichever ends first)")
    minutes: float | None = arg(None, "training-time budget in minutes (evaluation not counted); the learning-rate "
                                      "and temperature schedules span it")
    batch_seconds: float = arg(12.0, "audio per batch (per rank and micro-batch), before cropping each batch to its "
                                     "shortest utterance")
    crop_seconds: float = arg(1.0, "longest crop, in seconds")
    lr: float = arg(2e-3, "peak learning rate")
    warmup: float = arg(0.08, "warm-up, as a fraction of the run")
    schedule: str = arg("tri_stage", "tri_stage (warm-up, hold the peak, then decay to 1%% of it over the last "
                                      "--decay of the run: fairseq's tri_stage) | constant (hold the peak after the "
                                      "warm-up) | linear (warm-up, then linear decay to 0: fairseq's polynomial_decay)")
    decay: float = arg(0.2, "tri_stage: the last fraction of the run, over which the lr decays")
    weight_decay: float = arg(0.01, "AdamW's decoupled weight decay")
    adam_eps: float = arg(1e-6, "AdamW's epsilon")
    max_temperature: float = arg(2.0, "Gumbel temperature at the start")
    min_temperature: float = arg(0.5, "Gumbel temperature at the end of the annealing")
    anneal_fraction: float = arg(1.0, "the temperature reaches its minimum after this fraction of the run")
    anneal_steps: int | None = arg(None, "... or after this many steps, whatever the run's length (fairseq)")
    seed: int = arg(0, "seed of the initialisation and of every random draw of the run")
    out: str = arg("runs/pretrain", "output directory")
    log_every: int = arg(10, "log training metrics (means over the interval) every N steps")
    eval_every: int = arg(100, "evaluate on the held-out set every N steps")
    eval_utterances: int | None = arg(None, "held-out utterances scored (default: all of them)")
    eval_batch_seconds: float = arg(32.0, "audio per held-out batch")
    checkpoint_every: int = arg(250, "write the checkpoint every N steps")
    strict: bool = arg(False, "stop on the first bad audio file instead of skipping it")
    threads: int | None = arg(None, "BLAS threads (default: leave them as they are)")


# ----------------------------------------------------------------------------------------------
# data


def load_waveforms(path, min_samples: int, strict: bool, normalize: bool, limit: int | None = None,
                   why: str = "masking", report: bool = True):
    """All usable utterances of a dataset as float32 arrays and their ids (bad or too-short files skipped, and counted
    in one printed line unless ``report`` is False)."""
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
    if (bad or skipped_short) and report:
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


@dataclass
class EvalSet:
    """The fixed held-out set: length-grouped batches, each cropped to its shortest utterance, with fixed
    masks and negatives. ``batches`` holds (x (B, L) float32, mask (B, T) bool, negatives (B, T, K) int64)."""
    batches: list
    utterances: int
    seconds: float       # audio scored, after cropping
    cropped: float       # audio cut off by cropping each batch to its shortest


def make_eval_set(waves, config: Wav2Vec2Config, max_utterances: int | None = None, batch_seconds: float = 32.0,
                  seed: int = 1234) -> EvalSet:
    """Every held-out utterance (or a seeded random ``max_utterances`` of them), sorted by length and grouped
    into batches of at most ``batch_seconds`` of audio; each batch is cropped at random offsets to its shortest
    member (no padding, as in training), and gets fixed masks and negatives drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    chosen = np.arange(len(waves))
    if max_utterances and max_utterances < len(waves):
        chosen = np.sort(rng.choice(len(waves), size=max_utterances, replace=False))
    lengths = [waves[i].shape[0] for i in chosen]
    batches, seconds, cropped = [], 0.0, 0.0
    for idx in make_batches(lengths, max_batch_seconds=batch_seconds, sample_rate=SAMPLE_RATE, shuffle=False):
        x, _, _ = collate([waves[chosen[i]] for i in idx], crop_to_shortest=True, rng=rng)  # (B, L)
        B, L = x.shape
        T = config.num_frames(L)
        mask = compute_mask_indices((B, T), config.mask_time_prob, config.mask_time_length,
                                    min_masks=config.mask_time_min_masks, rng=rng)
        negatives = sample_negative_indices((B, T), config.num_negatives, mask, rng)
        batches.append((x, mask, negatives))
        seconds += B * L / SAMPLE_RATE
        cropped += (sum(lengths[i] for i in idx) - B * L) / SAMPLE_RATE
    return EvalSet(batches, int(len(chosen)), seconds, cropped)


# ----------------------------------------------------------------------------------------------
# metrics


def evaluate(model, eval_set: EvalSet) -> dict:
    """Eval-mode accuracy, loss per masked frame, code perplexity and identical negatives on the fixed held-out
    set, each a mean over its masked frames (``eval_frames``: how many were scored)."""
    was_training = model.training
    model.eval()
    correct = loss = ppl = identical = 0.0
    frames = negatives_total = 0
    with no_grad():
        for x, mask, negatives in eval_set.batches:
            out = model(x, mask_time_indices=mask, sampled_negative_indices=negatives)
            n, k = out.num_masked, negatives.shape[-1]
            correct += float(out.accuracy) * n
            loss += float(out.contrastive_loss)
            ppl += float(out.code_perplexity) * n
            identical += float(out.negatives_identical)
            frames += n
            negatives_total += n * k
    model.train(was_training)
    return {"eval_accuracy": correct / frames, "eval_loss": loss / frames, "eval_code_perplexity": ppl / frames,
            "eval_negatives_identical": identical / negatives_total, "eval_frames": frames}


# ----------------------------------------------------------------------------------------------
# the run


class RunSchedule:
    """The learning rate and the Gumbel temperature as functions of the run's progress p in [0, 1]: the larger of
    step / steps and training seconds / budget (``--minutes``), so that both schedules end when the budget does.

        lr(p)  linear:   peak * p / w for p < w, then peak * (1 - p) / (1 - w)      (w = warm-up fraction)
               constant: peak * p / w for p < w, then peak
               tri_stage: as constant until p = 1 - d, then peak * 0.01 ** ((p - 1 + d) / d)   (d = --decay)
        tau(p) = max(tau_max * (tau_min / tau_max) ** (p / a), tau_min)            (a = anneal fraction)
                 or, with ``anneal_steps`` S, the same with p / a replaced by step / S (fairseq anneals per step)
    """

    RESOLUTION = 1_000_000   # p is quantised to 1e-6 so that the optimiser's step-based schedules apply

    def __init__(self, args: "PretrainArgs"):
        self.steps = args.steps
        self.budget = args.minutes * 60.0 if args.minutes else None
        if self.steps is None and self.budget is None:
            raise TrainingError("give --steps or --minutes (or both: the run ends with whichever comes first)")
        warmup = int(round(args.warmup * self.RESOLUTION))
        if args.schedule == "linear":
            self.lr_at = optim.LinearWarmupDecay(args.lr, warmup, max(self.RESOLUTION, warmup + 1))
        elif args.schedule == "constant":
            self.lr_at = optim.PolynomialDecay(args.lr, warmup, 10 ** 12, end_lr=args.lr, power=1.0)
        elif args.schedule == "tri_stage":
            decay = int(round(args.decay * self.RESOLUTION))
            if not 0 < decay <= self.RESOLUTION - warmup:
                raise TrainingError(f"--decay {args.decay} must be positive and leave room for the warm-up "
                                    f"({args.warmup})")
            self.lr_at = optim.TriStage(args.lr, warmup, self.RESOLUTION - warmup - decay, decay,
                                        init_lr_scale=0.0, final_lr_scale=0.01)
        else:
            raise TrainingError(f"unknown schedule {args.schedule!r}: use 'constant', 'linear' or 'tri_stage'")
        self.tau_max, self.tau_min = args.max_temperature, args.min_temperature
        self.anneal_fraction, self.anneal_steps = args.anneal_fraction, args.anneal_steps

    def progress(self, step: int, seconds: float) -> float:
        p = step / self.steps if self.steps else 0.0
        if self.budget:
            p = max(p, seconds / self.budget)
        return min(p, 1.0)

    def finished(self, step: int, seconds: float) -> bool:
        return (self.steps is not None and step >= self.steps) or (self.budget is not None and seconds >= self.budget)

    def lr(self, step: int, seconds: float) -> float:
        return self.lr_at(int(self.progress(step, seconds) * self.RESOLUTION))

    def temperature(self, step: int, seconds: float) -> float:
        if self.anneal_steps:
            q = step / self.anneal_steps
        else:
            q = self.progress(step, seconds) / max(self.anneal_fraction, 1e-12)
        return max(self.tau_max * (self.tau_min / self.tau_max) ** min(q, 1.0), self.tau_min)


def build_config(args: PretrainArgs) -> Wav2Vec2Config:
    """The preset with ``--set`` overrides; the temperature bounds come from the run's arguments."""
    values = dict(max_gumbel_temperature=args.max_temperature, min_gumbel_temperature=args.min_temperature)
    values.update(args.overrides)
    return Wav2Vec2Config.preset(args.preset, **values)


def pretrain(args: PretrainArgs) -> dict:
    """Run (or resume) a pretraining; returns the last metrics. Writes into ``args.out``:
    metrics.jsonl, checkpoint.npz, config.json, plots/*.png (under ``mpiexec``, rank 0 writes them)."""
    with blas_threads(args.threads), data_parallel(args) as parallel:
        return _pretrain(args, parallel)


def forward_backward(model, micro_batches, parallel: DataParallel):
    """Forward and backward of this rank's micro-batches of one update, each loss divided by N, the masked frames of
    the whole update (every micro-batch of every rank); yields (out, loss) of each after its backward. Afterwards
    ``p.grad`` holds this rank's share of the gradient of the update's mean loss (the ranks' shares sum to it).

    micro_batches: [(seed, x (b, L), inputs)], ``inputs`` the forward's keyword arguments: mask_time_indices (b, T)
    and sampled_negative_indices (b, T, K) (and gumbel_noise to fix the quantiser's noise); ``seed`` is the one the
    targets were drawn from after ``model.manual_seed(seed)``.
    """
    N = parallel.sum(sum(int(inputs["mask_time_indices"].sum()) for _, _, inputs in micro_batches))
    for seed, x, inputs in micro_batches:
        if len(micro_batches) > 1:            # replay the draws of this micro-batch's targets: the generators then
            model.manual_seed(seed)           # stand where its forward expects them (LayerDrop, dropout, Gumbel)
            model.sample_targets(x.shape[0], model.num_frames(x.shape[1]))
        out = model(x, **inputs)
        loss = out.loss * (1.0 / N)           # average over masked frames (fairseq), those of the whole update
        loss.backward()                       # p.grad accumulates over the micro-batches
        yield out, loss


# the training metrics of a micro-batch as sums, added over micro-batches and ranks before they become the update's
# means (``update_means``)
SUMS = ("loss", "contrastive_loss", "diversity_loss", "feature_penalty", "accuracy", "code_perplexity",
        "prob_perplexity", "negatives_identical", "num_masked")


def micro_batch_sums(out, loss) -> np.ndarray:
    """The ``SUMS`` of one micro-batch (float64, host): its share of the loss, the summed contrastive and diversity
    losses, its masked-frame-weighted means, its identical negatives and its masked frames."""
    n = out.num_masked
    weighted = [value_of(as_float64(v)) * n for v in (out.feature_penalty, out.accuracy, out.code_perplexity,
                                                      out.prob_perplexity)]
    return np.array([value_of(as_float64(loss)), value_of(as_float64(out.contrastive_loss)),
                     value_of(as_float64(out.diversity_loss)), *weighted,
                     value_of(as_float64(out.negatives_identical)), n], dtype=np.float64)


def update_means(sums: np.ndarray, num_negatives: int) -> dict:
    """The update's training metrics from the ``SUMS`` of all its micro-batches: the loss as it was backpropagated,
    the rest per masked frame of the whole update (feature penalty and perplexities weighted by each micro-batch's
    masked frames), identical negatives per sampled negative."""
    s = dict(zip(SUMS, sums))
    N = s["num_masked"]
    means = {k: s[k] / N for k in SUMS[1:-2]}
    return {"loss": s["loss"], **means, "negatives_identical": s["negatives_identical"] / (N * num_negatives),
            "num_masked": int(N)}


def _pretrain(args: PretrainArgs, parallel: DataParallel) -> dict:
    check_sizes(args, ("minutes", "lr", "batch_seconds", "crop_seconds", "eval_batch_seconds", "log_every",
                       "eval_every", "checkpoint_every"))
    schedule = RunSchedule(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out_dir / "checkpoint.npz", out_dir / "metrics.jsonl"
    main = parallel.main                                      # rank 0 (the only one in a run of one process)

    config = build_config(args)
    min_samples = config.min_samples_to_mask()
    if args.data == "synthetic":
        parallel.collective(prepare_corpus, args, main_only=True)   # rank 0 writes it once, the others wait for it
        root = Path(args.corpus_dir)
        train_path, eval_path = root / "train", Path(args.eval_data) if args.eval_data else root / "test"
    else:
        train_path, eval_path = Path(args.data), Path(args.eval_data) if args.eval_data else None
    waves, ids = parallel.collective(load_waveforms, train_path, min_samples, args.strict, args.normalize,
                                     report=main)             # every rank holds the training set
    waves = parallel.keep_common(waves, ids, str(train_path))  # ... the same one
    eval_waves = None
    if eval_path is not None:                                 # only rank 0 evaluates
        loaded = parallel.collective(load_waveforms, eval_path, min_samples, args.strict, args.normalize,
                                     main_only=True)
        eval_waves = loaded[0] if main else None
    else:  # no held-out set given: the last 10% of the training utterances
        split = max(1, len(waves) // 10)
        waves, eval_waves = waves[:-split], waves[-split:]
    eval_set = make_eval_set(eval_waves, config, args.eval_utterances, args.eval_batch_seconds) if main else None
    batch_size = max(1, int(round(args.batch_seconds / args.crop_seconds)))       # crops per micro-batch
    sampler = BatchSampler(waves, batch_size * parallel.micro_batches, int(args.crop_seconds * SAMPLE_RATE),
                           args.seed)                         # the whole update's batch, the same on every rank
    if sampler.batch_size < parallel.micro_batches:
        raise TrainingError(f"{train_path}: {len(waves)} usable utterances, fewer than the {parallel.micro_batches} "
                            "micro-batches of an update (ranks x --accumulate)")

    model = Wav2Vec2ForPreTraining(config, seed=args.seed)
    parallel.collective(model.to, parallel.device)            # a rank that lacks its device stops every rank
    opt = optim.AdamW(model.parameters(), lr=args.lr, betas=tuple(args.betas), eps=args.adam_eps,
                      weight_decay=args.weight_decay)
    # interval: the training metrics since the last logged line
    start, train_seconds, interval = start_or_resume(args, parallel, model, opt, config, out_dir, "--preset/--set")
    if main:
        (out_dir / "args.json").write_text(json.dumps(asdict(args), indent=2))
        layout = parallel.describe("crops", sampler.batch_size // parallel.micro_batches)
        if layout:
            print(layout)

    def checkpoint(step):
        parallel.check_replicas(model.parameters(), step)
        if main:
            save_checkpoint(ckpt_path, model, opt, {"config": config.to_dict(), "step": step, "args": asdict(args),
                                                    "interval": interval.state(), "train_seconds": train_seconds})

    if start == 0 and main:
        append_metrics(log_path, {"step": 0, "seconds": 0.0, **evaluate(model, eval_set)})
    model.train()
    bar = _progress(args, schedule, start, train_seconds, main)
    last = {}
    step = start
    while not schedule.finished(step, train_seconds):
        t0 = time.perf_counter()
        x = sampler(step)                                     # (B, L) crops of similar length: the whole update's
        tau = schedule.temperature(step, train_seconds)
        model.set_gumbel_temperature(tau)
        lr = schedule.lr(step, train_seconds)
        opt.set_lr(lr)
        micro_batches = []                                    # this rank's share of x: all of it in one process
        for j, rows in parallel.share(x):
            seed = parallel.seed(args.seed, step, j)
            model.manual_seed(seed)                           # every draw of micro-batch j from (seed, step[, j])
            mask, negatives = model.sample_targets(rows.shape[0], model.num_frames(rows.shape[1]))  # (b, T), (b, T, K)
            micro_batches.append((seed, rows, {"mask_time_indices": mask, "sampled_negative_indices": negatives}))
        opt.zero_grad()
        if parallel.micro_batches == 1:                       # one process, one micro-batch: loss / n, backward
            (out, loss), = forward_backward(model, micro_batches, parallel)
        else:                                                 # the metrics summed over micro-batches and ranks
            sums = parallel.sum(sum(micro_batch_sums(out, loss)
                                    for out, loss in forward_backward(model, micro_batches, parallel)))
            loss = sums[0]                                    # the update's loss, the same on every rank
        loss_value, norm_value = guarded_update(loss, opt, args.clip_norm, step, ckpt_path, bar,
                                                parallel.sum_gradients)
        dt = parallel.max(time.perf_counter() - t0)           # the slowest rank's: every rank keeps one clock
        train_seconds += dt
        step += 1
        k = config.num_negatives
        if parallel.micro_batches == 1:
            n = out.num_masked
            interval.add({"loss": loss_value, "contrastive_loss": out.contrastive_loss.data.astype(np.float64) / n,  # read when logged
                          "diversity_loss": out.diversity_loss.data.astype(np.float64) / n, "feature_penalty": out.feature_penalty,
                          "accuracy": out.accuracy, "code_perplexity": out.code_perplexity,
                          "prob_perplexity": out.prob_perplexity,
                          "negatives_identical": out.negatives_identical.data.astype(np.float64) / (n * k),
                          "grad_norm": norm_value, "num_masked": n},
                         weights={"accuracy": n, "negatives_identical": n * k}, maxima=("negatives_identical",))
        else:
            means = update_means(sums, k)
            n = means["num_masked"]
            interval.add({**means, "grad_norm": norm_value}, weights={"accuracy": n, "negatives_identical": n * k},
                         maxima=("negatives_identical",))
        final = schedule.finished(step, train_seconds)
        if step % args.log_every == 0 or final:
            last = {"step": step, **interval.pop(), "temperature": tau, "lr": lr, "seconds": round(train_seconds, 3)}
            if main and (step % args.eval_every == 0 or final):
                last.update(evaluate(model, eval_set))
            if main:
                append_metrics(log_path, last)
            bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{last['accuracy']:.2f}",
                            ppl=f"{last['code_perplexity']:.0f}",
                            **({"eval_acc": f"{last['eval_accuracy']:.2f}"} if "eval_accuracy" in last else {}))
        if schedule.budget:                                   # the bar counts training seconds, up to the budget
            bar.update(min(train_seconds, schedule.budget) - min(train_seconds - dt, schedule.budget))
        else:
            bar.update(1)
        if step % args.checkpoint_every == 0 or final or step == args.stop_at:
            checkpoint(step)
        if step == args.stop_at:
            break
    bar.close()
    if not main:
        return {"metrics": last, "rank": parallel.rank}
    if not last and step > 0:   # resumed at the end of a finished run
        last = read_metrics(log_path)[-1]
    plots = plot_pretraining(log_path, out_dir / "plots", num_codevectors=config.num_codevectors,
                             num_negatives=config.num_negatives)
    return {"metrics": last, "initial": read_metrics(log_path)[0], "plots": [str(p) for p in plots],
            "checkpoint": str(ckpt_path), "train_seconds": train_seconds, "eval_utterances": eval_set.utterances,
            "num_negatives": config.num_negatives, "rank": parallel.rank}


def _progress(args, schedule, start, seconds, enabled: bool = True):
    """A bar over the steps, or over the seconds of a ``--minutes`` budget (then it shows the time left); rank 0's
    only."""
    if schedule.budget:
        return progress_bar(args.progress and enabled, total=schedule.budget,
                            initial=min(seconds, schedule.budget), desc="pretrain", unit="s",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} of training, {remaining} left"
                                       "{postfix}")
    return progress_bar(args.progress and enabled, total=args.steps, initial=start, desc="pretrain", unit="step")
