# %% [markdown]
# # 6. Masking and the contrastive task
#
# Pretraining hides parts of the utterance and asks the model to recognise what was there. Concretely:
#
# 1. **Span masking.** Spans of M = 10 frames of the feature encoder's output are replaced by a learned mask
#    vector before the Transformer.
# 2. **Candidates.** For each masked frame t, the true quantised target $q_t$ (notebook 5) is mixed with K
#    **distractors**: quantised targets of other masked frames of the same utterance.
# 3. **Contrastive loss.** The context vector $c_t$ must pick $q_t$ out of the K + 1 candidates, with cosine
#    similarities divided by a temperature κ as logits.
# 4. A **diversity loss** keeps the codebooks in use (notebook 5).
#
# This notebook works through each step with the library's `compute_mask_indices`, `sample_negative_indices`,
# `F.contrastive_loss` and the tiny `Wav2Vec2ForPreTraining`, and shows a masked utterance with its candidates.
#
# Derivations: [`docs/contrastive.md`](../docs/contrastive.md) (cosine similarity, contrastive and diversity losses),
# [`docs/model.md`](../docs/model.md) (masks and negatives in the model), [`docs/quantize.md`](../docs/quantize.md).

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend
from tinyw2v2.data import make_speaker, synthesize_utterance, frame_labels, PHONES, PHONE_CLASSES, SAMPLE_RATE
from tinyw2v2.models.wav2vec2 import (Wav2Vec2Config, Wav2Vec2ForPreTraining, compute_mask_indices,
                                      sample_negative_indices)

device = "cpu"  # or "cuda" (or "emulated": a CPU stand-in that refuses implicit host copies, as CuPy does)
rng = np.random.default_rng(0)

# %% [markdown]
# Masks and negatives are small integer arrays drawn on the host with NumPy before the forward pass (as
# transformers and fairseq do); the model moves them to its device once.
#
# ## Span masking: why `mask_prob = 0.65` is the paper's p = 0.065
#
# The paper: "we randomly sample without replacement a certain proportion **p** of all time steps to be starting
# indices and then mask the subsequent **M** consecutive time steps", with p = 0.065 and M = 10. The code
# (fairseq's `compute_mask_indices`, here `tinyw2v2.models.wav2vec2.compute_mask_indices`) instead takes the
# number of spans from
#
# $$\text{num\_mask} = \Big\lfloor \frac{\text{mask\_prob} \cdot T}{M} + u \Big\rfloor, \qquad u \sim U[0, 1)
#   \quad(\text{at least } \texttt{min\_masks} = 2),$$
#
# so on average $\text{mask\_prob} \cdot T / M$ spans. The paper has $p \cdot T$ spans, hence
#
# $$\text{mask\_prob} = p \cdot M = 0.065 \times 10 = 0.65 .$$
#
# mask_prob is *not* the fraction of masked frames. Spans overlap and merge: a frame away from the edges is left
# unmasked only if none of the M positions that would cover it is a start, so the masked fraction is about
#
# $$1 - (1 - p)^{M} = 1 - 0.935^{10} \approx 0.49 .$$
#
# Plugging the paper's 0.065 into the code's parameter gives 0.65 % of frames as starts and only about 6 % of
# frames masked. Measured on 400 utterances of 500 frames:

# %%
T_sim, M = 500, 10
probs = np.linspace(0.05, 1.5, 30)
measured = [compute_mask_indices((400, T_sim), mp, M, require_same_masks=False, rng=rng).mean() for mp in probs]
predicted = 1 - (1 - probs / M) ** M
for mp in (0.065, 0.65):
    frac = compute_mask_indices((400, T_sim), mp, M, require_same_masks=False, rng=rng).mean()
    print(f"mask_prob = {mp}: masked fraction {frac:.3f}  (1 - (1 - mask_prob/M)^M = {1 - (1 - mp / M) ** M:.3f})")

fig, ax = plt.subplots(figsize=(6.5, 3.2))
ax.plot(probs, measured, "o", ms=4, label="compute_mask_indices")
ax.plot(probs, predicted, "-", label="1 - (1 - mask_prob / M)^M")
ax.axvline(0.65, color="C2", ls="--", lw=1, label="0.65 = p M (pretraining)")
ax.axvline(0.065, color="C3", ls=":", lw=1, label="0.065 (the paper's p, misused)")
ax.set_xlabel("mask_prob (code parameter)"); ax.set_ylabel("fraction of frames masked")
ax.set_title(f"masked fraction, M = {M}, T = {T_sim}"); ax.legend(fontsize=8); ax.grid(alpha=0.3)
fig.tight_layout(); plt.show()

# %% [markdown]
# (The formula ignores edge effects: starts are drawn without replacement from the $T - M$ possible positions,
# a slightly higher density than mask_prob / M, while frames near the ends are covered by fewer possible spans
# and the last frame is never masked. At T = 500 these nearly cancel.)
#
# Because spans merge, masked regions are often longer than M. The lengths of the masked runs at
# mask_prob = 0.65:

# %%
mask = compute_mask_indices((400, T_sim), 0.65, M, require_same_masks=False, rng=rng)
padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
edges = np.diff(padded, axis=1)                                              # +1 at run starts, -1 after run ends
run_lengths = np.flatnonzero(edges.ravel() == -1) - np.flatnonzero(edges.ravel() == 1)
print(f"spans per utterance: {0.65 * T_sim / M:.1f} on average; merged runs per utterance: "
      f"{len(run_lengths) / 400:.1f}; runs longer than M: {(run_lengths > M).mean():.0%}")
fig, ax = plt.subplots(figsize=(6.5, 2.8))
ax.hist(run_lengths, bins=np.arange(9.5, run_lengths.max() + 1.5, 1))
ax.set_xlabel("length of a masked run (frames)"); ax.set_ylabel("count")
ax.set_title("masked runs at mask_prob = 0.65, M = 10: overlapping spans merge")
fig.tight_layout(); plt.show()

# %% [markdown]
# In a batch, fairseq (and `compute_mask_indices` by default, `require_same_masks=True`) then keeps a random
# subset of exactly the batch's smallest count in every row, so every utterance has the same number of masked
# frames; this can cut spans into pieces.

# %%
batch_mask = compute_mask_indices((4, 200), 0.65, M, rng=rng)
loose = compute_mask_indices((4, 200), 0.65, M, require_same_masks=False, rng=np.random.default_rng(1))
print("masked frames per row, require_same_masks=True: ", batch_mask.sum(1))
print("masked frames per row, require_same_masks=False:", loose.sum(1))

# %% [markdown]
# ## A masked utterance
#
# Now one synthetic utterance, its spectrogram on the model's frame grid (400-sample windows every 320 samples,
# the feature encoder's receptive field and hop from notebook 3), and a mask drawn with the tiny preset's
# settings (mask_prob 0.65, M = 10, at least 2 spans):

# %%
cfg = Wav2Vec2Config.tiny()
print(f"tiny preset: mask_time_prob {cfg.mask_time_prob}, mask_time_length {cfg.mask_time_length}, "
      f"K = {cfg.num_negatives} negatives, kappa = {cfg.contrastive_logits_temperature}, "
      f"G x V = {cfg.num_codevector_groups} x {cfg.num_codevectors_per_group}")
speaker = make_speaker(rng, 5)
audio, segments = synthesize_utterance(rng, speaker, ["SEVEN", "MOON", "FISH", "NORTH", "LAMP"])
labels = frame_labels(segments, len(audio))
T = cfg.num_frames(len(audio))
frames = np.lib.stride_tricks.sliding_window_view(audio, 400)[::320]        # (T, 400) on the host
power = np.abs(np.fft.rfft(frames * np.hanning(400), axis=1)[:, :200]) ** 2  # (T, 200): 40 Hz bins up to 8 kHz
spec = np.log(power.reshape(T, 50, 4).mean(-1) + 1e-8).T                     # (50, T) log power in 160 Hz bands
mask = compute_mask_indices((1, T), cfg.mask_time_prob, cfg.mask_time_length, min_masks=cfg.mask_time_min_masks,
                            rng=rng)                                         # (1, T) bool
print(f"{len(audio) / SAMPLE_RATE:.2f} s -> T = {T} frames; {mask.sum()} masked ({mask.mean():.0%})")

def show_masked(ax, mask_row, title):
    ax.imshow(spec, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
              extent=(-0.5, T - 0.5, 0, SAMPLE_RATE / 2000))
    runs = np.flatnonzero(np.diff(np.pad(mask_row, 1).astype(np.int8)))
    for a, b in zip(runs[::2], runs[1::2]):                                  # masked runs [a, b)
        ax.axvspan(a - 0.5, b - 0.5, color="white", alpha=0.45, lw=0)
    starts = np.flatnonzero(np.diff(labels, prepend=-1))
    for a, b in zip(starts, list(starts[1:]) + [T]):
        ax.text((a + b - 1) / 2, 7.3, PHONES[labels[a]], ha="center", color="w", fontsize=7)
    ax.set_ylabel("kHz"); ax.set_title(title, fontsize=10)

fig, ax = plt.subplots(figsize=(12, 3))
show_masked(ax, mask[0], "log spectrogram, masked frames shaded (the Transformer sees the mask vector there)")
ax.set_xlabel("frame")
fig.tight_layout(); plt.show()

# %% [markdown]
# ## Negatives: distractors from the same utterance
#
# For each masked frame t, `sample_negative_indices` draws K indices uniformly, with replacement, from the
# *other* masked frames of the same utterance: rank r of t among the n masked frames, draw $j \sim U\{0..n-2\}$,
# use $j + [j \ge r]$, so t itself is never drawn. Taking distractors from the same utterance means the model
# cannot win by recognising the speaker or the recording conditions; it has to tell *which sound* was at t.
# Indices point into the flattened B·T frames (transformers' convention). Checks on a batch:

# %%
K = cfg.num_negatives
neg = sample_negative_indices((4, 200), K, batch_mask, rng=rng)             # (B, T, K) into the B*T frames
rows, cols = np.nonzero(batch_mask)
flat = neg[rows, cols]                                                       # (N, K) for the masked frames
print("negatives are masked frames:        ", batch_mask.reshape(-1)[flat].all())
print("negatives come from the same row:   ", (flat // 200 == rows[:, None]).all())
print("a frame is never its own negative:  ", (flat != (rows * 200 + cols)[:, None]).all())

# uniform over the other masked frames: one frame, many draws
big = sample_negative_indices((1, 200), 20_000, batch_mask[:1], rng=rng)[0]  # (T, 20000)
t0 = np.flatnonzero(batch_mask[0])[0]
counts = np.bincount(big[t0], minlength=200)[batch_mask[0]]
print(f"frame {t0}: drawn {counts[0]} times as its own negative; the other {batch_mask[0].sum() - 1} masked "
      f"frames each {counts[1:].min()}..{counts[1:].max()} times (expected {20_000 / (batch_mask[0].sum() - 1):.0f})")

# %% [markdown]
# On our utterance: one masked frame inside a vowel, its positive and its K = 20 negatives (a negative drawn twice is marked
# twice). The candidates are other masked frames, so they cover phones from all over the utterance:

# %%
neg_utt = sample_negative_indices((1, T), K, mask, rng=rng)                 # (1, T, K)
masked_frames = np.flatnonzero(mask[0])
in_vowels = [t for t in masked_frames if PHONE_CLASSES[PHONES[labels[t]]] == "vowel"]
t_star = in_vowels[len(in_vowels) // 2]                                      # a masked frame inside a vowel
fig, ax = plt.subplots(figsize=(12, 3.2))
show_masked(ax, mask[0], f"candidates for masked frame {t_star} ({PHONES[labels[t_star]]}): "
                         f"the positive (green) and K = {K} negatives (cyan)")
ax.axvline(t_star, color="lime", lw=2)
offsets = np.zeros(T)
for j in neg_utt[0, t_star]:
    ax.plot(j, 0.4 + 0.45 * offsets[j], "v", color="cyan", ms=6)
    offsets[j] += 1
ax.set_xlabel("frame")
fig.tight_layout(); plt.show()
print("phones of the negatives:", " ".join(PHONES[labels[j]] for j in neg_utt[0, t_star]))
print("negatives in the same phone as the positive:", sum(labels[j] == labels[t_star] for j in neg_utt[0, t_star]))

# %% [markdown]
# Uniform sampling does not avoid frames of the same phone as the target: such negatives are nearly
# indistinguishable from the positive (their codes may even be the same, which the duplicate rule below handles),
# one reason the accuracy of a trained model stays below 1.

# %% [markdown]
# ## Cosine logits with a temperature κ
#
# With $c_t$ the (projected) context vector at masked frame t and candidates $\tilde q \in \{q_t\} \cup Q_t$
# (the positive first, then the K negatives; all projected quantised vectors):
#
# $$\ell_{\tilde q} = \frac{\cos(c_t, \tilde q)}{\kappa}, \qquad
#   L_m = -\log \frac{\exp \ell_{q_t}}{\sum_{\tilde q} \exp \ell_{\tilde q}}
#       = \operatorname{logsumexp}(\ell) - \ell_{q_t},$$
#
# summed over the masked frames. A negative identical to the positive (the same code picked at two frames) would
# make the task contradictory, so its logit is set to −∞ (transformers' `neg_is_pos`; the model finds these by
# their codewords, which float rounding cannot hide).
#
# **Why κ = 0.1.** Cosines lie in [−1, 1]. With κ = 1 the logits span only [−1, 1], and even a perfect model
# (cosine 1 with the positive) cannot make the positive's probability large against K = 100 negatives. The best
# possible loss, with the negatives at cosine $s_-$, is $\log(1 + K e^{(s_- - 1)/\kappa})$; chance level (all
# cosines equal) is $\log(K + 1)$:

# %%
kappas = np.geomspace(0.02, 2, 100)
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for s_neg, style in ((0.0, "-"), (-1.0, "--")):
    ax.semilogx(kappas, np.log1p(100 * np.exp((s_neg - 1) / kappas)), style,
                label=f"perfect positive, negatives at cosine {s_neg:g}")
ax.axhline(np.log(101), color="gray", lw=1, label="chance: log(K + 1) = log 101")
ax.axvline(0.1, color="C2", ls=":", label="kappa = 0.1 (wav2vec 2.0)")
ax.set_xlabel("kappa"); ax.set_ylabel("loss per masked frame (nats)"); ax.legend(fontsize=8); ax.grid(alpha=0.3)
ax.set_title("the best loss a temperature allows, K = 100")
fig.tight_layout(); plt.show()

# %% [markdown]
# A small κ sharpens the softmax so that a clear winner can reach probability ≈ 1; too small a κ would make
# the loss (and its gradient, which scales as 1/κ) dominated by the hardest negative.
#
# `F.contrastive_loss` computes all of this in one fused op. Checked against the same loss composed from the
# library's `F.contrastive_logits` (cosines / κ, duplicates at −∞) and `log_softmax`, with one negative made a
# duplicate of its positive, and by finite differences (holding the duplicate rule fixed):

# %%
N, D, Kc, kappa = 6, 8, 5, 0.1
pred = rng.standard_normal((1, N, D))
targ = rng.standard_normal((1, N, D))
negs = rng.standard_normal((Kc, 1, N, D))
negs[2, 0, 3] = targ[0, 3]                                                   # a duplicate of frame 3's positive
fmask = np.array([[True, True, False, True, True, False]])                   # frames that count
args = [tw.tensor(a, dtype=tw.float64, device=device) for a in (pred, targ, negs)]
fused = F.contrastive_loss(*args, kappa, mask_time_indices=tw.tensor(fmask, device=device))
logits = F.contrastive_logits(*args, kappa)                                  # (1 + K, B, T)
nll = -F.log_softmax(logits, axis=0).numpy()[0]                              # -log p(positive), (B, T)
print("logit of the duplicate:", logits.numpy()[3, 0, 3])
print(f"fused loss {float(fused):.10f}; composed {nll[fmask].sum():.10f}")

# the duplicate rule is a function of the data: nudging the duplicated target makes it an ordinary negative
# again (a jump in the loss), so the finite-difference check holds neg_is_pos fixed at its unperturbed value
neg_is_pos = tw.tensor((targ[None] == negs).all(-1), device=device)         # (K, B, T) bool
grad_args = [tw.tensor(a, requires_grad=True, device=device) for a in (pred, targ, negs)]
fmask_t = tw.tensor(fmask, device=device)
print("contrastive_loss gradcheck:",
      tw.gradcheck(lambda x, y, n: F.contrastive_loss(x, y, n, kappa, mask_time_indices=fmask_t, neg_is_pos=neg_is_pos),
                   *grad_args))

# %% [markdown]
# ## Everything together in the model
#
# `Wav2Vec2ForPreTraining` does all of the above in its forward pass: CNN → mask → Transformer → `project_hid`
# for the context vectors; CNN → quantiser → `project_q` for the targets (computed from the *unmasked* features);
# then the contrastive loss over the masked frames, the diversity loss, and (in fairseq's BASE recipe) a feature
# penalty on the CNN's output:
#
# $$L = L_m + \alpha\, N\, L_d + \beta\, N\, \overline{z^2}, \qquad \alpha = 0.1,\ \beta = 10 \text{ (BASE) or } 0
# \text{ (the tiny preset's short-run recipe)},$$
#
# with N the number of masked frames (transformers scales the diversity loss by N, so that both terms are sums
# over masked frames). We pass our own mask and negatives, so that we can recompute the loss from the model's
# outputs:

# %%
model = Wav2Vec2ForPreTraining(cfg, seed=0).to(device)
model.eval()                                                                 # no dropout; the quantiser takes the argmax
with tw.no_grad():
    out = model(tw.tensor(audio[None], device=device), mask_time_indices=mask, sampled_negative_indices=neg_utt)
n_masked = out.num_masked
print(f"masked frames N = {n_masked}")
print(f"contrastive loss {float(out.contrastive_loss):.3f} = {float(out.contrastive_loss) / n_masked:.3f} per frame "
      f"(chance: log(K + 1) = {np.log(K + 1):.3f});  accuracy {float(out.accuracy):.2f} (chance {1 / (K + 1):.2f})")

# the contrastive loss again, from the model's outputs, the mask and the negatives
c = out.projected_states.numpy()[0]                                          # (T, P) context vectors, projected
q = out.projected_quantized_states.numpy()[0]                                # (T, P) targets, projected
codes = backend.to_numpy(out.codevector_indices)[0]                          # (T, G) the codewords each frame chose
cos = lambda a, b: (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
loss_by_hand = 0.0
for t in masked_frames:
    cands = np.concatenate([q[t][None], q[neg_utt[0, t]]])                   # (1 + K, P)
    lg = cos(c[t][None], cands) / cfg.contrastive_logits_temperature
    lg[1:][(codes[neg_utt[0, t]] == codes[t]).all(-1)] = -np.inf             # duplicates: the positive's own codewords
    loss_by_hand += np.logaddexp.reduce(lg) - lg[0]
print(f"recomputed on the host: {loss_by_hand:.3f}")

GV = cfg.num_codevectors
total = (float(out.contrastive_loss) + cfg.diversity_loss_weight * float(out.diversity_loss)
         + cfg.feature_penalty_weight * n_masked * float(out.feature_penalty))
print(f"diversity loss N (GV - ppl) / GV = {n_masked} x ({GV} - {float(out.codevector_perplexity):.2f}) / {GV} "
      f"= {float(out.diversity_loss):.3f}")
print(f"total: {float(out.loss):.3f};  L_m + {cfg.diversity_loss_weight:g} L_d + {cfg.feature_penalty_weight:g} N penalty "
      f"= {total:.3f}")

# %% [markdown]
# At initialisation the loss per masked frame is close to chance, log(K + 1). How the candidates look to the
# untrained model, for the frame highlighted above: the logits of the positive and of its K negatives.

# %%
t_idx = t_star
cands = np.concatenate([q[t_idx][None], q[neg_utt[0, t_idx]]])
lg = cos(c[t_idx][None], cands) / cfg.contrastive_logits_temperature
order = np.argsort(-lg)
fig, ax = plt.subplots(figsize=(9, 2.8))
ax.bar(range(K + 1), lg[order], color=["C2" if i == 0 else "C0" for i in order])
ax.set_xticks(range(K + 1))
ax.set_xticklabels(["pos" if i == 0 else f"{neg_utt[0, t_idx, i - 1]}" for i in order], rotation=90, fontsize=7)
ax.set_ylabel("cos / kappa"); ax.set_xlabel("candidate (frame index), sorted by logit")
ax.set_title(f"untrained model, masked frame {t_idx}: positive in green, rank {int(np.flatnonzero(order == 0)[0]) + 1} "
             f"of {K + 1}")
fig.tight_layout(); plt.show()

# %% [markdown]
# Notebook 8 trains this model on the synthetic corpus and follows the accuracy (how often the positive wins)
# and the codebook perplexity as training goes.
#
# ## Try this
#
# - Plot the masked fraction against M for a fixed mask_prob: why does it depend on M at all?
# - Call `compute_mask_indices` on a row that is too short (e.g. shape (1, 20)): read the error, and compare it
#   with `cfg.min_frames_to_mask()`.
# - Set `cfg.contrastive_logits_temperature` to 1.0 and recompute the loss by hand above: how far is the
#   untrained model from the best loss this temperature allows?
# - Draw negatives from *all* frames, not just masked ones (`sample_negative_indices(..., mask_time_indices=None)`):
#   which ones become too easy to reject?
