"""The ``finetune``, ``evaluate`` and ``transcribe`` subcommands of the ``tinyw2v2`` command line.

    tinyw2v2 finetune [--init runs/pretrain] [--labels 40 | 0.02] [--steps N | --minutes M] [--set key=value ...]
    tinyw2v2 evaluate RUN_DIR_OR_MODEL [--data LABELLED_SPLIT] [--worst 10]
    tinyw2v2 transcribe FILE... --model RUN_DIR_OR_MODEL

``add_subcommands(subparsers)`` adds them to the parser built in ``tinyw2v2/cli.py``; each sets ``run_fn``.
"""
from __future__ import annotations

import sys
from dataclasses import fields


def _labels(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise SystemExit(f"--labels expects a count (40) or a fraction (0.02), got {value!r}") from None
    return v


def _finetune(args) -> int:
    from ..cli import _parse_overrides, print_metrics
    from .finetune import FinetuneArgs, TrainingError, finetune

    known = {f.name for f in fields(FinetuneArgs)}
    values = {k: v for k, v in vars(args).items() if k in known and v is not None}
    overrides = _parse_overrides(args.set)
    for key in ("mask_time_prob", "mask_feature_prob"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    values["overrides"] = overrides
    values["progress"] = not args.no_progress
    if args.no_freeze_feature_encoder:
        values["freeze_feature_encoder"] = False
    if args.phase_ratio is not None:
        values["phase_ratio"] = tuple(args.phase_ratio)
    if args.minutes is not None:
        values["max_minutes"] = args.minutes
        if args.steps is None:
            values["steps"] = 10 ** 9   # the time budget decides
    try:
        result = finetune(FinetuneArgs(**values))
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_metrics(result["metrics"])
    for r in result.get("worst", []):
        print(f"  worst: {r['id']} CER {r['cer']:.2f}\n    ref: {r['reference']}\n    hyp: {r['hypothesis']}")
    print(f"checkpoint: {result['checkpoint']}")
    if result.get("model_dir"):
        print(f"model (transformers format): {result['model_dir']}")
    print("plots: " + ", ".join(result["plots"]))
    return 0


def _evaluate(args) -> int:
    from ..models.wav2vec2.ctc import VocabularyMismatchError
    from ..text import VocabularyError
    from .evaluate import EvaluationError, evaluate

    try:
        result = evaluate(args.model, data=args.data, vocab=args.vocab, max_utterances=args.utterances,
                          worst=args.worst, device=args.device, out_json=args.json)
    except (EvaluationError, VocabularyMismatchError, VocabularyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["table"])
    return 0


def _transcribe(args) -> int:
    from ..data import AudioError
    from ..models.wav2vec2.ctc import VocabularyMismatchError
    from ..text import VocabularyError
    from .evaluate import EvaluationError, transcribe

    try:
        pairs = transcribe(args.model, args.files, vocab=args.vocab, device=args.device)
    except (EvaluationError, VocabularyMismatchError, VocabularyError, AudioError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, text in pairs:
        print(f"{path}\t{text}")
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``finetune``, ``evaluate`` and ``transcribe`` to the ``tinyw2v2`` argparse subparsers."""
    p = subparsers.add_parser("finetune", help="CTC fine-tuning on labelled audio (the synthetic corpus by default)")
    p.add_argument("--init", help="pretraining run dir or checkpoint.npz, a transformers directory, or a fine-tuning "
                                  "checkpoint; omit to train the same architecture from scratch")
    p.add_argument("--data", help="'synthetic' (default) or a labelled LibriSpeech dir / .tsv manifest with labels")
    p.add_argument("--eval-data", dest="eval_data", help="labelled held-out data (default: the synthetic test split)")
    p.add_argument("--corpus-dir", dest="corpus_dir", help="where the synthetic corpus is (data/synthetic)")
    p.add_argument("--labels", type=_labels, help="labelled utterances: a count (40) or a fraction (0.02); default all")
    p.add_argument("--subset-seed", dest="subset_seed", type=int, help="seed choosing the labelled subset (0)")
    p.add_argument("--vocab", help="use this vocab.json instead of building one from the transcripts")
    p.add_argument("--uppercase", action="store_true", default=None, help="upper-case transcripts before encoding")
    p.add_argument("--preset", choices=["tiny", "base", "large"], help="architecture when there is no --init")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model config field (repeatable)")
    p.add_argument("--mask-time-prob", dest="mask_time_prob", type=float, help="time masking (0.65)")
    p.add_argument("--mask-feature-prob", dest="mask_feature_prob", type=float, help="channel masking (0.25)")
    p.add_argument("--steps", type=int, help="updates (2000)")
    p.add_argument("--minutes", type=float, help="training-time budget; the schedule spans it")
    p.add_argument("--batch-seconds", dest="batch_seconds", type=float, help="audio per batch, padding included (16)")
    p.add_argument("--lr", type=float, help="peak learning rate (1e-3)")
    p.add_argument("--phase-ratio", dest="phase_ratio", type=float, nargs=3, metavar=("WARMUP", "HOLD", "DECAY"),
                   help="tri-stage phases as fractions of the budget (0.1 0.4 0.5)")
    p.add_argument("--final-lr-scale", dest="final_lr_scale", type=float, help="final lr / peak (0.05)")
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--clip-norm", dest="clip_norm", type=float)
    p.add_argument("--freeze-finetune-updates", dest="freeze_finetune_updates", type=int,
                   help="train only the CTC head for the first N updates (fairseq; 0)")
    p.add_argument("--no-freeze-feature-encoder", action="store_true", help="also train the CNN")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--out", help="output directory (runs/finetune)")
    p.add_argument("--log-every", dest="log_every", type=int)
    p.add_argument("--eval-every", dest="eval_every", type=int, help="held-out CER/WER every N steps (200)")
    p.add_argument("--eval-every-seconds", dest="eval_every_seconds", type=float,
                   help="also every S seconds of training (learning curves against time)")
    p.add_argument("--eval-utterances", dest="eval_utterances", type=int, help="held-out utterances (200; 0 = all)")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    p.add_argument("--stop-at", dest="stop_at", type=int, help="stop after this step (with a checkpoint)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/checkpoint.npz")
    p.add_argument("--strict", action="store_true", default=None,
                   help="stop on the first bad file or transcript longer than the model's output")
    p.add_argument("--normalize", action="store_true", default=None, help="zero-mean unit-variance each utterance")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run_fn=_finetune)

    e = subparsers.add_parser("evaluate", help="CER/WER of a fine-tuned model, per speaker, with the worst utterances")
    e.add_argument("model", help="a fine-tuning run directory, its checkpoint.npz, or a transformers CTC directory")
    e.add_argument("--data", help="labelled data (default: the run's held-out split)")
    e.add_argument("--vocab", help="vocab.json to use (default: the one beside the model)")
    e.add_argument("--utterances", type=int, help="evaluate a random subset of this many utterances")
    e.add_argument("--worst", type=int, default=10, help="how many of the worst utterances to print (10)")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--device", default="cpu")
    e.set_defaults(run_fn=_evaluate)

    t = subparsers.add_parser("transcribe", help="greedy CTC transcripts of audio files")
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg; any rate)")
    t.add_argument("--model", default="runs/finetune",
                   help="a fine-tuning run directory or a transformers CTC directory (runs/finetune)")
    t.add_argument("--vocab", help="vocab.json to use (default: the one beside the model)")
    t.add_argument("--device", default="cpu")
    t.set_defaults(run_fn=_transcribe)
