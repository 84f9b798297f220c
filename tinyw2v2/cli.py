"""The ``tinyw2v2`` command line.

    tinyw2v2 pretrain [--steps N] [--device cpu|cuda] [--data synthetic|PATH] [--set key=value ...]
    tinyw2v2 analyze RUN_DIR_OR_CHECKPOINT [--data CORPUS_SPLIT]
    tinyw2v2 finetune --init RUN_DIR [--labels 40] [--minutes 10]   CTC fine-tuning
    tinyw2v2 evaluate RUN_DIR                                         CER/WER table and the worst examples
    tinyw2v2 transcribe FILE... --model RUN_DIR                       greedy CTC transcripts
    tinyw2v2 check [--device cpu|emulated|cuda] [--family conv ...]
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import fields


def _check(args) -> int:
    from .checks import run_all

    return 0 if run_all(args.device, args.family or None) else 1


def _parse_overrides(pairs) -> dict:
    """``--set key=value``: values read as Python literals (numbers, booleans, tuples), else strings."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _pretrain(args) -> int:
    from .train.pretrain import PretrainArgs, TrainingError, pretrain

    known = {f.name for f in fields(PretrainArgs)}
    values = {k: v for k, v in vars(args).items() if k in known and v is not None}
    values["overrides"] = _parse_overrides(args.set)
    values["progress"] = not args.no_progress
    if args.minutes is not None and args.steps is None:
        values["steps"] = None                   # the time budget alone ends the run
    try:
        result = pretrain(PretrainArgs(**values))
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_metrics(result["metrics"])
    print(f"checkpoint: {result['checkpoint']}")
    print("plots: " + ", ".join(result["plots"]))
    print(pretraining_summary(result))
    return 0


def pretraining_summary(result: dict) -> str:
    """What a pretraining run reached, in words: chance level, start and end on the held-out speakers, the plot."""
    import math

    m, m0, K = result["metrics"], result["initial"], result["num_negatives"]
    lines = [f"\nSummary after {m['step']} steps ({result['train_seconds'] / 60:.1f} min of training):"]
    if "eval_accuracy" in m:
        lines += [
            f"  held-out speakers (never heard in training), eval mode, {m['eval_frames']:,} masked frames of "
            f"{result['eval_utterances']} utterances:",
            f"    accuracy {m['eval_accuracy']:.3f}  (chance 1/(K+1) = 1/{K + 1} = {1 / (K + 1):.3f}; "
            f"{m0['eval_accuracy']:.3f} before training)",
            f"    loss     {m['eval_loss']:.3f}  (ln(K+1) = {math.log(K + 1):.3f} when all {K + 1} candidates look "
            f"alike; {m0['eval_loss']:.3f} before training)",
        ]
    lines.append(f"  plot: {result['plots'][0]}: in 'masked-frame accuracy' the held-out curve should leave chance "
                 "and keep rising; 'codebook usage' should stay well above the G·V/4 line.")
    return "\n".join(lines)


def print_metrics(metrics: dict) -> None:
    """A run's last metrics as one JSON line, floats rounded to 4 digits."""
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}))


def _analyze(args) -> int:
    from .train.analyze import TrainingError, analyze

    try:
        result = analyze(args.run, data=args.data, max_utterances=args.utterances, device=args.device)
    except (TrainingError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"plot: {result['plot']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyw2v2", description="wav2vec 2.0 from scratch on NumPy/CuPy")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="contrastive pretraining (the built-in synthetic corpus by default)")
    p.add_argument("--data", help="'synthetic' (default) or a LibriSpeech dir, fairseq .tsv manifest or audio folder")
    p.add_argument("--eval-data", dest="eval_data", help="held-out audio for eval-mode accuracy")
    p.add_argument("--corpus-dir", dest="corpus_dir", help="where to generate the synthetic corpus (data/synthetic)")
    p.add_argument("--preset", choices=["tiny", "base", "large"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model config field (repeatable)")
    p.add_argument("--steps", type=int, help="training steps (1000; with --minutes alone: no step limit)")
    p.add_argument("--minutes", type=float, help="training-time budget; the lr and temperature schedules span it")
    p.add_argument("--batch-seconds", dest="batch_seconds", type=float, help="audio per batch (24)")
    p.add_argument("--crop-seconds", dest="crop_seconds", type=float, help="longest crop (2)")
    p.add_argument("--lr", type=float, help="peak learning rate (1e-3)")
    p.add_argument("--warmup", type=float, help="warm-up as a fraction of the steps (0.08)")
    p.add_argument("--schedule", choices=["linear", "constant"])
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--clip-norm", dest="clip_norm", type=float)
    p.add_argument("--max-temperature", dest="max_temperature", type=float)
    p.add_argument("--min-temperature", dest="min_temperature", type=float)
    p.add_argument("--anneal-fraction", dest="anneal_fraction", type=float,
                   help="the temperature reaches its minimum after this fraction of the run")
    p.add_argument("--anneal-steps", dest="anneal_steps", type=int,
                   help="... or after this many steps, whatever the run's length")
    p.add_argument("--threads", type=int, help="BLAS threads")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--out", help="output directory (runs/pretrain)")
    p.add_argument("--log-every", dest="log_every", type=int)
    p.add_argument("--eval-every", dest="eval_every", type=int)
    p.add_argument("--eval-utterances", dest="eval_utterances", type=int, help="held-out utterances (default: all)")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/checkpoint.npz")
    p.add_argument("--strict", action="store_true", default=None, help="stop on the first bad audio file")
    p.add_argument("--normalize", action="store_true", default=None, help="zero-mean unit-variance each utterance")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_pretrain)

    a = sub.add_parser("analyze", help="code-phone purity and PNMI of a pretrained model vs its random init")
    a.add_argument("run", help="a pretraining output directory or its checkpoint.npz")
    a.add_argument("--data", help="a corpus split with alignments (default: the run's synthetic test split)")
    a.add_argument("--utterances", type=int, default=200)
    a.add_argument("--device", default="cpu")
    a.set_defaults(run_fn=_analyze)

    from .train.finetune_cli import add_subcommands

    add_subcommands(sub)  # finetune, evaluate, transcribe

    c = sub.add_parser("check", help="gradient-check every op against finite differences and print a table")
    c.add_argument("--device", default="cpu", help="cpu, emulated or cuda (default: cpu)")
    c.add_argument("--family", action="append", help="only this op family (repeatable)")
    c.set_defaults(run=_check)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "run_fn"):
        return args.run_fn(args)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
