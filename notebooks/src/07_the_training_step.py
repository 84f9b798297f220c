# %% [markdown]
# # 7. One pretraining step, written out
#
# Notebooks 2–6 built the pieces; `tinyw2v2 pretrain` (notebook 8) runs them in a loop. This notebook writes one
# step of that loop out by hand, on the library's own modules, in the order of the paper's Figure 1:
#
# 1. a batch of crops, a span mask and the negatives (drawn on the host);
# 2. z = feature encoder(x), then the features projected to the Transformer's width;
# 3. c = context network(z with the masked frames replaced by the mask embedding);
# 4. q = quantiser(z): one codeword per group for every frame;
# 5. the cosine logits with temperature κ, L_m, L_d, and L = L_m + α L_d + β · (feature penalty);
# 6. backward, gradient clipping, the AdamW update, the learning-rate and temperature schedules.
#
# Then the same step in a loop for a few hundred updates, with its curve leaving ln(K+1). The library runs the
# same lines in [`tinyw2v2/train/pretrain.py`](../tinyw2v2/train/pretrain.py): `BatchSampler` (the batch),
# `model.sample_targets` (mask and negatives), `forward_backward` (the forward, L / N, backward), `RunSchedule`
# (learning rate and temperature), and `guarded_update` in [`tinyw2v2/train/common.py`](../tinyw2v2/train/common.py)
# (clipping, the NaN guard, the AdamW step); `_pretrain` adds logging, evaluation and checkpoints around them.
# Derivations: [`docs/model.md`](../docs/model.md), [`docs/contrastive.md`](../docs/contrastive.md),
# [`docs/training.md`](../docs/training.md).

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend, optim
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining, sample_pretraining_targets
from tinyw2v2.train.corpus import prepare_corpus
from tinyw2v2.train.pretrain import BatchSampler, PretrainArgs, RunSchedule, load_waveforms

device = "cpu"  # or "cuda"

# %% [markdown]
# ## The pieces: data, model, optimiser, schedules
#
# The tiny preset with its short-run recipe (the defaults of `PretrainArgs`), the built-in synthetic corpus, and
# `BatchSampler`: for step s, a random window of length-sorted utterances, each cropped at a random offset to the
# window's shortest (at most `crop_seconds`), `batch_seconds / crop_seconds` crops per batch. Every draw of step s
# comes from (seed, s).

# %%
args = PretrainArgs(corpus_dir="../data/synthetic", steps=400)   # the run the schedules span
config = Wav2Vec2Config.tiny()
waves, _ = load_waveforms(prepare_corpus(args) / "train", config.min_samples_to_mask(), strict=False, normalize=False)
crops = round(args.batch_seconds / args.crop_seconds)            # crops per batch
sampler = BatchSampler(waves, batch_size=crops, crop=int(args.crop_seconds * 16000), seed=args.seed)
model = Wav2Vec2ForPreTraining(config, seed=0).to(device).train()
opt = optim.AdamW(model.parameters(), lr=args.lr, betas=args.betas, eps=args.adam_eps, weight_decay=args.weight_decay)
schedule = RunSchedule(args)                     # lr and Gumbel temperature as functions of the run's progress
print(f"{len(waves)} training utterances; {model.num_parameters():,} parameters; K = {config.num_negatives} "
      f"negatives, G x V = {config.num_codevector_groups} x {config.num_codevectors_per_group} codewords")

# %% [markdown]
# ## 1. A batch, a mask and the negatives
#
# Masks and negatives are small integer arrays drawn on the host (as transformers' data collator and fairseq do);
# `sample_pretraining_targets` is the one function that draws them (`model.sample_targets` calls it with the
# model's host generator). `model.manual_seed((seed, s, 1))` puts every generator of the model (host: masks and
# negatives; device: LayerDrop, dropout, Gumbel noise) at the state of step s: that is what makes `--resume` exact.

# %%
step = 0
x = sampler(step)                                                 # (B, L) float32 crops
B, L = x.shape
T = model.num_frames(L)                                           # frames after the CNN: floor((L - 400) / 320) + 1
model.manual_seed([args.seed, step, 1])                          # every draw of step s from (seed, s, 1)
mask, negatives = sample_pretraining_targets(config, (B, T), model.generators.host)  # (B, T) bool, (B, T, K) ints
N = int(mask.sum())
print(f"x {x.shape}, T = {T} frames, {N} masked ({N / (B * T):.0%}), negatives {negatives.shape}")

# %% [markdown]
# ## 2–4. z, c and q
#
# The feature encoder turns 16 kHz samples into one vector per 20 ms (z); the projection widens it to the
# Transformer's D; the masked frames are *replaced* by the learnt mask embedding; the Transformer (with its
# convolutional positional embedding) makes the context vectors c. The quantiser sees the unmasked, LayerNormed
# features of every frame and picks one codeword per group: q. Both are projected to the same P dimensions.

# %%
w2v = model.wav2vec2
xt = tw.tensor(x, device=device)
z = w2v.feature_extractor(xt)                                     # (B, C, T) latent speech representations
hidden, features = w2v.feature_projection(z.swapaxes(1, 2))       # (B, T, D) projected, (B, T, C) LayerNormed
mask_dev = backend.to_device(mask, device)
masked = tw.where(mask_dev.reshape(B, T, 1), w2v.masked_spec_embed, hidden)  # (B, T) -> (B, T, 1): replace
c, _ = w2v.encoder(masked)                                        # (B, T, D) context vectors
quantized = model.quantizer(model.dropout_features(features), mask_dev)
q = model.project_q(quantized.codevectors)                        # (B, T, P) targets
context = model.project_hid(c)                                    # (B, T, P) predictions
print(f"z {z.shape}, c {c.shape}, q {q.shape}, context {context.shape}; codes of frame 0: "
      f"{backend.to_numpy(quantized.indices)[0, 0]}")

# %% [markdown]
# ## 5. The loss: L = L_m + α L_d + β · penalty
#
# For every masked frame t: the cosine similarity of its prediction with its own target q_t and with its K
# negatives (targets of other masked frames of the same utterance), divided by κ = 0.1, are the logits of a
# (K+1)-way classification whose answer is always 0 (equation 3). A negative that *is* the positive (the same
# codewords) is left out with logit −∞. L_d = (G·V − perplexity)/(G·V), per masked frame, rewards using the whole
# codebook (equation 4); the model sums both over the N masked frames. fairseq adds a third term, not in the paper:
# β times the mean of z², an L2 penalty on the CNN's output that keeps its scale in check (β = 10 in BASE); the
# tiny preset's short-run recipe sets β = 0 (it holds a short run on the plateau, docs/results.md), so here it
# adds nothing, but it is the same line.

# %%
frames = np.flatnonzero(mask)                                     # (N,) flat indices b*T + t
neg = negatives.reshape(B * T, -1)[frames].T                      # (B, T, K) -> (K, N)
fr, ng = backend.to_device(frames, device), backend.to_device(np.ascontiguousarray(neg), device)
pred = context.reshape(B * T, -1)[fr]                             # (N, P)
pos = q.reshape(B * T, -1)[fr]                                    # (N, P)
negs = q.reshape(B * T, -1)[ng]                                   # (K, N, P)
codes = quantized.indices.reshape(B * T, -1)
same = (codes[ng] == codes[fr][None]).all(axis=-1)                # (K, N): a negative with the positive's codes
logits = F.contrastive_logits(pred, pos, negs, config.contrastive_logits_temperature, neg_is_pos=same)  # (1+K, N)
L_m = -F.log_softmax(logits.swapaxes(0, 1), axis=-1)[:, 0].sum()  # cross-entropy, target 0, summed over frames
GV = config.num_codevectors
L_d = (GV - quantized.perplexity) * (N / GV)
penalty = w2v.feature_extractor.penalty(z)                        # mean(z²), a 0-d Tensor
loss = L_m + config.diversity_loss_weight * L_d
if config.feature_penalty_weight > 0:                             # β · mean(z²) · N: summed over frames like L_m
    loss = loss + penalty * (config.feature_penalty_weight * N)
print(f"β = {config.feature_penalty_weight}, mean(z²) = {float(penalty):.4f}")
print(f"L_m / N = {float(L_m) / N:.4f}  (ln(K+1) = {math.log(config.num_negatives + 1):.4f}: all candidates alike)")
print(f"L_d / N = {float(L_d) / N:.4f},  L / N = {float(loss) / N:.4f}")

# %% [markdown]
# The same step through the model's own forward, with the same mask, negatives and random draws, gives the same
# loss: that forward is these lines. (Reseeding and redrawing the targets puts the generators back where the lines
# above found them.)

# %%
model.manual_seed([args.seed, step, 1])
model.sample_targets(B, T)
out = model(x, mask_time_indices=mask, sampled_negative_indices=negatives)
print(f"model forward: L / N = {float(out.loss) / out.num_masked:.4f}, accuracy {float(out.accuracy):.3f}")
assert abs(float(out.loss) - float(loss)) <= 1e-4 * abs(float(loss))

# %% [markdown]
# ## 6. Backward, clipping, AdamW, schedules
#
# The loss is a sum over masked frames; dividing it by N averages the gradient per masked frame (fairseq's sample
# size). Clipping rescales the whole gradient when its norm exceeds 10. Reading the loss and the norm on the host
# (`float`) is the one device-to-host sync of the step: it guards the update against NaN. The learning rate and the
# temperature of the next step follow from the run's progress: the lr warms up over the first 8%, holds its peak
# and decays to 1% of it over the last fifth (fairseq's tri-stage); the temperature falls from 2 to 0.5.

# %%
tau, lr = schedule.temperature(step, 0.0), schedule.lr(step, 0.0)
model.set_gumbel_temperature(tau)
opt.set_lr(lr)
opt.zero_grad()
(out.loss * (1.0 / out.num_masked)).backward()
norm = optim.clip_grad_norm_(list(model.parameters()), 10.0)
assert math.isfinite(float(out.loss)) and math.isfinite(float(norm))
opt.step()
print(f"step {step}: lr {lr:.2e} (the first update of a warm-up runs at 0), temperature {tau:.3f}, "
      f"gradient norm {float(norm):.3f}")

# %% [markdown]
# ## The loop
#
# The same lines, step after step, as `tinyw2v2 pretrain` runs them. The loss starts at about ln(K+1) — every candidate looks alike to an untrained
# model — and has to leave it; the accuracy starts at chance, 1/(K+1).

# %%
losses, accuracies, t0 = [], [], time.perf_counter()
for step in range(1, args.steps):
    x = sampler(step)
    model.manual_seed([args.seed, step, 1])
    mask, negatives = model.sample_targets(x.shape[0], model.num_frames(x.shape[1]))
    model.set_gumbel_temperature(schedule.temperature(step, 0.0))
    opt.set_lr(schedule.lr(step, 0.0))
    out = model(x, mask_time_indices=mask, sampled_negative_indices=negatives)
    opt.zero_grad()
    (out.loss * (1.0 / out.num_masked)).backward()
    optim.clip_grad_norm_(list(model.parameters()), 10.0)
    opt.step()
    losses.append(float(out.contrastive_loss) / out.num_masked)
    accuracies.append(float(out.accuracy))
print(f"{args.steps - 1} steps in {time.perf_counter() - t0:.0f} s")

K = config.num_negatives
smooth = lambda v: np.convolve(v, np.ones(10) / 10, mode="valid")  # noqa: E731  (a 10-step running mean)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
ax1.plot(losses, alpha=0.3); ax1.plot(np.arange(9, len(losses)), smooth(losses), label="10-step mean")
ax1.axhline(math.log(K + 1), color="gray", ls="--", label=f"ln(K+1) = {math.log(K + 1):.2f}")
ax1.set_title("contrastive loss per masked frame (training batches)"); ax1.legend()
ax2.plot(accuracies, alpha=0.3); ax2.plot(np.arange(9, len(accuracies)), smooth(accuracies), label="10-step mean")
ax2.axhline(1 / (K + 1), color="gray", ls="--", label=f"chance 1/(K+1) = {1 / (K + 1):.3f}")
ax2.set_title("masked-frame accuracy (training batches, Gumbel noise on)"); ax2.legend()
for ax in (ax1, ax2):
    ax.set_xlabel("step"); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()
print(f"last 20 steps: loss {np.mean(losses[-20:]):.3f} (ln 21 = {math.log(21):.3f}), "
      f"accuracy {np.mean(accuracies[-20:]):.3f} (chance {1 / 21:.3f})")

# %% [markdown]
# ## Try this
#
# - Drop the `(1.0 / out.num_masked)`: the step size of AdamW hardly changes (it normalises by the gradient's
#   scale), but clipping at 10 now bites on every step. Why?
# - Replace `clip_grad_norm_(..., 10.0)` by `None` (measure only), as wav2vec 2.0 BASE does.
# - Put the feature penalty back (`Wav2Vec2Config.tiny(feature_penalty_weight=10.0)`) and watch the curve wait
#   on the plateau ([`docs/results.md`](../docs/results.md), "Leaving the plateau", explains why).
