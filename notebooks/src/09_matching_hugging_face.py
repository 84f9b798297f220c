# %% [markdown]
# # 9. Matching Hugging Face
#
# tinyw2v2 reimplements wav2vec 2.0 from NumPy up, with its own autograd. The strongest check that it computes
# *the same function* as the reference is to take a model from 🤗 transformers, load its weights into tinyw2v2,
# give both the same inputs and compare everything that can be compared: every intermediate tensor on the way
# (each convolution of the CNN, the features, each Transformer layer, the quantised targets, the losses) and
# the gradient of the loss with respect to every parameter.
#
# This notebook does that for a small random `Wav2Vec2ForPreTraining`, in both architectures
# (group-norm CNN + post-LN Transformer as in BASE; layer-norm CNN + pre-LN as in LARGE), in float32 and
# float64, in eval mode and in training mode with the same Gumbel noise fed to both. Then it explains the size
# of the errors: why 1e-7 in float32 is agreement, and why some gradients are zero.
#
# It needs `torch` and `transformers` (`pip install torch transformers`); without them every cell prints
# "skipped" and the notebook still runs to the end. The same comparison, with tolerances, is the test suite's
# [`tests/test_hf_parity.py`](../tests/test_hf_parity.py); the model is described in
# [`docs/model.md`](../docs/model.md) (module tree, names, loading, how parity is tested).

# %%
import contextlib
import os
import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np

import tinyw2v2 as tw
from tinyw2v2 import backend
from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining, compute_mask_indices, sample_negative_indices
from tinyw2v2.models.wav2vec2.hf import normalize_key

device = "cpu"  # or "cuda": where the tinyw2v2 model runs (transformers runs on the CPU)

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice, when ipywidgets is missing
try:
    import torch
    import transformers
    HAVE_HF = True
except ImportError as e:
    HAVE_HF = False
    SKIPPED = f"skipped: torch and transformers are needed for this cell ({e})"
    print(f"torch / transformers not importable ({e}).\n"
          "This notebook compares tinyw2v2 with transformers, so it has nothing to compare against:\n"
          "every cell below prints 'skipped'. Install them with: pip install torch transformers")
else:
    torch.set_num_threads(1)                             # tiny tensors: one thread is fastest and reproducible
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, tinyw2v2 on {device!r}")

# %% [markdown]
# ## A small transformers checkpoint, in both variants
#
# A config the size of a toy (3 convolutions of 16 channels, D = 32, 2 layers of 4 heads, G = 2 codebooks of
# V = 8 entries, K = 5 negatives), with every dropout and LayerDrop at 0 so that training mode is deterministic
# apart from the Gumbel noise. Two variants differ in architecture, not just in numbers:
#
# | | `feat_extract_norm` | `do_stable_layer_norm` | `conv_bias` |
# |---|---|---|---|
# | `group_postln` (BASE) | `"group"`: GroupNorm after conv 0 only | False: post-LN | False |
# | `layer_preln` (LARGE) | `"layer"`: LayerNorm after every conv | True: pre-LN + final LN | True |
#
# transformers initialises biases to 0 and norm weights to 1. A loader that dropped a bias or swapped a weight
# with its bias would still match on such a model, so every parameter is perturbed by 0.05·N(0, 1) before
# `save_pretrained` writes `config.json` and `model.safetensors` to a temporary directory.

# %%
SMALL = dict(
    conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), hidden_size=32, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=64, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
    num_codevector_groups=2, num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=12,
    num_negatives=5, mask_time_prob=0.5, mask_time_length=3, hidden_dropout=0.0, attention_dropout=0.0,
    activation_dropout=0.0, feat_proj_dropout=0.0, feat_quantizer_dropout=0.0, layerdrop=0.0, final_dropout=0.0)
VARIANTS = {
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "layer_preln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def make_checkpoint(variant, directory):
    """A random transformers Wav2Vec2ForPreTraining, perturbed, saved with save_pretrained; returns its path."""
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**SMALL, **VARIANTS[variant]))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = os.path.join(directory, variant)
    hf.save_pretrained(path)
    return path


if not HAVE_HF:
    print(SKIPPED)
else:
    tmp = tempfile.TemporaryDirectory()                  # removed when the kernel exits
    paths = {variant: make_checkpoint(variant, tmp.name) for variant in VARIANTS}
    for variant, path in paths.items():
        files = {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path))}
        print(f"{variant:13s}", ", ".join(f"{f} ({n / 1024:.0f} KiB)" for f, n in files.items()))

# %% [markdown]
# ## Loading: the same names, except weight norm
#
# tinyw2v2's module tree is transformers', so `named_parameters()` gives transformers' state-dict names in
# transformers' order, and `Wav2Vec2ForPreTraining.from_pretrained(dir)` reads `config.json` and
# `model.safetensors` with `safetensors.numpy` (no torch involved). The one difference is the positional
# convolution's weight norm, $w = g \cdot v / \lVert v \rVert$ (one $g$ per kernel tap, notebook 4). transformers 5
# implements it with `torch.nn.utils.parametrizations.weight_norm`, which stores g and v as
# `parametrizations.weight.original0` and `original1`; older torch, fairseq-converted and most Hub checkpoints
# use `weight_g` and `weight_v`, which is what tinyw2v2 calls them. Both spellings load
# (`tinyw2v2.models.wav2vec2.hf.normalize_key`). The names side by side, for the group-norm variant (layer 1
# has the same 16 names as layer 0):

# %%
if not HAVE_HF:
    print(SKIPPED)
else:
    from safetensors.numpy import load_file

    on_disk = load_file(os.path.join(paths["group_postln"], "model.safetensors"))
    hf_model = transformers.Wav2Vec2ForPreTraining.from_pretrained(paths["group_postln"])
    ours = Wav2Vec2ForPreTraining.from_pretrained(paths["group_postln"], device=device)
    hf_names = list(hf_model.state_dict())
    our_state = ours.state_dict()
    assert set(on_disk) == set(hf_names)
    print(f"{'transformers state dict (= model.safetensors)':58s} {'tinyw2v2':46s} shape")
    for theirs, mine in zip(hf_names, our_state):
        if ".layers.1." in theirs:
            continue
        flag = "  <- renamed" if theirs != mine else ""
        print(f"{theirs.replace('wav2vec2.', ''):58s} {mine.replace('wav2vec2.', ''):46s} "
              f"{tuple(our_state[mine].shape)}{flag}")
    print(f"\nsame order after normalize_key: {[normalize_key(k) for k in hf_names] == list(our_state)};  "
          f"parameters: transformers {sum(p.numel() for p in hf_model.parameters()):,}, "
          f"tinyw2v2 {ours.num_parameters():,}")

    # the weight itself: transformers recomputes it from g and v on every access, as tinyw2v2's weight() does
    w_hf = hf_model.wav2vec2.encoder.pos_conv_embed.conv.weight.detach().numpy()
    w_ours = ours.wav2vec2.encoder.pos_conv_embed.conv.weight().numpy()
    print(f"positional conv weight g*v/||v||: shape {w_ours.shape}, max |tinyw2v2 - transformers| = "
          f"{np.abs(w_ours - w_hf).max():.1e}")

# %% [markdown]
# ## Running both on the same inputs
#
# Everything random is made outside the models, with NumPy, and given to both:
#
# - the audio: 3 utterances of 800 samples, so T = 39 frames after the CNN (kernels 10, 3, 3, strides 5, 2, 2);
# - `mask_time_indices` (B, T) and `sampled_negative_indices` (B, T, K), transformers' conventions (notebook 6);
# - in training mode, the Gumbel noise (B, T, G, V) of the quantiser (notebook 5). tinyw2v2 takes it as
#   `gumbel_noise=`; transformers draws it inside `torch.nn.functional.gumbel_softmax`, so for the comparison that
#   function is replaced by torch's own formula applied to our noise.
#
# The intermediate tensors of transformers are caught with forward hooks; tinyw2v2 returns `extract_features`
# and `hidden_states` itself, and the per-convolution outputs and the quantised vectors are recomputed by calling
# the model's own modules (`conv_layers[i]`, `quantizer`). Every comparison is a **relative error**,
#
# $$\text{err}(a, b) = \frac{\max_i |a_i - b_i|}{\max_i |b_i|},$$
#
# one number per array, with b from transformers.

# %%
B, L = 3, 800
ZERO_BY_CONSTRUCTION = ("attention.k_proj.bias",)      # why: below


def rel(ours_array, theirs) -> float:
    a = np.asarray(ours_array, dtype=np.float64)
    b = theirs.detach().double().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs, np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


def host(t) -> np.ndarray:
    """A tinyw2v2 Tensor (or gradient array) as a host float64 array (an explicit copy from the device)."""
    return np.asarray(t.numpy() if isinstance(t, tw.Tensor) else backend.to_numpy(t), dtype=np.float64)


def make_inputs(model, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, L)).astype(dtype)
    T = model.num_frames(L)
    mask = compute_mask_indices((B, T), SMALL["mask_time_prob"], SMALL["mask_time_length"], rng=rng)
    negatives = sample_negative_indices((B, T), SMALL["num_negatives"], mask, rng)
    G, V = SMALL["num_codevector_groups"], SMALL["num_codevectors_per_group"]
    noise = -np.log(rng.exponential(size=(B, T, G, V))).astype(dtype)     # standard Gumbel
    return x, mask, negatives, noise


@contextlib.contextmanager
def gumbel_noise_from(noise):
    """Make torch.nn.functional.gumbel_softmax use `noise` instead of drawing (torch's formula otherwise)."""
    original = torch.nn.functional.gumbel_softmax

    def fixed(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        y_soft = ((logits + torch.from_numpy(noise.reshape(logits.shape)).to(logits.dtype)) / tau).softmax(dim)
        if not hard:
            return y_soft
        y_hard = torch.zeros_like(logits).scatter_(dim, y_soft.argmax(dim, keepdim=True), 1.0)
        return y_hard - y_soft.detach() + y_soft                       # straight-through

    torch.nn.functional.gumbel_softmax = fixed
    try:
        yield
    finally:
        torch.nn.functional.gumbel_softmax = original


def reference_loss(hf_out, mask, negatives, temperature=0.1, diversity_weight=0.1):
    """transformers' contrastive + diversity loss from its projected states, without its float32 casts."""
    q, pred = hf_out.projected_quantized_states, hf_out.projected_states          # (B, T, P)
    K, P = negatives.shape[-1], q.shape[-1]
    negs = q.reshape(-1, P)[torch.from_numpy(negatives).reshape(-1)].reshape(B, -1, K, P).permute(2, 0, 1, 3)
    targets = torch.cat([q[None], negs], 0)                                       # (1+K, B, T, P)
    logits = torch.cosine_similarity(pred, targets, dim=-1) / temperature        # (1+K, B, T)
    same = torch.cat([torch.zeros_like(logits[:1], dtype=torch.bool), (q[None] == negs).all(-1)], 0)
    logits = logits.masked_fill(same, float("-inf")).transpose(0, 2).reshape(-1, K + 1)
    target = ((1 - torch.from_numpy(mask).long()) * -100).transpose(0, 1).flatten()
    contrastive = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    return contrastive, contrastive + diversity_weight * hf_out.diversity_loss


def compare(variant, dtype, train=False):
    """Run transformers and tinyw2v2 on the same inputs; relative errors of the forward tensors and gradients."""
    path = paths[variant]
    hf = transformers.Wav2Vec2ForPreTraining.from_pretrained(path)
    ours = Wav2Vec2ForPreTraining.from_pretrained(path, device=device, dtype=dtype)
    if dtype == np.float64:
        hf = hf.double()
    hf.train(train)
    ours.train(train)
    x, mask, negatives, noise = make_inputs(ours, dtype)

    caught = {}                                        # transformers' intermediate tensors, via forward hooks
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: caught.__setitem__(f"CNN conv {k} output", o))
             for k, layer in enumerate(hf.wav2vec2.feature_extractor.conv_layers)]
    hooks.append(hf.wav2vec2.feature_projection.register_forward_hook(
        lambda m, i, o: caught.__setitem__("extract_features", o[1])))
    hooks.append(hf.quantizer.register_forward_hook(lambda m, i, o: caught.__setitem__("quantized codevectors", o[0])))
    if hf.config.do_stable_layer_norm:                 # pre-LN: the final LayerNorm is not in hidden_states
        hooks.append(hf.wav2vec2.encoder.layer_norm.register_forward_hook(
            lambda m, i, o: caught.__setitem__("last_hidden_state", o)))
    with gumbel_noise_from(noise) if train else contextlib.nullcontext():
        hf_out = hf(torch.from_numpy(x), mask_time_indices=torch.from_numpy(mask),
                    sampled_negative_indices=torch.from_numpy(negatives), output_hidden_states=True)
    for h in hooks:
        h.remove()
    out = ours(x, mask_time_indices=mask, sampled_negative_indices=negatives,
               gumbel_noise=noise if train else None, output_hidden_states=True)

    mine = {}                                          # the same tensors from tinyw2v2's own modules
    with tw.no_grad():
        h = tw.tensor(x.reshape(B, 1, L), dtype=dtype, device=device)        # (B, L) -> (B, 1, L)
        for k, layer in enumerate(ours.wav2vec2.feature_extractor.conv_layers):
            h = layer(h)
            mine[f"CNN conv {k} output"] = h
        mine["extract_features"] = out.extract_features
        for k, hs in enumerate(out.hidden_states):
            mine[f"hidden_states[{k}]"] = hs
            caught[f"hidden_states[{k}]"] = hf_out.hidden_states[k]
        mine["last_hidden_state"] = out.last_hidden_state
        caught.setdefault("last_hidden_state", hf_out.hidden_states[-1])
        mine["projected_states"] = out.projected_states
        mine["quantized codevectors"] = ours.quantizer(out.extract_features, backend.to_device(mask, device),
                                                       noise if train else None)[0]
        mine["projected_quantized_states"] = out.projected_quantized_states
    for name in ("projected_states", "projected_quantized_states", "codevector_perplexity", "diversity_loss"):
        caught[name] = getattr(hf_out, name)
        mine[name] = getattr(out, name)

    # losses: transformers computes the contrastive logits and the cross entropy in float32 even in float64,
    # so its float64 model is also compared with the same formula evaluated in float64 (reference_loss)
    contrastive64, loss64 = reference_loss(hf_out, mask, negatives)
    if dtype == np.float64:
        caught["contrastive_loss"], caught["loss"] = contrastive64, loss64
        caught["loss (transformers' own, float32 casts)"] = hf_out.loss
        mine["loss (transformers' own, float32 casts)"] = out.loss
        loss_hf = loss64
    else:
        caught["contrastive_loss"], caught["loss"] = hf_out.contrastive_loss, hf_out.loss
        loss_hf = hf_out.loss
    mine["contrastive_loss"], mine["loss"] = out.contrastive_loss, out.loss
    forward = {name: rel(host(mine[name]), caught[name]) for name in mine}

    loss_hf.backward()
    out.loss.backward()
    ours_params = dict(ours.named_parameters())
    zero_names = ZERO_BY_CONSTRUCTION + (() if train else ("quantizer.weight_proj.",))
    scale = max(float(p.grad.abs().max()) for p in hf.parameters() if p.grad is not None)
    grads, zero = {}, {}
    for name, p in hf.named_parameters():
        param = ours_params[normalize_key(name)]
        g = np.zeros(param.shape) if param.grad is None else host(param.grad)
        short = normalize_key(name).replace("wav2vec2.", "").replace("feature_extractor.", "")
        if any(z in name for z in zero_names):         # compared absolutely, relative to the largest gradient
            zero[short] = (np.abs(g).max() / scale, 0.0 if p.grad is None else float(p.grad.abs().max()) / scale)
        else:
            grads[short] = rel(g, p.grad)
    return dict(forward=forward, grads=grads, zero=zero)


# %% [markdown]
# ## Eval mode, float32 and float64
#
# In eval mode the quantiser picks each code by argmax (no noise) and nothing is random. transformers runs in
# float64 after `.double()`; tinyw2v2 loads the checkpoint with `dtype=np.float64`.

# %%
def table(results, columns, rows=None):
    """Print one row per name, one column per run: the relative errors."""
    rows = rows or list(dict.fromkeys(k for c in columns for k in results[c]))
    w = max(map(len, rows)) + 1
    print(f"{'':{w}s}" + "".join(f"{c[0]:>14s}" for c in columns))
    print(f"{'':{w}s}" + "".join(f"{c[1]:>14s}" for c in columns))
    for name in rows:
        cells = [results[c].get(name) for c in columns]
        print(f"{name:{w}s}" + "".join(f"{v:>14.1e}" if v is not None else f"{'-':>14s}" for v in cells))


if not HAVE_HF:
    print(SKIPPED)
else:
    runs = {}
    for variant in VARIANTS:
        for dtype in (np.float32, np.float64):
            runs[(variant, "eval", np.dtype(dtype).name)] = compare(variant, dtype, train=False)
    eval_cols = [k for k in runs if k[1] == "eval"]
    table({k[0::2]: v["forward"] for k, v in runs.items()}, [k[0::2] for k in eval_cols])

# %% [markdown]
# Every intermediate tensor agrees to within about ten units of rounding: a few 1e-7 in float32 and about
# 1e-15 in float64 (below, why). A few rows are exactly 0. The quantised codevectors are *looked up*, not
# computed (a one-hot row times the codebook, summed: adding zeros is exact), so as long as both libraries pick
# the same codes they are bit-identical; and one small linear layer (`project_q`) applied to bit-identical inputs
# often rounds identically too. The eval-mode perplexity depends only on which codes were picked.
#
# `last_hidden_state` is the Transformer's output after the final LayerNorm of the pre-LN variant
# (transformers 5 does not put that LayerNorm into `hidden_states`); in the post-LN variant it is the last
# hidden state. In float64, `loss (transformers' own, float32 casts)` is the one row stuck at float32 precision
# (rounding a number to float32 moves it by up to $2^{-24} \approx 6\cdot10^{-8}$): transformers evaluates the
# cosine similarities and the cross entropy in float32 whatever the model's dtype (`.float()` in
# `compute_contrastive_logits` and before `cross_entropy`), so its float64 model has a float32 loss. The
# `contrastive_loss` and `loss` rows compare against the same formula evaluated in float64 from transformers'
# float64 projected states (`reference_loss`), and the float64 gradients below are taken through that loss.
#
# ## The gradient of every parameter
#
# `loss.backward()` on both sides, and one relative error per parameter (names shortened: no `wav2vec2.`,
# no `feature_extractor.`):

# %%
if not HAVE_HF:
    print(SKIPPED)
else:
    table({k[0::2]: v["grads"] for k, v in runs.items()}, [k[0::2] for k in eval_cols])
    print("\nzero by construction: max |gradient| / largest gradient of the model  (tinyw2v2, transformers)")
    for k in eval_cols:
        for name, (a, b) in runs[k]["zero"].items():
            print(f"  {k[0]:13s} {k[2]:8s} {name:42s} {a:9.1e} {b:9.1e}")

# %% [markdown]
# The same numbers as a picture, on a log scale; the dotted lines are the unit roundoff $u$ of each format
# ($2^{-24} \approx 6\cdot10^{-8}$ and $2^{-53} \approx 1.1\cdot10^{-16}$, the largest relative error of rounding one
# number). Hollow markers are the gradients that are zero by construction, relative to the largest gradient.

# %%
def plot_gradient_errors(runs, keys, title):
    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(13, 7.5), sharex=True)
    markers = {"eval": "o", "train": "^"}
    colours = {"float32": "C0", "float64": "C3"}
    for ax, variant in zip(axes, VARIANTS):
        names = list(dict.fromkeys(n for k in keys if k[0] == variant
                                   for n in list(runs[k]["grads"]) + list(runs[k]["zero"])))
        y = {n: i for i, n in enumerate(names)}
        for k in keys:
            if k[0] != variant:
                continue
            r = runs[k]
            style = dict(marker=markers[k[1]], color=colours[k[2]], ls="none", ms=5)
            ax.plot(list(r["grads"].values()), [y[n] for n in r["grads"]], label=f"{k[1]}, {k[2]}", **style)
            zeros = [(max(a, b), y[n]) for n, (a, b) in r["zero"].items() if max(a, b) > 0]
            if zeros:
                ax.plot(*zip(*zeros), mfc="none", **style)
        for u, lab in ((2.0 ** -24, "u float32"), (2.0 ** -53, "u float64")):
            ax.axvline(u, color="gray", ls=":", lw=1)
            ax.text(u, -1.2, lab, fontsize=7, ha="center", color="gray")
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=6)
        ax.set_ylim(len(names) - 0.5, -1.8)
        ax.set_xscale("log")
        ax.set_xlim(1e-20, 1e-4)
        ax.set_xlabel("relative error of the gradient")
        ax.set_title(variant, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=8, loc="center")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    plt.show()


if not HAVE_HF:
    print(SKIPPED)
else:
    plot_gradient_errors(runs, eval_cols, "tinyw2v2 vs transformers: gradient of the loss, eval mode")

# %% [markdown]
# ## Why the errors are what they are
#
# **Rounding, not formulas.** A float32 number carries 24 significant bits, so rounding one result is a relative
# error of up to $u = 2^{-24} \approx 6\cdot10^{-8}$. The two libraries compute the same formulas with different
# *orders of operations*: tinyw2v2's convolution is im2col + one GEMM, torch's is its own kernel; the GEMMs
# block their sums differently; torch's attention is the fused `scaled_dot_product_attention` kernel, tinyw2v2's
# is its own; LayerNorm's mean and variance are reduced in a different order. Each ordering rounds differently,
# and a dot product of n terms can be off by up to about $n u$ (typically $\sqrt n\,u$) relative to the sum of the
# absolute values of its terms. After a few dozen such steps the two results differ in their last one to three
# bits: 1e-7 to 1e-6. The evidence that nothing else differs is the float64 column: the same computation with
# $u = 2^{-53}$ agrees to about 1e-15, the float32 errors scaled down by about $2^{29} \approx 5\cdot10^8$. A
# genuine difference in the formulas (a missing bias, eps in the wrong place, a different GELU) would give the
# same error in both precisions, and would not shrink with $u$.
#
# **Where errors grow.** LayerNorm and GroupNorm divide by the standard deviation of their input, and the
# mean they subtract can be large compared with what is left; cancellation of this kind (a result much smaller
# than the terms it is computed from) turns the terms' rounding into a larger relative error of the result.
# The relative error is measured against each array's own largest entry, so it is a fair "number of correct
# digits" for that array.
#
# **Gradients are a little worse than the forward pass** (up to about 2e-6 in float32): the backward of each
# layer takes the forward values, already rounded differently, and does about twice as many sums; a parameter's
# gradient sums a contribution from every frame of every utterance, and many of those cancel. The largest
# errors sit in the front end (CNN convolutions and their biases, the feature projection), at the end of the
# longest backward chain, and in biases, whose gradient is a plain sum over all frames of terms of both signs.
#
# **Gradients that are zero by construction.**
#
# - `attention.k_proj.bias`: the scores of query i are $q_i \cdot (W_k x_j + b_k)/\sqrt d$, and $q_i\cdot b_k$ is
#   the same for every key j. A softmax does not change when a constant is added to all its inputs, so $b_k$ has
#   no effect on the output and its exact gradient is 0. Both libraries compute it as a sum of terms that cancel
#   in exact arithmetic; what is left is their rounding, about 1e-10 to 1e-9 of the model's largest gradient in
#   float32 and 1e-19 to 1e-18 in float64, in both libraries (less than $u$, as the cancelling terms are small
#   themselves). A relative error between two roundoff residues would mean nothing, so they are shown against
#   the largest gradient of the model.
# - `quantizer.weight_proj` in eval mode: codes are chosen by argmax, which has no derivative. transformers'
#   gradient is `None`, tinyw2v2's is absent, both exactly 0 (nothing to plot on a log scale). In training mode
#   the straight-through estimator gives it a gradient, compared below.
#
# ## Training mode, with the same Gumbel noise
#
# In training mode the quantiser adds Gumbel noise to its logits, takes a hard one-hot code in the forward pass
# and the softmax's gradient in the backward pass (straight-through), and the diversity loss uses the soft
# probabilities. With dropout and LayerDrop at 0, the noise is the only randomness, and both get the same.
# transformers casts the quantiser's logits to float32 for the Gumbel softmax and the perplexity
# (`hidden_states.float()`), so in a float64 model those parts are float32 too: watch the float64 columns.

# %%
if not HAVE_HF:
    print(SKIPPED)
else:
    for variant in VARIANTS:
        for dtype in (np.float32, np.float64):
            runs[(variant, "train", np.dtype(dtype).name)] = compare(variant, dtype, train=True)
    train_cols = [k for k in runs if k[1] == "train"]
    table({k[0::2]: v["forward"] for k, v in runs.items() if k[1] == "train"}, [k[0::2] for k in train_cols])
    print()
    grads = {k[0::2]: v["grads"] for k, v in runs.items() if k[1] == "train"}
    table(grads, [k[0::2] for k in train_cols], rows=[n for n in grads[train_cols[0][0::2]] if "quantizer" in n
                                                          or "conv_layers.0" in n or "project_q" in n])
    print("\nlargest gradient error over all parameters:")
    for k in eval_cols + train_cols:
        worst = max(runs[k]["grads"], key=runs[k]["grads"].get)
        print(f"  {k[0]:13s} {k[1]:5s} {k[2]:8s} {runs[k]['grads'][worst]:8.1e}  ({worst})")

# %%
if not HAVE_HF:
    print(SKIPPED)
else:
    plot_gradient_errors(runs, train_cols,
                         "tinyw2v2 vs transformers: gradient of the loss, training mode, same Gumbel noise")

# %% [markdown]
# In float32, training mode matches as well as eval mode, and `quantizer.weight_proj` now has a gradient (the
# straight-through estimator's) that agrees too. In float64 the hard codes still agree (the argmax picks the
# same entries), so the codevectors, the projected quantised states, the contrastive loss and the gradients of
# `codevectors` and `project_q` are float64-exact. But transformers computes the perplexity, hence the diversity
# loss, from a float32 softmax, and the straight-through gradient flows back through that float32 softmax: the
# diversity loss (its `GV - perplexity` loses a digit to cancellation) and the gradients of `weight_proj` and of
# everything below it on the quantiser's side (the feature projection's LayerNorm, the whole CNN) carry
# float32-sized errors, while the Transformer, `masked_spec_embed`, the feature projection's Linear and
# `project_hid`, which that path does not reach, stay at float64 precision. The plot draws that boundary
# through the model. It is not a tinyw2v2 error but the place where transformers computes in float32, which is
# why the test suite checks training mode in float32 only.
#
# ## Try this
#
# - Break something on purpose and watch which rows light up: load the checkpoint, then add 1e-3 to one bias
#   (`ours.state_dict()` gives the arrays), or change `layer_norm_eps` in one model's config. Compare the float32
#   and float64 columns: a formula difference does not shrink in float64.
# - Drop the 0.05 perturbation in `make_checkpoint`: which parameters' gradients become exactly zero in both
#   libraries, and which comparisons stop testing anything?
# - Compare transformers' own float64 loss (the row with float32 casts) for several seeds: how many float32
#   units of roundoff is the difference?
# - Run the tinyw2v2 side on a GPU (`device = "cuda"`): the float32 errors change (cuBLAS sums in yet another
#   order) but stay at the 1e-7 level.
# - Use a checkpoint from the Hub instead of a random one (`transformers.Wav2Vec2ForPreTraining.from_pretrained(
#   "facebook/wav2vec2-base")`, then `save_pretrained`): the BASE architecture is the group-norm, post-LN variant.
