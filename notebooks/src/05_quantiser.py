# %% [markdown]
# # 5. The quantiser
#
# wav2vec 2.0 learns its own targets. Each frame's CNN feature is turned into a discrete code: a linear layer
# gives logits over G codebooks of V entries (BASE: G = 2, V = 320), one entry per codebook is picked, and the
# picked entries are concatenated into the quantised vector that the context network must identify
# (notebook 6). Picking is not differentiable, so the quantiser samples with **Gumbel noise**, relaxes the
# argmax to a **softmax with temperature τ**, and trains through the relaxation with the **straight-through
# estimator**. A **diversity loss** keeps all codebook entries in use.
#
# This notebook derives and checks each piece with the library's `F.gumbel_softmax`, `F.codevector_lookup`,
# `F.codevector_perplexity` / `F.diversity_loss` and the model's `GumbelVectorQuantizer`, then trains a quantiser
# on synthetic features while the temperature anneals.
#
# Derivations: [`docs/quantize.md`](../docs/quantize.md) (Gumbel softmax, codebook lookup) and
# [`docs/contrastive.md`](../docs/contrastive.md) (perplexity and diversity loss).

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend, optim
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, init_weights
from tinyw2v2.models.wav2vec2.generators import Generators
from tinyw2v2.models.wav2vec2.quantizer import GumbelVectorQuantizer

device = "cpu"  # or "cuda" (or "emulated": a CPU stand-in that refuses implicit host copies, as CuPy does)
rng = np.random.default_rng(0)
gen = backend.default_rng(0, device)             # draws Gumbel noise directly on the device

# %% [markdown]
# ## Gumbel noise and the Gumbel-max trick
#
# If $U \sim \text{Uniform}(0, 1)$, then $g = -\log(-\log U)$ is a standard Gumbel variable, and for logits
# $l_1..l_V$ with independent $g_v$,
#
# $$\arg\max_v\,(l_v + g_v) \;\sim\; \text{Categorical}\big(\operatorname{softmax}(l)\big) .$$
#
# (Sketch: $P(l_i + g_i \ge l_j + g_j\ \forall j)$ integrates the Gumbel density against the product of the other
# CDFs $\exp(-e^{-(x + l_i - l_j)})$, which gives $e^{l_i} / \sum_j e^{l_j}$.) So adding noise and taking the
# argmax *samples* a code from the softmax distribution. Checked with 200,000 draws of the library's
# `F.gumbel_noise`:

# %%
logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0])
V = len(logits)
n = 200_000
g = tw.Tensor(F.gumbel_noise((n, V), device=device, generator=gen))          # (n, V) on the device
picks = (tw.tensor(logits, device=device) + g).numpy().argmax(-1)            # host copy, then argmax
freq = np.bincount(picks, minlength=V) / n
p = np.exp(logits) / np.exp(logits).sum()
print("softmax(l):         ", np.round(p, 4))
print("argmax(l + g) freq: ", np.round(freq, 4))
print("max |diff| = %.4f (binomial std about %.4f)" % (np.abs(freq - p).max(), np.sqrt(p.max() * (1 - p.max()) / n)))

# %% [markdown]
# ## Temperature: from one-hot to uniform
#
# The argmax has zero gradient almost everywhere. The **Gumbel softmax** replaces it by
#
# $$s = \operatorname{softmax}\big((l + g)/\tau\big),$$
#
# a point of the probability simplex that tends to the one-hot argmax as τ → 0 and to the uniform vector as
# τ → ∞. Five samples at each of three temperatures (same noise in each column):

# %%
noise = F.gumbel_noise((5, V), device=device, generator=gen)                 # one draw, reused for every tau
lt = tw.tensor(np.broadcast_to(logits, (5, V)).copy(), device=device)
taus = (5.0, 1.0, 0.2)
fig, axes = plt.subplots(len(taus), 5, figsize=(11, 4.5), sharey=True)
for r, tau in enumerate(taus):
    s = F.gumbel_softmax(lt, tau=tau, noise=noise).numpy()                   # (5, V) soft samples
    for c in range(5):
        axes[r, c].bar(range(V), s[c], color=f"C{r}")
        axes[r, c].set_xticks(range(V))
    axes[r, 0].set_ylabel(f"tau = {tau}")
for c in range(5):
    axes[0, c].set_title(f"sample {c}", fontsize=9)
fig.suptitle("Gumbel-softmax samples of softmax(l) = " + " ".join(f"{v:.2f}" for v in p), fontsize=10)
fig.tight_layout(); plt.show()

# %% [markdown]
# ## The straight-through estimator
#
# wav2vec 2.0 wants a *discrete* code in the forward pass (a real codebook entry), but a gradient for the
# logits. `F.gumbel_softmax(..., hard=True)` returns the exact one-hot of $\arg\max s$ forward and, backward,
# pretends the output was the soft $s$ (straight-through: "$y_\text{hard} - \text{stop}(s) + s$"). With
# $z = (l + g)/\tau$ and $\partial s_i / \partial z_k = s_i(\delta_{ik} - s_k)$, for an upstream gradient $\bar y$:
#
# $$\frac{\partial L}{\partial l_k} = \frac{1}{\tau}\, s_k \big(\bar y_k - \langle \bar y, s\rangle\big) .$$
#
# Two consequences. The hard output does not depend on τ at all ($\arg\max (l + g)/\tau = \arg\max (l + g)$):
# the temperature only shapes the gradient. And the estimator is biased: it is not the derivative of the
# forward (which is 0), and a finite-difference check of the hard output fails, as it should. All three facts:

# %%
l0 = rng.standard_normal((4, V))
noise = F.gumbel_noise((4, V), dtype=np.float64, device=device, generator=gen)
ybar = rng.standard_normal((4, V))
outs, grads = {}, {}
for tau in (2.0, 0.5):
    lt = tw.tensor(l0, requires_grad=True, dtype=tw.float64, device=device)
    y = F.gumbel_softmax(lt, tau=tau, hard=True, noise=noise)
    y.backward(tw.tensor(ybar, dtype=tw.float64, device=device))
    outs[tau], grads[tau] = y.numpy(), backend.to_numpy(lt.grad)
print("hard outputs equal for tau = 2 and 0.5:", np.array_equal(outs[2.0], outs[0.5]))

s = F.gumbel_softmax(tw.tensor(l0, dtype=tw.float64, device=device), tau=0.5, noise=noise).numpy()
by_hand = s * (ybar - (ybar * s).sum(-1, keepdims=True)) / 0.5
print("max |straight-through gradient - formula| =", np.abs(grads[0.5] - by_hand).max())

lt = tw.tensor(l0, requires_grad=True, device=device)
try:
    tw.gradcheck(lambda x: F.gumbel_softmax(x, tau=0.5, hard=True, noise=noise), lt)
except tw.GradcheckError as e:
    print("gradcheck of the hard output fails, as it should:\n  ", str(e)[:110], "...")
print("gradcheck of the soft output:", tw.gradcheck(lambda x: F.gumbel_softmax(x, tau=0.5, noise=noise), lt))

# %% [markdown]
# The library checks the hard backward the way its docs describe: $f = \text{ST}(x) - \text{stop}(\text{ST}(x))
# + \text{stop}(\text{soft}(x))$ has the *value* of the soft output (the one-hots cancel exactly), so finite
# differences see the soft Jacobian, while the analytic gradient flows only through the straight-through op.
# A wrong straight-through backward fails this:

# %%
def st_check(x):
    hard = F.gumbel_softmax(x, tau=0.5, hard=True, noise=noise)
    soft = F.gumbel_softmax(x, tau=0.5, noise=noise)
    return hard - hard.detach() + soft.detach()

print("straight-through gradcheck:", tw.gradcheck(st_check, lt))

# %% [markdown]
# ## G codebooks of V entries
#
# With one-hot rows $p_g$ (the picks) and codebooks $C_g$ (V, d/G), the quantised vector is
# $q = [p_1 C_1, \ldots, p_G C_G]$: one entry per codebook, concatenated. G codebooks of V entries give $V^G$
# possible codes from only $G \cdot V$ stored vectors: BASE has 2 × 320 = 640 vectors of 128 numbers and
# 320² = 102,400 codes. `F.codevector_lookup` computes all groups as one batched matrix product,
# $O_g = P_g C_g$; backward, $dP_g = dO_g C_g^\top$ and $dC_g = P_g^\top dO_g$, so with one-hot P each frame's
# gradient lands on the entry it picked. Check against plain indexing and finite differences:

# %%
G, Vq, dg, N = 2, 6, 3, 5
codebooks = rng.standard_normal((1, G * Vq, dg))                              # transformers' shape (1, G*V, d/G)
idx = rng.integers(0, Vq, (N, G))                                            # picks per frame and group
onehot = np.zeros((N, G, Vq)); onehot[np.arange(N)[:, None], np.arange(G), idx] = 1
q = F.codevector_lookup(tw.tensor(onehot.reshape(N, G * Vq), device=device),
                        tw.tensor(codebooks, device=device), G).numpy()       # (N, G*d/G)
by_index = np.concatenate([codebooks[0, g * Vq + idx[:, g]] for g in range(G)], axis=1)
print("max |lookup - indexing| =", np.abs(q - by_index).max())
soft_p = rng.dirichlet(np.ones(Vq), (N, G)).reshape(N, G * Vq)
print("codevector_lookup gradcheck:", tw.gradcheck(lambda p, c: F.codevector_lookup(p, c, G),
                                                   tw.tensor(soft_p, requires_grad=True, device=device),
                                                   tw.tensor(codebooks, requires_grad=True, device=device)))

# %% [markdown]
# ## Perplexity and the diversity loss
#
# Nothing in the contrastive task stops the quantiser from using a handful of entries. The diversity loss
# rewards spreading the choices: with $\bar p_{g}$ the softmax probabilities (no noise, no temperature)
# averaged over the frames of a batch,
#
# $$\text{ppl} = \sum_{g} \exp\Big(-\sum_v \bar p_{gv} \log \bar p_{gv}\Big), \qquad
#   L_d = \frac{GV - \text{ppl}}{GV} .$$
#
# ppl is between G (every frame picks the same entry in each codebook) and GV (uniform use), so $L_d$ is between
# 0 and $1 - 1/V$. It is the entropy of the *average*: each frame may be confident, as long as different
# frames pick different entries. Checked by hand, at the two extremes, and by finite differences:

# %%
probs = rng.dirichlet(np.ones(Vq) * 0.5, (N, G))                             # (N, G, V) per-frame probabilities
m = probs.mean(0)                                                            # (G, V) batch marginals
ppl_hand = np.exp(-(m * np.log(m)).sum(1)).sum()
pt = tw.tensor(probs, device=device, dtype=tw.float64)
print(f"perplexity: by hand {ppl_hand:.6f}, library {float(F.codevector_perplexity(pt, G, Vq)):.6f}")
print(f"diversity loss: by hand {(G * Vq - ppl_hand) / (G * Vq):.6f}, library {float(F.diversity_loss(pt, G, Vq)):.6f}")
uniform = tw.tensor(np.full((N, G, Vq), 1 / Vq), device=device)
same = tw.tensor(np.broadcast_to(np.eye(Vq)[0], (N, G, Vq)).copy(), device=device)
print(f"uniform use: ppl = {float(F.codevector_perplexity(uniform, G, Vq)):.3f} (G*V = {G * Vq});  "
      f"one entry per group: ppl = {float(F.codevector_perplexity(same, G, Vq)):.3f} (G = {G})")
print("diversity_loss gradcheck:", tw.gradcheck(lambda p: F.diversity_loss(p, G, Vq),
                                                tw.tensor(probs, requires_grad=True, device=device)))

# %% [markdown]
# ## The model's quantiser
#
# `GumbelVectorQuantizer` puts the pieces together exactly as transformers does: `weight_proj` (a Linear layer)
# gives the G·V logits, `F.gumbel_softmax(hard=True)` picks in training (a plain argmax in eval mode),
# `F.codevector_lookup` builds the vector, and the soft perplexity is returned for the diversity loss:

# %%
cfg = Wav2Vec2Config.tiny()
quantizer = GumbelVectorQuantizer(cfg, Generators(0, device))
init_weights(quantizer, np.random.default_rng(0))
quantizer.to(device)
print(quantizer)
feats = tw.tensor(rng.standard_normal((2, 50, cfg.conv_dim[-1])), device=device)   # (B, T, C) stand-in features
quantised, ppl, code_ppl = quantizer(feats)[:3]
print("quantised", quantised.shape, f"  prob perplexity {float(ppl):.2f}, code perplexity "
      f"{float(code_ppl):.2f}  (max G*V = {cfg.num_codevectors})")

# %% [markdown]
# ## Training a quantiser while the temperature anneals
#
# A small simulation with the model's `GumbelVectorQuantizer`: 1024 synthetic 16-dimensional "frames" drawn
# around 12 centres (a stand-in for 12 phones), G = 2 codebooks of V = 16 entries, and a task that needs the codes
# to carry information, reconstruct each frame from its quantised vector:
#
# $$L = \frac{1}{ND}\sum_n \lVert x_n - q(x_n) \rVert^2 + \alpha\, L_d .$$
#
# The temperature follows wav2vec 2.0's schedule, $\tau = \max(\tau_0\, \gamma^{\text{step}}, \tau_\text{min})$,
# compressed into 300 steps (τ: 2 → 0.5, γ = 0.995; BASE uses γ = 0.999995 over 400k updates). We train once
# without the diversity loss (α = 0) and once with it (α = 1), and record the soft (probability) perplexity, the
# perplexity of the hard codes, and how often each entry of codebook 0 is chosen (eval-mode argmax).

# %%
N_frames, D_feat, Gs, Vs = 1024, 16, 2, 16
steps = 300
centres = rng.standard_normal((12, D_feat)) * 2
X = (centres[rng.integers(0, 12, N_frames)] + 0.5 * rng.standard_normal((N_frames, D_feat))).astype(np.float32)
sim_cfg = Wav2Vec2Config.tiny(conv_dim=(D_feat,) * 7, num_codevector_groups=Gs, num_codevectors_per_group=Vs,
                              codevector_dim=D_feat, max_gumbel_temperature=2.0, min_gumbel_temperature=0.5,
                              gumbel_temperature_decay=0.995)
x_dev = tw.tensor(X[None], device=device)                                    # (1, N, D): one "utterance"

def train(alpha, seed=0):
    qz = GumbelVectorQuantizer(sim_cfg, Generators(seed, device))
    init_weights(qz, np.random.default_rng(seed))                            # weight_proj ~ N(0, 1), codebooks ~ U[0, 1)
    qz.to(device).train()
    opt = optim.Adam(qz.parameters(), lr=1e-2)
    log = {"tau": [], "rec": [], "prob_ppl": [], "code_ppl": [], "usage": []}
    for step in range(steps):
        qz.temperature = sim_cfg.gumbel_temperature(step)
        q, prob_ppl, code_ppl = qz(x_dev)[:3]
        rec = ((q - x_dev) ** 2).mean()                                  # mean squared error per feature
        loss = rec + alpha * (Gs * Vs - prob_ppl) / (Gs * Vs)               # L_d, written out
        opt.zero_grad(); loss.backward(); opt.step()
        log["tau"].append(qz.temperature); log["rec"].append(float(rec))
        log["prob_ppl"].append(float(prob_ppl)); log["code_ppl"].append(float(code_ppl))
        if step % 10 == 0 or step == steps - 1:
            with tw.no_grad():
                codes = qz.weight_proj(x_dev).numpy()[0, :, :Vs].argmax(-1)   # eval-mode picks, codebook 0
            log["usage"].append(np.bincount(codes, minlength=Vs) / N_frames)
    return log

runs = {alpha: train(alpha) for alpha in (0.0, 1.0)}
for alpha, log in runs.items():
    print(f"alpha = {alpha}: final code perplexity {log['code_ppl'][-1]:5.2f} of {Gs * Vs}, "
          f"entries of codebook 0 in use {int((log['usage'][-1] > 0).sum())} of {Vs}, "
          f"reconstruction error {log['rec'][-1]:.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
ax = axes[0]
for i, (alpha, log) in enumerate(runs.items()):
    ax.plot(log["prob_ppl"], color=f"C{i}", label=f"alpha = {alpha}: probability ppl")
    ax.plot(log["code_ppl"], color=f"C{i}", ls=":", label=f"alpha = {alpha}: code ppl")
ax.axhline(Gs * Vs, color="gray", lw=0.8, ls="--")
ax.set_ylim(0, Gs * Vs + 2); ax.set_xlabel("step"); ax.set_ylabel("perplexity (max G*V = 32)")
tax = ax.twinx()
tax.plot(runs[0.0]["tau"], color="k", lw=1, alpha=0.5); tax.set_ylabel("tau (grey)")
ax.legend(fontsize=7, loc="center right"); ax.set_title("perplexity while tau anneals")
for i, (alpha, log) in enumerate(runs.items()):
    usage = np.array(log["usage"]).T                                         # (V, checkpoints)
    im = axes[1 + i].imshow(usage, aspect="auto", cmap="magma", origin="lower", vmin=0, vmax=0.3,
                            extent=(0, steps, -0.5, Vs - 0.5))
    axes[1 + i].set_title(f"codebook 0 usage, alpha = {alpha}"); axes[1 + i].set_xlabel("step")
    axes[1 + i].set_ylabel("entry")
fig.colorbar(im, ax=axes[2], label="share of frames")
fig.tight_layout(); plt.show()

# %% [markdown]
# Without the diversity loss the quantiser settles on a subset of its entries: nothing rewards using more. With
# it, the perplexity climbs towards G·V within the first tens of steps and stays there, and the reconstruction
# error ends lower, because more distinct codes describe the 12 clusters (and their spread) better. The code
# perplexity (of the hard, noisy picks) tracks the probability perplexity: the Gumbel samples follow the softmax
# distribution, as the Gumbel-max trick promised.
#
# The temperature does not change which codes are picked (the forward is an argmax); it changes the gradient:
# at high τ the soft $s$ is spread over many entries and all of their logits receive gradient (exploration);
# at low τ the gradient concentrates on the few entries near the top. Its prefactor is 1/τ (ds/dℓ = s (δ - s) / τ),
# but s (δ - s) shrinks where the softmax saturates, so the gradient itself does not grow like 1/τ. In BASE the
# temperature anneals from 2 to 0.5 over the first ~280k updates.
#
# ## Try this
#
# - Set α = 10 in the simulation: what happens to the reconstruction error when diversity dominates?
# - Freeze the temperature at 0.1 from the start (`max_gumbel_temperature=0.1, min_gumbel_temperature=0.1` in
#   `sim_cfg`) and compare the usage maps.
# - Check the Gumbel-max trick for a different distribution, e.g. one logit at −∞ (`-np.inf`): it must never be
#   picked.
# - Use `F.codevector_perplexity(..., eps=1e-7)` (fairseq's variant) and compare it with the default at
#   one-hot inputs.
