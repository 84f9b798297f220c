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
# and then does three things in about a minute: gradient-checks a few ops, pretrains a toy model on the
# built-in synthetic speech corpus, and looks at the training curves. The rest of the series explains every
# piece; [`docs/notebooks.md`](../docs/notebooks.md) lists it.

# %%
import json
from pathlib import Path

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
# ## 2. Pretrain for a minute
#
# `pretrain` generates a small synthetic corpus the first time (speech-like audio: vowels from a glottal pulse
# train through formant filters, fricatives, stops, silence; speakers that differ in pitch, vocal-tract size,
# rate, loudness, channel and noise), then trains the `tiny` preset (about 1M parameters) with the contrastive
# task. The command line does the same: `tinyw2v2 pretrain --steps 150`.

# %%
from tinyw2v2.train.pretrain import PretrainArgs, pretrain, read_metrics

STEPS = 150   # a minute on a laptop CPU; docs/results.md reports a 20-minute run (--steps 3300)
args = PretrainArgs(steps=STEPS, device=device, out="../runs/notebook01", corpus_dir="../data/synthetic-small",
                    corpus_speakers=8, corpus_heldout=2, corpus_utterances=40, eval_every=50, log_every=10,
                    eval_utterances=24, checkpoint_every=STEPS, progress=False)
result = pretrain(args)
print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result["metrics"].items()}, indent=1))

# %% [markdown]
# ## 3. Look at the curves
#
# The run wrote `metrics.jsonl` (one JSON line per logged step) and a PNG of the curves. Masked-frame accuracy
# starts at chance, 1/(K+1) with K = 20 negatives. A minute is not enough to leave the initial plateau (the loss
# sits near log 21 ≈ 3.04 for the first 300 or so steps); after it, the context network learns to pick the true
# quantised frame among the distractors, and the eval-mode accuracy on speakers never heard in training passes 0.5
# within 1,200 steps (notebook 7 and `docs/results.md`).

# %%
from IPython.display import Image, display

display(Image(filename=result["plots"][0]))
records = read_metrics(Path(args.out) / "metrics.jsonl")
evals = [(r["step"], round(r["eval_accuracy"], 3)) for r in records if "eval_accuracy" in r]
print("held-out eval accuracy by step:", evals, " chance:", round(1 / 21, 3))

# %% [markdown]
# ## Try this
#
# - Set `STEPS = 600` and watch the eval accuracy climb further (notebook 7 goes deeper).
# - Run `tinyw2v2 analyze ../runs/notebook01` in a terminal: do the learnt codes line up with phones?
# - Point `PretrainArgs(data=...)` at a folder of your own 16 kHz wav/flac files.
