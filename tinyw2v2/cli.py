"""The ``tinyw2v2`` command line: every subcommand, one error handler.

    tinyw2v2 pretrain [--steps N | --minutes M] [--device cpu|cuda] [--data synthetic|PATH] [--set key=value ...]
    mpiexec -n 2 tinyw2v2 pretrain ...                                data parallel on 2 processes (and finetune)
    tinyw2v2 analyze RUN_DIR_OR_CHECKPOINT [--data CORPUS_SPLIT]
    tinyw2v2 finetune --init RUN_DIR [--labels 40] [--minutes 10]   CTC fine-tuning
    tinyw2v2 evaluate RUN_DIR                                         CER/WER table and the worst examples
    tinyw2v2 transcribe FILE... --model RUN_DIR                       greedy CTC transcripts
    tinyw2v2 export RUN_DIR DIR                                       a run as a transformers directory
    tinyw2v2 check [--device cpu|emulated|cuda] [--family conv ...]

The options of ``pretrain`` and ``finetune`` are made from their argument dataclasses (``PretrainArgs``,
``FinetuneArgs``): one option per field, its help the field's. A mistake of the user's (a bad option value, a file
that is not there, a config the model cannot be built with, a device this machine lacks) ends in one line on
stderr and exit status 2, never in a traceback. Under an MPI launcher only rank 0 prints.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys


# ----------------------------------------------------------------------------------------------
# options from a run's argument dataclass


def parse_overrides(pairs) -> dict:
    """``--set key=value``: values read as Python literals (numbers, booleans, tuples), else strings."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _scalar_type(annotation: str):
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if annotation.split("|")[0].strip() == name:
            return kind
    return None


def add_dataclass_options(parser, cls, types=None) -> None:
    """One option per field of ``cls``: ``--name-with-dashes`` of the field's type (a ``bool`` defaulting to False is
    a flag, one defaulting to True gets ``--no-name``; a tuple takes as many numbers as its default; ``overrides``
    is ``--set KEY=VALUE``; ``types`` maps a field to its own parser). Options left out keep the dataclass default
    (their parsed value is None)."""
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "").replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name == "overrides":
            parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help=help_text)
        elif isinstance(default, bool):
            if default:
                parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                    default=None, help=f"do not: {help_text}")
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
        elif isinstance(default, tuple):
            parser.add_argument(flag, dest=f.name, type=float, nargs=len(default), default=None,
                                help=f"{help_text} (default: {' '.join(map(str, default))})")
        else:
            kind = (types or {}).get(f.name) or _scalar_type(str(f.type)) or str
            shown = "" if default is None else f" (default: {default})"
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text + shown)


def dataclass_from_options(cls, options, **fixed):
    """An instance of ``cls`` from parsed options: the options given, the defaults for the rest."""
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(options, f.name, None)
        if v is None:
            continue
        if f.name == "overrides":
            v = parse_overrides(v)
        elif isinstance(f.default, tuple):
            v = tuple(v)
        values[f.name] = v
    values.update(fixed)
    return cls(**values)


# ----------------------------------------------------------------------------------------------
# the subcommands


def print_metrics(metrics: dict) -> None:
    """A run's last metrics as one JSON line, floats rounded to 4 digits."""
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}))


def pretraining_summary(result: dict, run: str | None = None) -> str:
    """What a pretraining run reached, in words a newcomer can read: the task and its chance level, where the run
    started and ended on the held-out speakers, whether it left the initial plateau, where the plot is and what to
    look at in it, and what to run next."""
    import math

    m, m0, K = result["metrics"], result["initial"], result["num_negatives"]
    chance, flat = 1 / (K + 1), math.log(K + 1)
    lines = [f"\nSummary after {m['step']} steps ({result['train_seconds'] / 60:.1f} min of training):",
             f"  the task: for every masked frame, pick its true quantised target among K + 1 = {K + 1} candidates"]
    if "eval_accuracy" in m:
        acc = m["eval_accuracy"]
        lines += [
            f"  held-out speakers (never heard in training), eval mode, {m['eval_frames']:,} masked frames of "
            f"{result['eval_utterances']} utterances:",
            f"    accuracy {acc:.3f}  (chance 1/{K + 1} = {chance:.3f}; {m0['eval_accuracy']:.3f} before training)",
            f"    loss     {m['eval_loss']:.3f}  (ln {K + 1} = {flat:.3f} when all {K + 1} candidates look alike; "
            f"{m0['eval_loss']:.3f} before training)",
        ]
        if acc >= 4 * chance:
            lines.append(f"  it learned: {acc / chance:.1f}x chance, the loss {flat - m['eval_loss']:.2f} below ln {K + 1}")
        elif acc >= 2 * chance:
            lines.append(f"  it is leaving the initial plateau ({acc / chance:.1f}x chance): train longer (--steps)")
        else:
            lines.append("  it is still on the initial plateau (accuracy near chance, loss near ln(K+1)): train longer "
                         "(--steps), or see docs/results.md, 'Leaving the plateau'")
    lines += [f"  plot: {result['plots'][0]}",
              "    'masked-frame accuracy': the held-out curve should leave the chance line and keep rising;",
              "    'loss': fall below the ln(K+1) line; 'codebook usage': stay well above the G·V/4 line (no collapse)"]
    if run:
        lines.append(f"  next: tinyw2v2 analyze {run}   (do the learnt codes line up with phones?)")
    return "\n".join(lines)


def _pretrain(args) -> int:
    from .train.pretrain import PretrainArgs, pretrain

    fixed = {"steps": None} if args.minutes is not None and args.steps is None else {}  # the time budget alone
    result = pretrain(dataclass_from_options(PretrainArgs, args, **fixed))
    if result["rank"] > 0:                    # under mpiexec, rank 0 reports
        return 0
    print_metrics(result["metrics"])
    print(f"checkpoint: {result['checkpoint']}")
    print("plots: " + ", ".join(result["plots"]))
    print(pretraining_summary(result, run=args.out))
    return 0


def _finetune(args) -> int:
    from .train.finetune import FinetuneArgs, finetune

    fixed = {"steps": None} if args.minutes is not None and args.steps is None else {}
    result = finetune(dataclass_from_options(FinetuneArgs, args, **fixed))
    if result["rank"] > 0:                    # under mpiexec, rank 0 reports
        return 0
    print_metrics(result["metrics"])
    for r in result.get("worst", []):
        print(f"  worst: {r['id']} CER {r['cer']:.2f}\n    ref: {r['reference']}\n    hyp: {r['hypothesis']}")
    print(f"checkpoint: {result['checkpoint']}")
    if result.get("model_dir"):
        print(f"model (transformers format): {result['model_dir']}")
    print("plots: " + ", ".join(result["plots"]))
    return 0


def _analyze(args) -> int:
    from .train.analyze import analyze

    result = analyze(args.run, data=args.data, max_utterances=args.utterances, device=args.device, out_dir=args.out)
    print(result["table"])
    print(f"plot: {result['plot']}")
    return 0


def _evaluate(args) -> int:
    from .train.evaluate import evaluate

    result = evaluate(args.model, data=args.data, vocab=args.vocab, max_utterances=args.utterances,
                      worst=args.worst, device=args.device, out_json=args.json)
    print(result["table"])
    return 0


def _transcribe(args) -> int:
    from .train.evaluate import transcribe

    for path, text in transcribe(args.model, args.files, vocab=args.vocab, device=args.device):
        print(f"{path}\t{text}")
    return 0


def _export(args) -> int:
    from .train.export import export_run

    info = export_run(args.run, args.out)
    print(f"{info['kind']} model of {info['checkpoint']} (step {info['step']}) written to {info['out']} "
          f"({', '.join(info['files'])}); load it with transformers' {info['transformers_class']}.from_pretrained")
    return 0


def _check(args) -> int:
    from .checks import run_all
    from .ops.dispatch import reference_ops

    with reference_ops(args.reference):
        return 0 if run_all(args.device, args.family or None) else 1


def _labels(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count (40) or a fraction (0.02), got {value!r}") from None


def _vocab_and_device(parser) -> None:
    parser.add_argument("--vocab", help="vocab.json to use (default: the one beside the model)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")


def build_parser() -> argparse.ArgumentParser:
    from .checks import FAMILIES
    from .train.finetune import FinetuneArgs
    from .train.pretrain import PretrainArgs

    parser = argparse.ArgumentParser(prog="tinyw2v2", description="wav2vec 2.0 from scratch on NumPy/CuPy")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="contrastive pretraining (the built-in synthetic corpus by default)",
                       description="Contrastive pretraining of wav2vec 2.0; defaults: the tiny preset's short-run recipe "
                                   "on the built-in synthetic corpus (docs/training.md, docs/results.md).")
    add_dataclass_options(p, PretrainArgs)
    p.set_defaults(handler=_pretrain)

    f = sub.add_parser("finetune", help="CTC fine-tuning on labelled audio (the synthetic corpus by default)")
    add_dataclass_options(f, FinetuneArgs, types={"labels": _labels})   # a count or a fraction
    f.set_defaults(handler=_finetune)

    a = sub.add_parser("analyze", help="do the codes line up with phones? PNMI above chance, trained vs random init")
    a.add_argument("run", help="a pretraining output directory, its checkpoint.npz, or a transformers directory")
    a.add_argument("--data", help="a corpus split with alignments (default: the run's synthetic test split)")
    a.add_argument("--utterances", type=int, default=200, help="held-out utterances to analyse (200)")
    a.add_argument("--device", default="cpu")
    a.add_argument("--out", help="where to write analysis.json and the plot (default: the run's directory)")
    a.set_defaults(handler=_analyze)

    e = sub.add_parser("evaluate", help="CER/WER of a fine-tuned model, per speaker, with the worst utterances")
    e.add_argument("model", help="a fine-tuning run directory, its checkpoint.npz, or a transformers CTC directory")
    e.add_argument("--data", help="labelled data (default: the run's held-out split)")
    e.add_argument("--utterances", type=int, help="evaluate a random subset of this many utterances")
    e.add_argument("--worst", type=int, default=10, help="how many of the worst utterances to print (10)")
    e.add_argument("--json", help="also write the results to this JSON file")
    _vocab_and_device(e)
    e.set_defaults(handler=_evaluate)

    t = sub.add_parser("transcribe", help="greedy CTC transcripts of audio files")
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg; any rate)")
    t.add_argument("--model", default="runs/finetune",
                   help="a fine-tuning run directory or a transformers CTC directory (runs/finetune)")
    _vocab_and_device(t)
    t.set_defaults(handler=_transcribe)

    x = sub.add_parser("export", help="a pretraining or fine-tuning run as a transformers-format directory")
    x.add_argument("run", help="a run directory or its checkpoint.npz")
    x.add_argument("out", help="the directory to write (config.json, model.safetensors, and vocab.json for CTC)")
    x.set_defaults(handler=_export)

    c = sub.add_parser("check", help="gradient-check every op against finite differences and print a table")
    c.add_argument("--device", default="cpu", help="cpu, emulated or cuda (default: cpu)")
    c.add_argument("--family", action="append", choices=FAMILIES, help="only this op family (repeatable)")
    c.add_argument("--reference", action="store_true", help="check the reference ops instead of the tuned ones")
    c.set_defaults(handler=_check)
    return parser


def user_errors() -> tuple:
    """The library's own error types: a user's mistake, reported in one line."""
    from .backend import DeviceError
    from .data import AudioError, DatasetError, SoundfileMissingError
    from .io import CheckpointError
    from .models.wav2vec2.config import ConfigError
    from .models.wav2vec2.ctc import VocabularyMismatchError
    from .text import VocabularyError
    from .train.common import TrainingError
    from .train.evaluate import EvaluationError

    return (TrainingError, EvaluationError, ConfigError, DeviceError, AudioError, DatasetError, CheckpointError,
            SoundfileMissingError, VocabularyError, VocabularyMismatchError, FileNotFoundError, argparse.ArgumentTypeError)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.handler(args)
    except user_errors() as e:
        from .train.distributed import launched_rank

        message = str(e).strip().replace("\n", " ")
        if launched_rank() == 0:              # under mpiexec every rank raised it: rank 0 says it once
            print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
