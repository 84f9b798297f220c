# %% [markdown]
# # 4. The context network
#
# The feature encoder (notebook 3) gives one vector per 20 ms. The context network turns those local features
# into context vectors that can see the whole utterance: a **positional convolution** adds relative position
# information, then a stack of **Transformer layers** mixes the frames with self-attention. This notebook
# derives and checks:
#
# - scaled dot-product attention and its backward, and why the scores are divided by $\sqrt{d}$;
# - the multi-head reshaping, checked against the model's `Attention` module;
# - the positional convolution: a grouped convolution with a weight-normalised kernel and one dropped frame;
# - post-LN (BASE) against pre-LN (LARGE) Transformer layers;
# - attention maps on a synthetic utterance.
#
# Derivations: [`docs/attention.md`](../docs/attention.md) (attention), [`docs/engine.md`](../docs/engine.md) (softmax),
# [`docs/conv.md`](../docs/conv.md) (conv1d and weight_norm),
# [`docs/norm.md`](../docs/norm.md) (LayerNorm), [`docs/model.md`](../docs/model.md) (the model).

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend, nn
from tinyw2v2.data import make_speaker, synthesize_utterance, frame_labels, PHONES
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model, init_weights
from tinyw2v2.models.wav2vec2.encoder import Encoder
from tinyw2v2.models.wav2vec2.generators import Generators

device = "cpu"  # or "cuda" (or "emulated": a CPU stand-in that refuses implicit host copies, as CuPy does)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Scaled dot-product attention
#
# Each frame i asks a question $q_i$; each frame j offers a key $k_j$ and a value $v_j$. Frame i's output is
# an average of the values, weighted by how well its question matches each key:
#
# $$S = \frac{Q K^\top}{\sqrt d}, \qquad P = \operatorname{softmax}_j(S), \qquad O = P V,$$
#
# with Q (T, d), K (T, d), V (T, d_v) and P (T, T) a row-stochastic matrix (the **attention map**). Keys can be
# masked (padding frames): their scores become −∞ and their weight 0.
#
# **Why $\sqrt d$.** If the entries of q and k are independent with mean 0 and variance 1,
# $q\cdot k = \sum_{m<d} q_m k_m$ has variance d. Unscaled scores get larger with the head size, the softmax
# saturates onto one key, and its gradient ($P \odot (dP - \ldots)$, below) vanishes. Dividing by $\sqrt d$ keeps
# the scores at unit variance whatever d is:

# %%
print(f"{'d':>6} {'std(q.k)':>9} {'std(q.k)/sqrt(d)':>17} {'max weight, unscaled':>21} {'scaled':>7}")
for d in (16, 64, 256, 1024):
    q = tw.tensor(rng.standard_normal((200, 1, d)), device=device)           # 200 queries
    k = tw.tensor(rng.standard_normal((200, 100, d)), device=device)         # 100 keys each
    eye = tw.tensor(np.broadcast_to(np.eye(100), (200, 100, 100)).copy(), device=device)
    scores = (q @ k.swapaxes(1, 2)).numpy()                                   # (200, 1, 100)
    p_raw = F.scaled_dot_product_attention(q, k, eye, scale=1.0).numpy()     # V = I: the output *is* P
    p_scaled = F.scaled_dot_product_attention(q, k, eye).numpy()             # default scale 1/sqrt(d)
    print(f"{d:>6} {scores.std():>9.1f} {scores.std() / np.sqrt(d):>17.2f} {p_raw.max(-1).mean():>21.2f} "
          f"{p_scaled.max(-1).mean():>7.2f}")

# %% [markdown]
# The trick used above, V = identity, makes the output equal to the attention map P itself; it is how the maps
# at the end of this notebook are read out of the library's fused op.
#
# ### Backward
#
# Going back through $O = PV$, then the softmax row by row, then $S = QK^\top/\sqrt d$ (G = ∂L/∂O):
#
# $$dV = P^\top G, \qquad dP = G V^\top, \qquad
#   dS_{ij} = P_{ij}\Big(dP_{ij} - \sum_{l} dP_{il} P_{il}\Big), \qquad
#   dQ = \frac{dS\,K}{\sqrt d}, \qquad dK = \frac{dS^\top Q}{\sqrt d} .$$
#
# The row sum $\delta_i = \sum_l dP_{il}P_{il}$ is the softmax backward's correction. It can be had from the
# small arrays: $\delta_i = \sum_l \sum_m G_{im} V_{lm} P_{il} = \sum_m G_{im} O_{im}$, a pass over (T, d_v)
# instead of (T, T) (FlashAttention's trick, which the library uses). The derivation in NumPy, on the host,
# against the library's backward:

# %%
T, d = 7, 5
Qh, Kh, Vh, Gh = (rng.standard_normal((T, d)) for _ in range(4))
q, k, v = (tw.tensor(a, requires_grad=True, dtype=tw.float64, device=device) for a in (Qh, Kh, Vh))
o = F.scaled_dot_product_attention(q, k, v)
o.backward(tw.tensor(Gh, dtype=tw.float64, device=device))

S = Qh @ Kh.T / np.sqrt(d)
P = np.exp(S - S.max(1, keepdims=True)); P /= P.sum(1, keepdims=True)
O = P @ Vh
dV = P.T @ Gh
dP = Gh @ Vh.T
delta = (dP * P).sum(1, keepdims=True)
dS = P * (dP - delta)
dQ, dK = dS @ Kh / np.sqrt(d), dS.T @ Qh / np.sqrt(d)
print("max |O  - library| =", np.abs(O - o.numpy()).max())
for name, mine, t in (("dQ", dQ, q), ("dK", dK, k), ("dV", dV, v)):
    print(f"max |{name} - library| =", np.abs(mine - backend.to_numpy(t.grad)).max())
print("delta from (T, T) vs from (T, d):", np.abs(delta[:, 0] - (Gh * O).sum(1)).max())

# %% [markdown]
# And the finite-difference check, with a batch, heads and a key-padding mask (the last two keys of the
# second utterance are padding):

# %%
mask = np.ones((2, 1, 1, 6), dtype=bool)
mask[1, ..., 4:] = False                                                     # (B, 1, 1, Tk): True = attend
args = [tw.tensor(rng.standard_normal((2, 3, 6, 4)), requires_grad=True, device=device) for _ in range(3)]
mask_t = tw.tensor(mask, device=device)
print("attention gradcheck:", tw.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask_t),
                                           *args))

# %% [markdown]
# ## Multi-head attention
#
# One attention averages with one set of weights. H heads run H smaller attentions side by side, each on its
# own slice of $d_h = D / H$ features of the projections, and concatenate their outputs:
#
# $$\text{head}_h = \operatorname{attn}\big(X W^Q_{[:, h]},\, X W^K_{[:, h]},\, X W^V_{[:, h]}\big), \qquad
#   \text{MHA}(X) = [\text{head}_1, \ldots, \text{head}_H]\, W^O .$$
#
# In code the slicing is a reshape and a transpose, (B, T, D) → (B, T, H, d_h) → (B, H, T, d_h), so that the
# heads become a batch axis of one attention call. Here is the model's `Attention` module (tiny preset:
# D = 128, H = 4), against a loop over heads that slices the columns by hand:

# %%
cfg = Wav2Vec2Config.tiny()
model = Wav2Vec2Model(cfg, seed=0).to(device)
model.eval()
attn = model.encoder.layers[0].attention
print(attn)
print(f"H = {attn.num_heads}, d_h = {attn.head_dim}")

x = tw.tensor(rng.standard_normal((1, 10, cfg.hidden_size)), device=device)
with tw.no_grad():
    y_module = attn(x)
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)                 # (1, 10, 128) each
    dh = attn.head_dim
    heads = [F.scaled_dot_product_attention(q[:, :, h * dh:(h + 1) * dh], k[:, :, h * dh:(h + 1) * dh],
                                            v[:, :, h * dh:(h + 1) * dh]) for h in range(attn.num_heads)]
    y_loop = attn.out_proj(tw.concatenate(heads, -1))                        # [head_1 .. head_H] W^O
print("max |module - per-head loop| =", np.abs(y_module.numpy() - y_loop.numpy()).max())

# %% [markdown]
# ## The positional convolution
#
# Attention by itself is blind to order: permuting the frames permutes the outputs. wav2vec 2.0 gives the
# Transformer relative positions with a convolution over time, added to its input:
#
# $$x \leftarrow x + \text{GELU}\big(\text{conv}(x)\big), \qquad \text{kernel } K = 128 \text{ frames (2.56 s)},
#   \text{ padding } K/2, \text{ 16 groups (BASE)} .$$
#
# Three details:
#
# - **Groups.** The D = 768 channels are split into 16 groups of 48; each output channel sees only the 48 input
#   channels of its group. Weight (768, 48, 128): 4.7M parameters instead of 75M.
# - **Weight normalisation.** The kernel is $w = g \cdot v / \lVert v \rVert$ with the norm over (out, in)
#   for each tap: one magnitude $g_k$ per tap, direction $v$ learned separately (`F.weight_norm(v, g, dim=2)`).
# - **The dropped frame.** With an even K and padding K/2 on both sides the output has T + 1 frames; the model
#   drops the last one ("SamePad"). Output frame t then sees input frames t − K/2 … t + K/2 − 1: one more frame of
#   the past than of the future.
#
# The tiny preset has K = 32 and 4 groups. Feed an impulse (one non-zero frame) through the model's positional
# convolution to see its reach:

# %%
pos = model.encoder.pos_conv_embed
print(pos.conv, " drop last frame:", bool(pos.num_pad_remove))
Kp = cfg.num_conv_pos_embeddings
Tn, i0 = 100, 50
impulse = np.zeros((1, Tn, cfg.hidden_size), dtype=np.float32)
impulse[0, i0] = rng.standard_normal(cfg.hidden_size)
with tw.no_grad():
    raw = pos.conv(tw.tensor(impulse, device=device).swapaxes(1, 2))         # (1, D, T + 1): before SamePad
    raw0 = pos.conv(tw.tensor(np.zeros_like(impulse), device=device).swapaxes(1, 2))  # the bias alone
    out = pos(tw.tensor(impulse, device=device))                             # (1, T, D): after SamePad + GELU
print(f"T = {Tn}: conv output {raw.shape[2]} frames, module output {out.shape[1]} frames")
reach = np.abs(raw.numpy() - raw0.numpy())[0].sum(0)                         # (T + 1,)
hit = np.flatnonzero(reach > 1e-6)
print(f"an impulse at input frame {i0} reaches output frames {hit.min()}..{hit.max()}: "
      f"output frame t sees input frames t - {hit.max() - i0} .. t + {i0 - hit.min()} (K/2 = {Kp // 2})")

fig, ax = plt.subplots(figsize=(9, 2.5))
ax.bar(np.arange(Tn + 1), reach, width=1.0, color="C0")
ax.axvline(i0, color="C3", lw=1, label=f"impulse at input frame {i0}")
ax.axvline(Tn, color="gray", ls="--", lw=1, label=f"frame T = {Tn}: dropped by SamePad")
ax.set_xlabel("output frame"); ax.set_ylabel("sum |change|"); ax.legend(fontsize=8)
ax.set_title(f"reach of the positional convolution (tiny: K = {Kp}, padding {Kp // 2})")
fig.tight_layout(); plt.show()

# %% [markdown]
# ### Weight normalisation and its backward
#
# With $n_k = \lVert v_{:,:,k} \rVert$ and $s_k = \sum_{o,c} \bar w_{ock}\, v_{ock}$ (where $\bar w$ = ∂L/∂w):
#
# $$\frac{\partial L}{\partial g_k} = \frac{s_k}{n_k}, \qquad
#   \frac{\partial L}{\partial v} = \frac{g}{n}\Big(\bar w - v\,\frac{s}{n^2}\Big) .$$
#
# The bracket removes from $\bar w$ its component along v, so the gradient of v is orthogonal to v, tap by tap:
# scaling v does not change w. Both facts, on the model's parameters, and the finite-difference check:

# %%
w = pos.conv.weight()                                                        # F.weight_norm(v, g, dim=2)
norms = np.sqrt((w.numpy() ** 2).sum(axis=(0, 1)))                           # per tap
print("max | ||w[:, :, k]|| - g_k | =", np.abs(norms - pos.conv.weight_g.numpy().ravel()).max())

upstream = tw.tensor(rng.standard_normal(w.shape), device=device)
(w * upstream).sum().backward()
v_h, dv_h = pos.conv.weight_v.numpy(), backend.to_numpy(pos.conv.weight_v.grad)
cos = (v_h * dv_h).sum(axis=(0, 1)) / (np.sqrt((v_h ** 2).sum(axis=(0, 1)) * (dv_h ** 2).sum(axis=(0, 1))))
print("per tap, cos(v, dL/dv): max |.| =", np.abs(cos).max())
model.zero_grad()

vw = tw.tensor(rng.standard_normal((6, 2, 4)), requires_grad=True, device=device)
gw = tw.tensor(rng.uniform(0.5, 2, (1, 1, 4)), requires_grad=True, device=device)
xw = tw.tensor(rng.standard_normal((1, 4, 9)), requires_grad=True, device=device)
print("weight_norm gradcheck:", tw.gradcheck(lambda v, g: F.weight_norm(v, g, dim=2), vw, gw))
print("weight_norm -> grouped conv -> SamePad gradcheck:",
      tw.gradcheck(lambda x, v, g: F.conv1d(x, F.weight_norm(v, g, dim=2), padding=2, groups=2)[:, :, :-1], xw, vw, gw))

# %% [markdown]
# ## Post-LN and pre-LN
#
# A Transformer layer has two sublayers, attention and a feed-forward network (FFN), each wrapped in a residual
# connection and a LayerNorm. Where the LayerNorm goes is the difference between BASE and LARGE:
#
# | | post-LN (BASE, `do_stable_layer_norm=False`) | pre-LN (LARGE, `do_stable_layer_norm=True`) |
# |---|---|---|
# | attention | $x \leftarrow \text{LN}(x + \text{MHA}(x))$ | $x \leftarrow x + \text{MHA}(\text{LN}(x))$ |
# | FFN | $x \leftarrow \text{LN}(x + \text{FFN}(x))$ | $x \leftarrow x + \text{FFN}(\text{LN}(x))$ |
# | after the stack | nothing (the input to layer 0 is LayerNormed) | a final LN |
#
# In post-LN every layer's output is renormalised, so the residual stream stays at unit scale, and the gradient
# reaching a lower layer has passed through every LayerNorm above it. In pre-LN the path $x \to x + \ldots$ is
# an identity, so the gradient flows down unchanged plus what the branches add, while the stream's scale grows
# with depth (hence the final LN). Post-LN is known to be hard to train at depth without a learning-rate warm-up
# (Xiong et al., 2020); pre-LN is the usual choice for deep stacks, and wav2vec 2.0 LARGE uses it.
#
# Both variants of the library's `Encoder`, 12 layers at the tiny width, on random input. Sublayer weights are
# drawn with std $1/\sqrt{\text{fan-in}}$ (instead of the init's 0.02, where the branches are so small that
# both variants are near the identity): the RMS of each layer's output, and the norm of the gradient that
# reaches it from a random projection of the top:

# %%
x_in = rng.standard_normal((1, 60, cfg.hidden_size)).astype(np.float32)
v_top = rng.standard_normal((1, 60, cfg.hidden_size)).astype(np.float32)
curves = {}
for pre_ln in (False, True):
    enc = Encoder(Wav2Vec2Config.tiny(num_hidden_layers=12, do_stable_layer_norm=pre_ln), Generators(0, device))
    init_weights(enc, np.random.default_rng(0))
    r = np.random.default_rng(1)
    for mod in enc.layers.modules():
        if isinstance(mod, nn.Linear):
            out_f, in_f = mod.weight.shape
            mod.weight.data = (r.standard_normal((out_f, in_f)) / np.sqrt(in_f)).astype(np.float32)
    enc.to(device).eval()
    top, hidden = enc(tw.tensor(x_in, device=device), output_hidden_states=True)
    for h in hidden:
        h.retain_grad()
    (top * tw.tensor(v_top, device=device)).sum().backward()
    rms = [float(np.sqrt((h.numpy() ** 2).mean())) for h in hidden]          # input of layer 0, then each output
    grad = [float(np.linalg.norm(backend.to_numpy(h.grad))) for h in hidden]
    curves["pre-LN" if pre_ln else "post-LN"] = (rms, grad)

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for name, (rms, grad) in curves.items():
    axes[0].plot(rms, "o-", ms=3, label=name)
    axes[1].plot(np.array(grad) / grad[-1], "o-", ms=3, label=name)
axes[0].set_title("RMS of the residual stream"); axes[1].set_title("|dL/d stream|, relative to the top")
for a in axes:
    a.set_xlabel("layer (0 = input of the first layer)"); a.legend(); a.grid(alpha=0.3)
fig.tight_layout(); plt.show()

# %% [markdown]
# Post-LN keeps the stream at RMS 1 and its gradient shrinks severalfold through the top layers (each LayerNorm
# divides it by the standard deviation of its input, which the residual sum has pushed above 1), then partly
# recovers in the lowest layers. Pre-LN's stream
# grows steadily with depth, and its gradient changes smoothly, growing towards the input as each branch adds
# its share.
#
# ## Attention maps on an utterance
#
# First a hand-built attention, no learned weights: queries and keys are the frames' own log spectra on the
# model's frame grid (400-sample windows every 320 samples), pooled into 22 log-spaced bands, centred, and
# normalised to unit length, so that with `scale=5` the scores are $S_{ij} = 5 \cos(\text{spec}_i,
# \text{spec}_j)$. Each frame then attends to the frames that *sound like it*.

# %%
speaker = make_speaker(rng, 3)
audio, segments = synthesize_utterance(rng, speaker, ["SHE", "SEE", "MOON"])
labels = frame_labels(segments, len(audio))
frames = np.lib.stride_tricks.sliding_window_view(audio, 400)[::320]        # (T, 400) on the host
power = np.abs(np.fft.rfft(frames * np.hanning(400), axis=1)) ** 2          # (T, 201)
edges = np.unique(np.geomspace(2, 200, 25).astype(int))                      # log-spaced band edges (FFT bins)
spec = np.log(np.add.reduceat(power, edges, axis=1)[:, :-1] + 1e-8)          # (T, 22) log band energies
spec -= spec.mean(0)
spec /= np.linalg.norm(spec, axis=1, keepdims=True)
Tu = len(frames)
feats = tw.tensor(spec[None], device=device)                                 # (1, T, 22)
identity = tw.tensor(np.eye(Tu)[None], device=device)                        # V = I: the output is P
P_spec = F.scaled_dot_product_attention(feats, feats, identity, scale=5.0).numpy()[0]

starts = np.flatnonzero(np.diff(labels, prepend=-1))                         # first frame of each phone
middles = (starts + np.append(starts[1:], Tu) - 1) / 2
names = [PHONES[labels[s]] for s in starts]
fig, ax = plt.subplots(figsize=(5.5, 5))
im = ax.imshow(P_spec, cmap="viridis", interpolation="nearest", vmax=np.quantile(P_spec, 0.995))
for b in starts[1:] - 0.5:
    ax.axhline(b, color="w", lw=0.3, alpha=0.5); ax.axvline(b, color="w", lw=0.3, alpha=0.5)
ax.set_yticks(middles); ax.set_yticklabels(names, fontsize=7)
ax.set_xticks(middles); ax.set_xticklabels(names, fontsize=7, rotation=90)
ax.set_xlabel("key frame j"); ax.set_ylabel("query frame i")
ax.set_title("hand-built attention: S = 5 cos(spec_i, spec_j)\n(colours clipped at the 99.5th percentile)", fontsize=9)
fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
fig.tight_layout(); plt.show()

# %% [markdown]
# The map is block-structured along the phone segments, and the blocks repeat off the diagonal: the two "iy"
# of "she" and "see" attend to each other across the utterance, and so do the silences. That is what attention
# is for: gathering information from wherever it is, not just from the neighbours.
#
# Now the real thing: the four heads of layer 0 of the (untrained) tiny model on the same utterance. The
# projections come from the model's `Attention` module, and the maps are read out of the library's attention
# with V = identity.

# %%
with tw.no_grad():
    hs = model(tw.tensor(audio[None], device=device), output_hidden_states=True).hidden_states
    h0 = hs[0]                                                               # input of layer 0 (B, T, D)
    B_, T_, D_ = h0.shape
    H, dh = attn.num_heads, attn.head_dim
    qh = attn.q_proj(h0).reshape(B_, T_, H, dh).swapaxes(1, 2)               # (B, H, T, d_h)
    kh = attn.k_proj(h0).reshape(B_, T_, H, dh).swapaxes(1, 2)
    eye_h = tw.tensor(np.broadcast_to(np.eye(T_), (B_, H, T_, T_)).copy(), device=device)
    P_model = F.scaled_dot_product_attention(qh, kh, eye_h).numpy()[0]      # (H, T, T)
print(f"frames: {T_};  weights range {P_model.min():.4f} .. {P_model.max():.4f} (uniform: 1/T = {1 / T_:.4f})")

fig, axes = plt.subplots(1, H, figsize=(14, 3.2))
for h, ax in enumerate(axes):
    im = ax.imshow(P_model[h], cmap="viridis", interpolation="nearest")
    ax.set_title(f"layer 0, head {h}", fontsize=9); ax.set_xlabel("key frame j")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
axes[0].set_ylabel("query frame i")
fig.tight_layout(); plt.show()

# %% [markdown]
# The untrained heads are almost uniform (read their colour scales): the projections are initialised with std
# 0.02, so every score is close to 0 and each frame averages the whole utterance. Pretraining has to learn queries
# and keys that pick out useful frames. The same utterance through the 15-minute pretrained model shipped in
# [`notebooks/assets/`](assets/README.md), its first and last layers:

# %%
from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining

pretrained = Wav2Vec2ForPreTraining.from_pretrained("assets/tiny-pretrained").to(device).eval()
enc = pretrained.wav2vec2.encoder
with tw.no_grad():
    hs_t = pretrained.wav2vec2(tw.tensor(audio[None], device=device), output_hidden_states=True).hidden_states
    maps = {}
    for layer in (0, len(enc.layers) - 1):
        a = enc.layers[layer].attention
        h = hs_t[layer]                                                      # input of that layer (B, T, D)
        qh = a.q_proj(h).reshape(B_, T_, H, dh).swapaxes(1, 2)               # (B, T, D) -> (B, H, T, d_h)
        kh = a.k_proj(h).reshape(B_, T_, H, dh).swapaxes(1, 2)
        maps[layer] = F.scaled_dot_product_attention(qh, kh, eye_h).numpy()[0]   # (H, T, T)
fig, axes = plt.subplots(2, H, figsize=(14, 6.4))
for row, (layer, P_t) in enumerate(maps.items()):
    for h in range(H):
        im = axes[row, h].imshow(P_t[h], cmap="viridis", interpolation="nearest")
        axes[row, h].set_title(f"pretrained layer {layer}, head {h}", fontsize=9)
        fig.colorbar(im, ax=axes[row, h], fraction=0.046, pad=0.02)
    axes[row, 0].set_ylabel("query frame i")
for ax in axes[1]:
    ax.set_xlabel("key frame j")
fig.tight_layout(); plt.show()
for layer, P_t in maps.items():
    print(f"pretrained layer {layer}: largest weight per query, mean over queries and heads "
          f"{P_t.max(-1).mean():.3f} (untrained layer 0: {P_model.max(-1).mean():.3f}; uniform 1/T = {1 / T_:.3f})")

# %% [markdown]
# Trained, the heads are no longer uniform: the maps are block-structured along the sound segments, like the
# hand-built map above (frames attend to frames of similar sound), some key frames are read by every query (the
# vertical stripes), and in the last layer one head weighs its neighbours at fixed offsets (a diagonal band). The
# weights stay small (the largest per query is about twice the uniform 1/T): a toy model after 15 minutes.
#
# ## Try this
#
# - Rerun the $\sqrt d$ table with `scale=1/d` instead: what happens to the maximum weight as d grows?
# - Make the hand-built map sharper or flatter with `scale=` (a temperature): at what value does it become a
#   nearest-neighbour lookup?
# - In the post-LN / pre-LN cell, use the initialisation std 0.02 (skip the re-draw of the weights) and compare.
# - Check that attention is permutation-equivariant: permute the frames of `x` before `attn(x)` and compare.
#   Then add the positional convolution (`x + pos(x)`) and check again.
