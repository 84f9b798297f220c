# %% [markdown]
# # 10. CTC fine-tuning
#
# Pretraining (notebook 8) gives an encoder whose frames carry phone-like information, but it cannot write a
# word. Fine-tuning for speech recognition puts a linear layer, `lm_head`, on the Transformer's output frames:
# for each frame (20 ms) it scores every character of a small vocabulary plus a **blank**, and the whole model is
# trained on a few transcribed utterances with connectionist temporal classification (CTC), which sums over
# every way of lining the transcript up with the frames.
#
# This notebook
#
# 1. builds the character vocabulary from transcripts with the library's own code;
# 2. computes the CTC loss for one utterance by hand and draws its **alignment lattice**: for every frame and
#    every position in the blank-extended transcript, the posterior probability that the alignment is there;
# 3. fine-tunes the same architecture twice on the same 40 transcribed utterances, once from the pretrained
#    weights and once from a random initialisation, and compares their held-out error rates.
#
# The derivations are in [`docs/ctc.md`](../docs/ctc.md) (the loss, α, β and the gradient) and
# [`docs/finetuning.md`](../docs/finetuning.md) (the model, the vocabulary, the training loop); the full-size
# experiment (15 minutes of pretraining, 10 minutes of fine-tuning per model) is in
# [`docs/results.md`](../docs/results.md).

# %%
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend
from tinyw2v2.text import Vocabulary, ctc_min_frames
from tinyw2v2.train.evaluate import load_ctc_model, load_labelled_utterances, recognize
from tinyw2v2.train.finetune import FinetuneArgs, build_model, finetune, load_training_set
from tinyw2v2.train.pretrain import prepare_corpus, read_metrics

device = "cpu"  # or "cuda" (a GPU with CuPy), or "emulated" (CPU, refusing implicit host copies as CuPy would)

# the pretrained model loads into a CTC model whose head is new: say so here, not in a warning per load
warnings.filterwarnings("ignore", message=".*keep their fresh initialisation")
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice, when ipywidgets is missing

# %% [markdown]
# ## The pretrained model and the data
#
# Pretraining long enough to matter takes 15 minutes (`docs/results.md`, "Against the earlier recipe's fifteen
# minutes": the `tiny` preset, about 1M parameters, 3,300 steps of the earlier recipe, held-out masked-frame
# accuracy 0.54). Its weights ship with
# the notebooks in [`assets/tiny-pretrained/`](assets/README.md), written by `save_pretrained` in the
# transformers format (`config.json` + `model.safetensors`, 4 MB), which `Wav2Vec2ForCTC.from_pretrained` and
# transformers' own loader both read.
#
# That model was pretrained on the synthetic corpus generated with seed 0 (24 speakers). Here we generate a
# small corpus with **seed 1**: every speaker's voice (pitch, vocal-tract size, speaking rate, channel, noise)
# is drawn anew, so none of them was heard in pretraining. The words come from the same small lexicon.
# Fine-tuning uses 40 transcribed utterances of its 10 training speakers (about a minute of audio), and every
# error rate below is measured on all 40 utterances of its 4 held-out speakers, never heard in fine-tuning either.

# %%
PRETRAINED = "assets/tiny-pretrained"
CORPUS = dict(corpus_dir="../data/synthetic-newvoices", corpus_speakers=14, corpus_heldout=4,
              corpus_utterances=10, corpus_seed=1)
LABELS = 40

root = prepare_corpus(FinetuneArgs(**CORPUS))
items, report = load_training_set(root / "train", FinetuneArgs(labels=LABELS, **CORPUS))
print(report)
for uid, audio, text in items[:3]:
    print(f"{uid}  {audio.shape[0] / 16000:.2f} s  {text}")

# %% [markdown]
# ## 1. The vocabulary
#
# `Vocabulary.build` collects every character of the transcripts and puts it after five special tokens, in
# the layout of transformers' `Wav2Vec2CTCTokenizer`: `<pad>` = 0 is the CTC **blank**, `<s>` and `</s>` are
# never used in labels, `<unk>` stands for a character the vocabulary lacks, and `|` separates words. The
# fine-tuning loop builds the same vocabulary from the same 40 transcripts.

# %%
vocab = Vocabulary.build([text for _, _, text in items])
print(len(vocab), "entries:", vocab.to_dict())
example = items[0][2]
ids = vocab.encode(example)
print(f"\n{example!r}\n -> {ids.tolist()}\n -> {vocab.decode_labels(ids)!r}")
print(f"{len(ids)} labels; CTC needs at least {ctc_min_frames(ids)} frames "
      "(one per label, plus a blank between two equal neighbours)")

# %% [markdown]
# ## 2. CTC by hand, and the alignment lattice
#
# `build_model` is what the fine-tuning loop calls: the pretrained encoder (`wav2vec2.*`), a new `lm_head` of
# `len(vocab)` outputs initialised N(0, 0.02), and the fine-tuning settings (SpecAugment, dropout, LayerDrop; all
# off in eval mode). We take one held-out utterance, chosen short and with a doubled letter, and compute
# `log_probs = log_softmax(lm_head(h))` for its T frames.
#
# CTC extends the transcript $l$ with blanks, $l' = (b, l_1, b, l_2, \dots, l_S, b)$, $2S+1$ states. An
# alignment is a walk through the lattice of (frame, state) that moves by 0, 1 or 2 states per frame (2 only
# over a blank between two *different* letters), starting in one of the first two states and ending in one of
# the last two. Summing the probability of every walk is a dynamic programme: $\alpha_t(s)$ collects the walks
# that reach state $s$ at frame $t$, $\beta_t(s)$ those that go from there to the end, and
#
# $$\gamma_t(s) = \frac{\alpha_t(s)\,\beta_t(s)}{y_t(l'_s)\;p(l \mid x)}$$
#
# is the posterior probability that the alignment is in state $s$ at frame $t$ (both α and β include the
# emission $y_t(l'_s)$, hence the division). `F.ctc_loss` computes $-\log p(l \mid x)$ from α and β in log space;
# `F.ctc_posteriors` returns γ from the same recursion. Two checks: γ sums to 1 over the states at every frame,
# and summed over the states that emit class $c$ it is minus the derivative of the loss with respect to
# `log_probs[t, c]` (docs/ctc.md, section 4), which we compare with central finite differences of the loss.

# %%
model, origin = build_model(FinetuneArgs(init=PRETRAINED, labels=LABELS, **CORPUS), len(vocab))
model.to(device).eval()
print(origin, f"({model.num_parameters():,} parameters)")

heldout, _ = load_labelled_utterances(root / "test", vocab)
doubled = [u for u in heldout if any(a == b != " " for a, b in zip(u["text"], u["text"][1:]))
           and len(u["text"].split()) >= 3]
utt = min(doubled, key=lambda u: len(u["text"]))
labels = utt["labels"]
print(f"\nheld-out utterance {utt['id']}: {utt['text']!r}, {len(labels)} labels, "
      f"{utt['audio'].shape[0] / 16000:.2f} s")


def lattice(model, utt):
    """(gamma (T, 2S+1), CTC loss, greedy frame ids (T,)) of one utterance, model in eval mode."""
    with tw.no_grad():
        out = model(utt["audio"][None])                             # logits (1, T, V)
        log_probs = F.log_softmax(out.logits, axis=-1).swapaxes(0, 1)  # (T, 1, V), as ctc_loss wants
    T, S = log_probs.shape[0], len(utt["labels"])
    targets = utt["labels"][None]
    loss = F.ctc_loss(log_probs, targets, [T], [S], reduction="none").item()
    gamma = backend.to_numpy(F.ctc_posteriors(log_probs, targets, [T], [S]))[0]   # (T, 2S+1)
    return gamma, loss, out.logits.numpy()[0].argmax(-1)


gamma0, loss0, greedy0 = lattice(model, utt)
T = gamma0.shape[0]
# with log_probs = 0 every alignment has probability 1, so "-loss" counts them (in log space)
log_walks = -F.ctc_loss(np.zeros((T, 1, len(vocab)), np.float32), labels[None], [T], [len(labels)],
                        reduction="none").item()
print(f"T = {T} frames, {gamma0.shape[1]} states; CTC loss -log p(l|x) = {loss0:.2f}; uniform outputs would give "
      f"T log V - log(#alignments) = {T * np.log(len(vocab)):.2f} - {log_walks:.2f} = "
      f"{T * np.log(len(vocab)) - log_walks:.2f}")
# 1 up to float32 rounding: gamma's exponent cancels numbers the size of the loss (docs/ctc.md, section 6)
print("sum over states per frame: min", gamma0.sum(1).min().round(6), "max", gamma0.sum(1).max().round(6))

# the model's own loss (reduction "sum" over one utterance) is the same number
with tw.no_grad():
    print("model(x, labels).loss =", round(model(utt["audio"][None], labels=labels[None]).loss.item(), 4))

# gamma is the gradient: d(-log p)/d log_probs[t, c] = -(sum of gamma over the states that emit c), checked
# against central differences of the loss (float64) at a few frames, for the blank and for letters
ext = np.zeros(2 * len(labels) + 1, dtype=np.int64)    # the blank-extended labels l'
ext[1::2] = labels
with tw.no_grad():
    lp = F.log_softmax(model(utt["audio"][None]).logits, axis=-1).swapaxes(0, 1).numpy().astype(np.float64)


def ctc(lp):
    return F.ctc_loss(lp, labels[None], [T], [len(labels)], reduction="sum").item()


gamma64 = F.ctc_posteriors(lp, labels[None], [T], [len(labels)])[0]   # the same log_probs in float64, on the host
eps = 1e-5
for t, c in [(0, labels[0]), (T // 2, vocab.blank_id), (T // 2, labels[len(labels) // 2]), (T - 1, labels[-1])]:
    bump = np.zeros_like(lp)
    bump[t, 0, c] = eps
    numeric = (ctc(lp + bump) - ctc(lp - bump)) / (2 * eps)
    print(f"frame {t:2d}, class {vocab.tokens[c]!r:7s}: -sum gamma = {-gamma64[t, ext == c].sum():+.6f}, "
          f"finite difference = {numeric:+.6f}")

# %% [markdown]
# The lattice: frames on the x axis, the $2S+1$ states on the y axis (`·` is the blank, `|` the word
# delimiter), γ as brightness. The head is random, so every class gets about $1/V$ at every frame: the model has
# no opinion and γ only reflects how many walks pass through each cell. It is a broad diagonal band, wide in the
# middle and pinned to the corners (an alignment must start in the first two states and end in the last two).
# Dots mark frames where greedy decoding (the argmax class per frame) emits a letter, on the rows of that letter;
# here the argmax is noise.

# %%
tick = ["·" if c == vocab.blank_id else vocab.tokens[c] for c in ext]


def draw(ax, gamma, greedy, title):
    ax.imshow(gamma.T, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    emits = [(t, s) for t, c in enumerate(greedy) if c != vocab.blank_id for s in np.flatnonzero(ext == c)]
    if emits:
        ax.scatter(*np.array(emits).T, s=9, c="cyan", marker="o", linewidths=0, label="greedy: letter emitted")
        ax.legend(loc="upper left", fontsize=7)
    ax.set_yticks(range(len(tick))); ax.set_yticklabels(tick, fontsize=7)
    ax.set_xlabel("frame t (20 ms)"); ax.set_ylabel("state s of the extended labels")
    ax.set_title(title, fontsize=9)


fig, ax = plt.subplots(figsize=(11, 5))
draw(ax, gamma0, greedy0, f"before fine-tuning (random head): loss {loss0:.1f}, greedy "
     f"{vocab.decode_ids(greedy0)[:40]!r}")
plt.colorbar(ax.images[0], ax=ax, label="posterior γ_t(s)")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 3. Pretrained vs from scratch
#
# `finetune` is the function behind `tinyw2v2 finetune`. Both runs use exactly the same settings; the only
# difference is `init`: the pretrained directory, or `None` for the same `tiny` architecture from a random
# initialisation. Per step: a batch of whole utterances (up to 8 s of audio, padding included), SpecAugment
# (time masking 0.65, channel masking 0.25), CTC loss, Adam, the CNN frozen (docs/finetuning.md).
#
# The learning rate follows the tri-stage schedule with a long warm-up (60% of the steps, then 30% at 1e-3,
# then decay). CTC models first learn to emit only blanks, the cheapest way to lower the loss, and then have
# to leave that plateau. With the default 10% warm-up, a run this short reaches the peak rate within 70 steps, and
# the pretrained model had barely started to leave the all-blank output when the budget ran out; warming up
# slowly lets it leave the plateau in time. The schedule is counted in steps, so every number below is the same
# on every run of the notebook.

# %%
STEPS = 700   # about 45 s per model on one CPU core; docs/results.md fine-tunes for 10 minutes (~4700 steps)
COMMON = dict(labels=LABELS, steps=STEPS, batch_seconds=8.0, lr=1e-3, phase_ratio=(0.6, 0.3, 0.1),
              eval_every=100, eval_utterances=None, log_every=10, checkpoint_every=STEPS, progress=False,
              export=False, device=device, **CORPUS)
runs = {"pretrained": FinetuneArgs(init=PRETRAINED, out="../runs/notebook10/pretrained", **COMMON),
        "scratch": FinetuneArgs(init=None, out="../runs/notebook10/scratch", **COMMON)}
results = {}
for name, args in runs.items():
    results[name] = finetune(args)
    print(f"-> {name}: {results[name]['train_seconds']:.0f} s of training\n")

# %% [markdown]
# ## Curves
#
# Left: held-out character and word error rates after greedy decoding, every 100 steps. A CER of exactly 1.0
# (empty output) is the all-blank phase; at step 0 the random head emits random characters and the CER is above 1,
# off the top of the plot (insertions count as errors). WER stays near 1 longer: a word counts as right only when
# all its letters are. Right: the CTC loss per utterance, on the training batches (smoothed, and measured
# with masking and dropout on) and held out. Both models fall quickly to the all-blank plateau, where
# the loss depends only on the batch (the two training curves coincide: same batches, same seed). The pretrained
# model then goes down on both; the scratch model's training loss drifts down while its held-out loss creeps back
# up: what it learns is about its 40 utterances, not about speech.

# %%
from tinyw2v2.train.plots import series   # (steps, values) of the logged lines that have the key

records = {name: read_metrics(Path(args.out) / "metrics.jsonl") for name, args in runs.items()}


def trailing_mean(steps, values, k=5):
    """Mean of the last k logged values (each already a mean over 10 steps; batches differ a lot)."""
    k = max(1, min(k, len(values)))
    c = np.cumsum(np.insert(values, 0, 0.0))
    return steps[k - 1:], (c[k:] - c[:-k]) / k


colors = {"pretrained": "tab:blue", "scratch": "tab:orange"}
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for name, recs in records.items():
    axes[0].plot(*series(recs, "eval_cer"), "o-", color=colors[name], label=f"{name}: CER")
    axes[0].plot(*series(recs, "eval_wer"), "s--", color=colors[name], alpha=0.5, label=f"{name}: WER")
    axes[1].plot(*trailing_mean(*series(recs, "loss")), color=colors[name], alpha=0.6,
                 label=f"{name}: training batches (mean of 5 logs)")
    axes[1].plot(*series(recs, "eval_loss"), "o-", color=colors[name], label=f"{name}: held-out")
axes[0].set_ylim(0, 1.2); axes[0].set_title(f"held-out error rates ({LABELS} labelled utterances, new voices)")
axes[1].set_yscale("log"); axes[1].set_title("CTC loss per utterance")
for ax in axes:
    ax.set_xlabel("step"); ax.grid(alpha=0.3); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# The final numbers on all 40 held-out utterances, and a few transcripts. Both models decode the same utterances
# with `recognize`, which is what `tinyw2v2 evaluate` and `tinyw2v2 transcribe` use.

# %%
print("| model | labelled utterances | steps | held-out CER | held-out WER |\n|---|---|---|---|---|")
for name, recs in records.items():
    last = recs[-1]
    print(f"| {name} | {LABELS} | {last['step']} | {last['eval_cer']:.3f} | {last['eval_wer']:.3f} |")

finetuned = {name: load_ctc_model(args.out, device=device)[0] for name, args in runs.items()}
examples = heldout[::10][:4]
hyps = {name: recognize(m, vocab, [u["audio"] for u in examples])["hypotheses"] for name, m in finetuned.items()}
for i, u in enumerate(examples):
    print(f"\n{u['id']}\n  reference   {u['text']}")
    for name in finetuned:
        print(f"  {name:11s} {hyps[name][i]}")

# %% [markdown]
# ## The lattice after fine-tuning
#
# The same held-out utterance through both fine-tuned models. Given the transcript, the pretrained model's
# posterior has collapsed onto nearly one path: a few frames on each letter, long stays in the blanks (and in the
# word delimiters) between them, and through the blank between the two E's of "SEE", which the lattice cannot
# skip. That is CTC's "peaky" behaviour: letters are short spikes and the blank fills the rest. The scratch model
# knows where the utterance starts and ends, but in the middle its posterior is still spread over many states. The
# greedy decoder does not see the transcript, so its letters (dots) fall on the path only where the model would
# have written the right letter anyway.

# %%
fig, axes = plt.subplots(1, 2, figsize=(15, 5), sharey=True)
for ax, (name, m) in zip(axes, finetuned.items()):
    gamma, loss, greedy = lattice(m, utt)
    draw(ax, gamma, greedy, f"{name}, after {STEPS} steps: loss {loss:.1f}, greedy {vocab.decode_ids(greedy)!r}")
print("reference:", utt["text"])
plt.tight_layout(); plt.show()

# %% [markdown]
# Pretraining taught the encoder which frames sound alike; with 40 transcripts the pretrained model only has to
# learn which letters those sounds are, and it transfers to voices it has never heard. From scratch, the same 40
# utterances must teach the whole network what speech is, and in the same number of steps it has barely left
# the all-blank phase. Given more time it learns something, mostly by memorising its 40 utterances: in the
# 10-minute runs of `docs/results.md` (on the seed-0 corpus, 4 held-out speakers) the pretrained model reaches
# CER 0.30 and the scratch model 0.76.
#
# ## Try this
#
# - Set `STEPS = 2000` (about 2 minutes per model): does the gap close, or does the scratch model memorise its
#   40 utterances (training loss near 0, held-out loss rising)?
# - Use the default schedule, `phase_ratio=(0.1, 0.4, 0.5)` (warm-up in 70 steps): how much longer does the
#   pretrained model stay on the all-blank plateau?
# - Give the scratch model all 100 transcribed utterances (`labels=None`) and the pretrained one 40: how many
#   labels is the pretraining worth? (`benchmarks/low_resource.py` runs this comparison.)
# - Turn SpecAugment off for both (`overrides={"mask_time_prob": 0.0, "mask_feature_prob": 0.0}`) and compare
#   training and held-out loss.
# - Draw the lattice of a *training* utterance after fine-tuning: is it sharper than the held-out one?
