# %% [markdown]
# # 8. Pretraining a toy wav2vec 2.0
#
# Everything from notebooks 2–7 in one loop. Each step takes a batch of crops, masks about a third of the frames
# (span masking, notebook 6: spans of 10 frames in crops of 49 frames; 35% at 12 crops a batch), asks the Transformer to pick each masked frame's quantised target among K = 20
# distractors from the same utterance (the contrastive loss), adds the diversity loss that keeps the codebooks
# in use (notebook 5), backpropagates through the whole model with the hand-written backwards, and takes an
# AdamW step. The learning rate warms up, holds its peak, and decays over the last fifth of the run (fairseq's tri-stage), and the Gumbel temperature anneals from 2 to 0.5.
#
# Then the question the paper cares about: do the discrete codes the quantiser learns line up with phones?
# The synthetic corpus comes with frame-level phone alignments, so we can measure it (PNMI, as in HuBERT).

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from tinyw2v2.train.analyze import analyze
from tinyw2v2.train.pretrain import PretrainArgs, pretrain, read_metrics

device = "cpu"  # or "cuda"
STEPS = 600     # under 2 minutes of training on two CPU cores; docs/results.md runs the same recipe for 15 minutes

# %% [markdown]
# ## Train
#
# The same function as `tinyw2v2 pretrain`, with the tiny preset's short-run recipe: batches of 12 crops of up to
# 1 s, peak learning rate 2e-3, no feature penalty and no dropout. Every random choice of step s is seeded by
# (seed, s), so a run stopped and resumed with `resume=True` gives exactly the same numbers. The corpus is the
# default synthetic one: 20 speakers to train on, 4 held out.

# %%
args = PretrainArgs(steps=STEPS, device=device, out="../runs/notebook08", corpus_dir="../data/synthetic",
                    eval_every=100, log_every=10, checkpoint_every=STEPS, progress=False)
result = pretrain(args)
records = read_metrics(Path(args.out) / "metrics.jsonl")
last = result["metrics"]
print(f"held-out accuracy {last['eval_accuracy']:.3f} (chance {1 / 21:.3f}, {result['initial']['eval_accuracy']:.3f} "
      f"before training) over {last['eval_frames']:,} masked frames of {result['eval_utterances']} utterances")

# %% [markdown]
# ## Curves
#
# Training-batch accuracy is measured with Gumbel noise on; the held-out accuracy in eval mode (argmax codes,
# fixed masks and negatives) on every utterance of the speakers the model never heard. Perplexity counts how many
# codes are effectively in use; if it fell below G·V/4 the codebook would be collapsing, and accuracy would mean
# little, because negatives identical to the positive are masked out of the loss.

# %%
def series(key):
    pts = [(r["step"], r[key]) for r in records if key in r]
    return np.array(pts).T if pts else (np.array([]), np.array([]))


fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
axes[0].plot(*series("loss"), label="loss"); axes[0].plot(*series("contrastive_loss"), label="contrastive")
axes[0].plot(*series("eval_loss"), "o-", label="held-out (eval)")
axes[0].axhline(math.log(21), color="gray", ls="--", label="ln 21: all candidates alike")
axes[0].legend(); axes[0].set_title("loss per masked frame")
axes[1].plot(*series("accuracy"), label="training batch"); axes[1].plot(*series("eval_accuracy"), "o-", label="held-out, eval mode")
axes[1].axhline(1 / 21, color="gray", ls="--", label="chance 1/(K+1)"); axes[1].legend(); axes[1].set_title("masked-frame accuracy")
axes[2].plot(*series("code_perplexity"), label="code"); axes[2].plot(*series("prob_perplexity"), label="probability")
axes[2].axhline(64 / 4, color="gray", ls="--", label="G·V/4"); axes[2].legend(); axes[2].set_title("codebook perplexity (G·V = 64)")
for ax in axes:
    ax.set_xlabel("step"); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Do the codes mean phones?
#
# For every frame of the held-out speakers we take the quantiser's eval-mode code (argmax in each of the G = 2
# codebooks, combined into one id) and the phone at that frame. From the joint counts p(phone, code):
#
# - phone purity $= \sum_z \max_y p(y, z)$: is each code mostly one phone?
# - cluster purity $= \sum_y \max_z p(y, z)$: is each phone mostly one code?
# - PNMI $= I(y; z) / H(y)$: the share of the phone's uncertainty that the code removes.
#
# Mutual information estimated from finite counts is biased upwards, and the more codes are in use the more: a
# random network spreads the frames over hundreds of codes, so its PNMI is far from zero even though it knows
# nothing. The same codes against *shuffled* phone labels measure that bias (the chance level), and the figure to
# compare is **PNMI minus chance**. Three models, on the same held-out frames: this network at its random
# initialisation, after this notebook's run, and after the 15-minute run of the tiny preset's earlier recipe
# (fairseq BASE's regularisation), shipped in [`notebooks/assets/`](assets/README.md).

# %%
ours = analyze(args.out, max_utterances=120, device=device)
shipped = analyze("assets/tiny-pretrained", data="../data/synthetic/test", max_utterances=120, device=device,
                  out_dir="../runs/notebook08-shipped")
rows = [("random initialisation", ours["results"]["random init"]), (f"this run ({STEPS} steps)", ours["results"]["trained"]),
        ("earlier recipe, 15 min", shipped["results"]["trained"])]
print(f"{'model':<24}{'PNMI':>7}{'chance':>8}{'PNMI - chance':>15}{'phone purity':>14}{'codes used':>12}")
for name, r in rows:
    print(f"{name:<24}{r['pnmi']:7.3f}{r['chance_pnmi']:8.3f}{r['pnmi'] - r['chance_pnmi']:15.3f}"
          f"{r['phone_purity']:14.3f}{r['codes_used']:12d}")
print(f"({ours['results']['frames']:,} frames of the held-out speakers)")

# %% [markdown]
# The co-occurrence matrices, p(code | phone) for the 64 most used codes, grouped by their most likely phone
# (the colour bar is the probability): at initialisation each phone is smeared over many codes; after training,
# phones get codes of their own.

# %%
from IPython.display import Image, display

display(Image(filename=ours["plot"]))

# %% [markdown]
# ## Try this
#
# - Set `STEPS = 4500` (15 minutes on one thread): that is `docs/results.md`'s "Fifteen minutes of pretraining";
#   compare its PNMI above chance with the earlier recipe's.
# - Set `diversity_loss_weight` to 0 through `PretrainArgs(overrides={"diversity_loss_weight": 0.0})`: what happens to
#   the code perplexity, and to PNMI minus chance, without the term that rewards using the whole codebook?
# - Train with `max_temperature=0.5` (no annealing): does the quantiser still learn phone-like codes?
