"""The paper's low-resource result at toy scale: pretraining makes a few labels go a long way.

    python benchmarks/low_resource.py runs/pretrain/checkpoint.npz --minutes 10 [--labels 40] [--out runs/low_resource]

Three CTC fine-tunings of the same architecture, one after the other, each with the same training-time budget
(evaluation not counted), the same vocabulary, settings and held-out utterances:

    pretrained   the pretraining checkpoint's encoder + a new CTC head, N labelled utterances
    scratch-N    the same architecture from a random initialisation, the same N labelled utterances
    scratch-all  the same architecture from a random initialisation, every labelled training utterance

on the synthetic corpus the pretraining used (its test split holds speakers never heard in training; the
pretraining never saw them either). N defaults to 2% of the training utterances. The held-out CER is logged
every ``--eval-every-seconds`` of training, which gives the learning curves (CER against training seconds);
at the end each model is evaluated on the whole held-out split. Written to ``--out``: one fine-tuning run
directory per model (metrics, checkpoint, plots), ``results.md`` (the table), ``results.json`` and
``learning_curves.png``.

Settings: ``tinyw2v2 finetune``'s defaults (its SpecAugment is tuned for few labels: time masking 0.65,
channel masking 0.25) for the two low-resource runs; the all-labels run gets light masking (time 0.05, no
channel masking; ``--all-labels-set``), because heavy masking keeps a randomly initialised model in the
all-blank phase for most of a short budget (3-minute runs: CER 1.000 with heavy masking, 0.67 with light),
while for 40 labels heavy masking is the better baseline (scratch-N: CER 0.75 with heavy, 0.80 with light).
``--same-settings`` gives all three runs the same settings.

``--threads N`` sets the BLAS thread count before NumPy loads (on a shared 2-core machine, 1 thread per job is
often several times faster than 2 contending ones). ``--jobs J`` runs up to J fine-tunings at once, each in its
own process (with ``--threads 1 --jobs 2`` on 2 cores: pretrained and scratch-N side by side, one core each,
then scratch-all). Wall-clock budgets make the result depend on the machine
and its load: all three runs suffer alike only if the load is steady, so run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RUNS = ("pretrained", "scratch-N", "scratch-all")
# with every label, heavy SpecAugment (the low-resource default) keeps a randomly initialised model in the
# all-blank phase for most of a short budget; transformers' default light masking suits that regime
ALL_LABELS_SET = ("mask_time_prob=0.05", "mask_feature_prob=0.0")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint",
                   help="a tinyw2v2 pretraining checkpoint (runs/.../checkpoint.npz) or its run directory")
    p.add_argument("--minutes", type=float, default=10.0, help="training-time budget of each run (10)")
    p.add_argument("--labels", type=float, default=0.02,
                   help="labelled utterances for the first two runs: a count (40) or a fraction (0.02, default)")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--corpus-dir", help="the synthetic corpus (default: the one the pretraining used)")
    p.add_argument("--out", default="runs/low_resource")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of every run (finetune's default)")
    p.add_argument("--scratch-lr", type=float, default=None, help="peak learning rate of the two scratch runs")
    p.add_argument("--eval-every-seconds", type=float, default=None, help="learning-curve points (budget / 12)")
    p.add_argument("--eval-utterances", type=int, default=200, help="held-out utterances for the curves (200)")
    p.add_argument("--final-utterances", type=int, default=0, help="held-out utterances for the table (0 = all)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fine-tuning config override (repeatable)")
    p.add_argument("--all-labels-set", action="append", metavar="KEY=VALUE",
                   help="overrides for the scratch-all run only (default: " + " ".join(ALL_LABELS_SET) + ")")
    p.add_argument("--same-settings", action="store_true",
                   help="give scratch-all the low-resource masking too (no --all-labels-set defaults)")
    p.add_argument("--only", action="append", choices=RUNS, help="run only these (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (set before NumPy loads)")
    p.add_argument("--jobs", type=int, default=1,
                   help="fine-tunings run at once, one process each (1: one after the other)")
    p.add_argument("--progress", action="store_true", help="progress bars")
    return p.parse_args(argv)


def _finetune_one(name: str, kwargs: dict) -> dict:
    """One fine-tuning (in a worker process under --jobs): the figures the table needs."""
    from tinyw2v2.train.finetune import FinetuneArgs, finetune

    print(f"\n=== {name}: {kwargs['minutes']:g} min of training ===", flush=True)
    t0 = time.perf_counter()
    r = finetune(FinetuneArgs(**kwargs))
    cer = r["metrics"].get("eval_cer", float("nan"))
    print(f"{name}: {r['metrics'].get('step')} steps, held-out CER {cer:.3f}", flush=True)
    return {"labelled_utterances": r["labelled_utterances"], "train_seconds": r["train_seconds"],
            "steps": r["metrics"].get("step"), "wall_seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(a.threads)
    from tinyw2v2.cli import parse_overrides
    from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
    from tinyw2v2 import optim
    from tinyw2v2.text import Vocabulary
    from tinyw2v2.io import read_checkpoint, save_checkpoint
    from tinyw2v2.train.evaluate import evaluate_utterances, load_ctc_model, load_labelled_utterances
    from tinyw2v2.train.finetune import read_metrics
    from tinyw2v2.data import AudioDataset

    ckpt = Path(a.checkpoint)
    if ckpt.is_dir():
        ckpt = ckpt / "checkpoint.npz"
    if not ckpt.is_file():
        print(f"error: {ckpt}: no pretraining checkpoint", file=sys.stderr)
        return 2
    state, _, meta = read_checkpoint(ckpt)
    if any(k.startswith("lm_head.") for k in state):
        print(f"error: {ckpt} is a fine-tuning checkpoint; pass a pretraining one", file=sys.stderr)
        return 2
    pre_args = meta.get("args", {})
    if a.corpus_dir is None and pre_args.get("data", "synthetic") != "synthetic":
        print("error: the pretraining did not use the synthetic corpus; pass --corpus-dir", file=sys.stderr)
        return 2
    corpus = Path(a.corpus_dir or pre_args.get("corpus_dir", "data/synthetic"))
    if not (corpus / "train").is_dir() or not (corpus / "test").is_dir():
        print(f"error: {corpus}: no synthetic corpus (train/ and test/); pass --corpus-dir", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = a.minutes * 60.0
    eval_every = a.eval_every_seconds or max(budget / 12.0, 1.0)

    # one alphabet for every run: the characters of the training transcripts (text, not labelled audio)
    train_items = AudioDataset.from_path(corpus / "train").items
    vocab = Vocabulary.build([it.transcript for it in train_items if it.transcript is not None])
    vocab.save(out / "vocab")
    n_all = sum(it.transcript is not None for it in train_items)

    # the same architecture, randomly initialised (the same loading path as the pretrained weights)
    config = Wav2Vec2Config.from_dict(meta["config"])
    scratch = out / "random-init" / "checkpoint.npz"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    model = Wav2Vec2ForPreTraining(config, seed=a.seed)
    save_checkpoint(scratch, model, optim.AdamW(model.parameters()), {"config": config.to_dict(), "step": 0,
                                                                       "args": {"note": "random initialisation"}})
    del model

    overrides = parse_overrides(a.set)
    common = dict(data=str(corpus / "train"), eval_data=str(corpus / "test"), vocab=str(out / "vocab"),
                  overrides=overrides, steps=10 ** 9, minutes=a.minutes, eval_every=0,
                  eval_every_seconds=eval_every, eval_utterances=a.eval_utterances, checkpoint_every=10 ** 9,
                  subset_seed=a.subset_seed, seed=a.seed, progress=a.progress, log_every=25)
    lr = {} if a.lr is None else {"lr": a.lr}
    scratch_lr = {"lr": a.scratch_lr} if a.scratch_lr is not None else lr
    all_set = [] if a.same_settings else (a.all_labels_set or list(ALL_LABELS_SET))
    all_overrides = dict(overrides, **parse_overrides(all_set))
    plans = {
        "pretrained": dict(init=str(ckpt), labels=a.labels, **lr),
        "scratch-N": dict(init=str(scratch), labels=a.labels, **scratch_lr),
        "scratch-all": dict(init=str(scratch), labels=None, **dict(scratch_lr, overrides=all_overrides)),
    }
    names = [n for n in RUNS if not a.only or n in a.only]
    kwargs = {n: dict(out=str(out / n), **dict(common, **plans[n])) for n in names}
    if a.jobs > 1:  # separate processes (spawned: each loads NumPy with the thread count set above)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=a.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {n: pool.submit(_finetune_one, n, kwargs[n]) for n in names}
            done = {n: f.result() for n, f in futures.items()}
    else:
        done = {n: _finetune_one(n, kwargs[n]) for n in names}
    results = {n: dict(done[n], overrides=plans[n].get("overrides", overrides)) for n in names}

    # final: every model on the whole held-out split (or --final-utterances of it)
    utts, _ = load_labelled_utterances(corpus / "test", vocab, limit=a.final_utterances or None)
    for name in results:
        model, v = load_ctc_model(out / name)
        r = evaluate_utterances(model, v, utts)
        results[name].update(cer=r["cer"], wer=r["wer"], loss=r["loss"], eval_utterances=r["utterances"])
        results[name]["curve"] = [(m["seconds"], m["eval_cer"], m["eval_wer"])
                                  for m in read_metrics(out / name / "metrics.jsonl") if "eval_cer" in m]

    speakers = sorted({u["speaker"] for u in utts})
    lines = [f"Low-resource fine-tuning on the synthetic corpus ({corpus}): {a.minutes:g} min of training each, "
             f"pretraining checkpoint {ckpt} (step {meta.get('step')}); held-out: {len(utts)} utterances of "
             f"speakers {', '.join(speakers)} (never heard in pretraining or fine-tuning); {n_all} labelled "
             "training utterances in all.", "",
             "| model | labelled utterances | masking (time / channel) | steps | CER | WER |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        cfg = json.loads((out / name / "config.json").read_text())
        r["mask_time_prob"], r["mask_feature_prob"] = cfg["mask_time_prob"], cfg["mask_feature_prob"]
        masks = f"{cfg['mask_time_prob']:g} / {cfg['mask_feature_prob']:g}"
        lines.append(f"| {name} | {r['labelled_utterances']} | {masks} | {r['steps']} | {r['cer']:.3f} | "
                     f"{r['wer']:.3f} |")
    table = "\n".join(lines)
    print("\n" + table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"checkpoint": str(ckpt), "minutes": a.minutes, "corpus": str(corpus),
                                                  "runs": results}, indent=2))

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in results.items():
        s, cer, wer = zip(*r["curve"]) if r["curve"] else ((), (), ())
        label = f"{name} ({r['labelled_utterances']} labels)"
        axes[0].plot(s, cer, marker="o", ms=3, label=label)
        axes[1].plot(s, wer, marker="o", ms=3, label=label)
    for ax, what in zip(axes, ("CER", "WER")):
        ax.set_xlabel("training seconds"), ax.set_ylabel(f"held-out {what}"), ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3), ax.legend()
        ax.set_title(f"held-out {what} (unseen speakers) vs training time")
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=100)
    plt.close(fig)
    print(f"\ntable: {out / 'results.md'}\nplot: {out / 'learning_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
