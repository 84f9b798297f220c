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
# and then, in three to four minutes: gradient-checks a few ops, plays the built-in synthetic speech, draws the
# model, pretrains it until it has clearly learned something, and looks at the curves. The rest of
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
# ## 2. Listen to the data
#
# The model learns from the built-in synthetic corpus: speech-like audio (vowels from a glottal pulse train
# through formant filters, nasals, fricatives, stops, silence) with the phone of every sample known. 24 speakers
# differ in pitch, vocal-tract size, speaking rate, loudness, channel and noise; 4 of them are held out and never
# heard in training. It is generated once (about 15 s) into `data/synthetic`, in LibriSpeech's layout. Two
# utterances, one from a training speaker and one from a held-out speaker:

# %%
from IPython.display import Audio, display
from scipy.signal import spectrogram
from tinyw2v2.data import PHONES, load_audio
from tinyw2v2.train.corpus import prepare_corpus
from tinyw2v2.train.pretrain import PretrainArgs

args = PretrainArgs(device=device, out="../runs/notebook01", corpus_dir="../data/synthetic", progress=False)
corpus = prepare_corpus(args)


def show_utterance(split, utterance):
    """Play one corpus utterance and draw its waveform and spectrogram with the phone alignment."""
    speaker, chapter, _ = utterance.split("-")
    folder = corpus / split / speaker / chapter
    words = dict(line.split(" ", 1) for line in (folder / f"{speaker}-{chapter}.trans.txt").read_text().splitlines())
    audio = load_audio(folder / f"{utterance}.flac")                          # float32 (L,) at 16 kHz
    segments = np.load(corpus / split / "alignments.npz")[f"{utterance}.segments"]   # (n, 3): phone, start, end
    print(f"{split} speaker {speaker}: \"{words[utterance].strip()}\"  ({len(audio) / 16000:.2f} s)")
    display(Audio(audio, rate=16000))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 3.6), sharex=True)
    seconds = np.arange(len(audio)) / 16000
    ax1.plot(seconds, audio, lw=0.4, color="k")
    f, t, power = spectrogram(audio, fs=16000, nperseg=400, noverlap=400 - 160)   # 25 ms windows every 10 ms
    ax2.pcolormesh(t, f / 1000, 10 * np.log10(power + 1e-10), shading="auto", cmap="magma")
    for phone, start, end in segments:
        for ax in (ax1, ax2):
            ax.axvline(start / 16000, color="C0", lw=0.5, alpha=0.6)
        if phone:                                                              # 0 is silence
            ax1.text((start + end) / 32000, 1.05 * np.abs(audio).max(), PHONES[phone], ha="center", fontsize=8)
    ax1.set_ylabel("waveform"), ax2.set_ylabel("kHz"), ax2.set_xlabel("time (s)")
    ax1.set_xlim(0, seconds[-1])
    plt.tight_layout()
    plt.show()


show_utterance("train", "100-1000-0000")
show_utterance("test", "120-1200-0000")

# %% [markdown]
# Vowels show as stacks of formants (dark horizontal bands) over the pitch harmonics, fricatives as noise high
# up, stops as a gap and a burst. The held-out speaker's pitch and formants sit elsewhere: a good representation
# has to see the same phone in both.
#
# ## 3. The model
#
# The `tiny` preset is wav2vec 2.0 BASE's architecture at toy width (about 1M parameters instead of 95M). One
# batch of 8 crops of 1 s through the model, with the shape of every tensor:

# %%
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config
from tinyw2v2.models.wav2vec2.diagram import draw_model

display(draw_model(Wav2Vec2Config.tiny(), batch=8, seconds=1.0))

# %% [markdown]
# The same picture for BASE, the paper's model (95M parameters), on the same batch: the same boxes, wider.

# %%
display(draw_model(Wav2Vec2Config.base(), batch=8, seconds=1.0))

# %% [markdown]
# The CNN turns every 20 ms of audio into a vector z; the Transformer reads them with some spans replaced by a
# learnt mask vector, and must tell, for every masked frame, the quantised version of the true z (its *target*)
# from K = 20 targets drawn from other frames of the same utterance.
#
# ## 4. Pretrain for three minutes
#
# This is the README's main job, `tinyw2v2 pretrain`, with its defaults: the tiny preset's short-run recipe, 900
# steps of 12 crops of up to 1 s, the learning rate warmed up, held at its peak and decayed over the last fifth
# (two to three minutes of training on two cores), the held-out speakers scored every 100 steps.

# %%
from tinyw2v2.cli import pretraining_summary
from tinyw2v2.train.pretrain import pretrain, read_metrics

result = pretrain(args)
print(pretraining_summary(result, run=args.out))

# %% [markdown]
# ## 5. Look at the curves
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
# time, and shows the earlier recipe needing 550 to 650 steps of twice the audio to reach 0.2.
#
# ## Try this
#
# - The earlier recipe, fairseq's BASE regularisation at toy width: `PretrainArgs(lr=1e-3, schedule="linear",
#   batch_seconds=24.0, crop_seconds=2.0, overrides=dict(feature_penalty_weight=10.0, feature_grad_mult=0.1,
#   hidden_dropout=0.1, attention_dropout=0.1, feat_proj_dropout=0.1, feat_quantizer_dropout=0.1), ...)`: how
#   long does it stay on the plateau?
# - Run `tinyw2v2 analyze ../runs/notebook01` in a terminal: do the learnt codes line up with phones?
# - Point `PretrainArgs(data=...)` at a folder of your own audio files (any rate: they are resampled to 16 kHz).
