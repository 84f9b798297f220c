# %% [markdown]
# # 1. Quick start
#
# tinyw2v2 is wav2vec 2.0 written from scratch on NumPy (CuPy on a GPU) with its own autograd engine. This
# notebook installs nothing new: it assumes the set-up from the README,
#
# ```bash
# python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"
# ```
#
# and then does three things in about two minutes: gradient-checks a few ops, pretrains a toy model on the
# built-in synthetic speech corpus until it has clearly learned something, and looks at the curves. The rest of
# the series explains every piece; [`docs/notebooks.md`](../docs/notebooks.md) lists it.

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import tinyw2v2 as tw

device = "cpu"  # or "cuda" on a machine with a GPU and CuPy installed

# %% [markdown]
# ## 1. Check a gradient
#
# Every op has a hand-written backward. `tw.gradcheck` compares it with central finite differences in float64
# and returns True, or raises an error naming the worst element. Here the exact GELU and a grouped, strided
# convolution:

# %%
import tinyw2v2.functional as F

rng = np.random.default_rng(0)
print(tw.gradcheck(F.gelu, rng.standard_normal((3, 7))))
print(tw.gradcheck(lambda x, w: F.conv1d(x, w, stride=2, groups=2), rng.standard_normal((2, 4, 11)),
                   rng.standard_normal((6, 2, 3))))

# %% [markdown]
# The whole catalogue (every op on several awkward shapes) is `tinyw2v2 check` on the command line.
#
# ## 2. Pretrain for two minutes
#
# `pretrain` generates the synthetic corpus the first time (speech-like audio: vowels from a glottal pulse train
# through formant filters, fricatives, stops, silence; 24 speakers who differ in pitch, vocal-tract size, rate,
# loudness, channel and noise; 4 of them are held out and never heard in training), then trains the `tiny` preset
# (about 1M parameters) with the contrastive task: for every masked frame, pick its quantised target among
# K = 20 distractors from the same utterance. This is the README's first command, `tinyw2v2 pretrain`, with its
# defaults: the tiny preset's short-run recipe.

# %%
from tinyw2v2.cli import pretraining_summary
from tinyw2v2.train.pretrain import PretrainArgs, pretrain, read_metrics

args = PretrainArgs(device=device, out="../runs/notebook01", corpus_dir="../data/synthetic", progress=False)
result = pretrain(args)
print(pretraining_summary(result))

# %% [markdown]
# ## 3. Look at the curves
#
# The run wrote `metrics.jsonl` (one JSON line per logged step) and a PNG of all its curves (`plots/`). The two that
# matter first: with K + 1 = 21 candidates that all look alike, the loss is ln 21 ≈ 3.04 and the accuracy is chance,
# 1/21. That is where every wav2vec 2.0 run starts (its *plateau*); a run that learns leaves both lines.

# %%
records = read_metrics(Path(args.out) / "metrics.jsonl")


def series(key):
    return np.array([(r["step"], r[key]) for r in records if key in r]).T


K = result["num_negatives"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
ax1.plot(*series("contrastive_loss"), label="training batches (interval mean)")
ax1.plot(*series("eval_loss"), "o-", label="held-out speakers, eval mode")
ax1.axhline(math.log(K + 1), color="gray", ls="--", label=f"ln(K+1) = {math.log(K + 1):.2f}: all candidates alike")
ax1.set_title("contrastive loss per masked frame"), ax1.legend()
ax2.plot(*series("accuracy"), label="training batches (Gumbel noise)")
ax2.plot(*series("eval_accuracy"), "o-", label="held-out speakers, eval mode")
ax2.axhline(1 / (K + 1), color="gray", ls="--", label=f"chance 1/(K+1) = {1 / (K + 1):.3f}")
ax2.set_title("masked-frame accuracy"), ax2.set_ylim(0, 1), ax2.legend()
for ax in (ax1, ax2):
    ax.set_xlabel("step"), ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
evals = [(r["step"], round(r["eval_accuracy"], 3)) for r in records if "eval_accuracy" in r]
print("held-out eval accuracy by step:", evals)

# %% [markdown]
# The plateau is short here because the tiny preset's recipe drops the regularisation that keeps a small, short
# run waiting on it (fairseq's feature penalty, dropout, the 0.1 gradient scale of the CNN) and uses a larger
# learning rate; [`docs/results.md`](../docs/results.md) ("Leaving the plateau") measures each factor, one at a
# time, and shows the earlier recipe still on its plateau after 300 steps.
#
# ## Try this
#
# - The earlier recipe, fairseq's BASE regularisation at toy width: `PretrainArgs(lr=1e-3, crop_seconds=2.0,
#   overrides=dict(feature_penalty_weight=10.0, feature_grad_mult=0.1, hidden_dropout=0.1, attention_dropout=0.1,
#   feat_proj_dropout=0.1, feat_quantizer_dropout=0.1), ...)`: how long does it stay on the plateau?
# - Run `tinyw2v2 analyze ../runs/notebook01` in a terminal: do the learnt codes line up with phones?
# - Point `PretrainArgs(data=...)` at a folder of your own audio files (any rate: they are resampled to 16 kHz).
