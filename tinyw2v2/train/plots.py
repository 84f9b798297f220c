"""PNG plots of a pretraining or a fine-tuning run, from its metrics.jsonl.

The plotters build a matplotlib ``Figure`` directly (no pyplot): saving a file never switches the backend or
touches the figures of a notebook that calls them."""
from __future__ import annotations

import math
from pathlib import Path

from .common import read_metrics


def series(records, key, x="step"):
    """(xs, ys) of the records that have both ``x`` and ``key``, for plotting."""
    pts = [(r[x], r[key]) for r in records if r.get(key) is not None and r.get(x) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _figure(log_path, out_dir, size, rows: int, cols: int):
    """(records of the log, the output directory, a Figure and its grid of axes)."""
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=size)
    return read_metrics(log_path), out_dir, fig, fig.subplots(rows, cols)


def _save(fig, path) -> list:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return [path]


WHERE_TO_LOOK = """Where to look first
- masked-frame accuracy: the held-out
  curve starts at chance, 1/(K+1), and
  should leave it and keep rising (the
  model tells each masked frame's true
  target from K distractors);
- loss: starts at ln(K+1), where every
  candidate looks alike, and should fall;
- codebook usage: should stay well above
  the G·V/4 line (no collapse).
A run that stays on both dashed lines
is on the initial plateau
(docs/results.md, "Leaving the plateau")."""


def plot_pretraining(log_path, out_dir, num_codevectors: int | None = None, num_negatives: int | None = None) -> list:
    """Seven panels: loss and its parts; masked-frame accuracy (training batch and held-out eval mode);
    code and probability perplexity; negatives identical to their positive; Gumbel temperature; learning rate;
    gradient norm; and an eighth that says where to look. Training figures are means over each logging interval.
    With ``num_negatives`` K, the loss and accuracy panels mark where every run starts: ln(K+1) and 1/(K+1)."""
    records, out_dir, fig, axes = _figure(log_path, out_dir, (20, 8), 2, 4)
    ax = axes[0, 0]
    for key in ("loss", "contrastive_loss", "diversity_loss", "eval_loss"):
        ax.plot(*series(records, key), label=key, marker="o" if key == "eval_loss" else None, ms=3)
    if num_negatives:
        ax.axhline(math.log(num_negatives + 1), color="gray", ls="--", lw=1,
                   label=f"ln(K+1) = {math.log(num_negatives + 1):.2f}: all candidates alike")
    ax.set_title("loss per masked frame"), ax.legend()
    ax = axes[0, 1]
    ax.plot(*series(records, "accuracy"), label="training (Gumbel noise, interval mean)")
    ax.plot(*series(records, "eval_accuracy"), marker="o", ms=3, label="held-out speakers, eval mode")
    if num_negatives:
        ax.axhline(1 / (num_negatives + 1), color="gray", ls="--", lw=1,
                   label=f"chance 1/(K+1) = {1 / (num_negatives + 1):.3f}")
    ax.set_ylim(0, 1), ax.set_title("masked-frame accuracy"), ax.legend()
    ax = axes[0, 2]
    ax.plot(*series(records, "code_perplexity"), label="code perplexity")
    ax.plot(*series(records, "prob_perplexity"), label="probability perplexity")
    ax.plot(*series(records, "eval_code_perplexity"), marker="o", ms=3, label="eval code perplexity")
    if num_codevectors:
        ax.axhline(num_codevectors / 4, color="gray", ls="--", lw=1, label="G·V / 4 (collapse line)")
    ax.set_title("codebook usage"), ax.legend()
    ax = axes[0, 3]
    for key, label in (("negatives_identical", "training, interval mean"),
                       ("negatives_identical_batch_max", "training, worst batch of the interval"),
                       ("eval_negatives_identical", "held-out speakers")):
        xs, ys = series(records, key)
        ax.plot(xs, [100 * y for y in ys], label=label, lw=1 if "max" in key else 1.5,
                marker="o" if key.startswith("eval") else None, ms=3)
    ax.axhline(5, color="gray", ls="--", lw=1, label="5%")
    ax.set_title("negatives identical to the positive (%)"), ax.legend()
    for ax, key, title in ((axes[1, 0], "temperature", "Gumbel temperature"), (axes[1, 1], "lr", "learning rate"),
                           (axes[1, 2], "grad_norm", "gradient norm (before clipping)")):
        ax.plot(*series(records, key))
        ax.set_title(title)
    axes[1, 3].axis("off")
    axes[1, 3].text(0.02, 0.98, WHERE_TO_LOOK, va="top", ha="left", fontsize=10, wrap=True,
                    transform=axes[1, 3].transAxes)
    for ax in axes.flat[:7]:
        ax.set_xlabel("step"), ax.grid(alpha=0.3)
    return _save(fig, out_dir / "pretraining.png")


def plot_finetuning(log_path, out_dir) -> list:
    """Four panels: training CTC loss per utterance (and held-out); held-out CER / WER against steps and against
    training seconds; learning rate and gradient norm."""
    records, out_dir, fig, axes = _figure(log_path, out_dir, (12, 8), 2, 2)
    ax = axes[0, 0]
    ax.plot(*series(records, "loss"), label="training (interval mean)")
    ax.plot(*series(records, "eval_loss"), marker="o", ms=3, label="held-out")
    ax.set_yscale("log"), ax.set_title("CTC loss per utterance"), ax.set_xlabel("step"), ax.legend()
    ax = axes[0, 1]
    ax.plot(*series(records, "eval_cer"), marker="o", ms=3, label="CER")
    ax.plot(*series(records, "eval_wer"), marker="o", ms=3, label="WER")
    ax.set_ylim(0, max(1.05, max(series(records, "eval_wer")[1] or [1]) + 0.05))
    ax.set_title("held-out error rates (greedy decoding)"), ax.set_xlabel("step"), ax.legend()
    ax = axes[1, 0]
    ax.plot(*series(records, "eval_cer", x="seconds"), marker="o", ms=3, label="CER")
    ax.plot(*series(records, "eval_wer", x="seconds"), marker="o", ms=3, label="WER")
    ax.set_ylim(0, 1.05), ax.set_title("held-out error rates vs training time"), ax.set_xlabel("seconds")
    ax.legend()
    ax = axes[1, 1]
    ax.plot(*series(records, "lr"), label="learning rate")
    ax.set_xlabel("step"), ax.set_title("learning rate (tri-stage) and gradient norm")
    ax2 = ax.twinx()
    ax2.plot(*series(records, "grad_norm"), color="tab:orange", alpha=0.6, label="gradient norm")
    ax.legend(loc="upper left"), ax2.legend(loc="upper right")
    for a in axes.flat:
        a.grid(alpha=0.3)
    return _save(fig, out_dir / "finetuning.png")
