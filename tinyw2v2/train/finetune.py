"""CTC fine-tuning of wav2vec 2.0: the loop behind ``tinyw2v2 finetune``.

One step (fairseq's fine-tuning recipe, at toy scale):
    a length-grouped batch of whole labelled utterances, zero-padded  ->  model(x, labels): SpecAugment (time
    spans -> mask embedding, channel spans -> 0), LayerDrop, dropout; CTC loss summed over the batch
    loss / B  (fairseq's sentence_avg: gradients averaged over utterances)
    backward, clip the global gradient norm, Adam step; the learning rate follows the tri-stage schedule.
With ``--accumulate K`` or under ``mpiexec -n R`` an update takes R x K consecutive batches of the sequence, B
counts the utterances of all of them, and the gradients are summed over the ranks (``train/distributed.py``).

- Start: a tinyw2v2 pretraining checkpoint (``--init runs/pretrain``: encoder copied, new ``lm_head``), a
  transformers directory, a fine-tuning checkpoint (continued; its vocabulary must match), or nothing (the
  same architecture from scratch, ``--preset``).
- Labels: a subset of the labelled training utterances, ``labels`` = a count (>= 1) or a fraction (< 1),
  chosen with ``subset_seed`` (a seeded permutation of the sorted utterance list). The character vocabulary is
  built from the subset's transcripts (or read from ``--vocab``) and written as ``vocab.json``; characters
  outside it become ``<unk>`` and are counted. Utterances whose transcript needs more CTC frames than the
  model outputs (labels + one blank between repeated letters) are skipped with a count (``strict``: an error).
- Freezing: the CNN is frozen throughout (fairseq's ``feature_grad_mult = 0``: it runs without a graph);
  with ``freeze_finetune_updates = N`` only ``lm_head`` trains during the first N steps.
- Padding: whole utterances, zero-padded; layer-norm CNNs get the attention mask, group-norm CNNs get no mask
  (transformers' advice) and the CTC frame counts come from the true lengths.
- Budget: ``steps``, and optionally ``minutes`` of training time (evaluation and checkpoint writing not
  counted); with a time budget the schedule runs on the fraction of the budget used, max(step / steps,
  seconds / budget), so the learning rate decays to its final value when the budget ends.
- Every random choice of step s (batch order, masks, dropout, LayerDrop) comes from generators seeded with
  (seed, s): ``--resume`` continues a step-budgeted run to exactly the numbers of an uninterrupted one.
- Held-out evaluation (every ``eval_every`` steps and/or ``eval_every_seconds`` of training): eval-mode greedy
  decoding of a fixed subset of the held-out split (unseen speakers for the synthetic corpus), CER and WER.

Outputs in ``out``: metrics.jsonl, checkpoint.npz (atomic), vocab.json, config.json, args.json,
plots/finetuning.png, and ``model/`` (config.json + model.safetensors + vocab.json, loadable by transformers'
``Wav2Vec2ForCTC`` / ``Wav2Vec2Processor``).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import optim
from ..data import AudioDataset, collate, make_batches
from ..models.wav2vec2 import Wav2Vec2Config
from ..models.wav2vec2.ctc import VocabularyMismatchError, Wav2Vec2ForCTC, vocabulary_mismatch
from ..text import EncodeStats, Vocabulary, ctc_min_frames, pad_labels
from ..io import read_checkpoint, save_checkpoint
from .common import (SAMPLE_RATE, RunArgs, TrainingError, append_metrics, arg, check_sizes, guarded_update,
                     progress_bar, read_metrics, start_or_resume)
from .corpus import CorpusArgs, prepare_corpus
from .distributed import DataParallel, DataParallelArgs, data_parallel
from .evaluate import evaluate_utterances, load_labelled_utterances, uses_attention_mask, worst_examples
from .plots import plot_finetuning

# fairseq-style fine-tuning settings at toy scale (overridable with --set / overrides)
FINETUNE_CONFIG = dict(
    mask_time_prob=0.65, mask_time_length=10, mask_time_min_masks=2,
    mask_feature_prob=0.25, mask_feature_length=10, mask_feature_min_masks=0,
    hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, feat_proj_dropout=0.0, final_dropout=0.0,
    layerdrop=0.05, feature_penalty_weight=0.0, ctc_loss_reduction="sum", ctc_zero_infinity=True,
    pad_token_id=0, bos_token_id=1, eos_token_id=2,
)


@dataclass
class FinetuneArgs(RunArgs, CorpusArgs, DataParallelArgs):
    """Everything a fine-tuning run takes; ``tinyw2v2 finetune`` has one option per field."""
    init: str | None = arg(None, "a pretraining run dir or checkpoint.npz, a transformers directory, or a fine-tuning "
                                 "checkpoint; omit to train the same architecture from scratch")
    data: str = arg("synthetic", "labelled training data: 'synthetic', a LibriSpeech dir or a .tsv with labels")
    eval_data: str | None = arg(None, "labelled held-out data (default: the synthetic corpus's unseen speakers)")
    labels: float | None = arg(None, "labelled utterances: a count (40) or a fraction (0.02); default all")
    subset_seed: int = arg(0, "seed choosing the labelled subset")
    vocab: str | None = arg(None, "use this vocab.json instead of building one from the transcripts")
    uppercase: bool = arg(False, "upper-case transcripts before encoding")
    preset: str = arg("tiny", "architecture when starting from scratch: tiny | base | large")
    steps: int | None = arg(2000, "updates (with --minutes: whichever ends first)")
    minutes: float | None = arg(None, "training-time budget in minutes (evaluation not counted); the schedule spans it")
    batch_seconds: float = arg(16.0, "audio per batch (per rank and micro-batch), padding included")
    lr: float = arg(1e-3, "peak learning rate")
    phase_ratio: tuple = arg((0.1, 0.4, 0.5), "tri-stage phases (warm-up, hold, decay) as fractions of the budget")
    init_lr_scale: float = arg(0.01, "initial lr / peak")
    final_lr_scale: float = arg(0.05, "final lr / peak")
    weight_decay: float = arg(0.0, "AdamW's decoupled weight decay")
    adam_eps: float = arg(1e-8, "AdamW's epsilon")
    freeze_feature_encoder: bool = arg(True, "keep the CNN frozen (fairseq's feature_grad_mult = 0)")
    freeze_finetune_updates: int = arg(0, "train only the CTC head for the first N updates (fairseq)")
    seed: int = arg(0, "seed of every random draw of the run")
    out: str = arg("runs/finetune", "output directory")
    log_every: int = arg(10, "log training metrics every N steps")
    eval_every: int = arg(200, "held-out CER/WER every N steps")
    eval_every_seconds: float | None = arg(None, "also every S seconds of training (learning curves against time)")
    eval_utterances: int | None = arg(200, "held-out utterances (0 = all)")
    checkpoint_every: int = arg(500, "write the checkpoint every N steps")
    strict: bool = arg(False, "stop on the first bad file or transcript longer than the model's output")
    export: bool = arg(True, "write OUT/model (transformers format) at the end")


# ----------------------------------------------------------------------------------------------
# data


def choose_subset(n: int, labels, seed: int) -> np.ndarray:
    """Sorted indices of the labelled subset: ``labels`` a count (>= 1), a fraction in (0, 1), or None (all)."""
    if labels is None:
        return np.arange(n)
    labels = float(labels)
    if labels <= 0:
        raise TrainingError(f"--labels must be a count >= 1 or a fraction in (0, 1), got {labels:g}")
    count = int(round(labels)) if labels >= 1 else max(1, int(round(labels * n)))
    if labels >= 1 and labels != int(labels):
        raise TrainingError(f"--labels {labels:g}: a count must be a whole number (or give a fraction below 1)")
    if count > n:
        raise TrainingError(f"--labels {count}: only {n} labelled utterances are available")
    return np.sort(np.random.default_rng(seed).permutation(n)[:count])


def _paths(args: FinetuneArgs, parallel: DataParallel):
    if args.data == "synthetic":
        parallel.collective(prepare_corpus, args, main_only=True)   # rank 0 writes it once, the others wait for it
        root = Path(args.corpus_dir)
        return root / "train", Path(args.eval_data) if args.eval_data else root / "test"
    if args.eval_data is None:
        raise TrainingError("--eval-data is needed with --data PATH: a labelled held-out set (ideally other speakers)")
    return Path(args.data), Path(args.eval_data)


def load_training_set(path, args: FinetuneArgs):
    """The labelled subset as (items [(id, audio, text)], report dict). Audio of unchosen utterances is never read."""
    ds = AudioDataset.from_path(path, strict=args.strict, normalize=args.normalize)
    labelled = [i for i, it in enumerate(ds.items) if it.transcript is not None]
    if not labelled:
        raise TrainingError(f"{path}: no transcripts: fine-tuning needs labelled audio (LibriSpeech layout with "
                            "*.trans.txt, or a .tsv manifest with .wrd / .ltr labels)")
    chosen = [labelled[i] for i in choose_subset(len(labelled), args.labels, args.subset_seed)]
    items = []
    for i in chosen:
        item = ds[i]
        if item is not None:
            items.append((item["id"], item["audio"].astype(np.float32, copy=False), item["transcript"]))
    report = {"available": len(labelled), "chosen": len(chosen), "skipped_bad": len(ds.skipped)}
    return items, report


def prepare_labels(items, vocab: Vocabulary, config: Wav2Vec2Config, strict: bool, where: str):
    """Encode transcripts; drop (or, under ``strict``, refuse) utterances that CTC cannot align or mask."""
    stats = EncodeStats()
    min_samples = config.min_samples_to_mask() if config.mask_time_prob > 0 else config.receptive_field
    kept, too_long, too_short = [], [], []
    for uid, audio, text in items:
        ids = vocab.encode(text, stats)
        frames = config.num_frames(audio.shape[0])
        if audio.shape[0] < min_samples:
            too_short.append(uid)
            if strict:
                raise TrainingError(f"{where}: {uid} has {audio.shape[0]} samples, fewer than the {min_samples} that "
                                    "time masking needs; drop it or lower mask_time_prob / mask_time_length")
            continue
        need = ctc_min_frames(ids)
        if need > frames:
            too_long.append(uid)
            if strict:
                raise TrainingError(f"{where}: {uid}: its transcript needs {need} CTC frames (labels plus a blank "
                                    f"between repeated letters) but the audio gives {frames}; fix the transcript "
                                    "or drop the file (without --strict it is skipped)")
            continue
        kept.append({"id": uid, "audio": audio, "text": text, "labels": ids})
    return kept, {"too_long": len(too_long), "too_short": len(too_short), "encode": stats,
                  "too_long_ids": too_long[:10]}


class LabelledBatches:
    """Length-grouped batches of whole utterances: epoch e is ``make_batches`` with a generator seeded (seed, e),
    and step s takes the next batch in that sequence (so the batch of any step is known without running the
    earlier ones, for exact resume)."""

    def __init__(self, lengths, batch_seconds: float, seed: int):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_seconds, self.seed = batch_seconds, seed
        self._epochs, self._starts = [], [0]

    def _epoch(self, e: int):
        while len(self._epochs) <= e:
            n = len(self._epochs)
            batches = make_batches(self.lengths, max_batch_seconds=self.batch_seconds,
                                   rng=np.random.default_rng([self.seed, n, 2]), sample_rate=SAMPLE_RATE)
            self._epochs.append(batches)
            self._starts.append(self._starts[-1] + len(batches))
        return self._epochs[e]

    def __call__(self, step: int) -> np.ndarray:
        e = 0
        while True:
            batches = self._epoch(e)
            if step < self._starts[e + 1]:
                return batches[step - self._starts[e]]
            e += 1

    def epoch_of(self, step: int) -> int:
        self(step)
        return int(np.searchsorted(self._starts, step, side="right") - 1)


# ----------------------------------------------------------------------------------------------
# model


def init_source(init) -> Path:
    """The checkpoint.npz or the transformers directory that ``--init`` names; TrainingError if it names neither."""
    p = Path(init)
    if p.is_dir() and (p / "checkpoint.npz").is_file():
        p = p / "checkpoint.npz"
    if (p.is_file() and p.suffix == ".npz") or (p.is_dir() and (p / "config.json").is_file()):
        return p
    raise TrainingError(f"--init {init}: expected a pretraining/fine-tuning run directory or checkpoint.npz, or a "
                        "transformers directory (config.json + model.safetensors)")


def _resolve_init(init):
    """("pretraining" | "finetuning" | "transformers", path) for --init."""
    p = init_source(init)
    if p.suffix == ".npz" and p.is_file():
        state, _, meta = read_checkpoint(p)
        return ("finetuning" if "lm_head.weight" in state else "pretraining"), p
    return "transformers", p


def finetune_overrides(args: FinetuneArgs) -> dict:
    values = dict(FINETUNE_CONFIG)
    values["feature_grad_mult"] = 0.0 if args.freeze_feature_encoder else 1.0
    values.update(args.overrides)
    return values


def build_model(args: FinetuneArgs, vocab_size: int):
    """(model, description of where its weights come from)."""
    overrides = finetune_overrides(args)
    if args.init is None:
        config = Wav2Vec2Config.preset(args.preset, **dict(overrides, vocab_size=vocab_size))
        return Wav2Vec2ForCTC(config, seed=args.seed), f"random init ({args.preset} preset)"
    kind, path = _resolve_init(args.init)
    try:
        if kind == "pretraining":
            model = Wav2Vec2ForCTC.from_pretraining_checkpoint(path, vocab_size, seed=args.seed, device=None,
                                                               **overrides)
        elif kind == "finetuning":   # continue from a fine-tuned model (same head size), with this run's settings
            state, _, meta = read_checkpoint(path)
            head = int(state["lm_head.weight"].shape[0])
            if head != vocab_size:
                raise vocabulary_mismatch(head, vocab_size, path, f"the vocabulary {args.vocab!r}" if args.vocab
                                          else "the vocabulary built from the labelled transcripts")
            config = Wav2Vec2Config.from_dict(meta["config"]).replace(**overrides)
            model = Wav2Vec2ForCTC(config, seed=args.seed)
            model.load_state_dict({k: v for k, v in state.items() if k in dict(model.state_dict())}, strict=False)
        else:
            model = Wav2Vec2ForCTC.from_pretrained(path, seed=args.seed, device=None, vocab_size=vocab_size,
                                                   **overrides)
    except VocabularyMismatchError as e:
        raise TrainingError(str(e)) from None
    return model, f"{kind} checkpoint {path}"


# ----------------------------------------------------------------------------------------------
# the run


class _Schedule:
    """Tri-stage learning rate on the fraction of the budget used (steps and/or training seconds)."""

    RESOLUTION = 1_000_000

    def __init__(self, args: FinetuneArgs):
        self.steps, self.budget = args.steps, args.minutes * 60.0 if args.minutes else None
        self.tri = optim.TriStage(args.lr, phase_ratio=tuple(args.phase_ratio), max_update=self.RESOLUTION,
                                  init_lr_scale=args.init_lr_scale, final_lr_scale=args.final_lr_scale)

    def progress(self, step: int, seconds: float) -> float:
        p = step / max(self.steps, 1) if self.steps is not None else 0.0
        if self.budget:
            p = max(p, seconds / self.budget)
        return min(p, 1.0)

    def __call__(self, step: int, seconds: float) -> float:
        return self.tri(int(self.progress(step, seconds) * self.RESOLUTION))


def finetune(args: FinetuneArgs) -> dict:
    """Run (or resume) a fine-tuning; returns the last metrics and the paths written (under ``mpiexec``, rank 0
    writes them)."""
    with data_parallel(args) as parallel:
        return _finetune(args, parallel)


def _finetune(args: FinetuneArgs, parallel: DataParallel) -> dict:
    if args.steps is None and not args.minutes:
        raise TrainingError("give --steps or --minutes (or both: the run ends with whichever comes first)")
    check_sizes(args, ("minutes", "lr", "batch_seconds", "log_every", "checkpoint_every"))
    if args.eval_every < 0:
        raise TrainingError(f"--eval-every must be positive, or 0 to evaluate by --eval-every-seconds only, got "
                            f"{args.eval_every}")
    if args.init is not None:
        init_source(args.init)                                # a wrong --init fails before any data is made
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out_dir / "checkpoint.npz", out_dir / "metrics.jsonl"
    last_step = args.steps if args.steps is not None else 10 ** 12   # a time budget alone ends the run
    main = parallel.main                                      # rank 0 (the only one in a run of one process)
    train_path, eval_path = _paths(args, parallel)

    # 1. the labelled subset (the same on every rank) and the vocabulary
    items, report = parallel.collective(load_training_set, train_path, args)
    items = parallel.keep_common(items, [uid for uid, _, _ in items], str(train_path))
    if args.vocab:
        vocab = Vocabulary.load(args.vocab)
    else:
        vocab = Vocabulary.build([t for _, _, t in items], uppercase=args.uppercase)
    if args.resume and ckpt_path.exists() and (out_dir / "vocab.json").is_file():
        saved_vocab = Vocabulary.load(out_dir)
        if saved_vocab != vocab:
            raise TrainingError(f"{out_dir / 'vocab.json'}: the run was started with another vocabulary "
                                f"({len(saved_vocab)} entries, now {len(vocab)}); resume with the same --labels, "
                                "--subset-seed and --vocab, or pick a new --out directory")

    # 2. the model
    model, origin = parallel.collective(build_model, args, len(vocab))
    config = model.config
    train_set, label_report = prepare_labels(items, vocab, config, args.strict, str(train_path))
    if main:
        _print_data_report(train_path, report, label_report, len(train_set))
    if not train_set:
        raise TrainingError(f"{train_path}: no usable labelled utterance is left (see the counts above)")

    def load_eval_set():
        stats = EncodeStats()
        utterances, _ = load_labelled_utterances(eval_path, vocab, normalize=args.normalize,
                                                 limit=args.eval_utterances if args.eval_utterances else None,
                                                 stats=stats)
        if stats.unknown:
            print(f"{eval_path}: {stats.report()}")
        if not utterances:
            raise TrainingError(f"{eval_path}: no readable labelled held-out audio")
        return utterances

    eval_set = parallel.collective(load_eval_set, main_only=True)   # only rank 0 evaluates
    batches = LabelledBatches([u["audio"].shape[0] for u in train_set], args.batch_seconds, args.seed)

    parallel.collective(model.to, parallel.device)            # a rank that lacks its device stops every rank
    if args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = optim.AdamW(trainable, lr=args.lr, betas=tuple(args.betas), eps=args.adam_eps,
                      weight_decay=args.weight_decay)
    schedule = _Schedule(args)

    def same_vocabulary(state):                               # a checkpoint's head must fit this vocabulary
        head = state.get("lm_head.weight")
        if head is not None and head.shape[0] != len(vocab):
            raise TrainingError(str(vocabulary_mismatch(int(head.shape[0]), len(vocab), ckpt_path)))

    # interval: the training figures since the last logged line
    start, train_seconds, interval = start_or_resume(args, parallel, model, opt, config, out_dir,
                                                     "--init/--preset/--set", check_state=same_vocabulary)
    if main:
        vocab.save(out_dir)
        (out_dir / "args.json").write_text(json.dumps(dict(asdict(args), resolved_eval_data=str(eval_path),
                                                           resolved_train_data=str(train_path), origin=origin,
                                                           labelled_utterances=len(train_set)), indent=2))

    def checkpoint(step):
        parallel.check_replicas(model.parameters(), step)
        if main:
            save_checkpoint(ckpt_path, model, opt, {"config": config.to_dict(), "step": step, "args": asdict(args),
                                                    "train_seconds": train_seconds, "vocab": vocab.tokens,
                                                    "interval": interval.state()})

    def run_eval():
        r = evaluate_utterances(model, vocab, eval_set)
        return {"eval_cer": r["cer"], "eval_wer": r["wer"], "eval_loss": r["loss"]}, r["rows"]

    if main:
        print(f"fine-tuning from {origin}: {len(train_set)} labelled utterances "
              f"({sum(u['audio'].shape[0] for u in train_set) / SAMPLE_RATE / 60:.1f} min), vocabulary of "
              f"{len(vocab)}, held-out {len(eval_set)} utterances of {eval_path}")
        layout = parallel.describe("batches", 1)
        if layout:
            print(layout)
    last_rows = None
    if start == 0 and main:
        metrics, last_rows = run_eval()
        append_metrics(log_path, {"step": 0, "seconds": 0.0, **metrics})
    model.train()
    mask_kw = "attention_mask" if uses_attention_mask(config) else "sample_lengths"
    bar = _progress(args, start, main)
    last, frozen = {}, None
    next_eval_seconds = (train_seconds + args.eval_every_seconds) if args.eval_every_seconds else None
    budget = args.minutes * 60.0 if args.minutes else None
    step = start
    for step in range(start, last_step):
        if budget is not None and train_seconds >= budget:
            break
        t0 = time.perf_counter()
        want_frozen = step < args.freeze_finetune_updates
        if want_frozen != frozen:
            model.freeze_base_model(want_frozen, keep_feature_encoder_frozen=args.freeze_feature_encoder)
            frozen = want_frozen
        lr = schedule(step, train_seconds)
        opt.set_lr(lr)
        # this rank's batches of the update: batch step x micro_batches + j of the sequence (all of step's in one
        # process); each loss divided by B, the utterances of the whole update (fairseq's sentence_avg)
        shards = [(j, batches(step * parallel.micro_batches + j)) for j in parallel.shards()]
        B = parallel.sum(sum(len(idx) for _, idx in shards))
        opt.zero_grad()
        step_loss = 0.0
        for j, idx in shards:
            x, mask, lengths = collate([train_set[i]["audio"] for i in idx])
            labels = pad_labels([train_set[i]["labels"] for i in idx])
            model.manual_seed(parallel.seed(args.seed, step, j))  # every draw of this batch from (seed, step[, j])
            out = model(x, labels=labels, **{mask_kw: mask if mask_kw == "attention_mask" else lengths})
            if config.ctc_loss_reduction == "sum":
                loss = out.loss * (1.0 / B)
            else:   # a per-batch mean already: the mean over the update's batches
                loss = out.loss if parallel.micro_batches == 1 else out.loss * (1.0 / parallel.micro_batches)
            loss.backward()                                   # p.grad accumulates over the batches
            if parallel.micro_batches > 1:
                step_loss += float(loss)
        if parallel.micro_batches > 1:
            loss = parallel.sum(step_loss)                    # the update's loss, the same on every rank
        loss_value, norm_value = guarded_update(loss, opt, args.clip_norm, step, ckpt_path, bar,
                                                parallel.sum_gradients)
        train_seconds += parallel.max(time.perf_counter() - t0)   # the slowest rank's: every rank keeps one clock
        done = step + 1
        over_budget = budget is not None and train_seconds >= budget
        final = done == last_step or over_budget
        due_eval = done % args.eval_every == 0 if args.eval_every else False
        if next_eval_seconds is not None and train_seconds >= next_eval_seconds:
            due_eval = True
            while next_eval_seconds <= train_seconds:
                next_eval_seconds += args.eval_every_seconds
        interval.add({"loss": loss_value, "grad_norm": norm_value, "batch_size": B})
        if done % args.log_every == 0 or final or due_eval:
            last = {"step": done, **interval.pop(), "lr": lr,
                    "epoch": batches.epoch_of(step * parallel.micro_batches), "frozen": bool(frozen),
                    "seconds": round(train_seconds, 3)}
            if main and (due_eval or final):
                metrics, last_rows = run_eval()
                last.update(metrics)
            if main:
                append_metrics(log_path, last)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.1e}",
                            **({"cer": f"{last['eval_cer']:.3f}"} if "eval_cer" in last else {}))
        bar.update(1)
        if done % args.checkpoint_every == 0 or final or done == args.stop_at:
            checkpoint(done)
        if done == args.stop_at or over_budget:
            break
    bar.close()
    if not main:
        return {"metrics": last, "rank": parallel.rank}
    if not last and start > 0:
        last = read_metrics(log_path)[-1]
    plots = plot_finetuning(log_path, out_dir / "plots")
    model_dir = None
    if args.export and ckpt_path.exists():
        model_dir = out_dir / "model"
        model.save_pretrained(model_dir)
        vocab.save(model_dir)
    result = {"metrics": last, "plots": [str(p) for p in plots], "checkpoint": str(ckpt_path),
              "vocab": str(out_dir / "vocab.json"),
              "model_dir": str(model_dir) if model_dir else None, "train_seconds": train_seconds,
              "labelled_utterances": len(train_set), "skipped_too_long": label_report["too_long"],
              "unknown_characters": label_report["encode"].unknown, "rank": parallel.rank}
    if last_rows is not None:
        result["worst"] = worst_examples(last_rows, 5)
    return result


def _print_data_report(path, report, label_report, kept):
    parts = [f"{path}: {kept} labelled utterances used of {report['chosen']} chosen "
             f"({report['available']} available)"]
    if report["skipped_bad"]:
        parts.append(f"skipped {report['skipped_bad']} unreadable files")
    if label_report["too_long"]:
        parts.append(f"skipped {label_report['too_long']} whose transcript is longer than the model's output frames "
                     f"(e.g. {', '.join(label_report['too_long_ids'][:3])}; --strict makes this an error)")
    if label_report["too_short"]:
        parts.append(f"skipped {label_report['too_short']} too short for time masking")
    enc = label_report["encode"]
    if enc.unknown:
        parts.append(enc.report())
    print("; ".join(parts))


def _progress(args, start, enabled: bool = True):
    return progress_bar(args.progress and enabled, total=args.steps, initial=start, desc="finetune", unit="step")


__all__ = ["FinetuneArgs", "FINETUNE_CONFIG", "TrainingError", "finetune", "choose_subset", "LabelledBatches",
           "prepare_labels", "plot_finetuning"]
