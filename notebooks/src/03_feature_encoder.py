# %% [markdown]
# # 3. The feature encoder
#
# wav2vec 2.0 reads raw audio. Seven 1-D convolutions without padding turn a 16 kHz waveform into one
# 512-dimensional frame every 20 ms: kernel 10 stride 5, then kernel 3 stride 2 four times, then kernel 2
# stride 2 twice. In BASE the first convolution is followed by a GroupNorm with one group per channel, and every
# convolution by a GELU.
#
# This notebook derives the three ops of that stack with the library's own code and checks each derivation:
#
# - **conv1d** as im2col + one matrix product, and its backward, whose input gradient is col2im;
# - **GroupNorm**, forward and the closed-form backward;
# - **GELU**, exact form and derivative;
# - the **receptive field** (400 samples) and **hop** (320 samples), derived and then measured on a synthetic
#   utterance by backpropagating from a single frame.
#
# Derivations in full: [`docs/conv.md`](../docs/conv.md),
# [`docs/norm.md`](../docs/norm.md), [`docs/activation.md`](../docs/activation.md).
# The model-level description is in [`docs/model.md`](../docs/model.md).

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np
import scipy.special

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend
from tinyw2v2.data import make_speaker, synthesize_utterance, frame_labels, PHONES, SAMPLE_RATE
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, init_weights
from tinyw2v2.models.wav2vec2.feature_encoder import FeatureEncoder

device = "cpu"  # or "cuda" (or "emulated": a CPU stand-in that refuses implicit host copies, as CuPy does)
rng = np.random.default_rng(0)

# %% [markdown]
# Everything that is plotted or compared with NumPy is copied to the host explicitly with `.numpy()`, so the
# notebook runs unchanged on a GPU.
#
# ## A synthetic utterance
#
# The library ships a deterministic toy speech synthesiser (source-filter vowels and nasals, noise fricatives,
# stop bursts) with phone alignments. One speaker saying "six two":

# %%
speaker = make_speaker(rng, 0)
audio, segments = synthesize_utterance(rng, speaker, ["SIX", "TWO"])
L = len(audio)
print(f"{L} samples = {L / SAMPLE_RATE:.3f} s;  phones:", " ".join(PHONES[p] for p, _, _ in segments))

t_axis = np.arange(L) / SAMPLE_RATE
fig, ax = plt.subplots(figsize=(10, 2.4))
ax.plot(t_axis, audio, lw=0.4, color="k")
for p, a, b in segments:
    ax.axvspan(a / SAMPLE_RATE, b / SAMPLE_RATE, color=f"C{p % 10}", alpha=0.12, lw=0)
    ax.text((a + b) / 2 / SAMPLE_RATE, 0.9 * np.abs(audio).max(), PHONES[p], ha="center", fontsize=8)
ax.set_xlabel("time (s)"); ax.set_xlim(0, L / SAMPLE_RATE); ax.set_title("waveform with its phone segments")
fig.tight_layout(); plt.show()

# %% [markdown]
# ## conv1d as im2col + GEMM
#
# A 1-D convolution (in deep learning: cross-correlation) with input x (B, C, T), weight w (O, C, K), stride s:
#
# $$y[b, o, t] = \text{bias}[o] + \sum_{c<C}\sum_{k<K} w[o, c, k]\; x[b, c, t s + k], \qquad
#   T' = \left\lfloor \frac{T - K}{s} \right\rfloor + 1 .$$
#
# The double sum is a dot product between the flattened weight row $w[o]$ and the window of $C \cdot K$ input
# values that output $t$ sees. **im2col** copies every window into a column of one matrix,
#
# $$\text{cols}[(c, k), (b, t)] = x[b, c, t s + k] \qquad (C K \times B T'),$$
#
# and the whole convolution becomes one matrix product, $Y = W\,\text{cols}$ with $W$ = w reshaped to
# $(O, CK)$. (With G groups there is one such product per group, run as one batched product.) Here is the
# library's im2col, which builds the columns from a strided *view* of the windows with a single copy:

# %%
from tinyw2v2.ops import conv as conv_ops
print(inspect.getsource(conv_ops._im2col))

# %% [markdown]
# To see the pattern, convolve the numbers 0..11 (so each entry of `cols` shows which sample it came from)
# with K = 3 and stride 2: column t holds samples 2t, 2t+1, 2t+2, and neighbouring windows share one sample.

# %%
T, K, s = 12, 3, 2
x_small = np.arange(T, dtype=np.float32).reshape(1, 1, T)                   # (B, C, T)
windows = backend.sliding_window(x_small, K, s, axis=2)                     # (B, C, T', K): a view, no copy
T_out = windows.shape[2]
cols = windows.transpose(1, 3, 0, 2).reshape(1 * K, 1 * T_out)               # (C*K, B*T'): the im2col copy

fig, ax = plt.subplots(figsize=(6, 1.8))
ax.imshow(cols, cmap="Blues", aspect="auto")
for (k, t), v in np.ndenumerate(cols):
    ax.text(t, k, int(v), ha="center", va="center", fontsize=9)
ax.set_xlabel("output frame t"); ax.set_ylabel("tap k"); ax.set_yticks(range(K))
ax.set_title("cols[k, t] = x[t*s + k]  (K = 3, s = 2)")
fig.tight_layout(); plt.show()

w_small = rng.standard_normal((4, 1, K)).astype(np.float32)                 # (O, C, K)
y_gemm = w_small.reshape(4, K) @ cols                                        # (O, CK) @ (CK, T') -> (O, T')
y_lib = F.conv1d(tw.tensor(x_small, device=device), tw.tensor(w_small, device=device), stride=s)
print("T' =", T_out, "  max |W @ cols - F.conv1d| =", np.abs(y_gemm - y_lib.numpy()[0]).max())

# %% [markdown]
# ### Backward: two matrix products and col2im
#
# With $G_Y = \partial L / \partial Y$ arranged like Y, the matrix-product rule gives
#
# $$\frac{\partial L}{\partial W} = G_Y\, \text{cols}^\top, \qquad
#   \frac{\partial L}{\partial\, \text{cols}} = W^\top G_Y, \qquad
#   \frac{\partial L}{\partial\, \text{bias}[o]} = \sum_{b,t} G_Y[o, (b, t)] .$$
#
# im2col copied each input sample into every column whose window covers it, so the gradient of a sample is the
# **sum** of the gradients of all its copies. That scatter-add back onto the input is **col2im**:
#
# $$\frac{\partial L}{\partial x[b, c, i]} = \sum_{(k, t)\,:\; t s + k = i} d\text{cols}[(c, k), (b, t)] .$$
#
# For a fixed tap k the positions $t s + k$, $t = 0..T'-1$, are all different, so the library runs col2im as
# a loop over the K taps, each an ordinary vectorised `+=` on a strided slice. (For stride 1 it computes the same
# sum another way: $\partial L/\partial x$ is then the upstream gradient, zero-padded by K − 1 frames, convolved
# with the kernel flipped in time and transposed in its channels, a "transposed convolution" that reuses the
# forward's im2col + GEMM.)
#
# How many copies does each sample have? Backpropagate a gradient of ones through a convolution with an
# all-ones weight: the input gradient counts the windows each sample belongs to.

# %%
x_t = tw.tensor(np.zeros((1, 1, T)), requires_grad=True, device=device)
ones_w = tw.tensor(np.ones((1, 1, K)), device=device)
y = F.conv1d(x_t, ones_w, stride=s)
y.backward(tw.tensor(np.ones(y.shape), device=device))
copies = backend.to_numpy(x_t.grad)                                          # .grad is a raw array: explicit host copy
print("windows per sample:", copies.ravel().astype(int))

# %% [markdown]
# With K = 3 and s = 2 the odd samples sit in one window and the even ones in two, except at the ends: sample 0
# and sample 10 are in one window each, and sample 11 is in none (the output has T' = 5 frames, and a tail
# shorter than a stride is dropped). Now the
# derivation itself, on a random upstream gradient: the two matrix products and an explicit col2im loop
# (NumPy, on the host) against the library's backward, for stride 2 and stride 1.

# %%
x0 = rng.standard_normal((1, 1, T)).astype(np.float32)
for stride in (2, 1):                                  # the library: col2im for stride 2, a transposed conv for 1
    x_t = tw.tensor(x0, requires_grad=True, device=device)
    w_t = tw.tensor(w_small, requires_grad=True, device=device)
    y = F.conv1d(x_t, w_t, stride=stride)                                    # (1, 4, T')
    n_out = y.shape[2]
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(tw.tensor(gy, device=device))

    cols = backend.sliding_window(x0, K, stride, axis=2).transpose(1, 3, 0, 2).reshape(K, n_out)
    gY = gy[0]                                                               # (O, T')
    dW = gY @ cols.T                                                         # (O, T') @ (T', K)
    dcols = w_small.reshape(4, K).T @ gY                                      # (K, O) @ (O, T') -> (K, T')
    dx = np.zeros(T, dtype=np.float32)
    for k in range(K):                                                       # col2im
        dx[k:k + stride * (n_out - 1) + 1:stride] += dcols[k]
    print(f"stride {stride}: max |dW - library| = {np.abs(dW - backend.to_numpy(w_t.grad).reshape(4, K)).max():.1e}, "
          f"max |dx - library| = {np.abs(dx - backend.to_numpy(x_t.grad).ravel()).max():.1e}")

# %% [markdown]
# Finally the finite-difference check (`tw.gradcheck`: float64 copies, a seeded random upstream gradient,
# every input element perturbed) with stride, groups, padding, dilation and a bias all at once:

# %%
xc = tw.tensor(rng.standard_normal((2, 4, 11)), requires_grad=True, device=device)
wc = tw.tensor(rng.standard_normal((6, 2, 3)), requires_grad=True, device=device)
bc = tw.tensor(rng.standard_normal(6), requires_grad=True, device=device)
print("conv1d gradcheck:", tw.gradcheck(lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, dilation=2, groups=2),
                                        xc, wc, bc))

# %% [markdown]
# ## GroupNorm
#
# GroupNorm cuts the channels into G groups and normalises each (utterance, group) over its channels and all
# time steps, N elements in all:
#
# $$\mu = \frac1N\sum_i x_i,\quad \sigma^2 = \frac1N \sum_i (x_i-\mu)^2,\quad
#   \hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}},\quad y_i = \gamma_c \hat x_i + \beta_c .$$
#
# In BASE, G = C = 512: every channel of every utterance is normalised over time on its own. Here is the first
# layer of the model's feature encoder (tiny preset: 64 channels) on our utterance, before and after its
# GroupNorm:

# %%
cfg = Wav2Vec2Config.tiny()
encoder = FeatureEncoder(cfg)
init_weights(encoder, np.random.default_rng(0))
encoder.to(device)
print(encoder.conv_layers[0])

wave = tw.tensor(audio[None], device=device)                                 # (B, L) = (1, L)
layer0 = encoder.conv_layers[0]
with tw.no_grad():
    before = layer0.conv(wave.reshape(1, 1, L))                              # (1, 64, T0)
    after = layer0.layer_norm(before)
before_h, after_h = before.numpy()[0], after.numpy()[0]
t0 = np.arange(before_h.shape[1]) * cfg.conv_stride[0] / SAMPLE_RATE
fig, axes = plt.subplots(1, 3, figsize=(13, 2.8), gridspec_kw=dict(width_ratios=[2, 2, 1.3]))
for c in (3, 17, 40):
    axes[0].plot(t0, before_h[c], lw=0.5, label=f"channel {c}")
    axes[1].plot(t0, after_h[c], lw=0.5)
axes[0].set_title("conv 0 output (3 of 64 channels)"); axes[1].set_title("after GroupNorm(64 groups)")
axes[0].legend(fontsize=8)
for a in axes[:2]:
    a.set_xlabel("time (s)")
axes[2].semilogy(before_h.std(1), "o", ms=3, label="before"); axes[2].semilogy(after_h.std(1), "o", ms=3, label="after")
axes[2].set_xlabel("channel"); axes[2].set_title("std over time, per channel"); axes[2].legend(fontsize=8)
fig.tight_layout(); plt.show()
print("per-channel mean after: max |.| = %.1e;  per-channel std: %.4f .. %.4f"
      % (np.abs(after_h.mean(1)).max(), after_h.std(1).min(), after_h.std(1).max()))

# %% [markdown]
# ### Backward
#
# With $d\hat x_i = g_i \gamma_c$ and using $\partial \hat x_i / \partial x_j = r(\delta_{ij} - \tfrac1N)
# - r\, \hat x_i \hat x_j / N$ (r = 1/σ), the input gradient of a group collapses to
#
# $$\frac{\partial L}{\partial x_j} = r \left( d\hat x_j - \overline{d\hat x} - \hat x_j\, \overline{d\hat x\,\hat x}
#   \right), \qquad
#   \frac{\partial L}{\partial \gamma_c} = \sum_{i\in c} g_i \hat x_i, \qquad
#   \frac{\partial L}{\partial \beta_c} = \sum_{i \in c} g_i ,$$
#
# where the bars are means over the group. Two consequences can be read off: adding a constant to the
# upstream gradient changes nothing (the mean is subtracted), and neither does an upstream proportional to
# $\hat x$ (a rescaling of the group, which normalisation undoes; exactly so up to the ε). The formula, written out in NumPy on the
# host, against the library:

# %%
B, C, Tg, G = 2, 6, 9, 3
xg = rng.standard_normal((B, C, Tg)) * 3 + 1
gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
g_up = rng.standard_normal((B, C, Tg))

xt = tw.tensor(xg, requires_grad=True, dtype=tw.float64, device=device)
gt = tw.tensor(gamma, requires_grad=True, dtype=tw.float64, device=device)
bt = tw.tensor(beta, requires_grad=True, dtype=tw.float64, device=device)
F.group_norm(xt, G, gt, bt).backward(tw.tensor(g_up, dtype=tw.float64, device=device))

xr = xg.reshape(B, G, -1)                                                    # one row per (utterance, group)
r = 1 / np.sqrt(xr.var(-1, keepdims=True) + 1e-5)
xhat = (xr - xr.mean(-1, keepdims=True)) * r
dxhat = (g_up * gamma[None, :, None]).reshape(B, G, -1)
dx = r * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
dgamma = (g_up * xhat.reshape(B, C, Tg)).sum(axis=(0, 2))
print("max |dx - library|     =", np.abs(dx.reshape(B, C, Tg) - backend.to_numpy(xt.grad)).max())
print("max |dgamma - library| =", np.abs(dgamma - backend.to_numpy(gt.grad)).max())
print("max |dbeta - library|  =", np.abs(g_up.sum(axis=(0, 2)) - backend.to_numpy(bt.grad)).max())

xt.grad = None
F.group_norm(xt, G).backward(tw.tensor(np.full((B, C, Tg), 0.7), dtype=tw.float64, device=device))
print("constant upstream -> max |dx| =", np.abs(backend.to_numpy(xt.grad)).max())
print("group_norm gradcheck:", tw.gradcheck(lambda x, w, b: F.group_norm(x, G, w, b),
                                            tw.tensor(xg, requires_grad=True, device=device),
                                            tw.tensor(gamma, requires_grad=True, device=device),
                                            tw.tensor(beta, requires_grad=True, device=device)))

# %% [markdown]
# ## GELU
#
# $$\text{GELU}(x) = x\,\Phi(x) = \frac{x}{2}\left(1 + \operatorname{erf}\frac{x}{\sqrt2}\right), \qquad
#   \frac{d}{dx}\text{GELU}(x) = \Phi(x) + x\,\varphi(x), \quad \varphi(x) = \frac{e^{-x^2/2}}{\sqrt{2\pi}} .$$
#
# A smooth ReLU: it weighs x by the probability that a standard normal variable is below it. Unlike ReLU its
# derivative is not a step: it overshoots 1 a little around x ≈ 1.4 and is slightly negative for x < −0.75, so a
# negative input gets a small gradient. wav2vec 2.0 uses the exact erf form (the tanh approximation differs by
# up to 5e-4).

# %%
xs = np.linspace(-4, 4, 401)
xs_t = tw.tensor(xs, requires_grad=True, dtype=tw.float64, device=device)
ys = F.gelu(xs_t)
ys.sum().backward()                                          # elementwise op: d(sum)/dx_i = GELU'(x_i)
y_lib, d_lib = ys.numpy(), backend.to_numpy(xs_t.grad)
Phi, phi = 0.5 * (1 + scipy.special.erf(xs / np.sqrt(2))), np.exp(-xs ** 2 / 2) / np.sqrt(2 * np.pi)
print("max |GELU - x Phi(x)|        =", np.abs(y_lib - xs * Phi).max())
print("max |GELU' - (Phi + x phi)|  =", np.abs(d_lib - (Phi + xs * phi)).max())
y_tanh = F.gelu(tw.tensor(xs, dtype=tw.float64, device=device), approximate="tanh").numpy()
print("max |exact - tanh form|      = %.1e" % np.abs(y_lib - y_tanh).max())

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(xs, y_lib, label="GELU"); axes[0].plot(xs, np.maximum(xs, 0), "--", label="ReLU")
axes[1].plot(xs, d_lib, label="GELU'"); axes[1].plot(xs, (xs > 0).astype(float), "--", label="ReLU'")
axes[0].set_title("activation"); axes[1].set_title("derivative (from the library's backward)")
for a in axes:
    a.grid(alpha=0.3); a.legend(); a.set_xlabel("x")
fig.tight_layout(); plt.show()
print("gelu gradcheck:", tw.gradcheck(F.gelu, tw.tensor(rng.standard_normal((3, 7)) * 2, requires_grad=True,
                                                          device=device)))

# %% [markdown]
# ## Receptive field and hop
#
# Stack convolutions with kernels $k_l$ and strides $s_l$. The **jump** $j_l = \prod_{m \le l} s_m$ is the
# distance in samples between neighbouring outputs of layer l, and each layer widens the window by
# $(k_l - 1)$ of the previous layer's steps:
#
# $$r_l = r_{l-1} + (k_l - 1)\, j_{l-1}, \qquad j_l = j_{l-1} s_l, \qquad r_0 = j_0 = 1 .$$
#
# Frame t of the last layer therefore sees samples $[t\,j_7,\; t\,j_7 + r_7)$, and an input of L samples gives
# $T = \lfloor (L - r_7)/j_7 \rfloor + 1$ frames (no padding anywhere).

# %%
r, j, n = 1, 1, SAMPLE_RATE
print(f"{'layer':>5} {'kernel':>6} {'stride':>6} {'jump':>6} {'field':>6} {'frames in 1 s':>14}")
for l, (k, st) in enumerate(zip(cfg.conv_kernel, cfg.conv_stride)):
    r, j, n = r + (k - 1) * j, j * st, (n - k) // st + 1
    print(f"{l:>5} {k:>6} {st:>6} {j:>6} {r:>6} {n:>14}")
print(f"receptive field {r} samples = {1000 * r / SAMPLE_RATE:.0f} ms, hop {j} samples = {1000 * j / SAMPLE_RATE:.0f} ms")
print("config says:", cfg.receptive_field, cfg.inputs_to_logits_ratio)

with tw.no_grad():
    features = encoder(wave)                                                 # (1, 64, T)
print(f"L = {L}: floor((L - 400) / 320) + 1 = {(L - 400) // 320 + 1}, encoder output {features.shape}")

# %% [markdown]
# ### Measuring it
#
# Which samples does frame t depend on? Backpropagate from that frame alone (a random combination of its 64
# channels) to the waveform and look where the gradient is non-zero. Do it twice: with BASE's GroupNorm
# feature encoder and with LARGE's LayerNorm one (`feat_extract_norm="layer"`, LayerNorm over the channels of
# each frame). Both use the same convolutions.

# %%
t_frame = 9                                                                  # inside the vowel "iy"
lo, hi = t_frame * 320, t_frame * 320 + 400
grads = {}
for mode in ("group", "layer"):
    enc = FeatureEncoder(Wav2Vec2Config.tiny(feat_extract_norm=mode))
    init_weights(enc, np.random.default_rng(0))
    enc.to(device, tw.float64)
    x_in = tw.tensor(audio[None], requires_grad=True, dtype=tw.float64, device=device)
    z = enc(x_in)                                                            # (1, 64, T)
    upstream = np.zeros(z.shape)
    upstream[0, :, t_frame] = rng.standard_normal(z.shape[1])
    z.backward(tw.tensor(upstream, dtype=tw.float64, device=device))
    grads[mode] = np.abs(backend.to_numpy(x_in.grad)[0])
    g = grads[mode]
    support = np.flatnonzero(g > 0)
    outside = np.delete(g, np.arange(lo, hi)).max() / g[lo:hi].max()
    print(f"{mode:>5} norm: non-zero gradient on samples {support.min()}..{support.max()}; "
          f"largest outside [{lo}, {hi}) / largest inside = {outside:.3g}")

# %% [markdown]
# With LayerNorm the support is exactly the 400 samples $[320\,t, 320\,t + 400)$ = [2880, 3280). With GroupNorm
# the convolutions still see only those 400 samples, but layer 0's statistics (a mean and a variance over the
# whole utterance, per channel) let every sample nudge every frame: a small gradient (the ratio printed above)
# reaches the whole waveform. So "receptive field" describes the convolutions; in BASE a frame also depends,
# weakly, on the loudness and spectrum of the whole utterance. The picture shows frames 8–10 on the waveform
# (consecutive windows overlap by 400 − 320 = 80 samples) and the gradient of frame 9:

# %%
zoom = slice(lo - 700, hi + 700)
ts = np.arange(L)[zoom]
amp = np.abs(audio[zoom]).max()
fig, axes = plt.subplots(2, 1, figsize=(10, 4.8), sharex=True)
axes[0].plot(ts, audio[zoom], lw=0.6, color="k")
for i, tf in enumerate((t_frame - 1, t_frame, t_frame + 1)):
    y0 = -amp * (1.25 + 0.3 * i)
    axes[0].plot([tf * 320, tf * 320 + 400], [y0, y0], lw=7, color=f"C{i}", solid_capstyle="butt")
    axes[0].text(tf * 320 + 420, y0, f"frame {tf}: samples {tf * 320}..{tf * 320 + 399}", va="center",
                 fontsize=8, color=f"C{i}")
axes[0].set_yticks([])
axes[0].set_title("frames of the feature encoder: 400-sample windows every 320 samples")
for mode, style in (("layer", "-"), ("group", "--")):
    axes[1].semilogy(ts, grads[mode][zoom] + 1e-12, style, lw=0.8, label=f"{mode} norm")
axes[1].axvspan(lo, hi, color="C1", alpha=0.12)
axes[1].set_ylim(1e-6 * grads["layer"].max(), 3 * grads["layer"].max())
axes[1].set_title(f"|d frame {t_frame} / d sample|"); axes[1].legend(); axes[1].set_xlabel("sample")
fig.tight_layout(); plt.show()

# %% [markdown]
# ## The whole encoder on the utterance
#
# The library's `FeatureEncoder` is exactly this stack (module names follow transformers:
# `feature_extractor.conv_layers.{i}.conv`, `.layer_norm`). Its output, one 64-dimensional vector per 20 ms
# (512 in BASE), lined up with the waveform; frame t is drawn at the centre of its window,
# $(320\,t + 200) / 16000$ s, and coloured by the phone at that centre (`frame_labels`):

# %%
feat = features.numpy()[0]                                                   # (64, T)
Tf = feat.shape[1]
centres = (np.arange(Tf) * 320 + 200) / SAMPLE_RATE
labels = frame_labels(segments, L)
fig, axes = plt.subplots(3, 1, figsize=(10, 5.5), sharex=True, gridspec_kw=dict(height_ratios=[1, 0.25, 2]))
axes[0].plot(t_axis, audio, lw=0.4, color="k"); axes[0].set_title("waveform")
colours = plt.get_cmap("tab20")(np.arange(len(PHONES)) % 20)
axes[1].scatter(centres, np.zeros(Tf), c=colours[labels], s=30, marker="s")
starts = np.flatnonzero(np.diff(labels, prepend=-1))                         # first frame of each run of a phone
for a, b in zip(starts, list(starts[1:]) + [Tf]):
    axes[1].text(centres[(a + b - 1) // 2], 0.6, PHONES[labels[a]], ha="center", fontsize=8)
axes[1].set_yticks([]); axes[1].set_ylim(-1, 1.5); axes[1].set_title("frame centres and their phones", fontsize=9)
hop_s = 320 / SAMPLE_RATE
axes[2].imshow(feat, aspect="auto", cmap="magma", origin="lower",
               extent=(centres[0] - hop_s / 2, centres[-1] + hop_s / 2, 0, feat.shape[0]))
axes[2].set_ylabel("channel"); axes[2].set_xlabel("time (s)")
axes[2].set_title(f"feature encoder output (untrained, tiny preset): {feat.shape[0]} channels x {Tf} frames")
fig.tight_layout(); plt.show()

# %% [markdown]
# Even untrained, the features change where the sound changes: random convolutions are already filter banks,
# and layer 0's GroupNorm puts every channel on the same scale. Pretraining makes them informative. The same
# utterance through the feature encoder of the 15-minute pretrained model shipped in
# [`notebooks/assets/`](assets/README.md) (same architecture, trained weights; its speakers did not include this
# one), channels sorted by the frame where they peak:

# %%
from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining

pretrained = Wav2Vec2ForPreTraining.from_pretrained("assets/tiny-pretrained").to(device)
with tw.no_grad():
    trained = pretrained.wav2vec2.feature_extractor(tw.tensor(audio[None], device=device)).numpy()[0]  # (64, T)
untrained = feat
fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
for ax, f, name in ((axes[0], untrained, "untrained"), (axes[1], trained, "pretrained (15 minutes)")):
    order = np.argsort(f.argmax(axis=1))                                    # channels by the frame of their peak
    z = (f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-6)   # each channel standardised
    im = ax.imshow(z[order], aspect="auto", cmap="magma", origin="lower", vmin=-2, vmax=3,
                   extent=(centres[0] - hop_s / 2, centres[-1] + hop_s / 2, 0, f.shape[0]))
    ax.set_title(f"{name} feature encoder: channels sorted by their peak, standardised", fontsize=9)
    ax.set_ylabel("channel")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
axes[1].set_xlabel("time (s)")
fig.tight_layout(); plt.show()


def boundary_contrast(f):
    """How much more the (standardised) features change from one frame to the next across a phone boundary than
    inside a phone."""
    z = (f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-6)
    step = np.linalg.norm(np.diff(z, axis=1), axis=0)                       # (T-1,) change between frames t-1, t
    boundary = labels[1:Tf] != labels[:Tf - 1]
    return step[boundary].mean() / step[~boundary].mean()


print(f"frame-to-frame change across a phone boundary / inside a phone: untrained "
      f"{boundary_contrast(untrained):.2f}, pretrained {boundary_contrast(trained):.2f}")

# %% [markdown]
# Untrained, the channels peak one after another through the vowel, like a bank of shifted filters. Pretrained,
# whole groups of channels switch on and off together and hold steady in between: the features change more at the
# boundaries between sounds, relative to inside one (the ratio above), which is what a representation of phones
# should do.
#
# ## Try this
#
# - Change `cfg.conv_kernel` / `conv_stride` (e.g. `Wav2Vec2Config.tiny(conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
#   conv_dim=(64,) * 3)`) and predict the receptive field and hop before printing `cfg.receptive_field`.
# - Break col2im on purpose: in the explicit loop above, replace `+=` by `=` and see which samples go wrong
#   (exactly those that belong to two windows).
# - Run `tw.gradcheck` on `F.group_norm` with one group per channel and a single time step (N = 1). What is
#   the gradient, and why? ([`docs/norm.md`](../docs/norm.md) has the answer.)
# - Set `device = "emulated"` at the top and run everything again: any implicit host copy would raise.
