"""Leaving the plateau: how soon does a toy wav2vec 2.0 start to learn, one factor at a time?

    python benchmarks/plateau.py [--rows NAME ...] [--jobs 2] [--threads 1] [--steps 1000] [--out runs/plateau]
    python benchmarks/plateau.py --table            # the table of the runs already made

Every row is one ``tinyw2v2 pretrain`` run on the default synthetic corpus: a recipe (``OLD``, the tiny preset's
recipe before the study, spelled out as flags so that it stays reproducible; or ``NEW``, today's defaults) plus
the row's change. Each run logs the held-out eval-mode accuracy (every held-out utterance, docs/training.md)
every ``--eval-every`` steps; the table gives the first logged step at which it reaches 0.2 (chance is
1/(K+1) = 0.048 for K = 20), the accuracy at 400 and at 1,000 steps, and the loss at 1,000 steps.
Runs already finished in ``--out`` are read, not repeated (``--force`` repeats them). Results: docs/results.md,
"Leaving the plateau".
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


def _set(**values) -> list:
    out = []
    for k, v in values.items():
        out += ["--set", f"{k}={v}"]
    return out


# The tiny preset's recipe before this study (fairseq BASE's regularisation at toy width), as explicit flags.
OLD_CONFIG = dict(hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1,
                  feat_quantizer_dropout=0.1, layerdrop=0.05, feature_grad_mult=0.1, feature_penalty_weight=10.0,
                  mask_time_prob=0.65, mask_time_length=10, num_negatives=20, num_codevector_groups=2,
                  num_codevectors_per_group=32, codevector_dim=64)
OLD = ["--lr", "1e-3", "--warmup", "0.08", "--schedule", "linear", "--batch-seconds", "24", "--crop-seconds", "2",
       "--max-temperature", "2", "--min-temperature", "0.5", "--anneal-fraction", "1", *_set(**OLD_CONFIG)]
NEW: list = []          # today's defaults
LINEAR = ["--schedule", "linear"]   # the main-job rows below that decay the lr from the warm-up on
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0, feat_quantizer_dropout=0.0)


@dataclass
class Row:
    name: str
    factor: str
    change: str
    args: list
    base: str = "old"            # "old" | "new"
    seeds: tuple = (0,)
    steps: int | None = None     # the row's own run length (the main-job rows); None: --steps

    def command(self, seed: int, steps: int, eval_every: int, threads: int, out: Path) -> list:
        recipe = OLD if self.base == "old" else NEW
        steps = self.steps or steps
        return ["tinyw2v2", "pretrain", *recipe, *self.args, "--steps", str(steps), "--seed", str(seed),
                "--eval-every", str(eval_every), "--log-every", str(eval_every), "--checkpoint-every", str(steps),
                "--threads", str(threads), "--no-progress", "--out", str(out)]


ROWS = [
    Row("old", "recipe", "the tiny preset's recipe before this study", [], seeds=(0, 1)),
    Row("grad_scale_1", "CNN gradient scale", "feature_grad_mult 1 (not 0.1)", _set(feature_grad_mult=1.0)),
    Row("no_dropout", "dropout / LayerDrop", "dropouts 0 (not 0.1)", _set(**NO_DROPOUT)),
    Row("no_layerdrop", "dropout / LayerDrop", "LayerDrop 0 (not 0.05)", _set(layerdrop=0.0)),
    Row("no_dropout_layerdrop", "dropout / LayerDrop", "dropouts and LayerDrop 0", _set(**NO_DROPOUT, layerdrop=0.0)),
    Row("penalty_0", "feature penalty", "feature penalty weight 0 (not 10)", _set(feature_penalty_weight=0.0)),
    Row("penalty_1", "feature penalty", "feature penalty weight 1", _set(feature_penalty_weight=1.0)),
    Row("warmup_2pct", "warm-up and peak lr", "warm-up 2% of the steps (not 8%)", ["--warmup", "0.02"]),
    Row("warmup_25pct", "warm-up and peak lr", "warm-up 25% of the steps", ["--warmup", "0.25"]),
    Row("lr_5e-4", "warm-up and peak lr", "peak lr 5e-4 (not 1e-3)", ["--lr", "5e-4"]),
    Row("lr_2e-3", "warm-up and peak lr", "peak lr 2e-3", ["--lr", "2e-3"]),
    Row("tau_start_1", "Gumbel temperature", "start at 1 (not 2)", ["--max-temperature", "1"]),
    Row("tau_end_0.1", "Gumbel temperature", "end at 0.1 (not 0.5)", ["--min-temperature", "0.1"]),
    Row("tau_300_steps", "Gumbel temperature", "2 -> 0.5 over the first 300 steps (not the whole run)",
        ["--anneal-steps", "300"]),
    Row("tau_fairseq", "Gumbel temperature", "fairseq's per-step decay 0.999995 (2 -> 1.99 in 1,000 steps)",
        ["--anneal-steps", "277258"]),
    Row("mask_0.5", "masking", "mask_prob 0.5 (not 0.65)", _set(mask_time_prob=0.5)),
    Row("span_5", "masking", "span length 5 (not 10)", _set(mask_time_length=5)),
    Row("negatives_10", "negatives", "K = 10 negatives (not 20)", _set(num_negatives=10)),
    Row("negatives_50", "negatives", "K = 50 negatives", _set(num_negatives=50)),
    Row("codebook_2x16", "codebook G x V", "2 x 16 codewords (not 2 x 32)", _set(num_codevectors_per_group=16)),
    Row("codebook_2x64", "codebook G x V", "2 x 64 codewords", _set(num_codevectors_per_group=64)),
    Row("codebook_1x64", "codebook G x V", "1 x 64 codewords", _set(num_codevector_groups=1, num_codevectors_per_group=64)),
    Row("batch_12s", "batch and crop", "12 s of audio per batch (not 24 s)", ["--batch-seconds", "12"]),
    Row("crop_1s", "batch and crop", "crops of 1 s (24 crops, not 12 of 2 s)", ["--crop-seconds", "1"]),
    Row("crop_3s", "batch and crop", "crops of up to 3 s (8 crops)", ["--crop-seconds", "3"]),
    Row("init_codevectors_normal", "initialisation", "codevectors N(0, 1) (not U[0, 1))", _set(codevector_init="normal")),
    Row("init_quantizer_std_0.125", "initialisation", "quantiser weight_proj std 1/sqrt(C) = 0.125 (not 1)",
        _set(quantizer_weight_std=0.125)),
    Row("init_projections_normal", "initialisation", "projections N(0, 0.02) (not U(+-1/sqrt(fan_in)))",
        _set(projection_init="normal")),
    # combinations, each adding one change to the row above it
    Row("A", "combination", "penalty 0 + dropouts 0", _set(feature_penalty_weight=0.0, **NO_DROPOUT)),
    Row("B", "combination", "A + CNN gradient scale 1",
        _set(feature_penalty_weight=0.0, **NO_DROPOUT, feature_grad_mult=1.0)),
    Row("C", "combination", "B + peak lr 2e-3",
        _set(feature_penalty_weight=0.0, **NO_DROPOUT, feature_grad_mult=1.0) + ["--lr", "2e-3"]),
    Row("D", "combination", "C + crops of 1 s (24 per batch)",
        _set(feature_penalty_weight=0.0, **NO_DROPOUT, feature_grad_mult=1.0) + ["--lr", "2e-3", "--crop-seconds", "1"],
        seeds=(0, 1)),
    Row("F", "combination", "D with 12 s per batch (12 crops of 1 s): half the work per step (today's defaults, lr decayed)",
        _set(feature_penalty_weight=0.0, **NO_DROPOUT, feature_grad_mult=1.0)
        + ["--lr", "2e-3", "--crop-seconds", "1", "--batch-seconds", "12"], seeds=(0, 1)),
    # The README's main job: which batch, run length and lr learn most in about 2-3 minutes of training? Every row
    # spells out its batch (today's defaults otherwise: row F's recipe); rows of one group cost the same compute.
    Row("b24_300", "main job", "24 s per batch", ["--batch-seconds", "24", *LINEAR], base="new", steps=300),
    Row("b16_460", "main job", "16 s per batch", ["--batch-seconds", "16", *LINEAR], base="new", steps=460),
    Row("b12_600", "main job", "12 s per batch", ["--batch-seconds", "12", *LINEAR], base="new", steps=600, seeds=(0, 1)),
    Row("b8_850", "main job", "8 s per batch", ["--batch-seconds", "8", *LINEAR], base="new", steps=850),
    Row("b12_600_lr3e-3", "main job", "12 s per batch, peak lr 3e-3", ["--batch-seconds", "12", *LINEAR, "--lr", "3e-3"],
        base="new", steps=600),
    Row("b8_850_lr3e-3", "main job", "8 s per batch, peak lr 3e-3", ["--batch-seconds", "8", *LINEAR, "--lr", "3e-3"],
        base="new", steps=850),
    Row("b12_650_lr1.5e-3", "main job", "12 s per batch, peak lr 1.5e-3", ["--batch-seconds", "12", *LINEAR, "--lr", "1.5e-3"],
        base="new", steps=650),
    Row("b8_900_lr1.5e-3", "main job", "8 s per batch, peak lr 1.5e-3", ["--batch-seconds", "8", *LINEAR, "--lr", "1.5e-3"],
        base="new", steps=900),
    Row("b12_650_tau_start_1", "main job", "12 s per batch, temperature 1 -> 0.5",
        ["--batch-seconds", "12", *LINEAR, "--max-temperature", "1"], base="new", steps=650),
    Row("b12_600_warmup_4pct", "main job", "12 s per batch, warm-up 4%", ["--batch-seconds", "12", *LINEAR, "--warmup", "0.04"],
        base="new", steps=600),
    Row("b12_600_no_layerdrop", "main job", "12 s per batch, LayerDrop 0",
        ["--batch-seconds", "12", *LINEAR, *_set(layerdrop=0.0)], base="new", steps=600),
    Row("b12_600_codebook_2x16", "main job", "12 s per batch, 2 x 16 codewords",
        ["--batch-seconds", "12", *LINEAR, *_set(num_codevectors_per_group=16)], base="new", steps=600),
    Row("b12_800", "main job", "12 s per batch", ["--batch-seconds", "12", *LINEAR], base="new", steps=800, seeds=(0, 1, 2)),
    Row("b12_850", "main job", "12 s per batch", ["--batch-seconds", "12", *LINEAR], base="new", steps=850),
    Row("b8_1200", "main job", "8 s per batch", ["--batch-seconds", "8", *LINEAR], base="new", steps=1200),
    Row("b12_900", "main job", "12 s per batch, lr decayed linearly to 0", ["--batch-seconds", "12", *LINEAR], base="new",
        steps=900, seeds=(0, 1)),
    # The last rows keep the peak lr after the warm-up: a run of minutes ends far from any minimum, and the linear
    # decay spends its last third on ever smaller steps. tri_stage (today's default) holds it to 80% of the run,
    # then decays it to 1% (fairseq's tri_stage); up to step 720 its runs are the constant ones, step for step.
    Row("b12_900_constant", "main job", "12 s per batch, lr held after the warm-up",
        ["--batch-seconds", "12", "--schedule", "constant"], base="new", steps=900, seeds=(0, 1)),
    Row("b12_900_tri_stage", "main job", "12 s per batch, lr held, then decayed over the last 20%: the README's "
        "main job", ["--batch-seconds", "12"], base="new", steps=900, seeds=(0, 1)),
]
BY_NAME = {r.name: r for r in ROWS}


def run_dir(out: Path, row: Row, seed: int) -> Path:
    return out / (row.name if seed == 0 else f"{row.name}-seed{seed}")


def finished(path: Path, steps: int) -> bool:
    log = path / "metrics.jsonl"
    if not log.exists():
        return False
    lines = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    return bool(lines) and lines[-1]["step"] == steps and "eval_accuracy" in lines[-1]


def run_one(row: Row, seed: int, a) -> Path:
    path = run_dir(Path(a.out), row, seed)
    if finished(path, row.steps or a.steps) and not a.force:
        return path
    cmd = row.command(seed, a.steps, a.eval_every, a.threads, path)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    t0 = time.perf_counter()
    with open(Path(a.out) / f"{path.name}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "tinyw2v2.cli", *cmd[1:]], check=True, env=env, stdout=log,
                       stderr=subprocess.STDOUT)
    print(f"{path.name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def summarise(path: Path, threshold: float = 0.2) -> dict:
    records = [json.loads(l) for l in (path / "metrics.jsonl").read_text().splitlines() if l.strip()]
    evals = {r["step"]: r for r in records if "eval_accuracy" in r}
    first = next((s for s in sorted(evals) if evals[s]["eval_accuracy"] >= threshold), None)
    last = max(evals)
    timed = [r for r in records if r["step"] > 0]
    return {"steps_to_0.2": first, "acc_400": evals.get(400, {}).get("eval_accuracy"),
            "acc_1000": evals[last]["eval_accuracy"], "loss_1000": evals[last]["eval_loss"],
            "steps_per_second": timed[-1]["step"] / timed[-1]["seconds"], "last_step": last,
            "eval_frames": evals[last].get("eval_frames")}


# Training steps per second of today's recipe by batch size, 1 and 2 BLAS threads, best of 2, on an idle 2-core
# machine of the project's kind (2026-12-07; docs/performance.md, "Threads", for 12 s):
#   python benchmarks/bench_threads.py --threads 1 2 --steps 80 --rounds 2 -- --batch-seconds B
STEPS_PER_SECOND = {8: (7.36, 8.22), 12: (5.12, 5.79), 16: (4.06, 4.88), 24: (2.56, 3.00)}


def table(rows, a) -> str:
    """The one-factor table (rows run for --steps), then the main-job table (rows with their own length)."""
    factor = ["| row | factor | change | flags after the recipe's | steps to 0.2 | accuracy at 400 | accuracy at 1,000 "
              "| loss at 1,000 |", "|---|---|---|---|---|---|---|---|"]
    main = ["| row | change | flags after the defaults | steps | training time, 1 / 2 threads | steps to 0.2 | "
            "accuracy at the end | loss at the end |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        done = [run_dir(Path(a.out), row, s) for s in row.seeds
                if finished(run_dir(Path(a.out), row, s), row.steps or a.steps)]
        if not done:
            continue
        res = [summarise(p) for p in done]

        def fmt(key, f, none="–"):
            return " / ".join(none if r[key] is None else f.format(r[key]) for r in res)

        flags = f"`{shlex.join(row.args)}`" if row.args else "–"
        if row.steps is None:
            factor.append(f"| `{row.name}` | {row.factor} | {row.change} | {flags} | {fmt('steps_to_0.2', '{}', 'never')} | "
                          f"{fmt('acc_400', '{:.3f}')} | {fmt('acc_1000', '{:.3f}')} | {fmt('loss_1000', '{:.2f}')} |")
        else:
            batch = int(float(row.args[row.args.index("--batch-seconds") + 1]))
            one, two = (row.steps / r for r in STEPS_PER_SECOND[batch])
            main.append(f"| `{row.name}` | {row.change} | {flags} | {row.steps} | {one:.0f} s / {two:.0f} s | "
                        f"{fmt('steps_to_0.2', '{}', 'never')} | {fmt('acc_1000', '{:.3f}')} | "
                        f"{fmt('loss_1000', '{:.2f}')} |")
    return "\n".join(factor + ([""] + main if len(main) > 2 else []))


def gradients(seed: int = 0, batches: int = 4) -> str:
    """At initialisation, under the old recipe: the CNN's gradient from the contrastive + diversity loss and from
    the feature penalty, separately, and the share of CNN weights whose Adam update the penalty decides (where its
    gradient is the larger of the two, the sum has its sign, and Adam steps by the sign at a fixed size)."""
    import numpy as np

    from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
    from tinyw2v2.train.pretrain import BatchSampler, PretrainArgs, load_waveforms, prepare_corpus

    config = Wav2Vec2Config.tiny(**OLD_CONFIG)
    waves, _ = load_waveforms(prepare_corpus(PretrainArgs()) / "train", config.min_samples_to_mask(), False, False)
    sampler = BatchSampler(waves, 12, 32000, seed)
    model = Wav2Vec2ForPreTraining(config, seed=seed).train()
    cnn = [p for name, p in model.named_parameters() if name.startswith("wav2vec2.feature_extractor.")]
    lines = ["| batch | CNN gradient norm, contrastive + 0.1 diversity | CNN gradient norm, 10 x penalty | "
             "CNN weights whose Adam update the penalty decides |", "|---|---|---|---|"]
    for b in range(batches):
        grads = []
        for part in ("task", "penalty"):
            model.manual_seed([seed, b, 1])
            out = model(sampler(b))
            n = out.num_masked
            loss = (out.contrastive_loss + 0.1 * out.diversity_loss) * (1.0 / n) if part == "task" \
                else out.feature_penalty * config.feature_penalty_weight
            model.zero_grad()
            loss.backward()
            grads.append([np.asarray(p.grad, dtype=np.float64).ravel() for p in cnn])
        task, pen = (np.concatenate(g) for g in grads)
        share = float(np.mean(np.abs(pen) > np.abs(task)))
        lines.append(f"| {b} | {np.linalg.norm(task):.2e} | {np.linalg.norm(pen):.2e} | {share:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=sorted(BY_NAME), help="only these rows (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (one process each)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per run")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", dest="eval_every", type=int, default=50)
    parser.add_argument("--out", default="runs/plateau")
    parser.add_argument("--force", action="store_true", help="repeat runs that are already finished")
    parser.add_argument("--table", action="store_true", help="only print the table of the finished runs")
    parser.add_argument("--commands", action="store_true", help="only print each row's tinyw2v2 command")
    parser.add_argument("--gradients", action="store_true",
                        help="only print the CNN's gradient from the task and from the feature penalty at init")
    a = parser.parse_args(argv)
    if a.gradients:
        print(gradients())
        return 0
    rows = [BY_NAME[n] for n in a.rows] if a.rows else ROWS
    Path(a.out).mkdir(parents=True, exist_ok=True)
    if a.commands:
        for row in rows:
            for s in row.seeds:
                cmd = row.command(s, a.steps, a.eval_every, a.threads, run_dir(Path(a.out), row, s))
                print(shlex.join(cmd))
        return 0
    if not a.table:
        jobs = [(row, s) for row in rows for s in row.seeds]
        with ThreadPoolExecutor(max_workers=a.jobs) as pool:
            for f in [pool.submit(run_one, row, s, a) for row, s in jobs]:
                f.result()
    text = table(rows, a)
    print(text)
    (Path(a.out) / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
