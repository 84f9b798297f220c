"""Numerical parity with transformers' Wav2Vec2ForPreTraining (skipped cleanly without torch / transformers).

Randomly initialised transformers models (both variants: group-norm CNN + post-LN, and layer-norm CNN with
conv bias + pre-LN), saved with ``save_pretrained`` and loaded with our ``from_pretrained``, get the same
audio, mask and negatives. Compared: extract_features, every hidden state, projected (quantised) states,
contrastive and diversity losses (1e-5 relative in float32, 1e-9 in float64) and the gradient of the loss
for every parameter (1e-4 relative in float32, 1e-7 in float64). Relative error = max|ours - theirs| /
max|theirs| per array. Mathematically zero gradients (the attention key bias: softmax ignores a constant
per query row; the quantiser's weight_proj in eval mode, where codes are an argmax) are compared absolutely.

transformers computes the contrastive logits and the cross-entropy in float32 even in a float64 model
(``.float()`` casts), so in float64 the loss is recomputed from its float64 projected states with the same
formula in torch (``_reference_loss``), and the gradients are taken through transformers' float64 graph.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from tinyw2v2.models.wav2vec2 import (Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2Model,  # noqa: E402
                                      compute_mask_indices, sample_negative_indices)
from tinyw2v2.models.wav2vec2.hf import normalize_key  # noqa: E402

pytestmark = pytest.mark.torchref

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
TOL = {np.float32: dict(fwd=1e-5, grad=1e-4, zero=1e-5), np.float64: dict(fwd=1e-9, grad=1e-7, zero=1e-12)}
B, L = 3, 800          # T = 39 frames
ZERO_GRAD = ("attention.k_proj.bias",)


def _hf_config(variant, **extra):
    return transformers.Wav2Vec2Config(**SMALL, **VARIANTS[variant], **extra)


_SAVED = {}


def _saved(variant, tmp_path_factory):
    """A random transformers model (parameters perturbed so that no bias is 0 and no norm weight is 1), saved."""
    if variant not in _SAVED:
        torch.manual_seed(0)
        hf = transformers.Wav2Vec2ForPreTraining(_hf_config(variant))
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(0.05 * torch.randn_like(p))
        path = tmp_path_factory.mktemp(variant)
        hf.save_pretrained(path)
        _SAVED[variant] = (variant, hf, str(path))
    return _SAVED[variant]


@pytest.fixture(scope="module", params=list(VARIANTS))
def saved(request, tmp_path_factory):
    return _saved(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def saved_layer_preln(tmp_path_factory):
    return _saved("layer_preln", tmp_path_factory)


def _rel(ours, theirs) -> float:
    a = np.asarray(ours.numpy() if hasattr(ours, "numpy") and not isinstance(ours, torch.Tensor) else ours,
                   dtype=np.float64)
    b = theirs.detach().double().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs, np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


def _inputs(model, dtype, lengths=None, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, L)).astype(dtype)
    T = model.num_frames(L)
    attention_mask = None
    frame_lengths = None
    if lengths is not None:
        attention_mask = (np.arange(L)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
        x = (x * attention_mask).astype(dtype)
        frame_lengths = model.num_frames(np.asarray(lengths))
    mask = compute_mask_indices((B, T), 0.5, 3, lengths=frame_lengths, require_same_masks=lengths is None, rng=rng)
    negatives = sample_negative_indices((B, T), SMALL["num_negatives"], mask, rng)
    noise = -np.log(rng.exponential(size=(B, T, SMALL["num_codevector_groups"], SMALL["num_codevectors_per_group"])))
    return x, attention_mask, mask, negatives, noise.astype(dtype)


def _reference_loss(hf_out, mask, negatives, temperature=0.1, diversity_weight=0.1):
    """transformers' contrastive + diversity loss, from its projected states, without its float32 casts."""
    q, pred = hf_out.projected_quantized_states, hf_out.projected_states          # (B, T, P)
    Bq, T, P = q.shape
    K = negatives.shape[-1]
    negs = q.reshape(-1, P)[torch.from_numpy(negatives).reshape(-1)]             # (B*T*K, P)
    negs = negs.reshape(Bq, T, K, P).permute(2, 0, 1, 3)                        # (K, B, T, P)
    targets = torch.cat([q[None], negs], 0)                                     # (1+K, B, T, P)
    logits = torch.cosine_similarity(pred, targets, dim=-1) / temperature      # (1+K, B, T)
    duplicate = torch.cat([torch.zeros_like(logits[:1], dtype=torch.bool), (q[None] == negs).all(-1)], 0)
    logits = logits.masked_fill(duplicate, float("-inf"))
    logits = logits.transpose(0, 2).reshape(-1, K + 1)                          # (T, B, 1+K) -> (T*B, 1+K)
    target = ((1 - torch.from_numpy(mask).long()) * -100).transpose(0, 1).flatten()
    contrastive = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    return contrastive, contrastive + diversity_weight * hf_out.diversity_loss


class _FixedGumbel:
    """Replaces torch.nn.functional.gumbel_softmax: torch's formula with the Gumbel noise given as data."""

    def __init__(self, noise):
        self.noise = noise

    def __call__(self, logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        g = torch.from_numpy(self.noise.reshape(logits.shape)).to(logits.dtype)
        soft = ((logits + g) / tau).softmax(dim)
        if not hard:
            return soft
        hard_ = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
        return hard_ - soft.detach() + soft


def _run_both(saved, dtype, train=False, lengths=None, monkeypatch=None):
    variant, hf_saved, path = saved
    hf = transformers.Wav2Vec2ForPreTraining.from_pretrained(path)
    ours = Wav2Vec2ForPreTraining.from_pretrained(path, dtype=dtype)
    if dtype == np.float64:
        hf = hf.double()
    hf.train(train)
    ours.train(train)
    x, attention_mask, mask, negatives, noise = _inputs(ours, dtype, lengths)
    if train:
        monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", _FixedGumbel(noise))
    captured = {}
    hf.wav2vec2.feature_projection.register_forward_hook(lambda m, i, o: captured.__setitem__("extract", o[1]))
    hf_mask = None if attention_mask is None else torch.from_numpy(attention_mask)
    hf_out = hf(torch.from_numpy(x), attention_mask=hf_mask, mask_time_indices=torch.from_numpy(mask),
                sampled_negative_indices=torch.from_numpy(negatives), output_hidden_states=True)
    out = ours(x, attention_mask=attention_mask, mask_time_indices=mask, sampled_negative_indices=negatives,
               gumbel_noise=noise if train else None, output_hidden_states=True)
    hf_out.extract_features = captured["extract"]
    return hf, hf_out, ours, out, mask, negatives


def _check_forward(hf_out, out, tol, float64):
    errors = {"extract_features": _rel(out.extract_features, hf_out.extract_features),
              "projected_states": _rel(out.projected_states, hf_out.projected_states),
              "projected_quantized_states": _rel(out.projected_quantized_states, hf_out.projected_quantized_states),
              "diversity_loss": _rel(out.diversity_loss, hf_out.diversity_loss),
              "codevector_perplexity": _rel(out.codevector_perplexity, hf_out.codevector_perplexity)}
    assert len(out.hidden_states) == len(hf_out.hidden_states)
    for i, (a, b) in enumerate(zip(out.hidden_states, hf_out.hidden_states)):
        errors[f"hidden_states[{i}]"] = _rel(a, b)
    if not float64:
        errors["contrastive_loss"] = _rel(out.contrastive_loss, hf_out.contrastive_loss)
        errors["loss"] = _rel(out.loss, hf_out.loss)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"forward mismatch beyond {tol:g}: {bad}"
    return errors


def _check_gradients(hf, ours, tol, zero_tol, eval_mode):
    ours_params = dict(ours.named_parameters())
    zero_names = ZERO_GRAD + (("quantizer.weight_proj.",) if eval_mode else ())
    scale = max(float(p.grad.abs().max()) for p in hf.parameters() if p.grad is not None)
    errors, bad = {}, {}
    for name, p in hf.named_parameters():
        mine = ours_params[normalize_key(name)]
        g_mine = np.zeros(mine.shape) if mine.grad is None else mine.grad
        g_mine = np.asarray(g_mine, dtype=np.float64)
        if any(z in name for z in zero_names):
            theirs = 0.0 if p.grad is None else float(p.grad.abs().max())
            worst = max(float(np.abs(g_mine).max()), theirs) / scale
            if not worst <= zero_tol:
                bad[name] = f"zero gradient expected, max |g| / max grad = {worst:.3g}"
            continue
        assert p.grad is not None, name
        errors[name] = _rel(g_mine, p.grad)
        if not errors[name] <= tol:
            bad[name] = errors[name]
    assert not bad, f"gradient mismatch beyond {tol:g}: {bad}"
    return errors


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_eval_parity(saved, dtype):
    tol = TOL[dtype]
    hf, hf_out, ours, out, mask, negatives = _run_both(saved, dtype, train=False)
    float64 = dtype == np.float64
    _check_forward(hf_out, out, tol["fwd"], float64)
    if float64:
        contrastive, loss = _reference_loss(hf_out, mask, negatives)
        assert _rel(out.contrastive_loss, contrastive) <= tol["fwd"]
        assert _rel(out.loss, loss) <= tol["fwd"]
        # transformers' own float32-cast loss agrees to float32 rounding
        assert _rel(out.loss, hf_out.loss) <= 1e-6
    else:
        loss = hf_out.loss
    loss.backward()
    out.loss.backward()
    _check_gradients(hf, ours, tol["grad"], tol["zero"], eval_mode=True)


def test_train_parity_with_fixed_gumbel_noise(saved, monkeypatch):
    """Train mode, dropout 0, layerdrop 0, the same Gumbel noise in both (float32: transformers casts to it)."""
    tol = TOL[np.float32]
    hf, hf_out, ours, out, _, _ = _run_both(saved, np.float32, train=True, monkeypatch=monkeypatch)
    _check_forward(hf_out, out, tol["fwd"], float64=False)
    assert _rel(out.prob_perplexity, hf_out.codevector_perplexity) <= tol["fwd"]
    hf_out.loss.backward()
    out.loss.backward()
    errors = _check_gradients(hf, ours, tol["grad"], tol["zero"], eval_mode=False)
    assert "quantizer.weight_proj.weight" in errors  # the straight-through gradient reaches the quantiser


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_variable_length_batch_parity(saved_layer_preln, train, monkeypatch):
    """Zero-padded batch with an attention mask (the layer-norm variant, as transformers recommends)."""
    tol = TOL[np.float32]
    hf, hf_out, ours, out, mask, _ = _run_both(saved_layer_preln, np.float32, train=train, lengths=[800, 650, 520],
                                               monkeypatch=monkeypatch)
    lengths = ours.num_frames(np.array([800, 650, 520]))
    assert not (mask & (np.arange(mask.shape[1])[None, :] >= lengths[:, None])).any()
    _check_forward(hf_out, out, tol["fwd"], float64=False)
    hf_out.loss.backward()
    out.loss.backward()
    _check_gradients(hf, ours, tol["grad"], tol["zero"], eval_mode=not train)


def test_state_dict_names_and_shapes_equal_transformers(saved):
    variant, hf, path = saved
    ours = Wav2Vec2ForPreTraining(Wav2Vec2Config.from_dict(_hf_config(variant).to_dict()))
    theirs = {normalize_key(k): tuple(v.shape) for k, v in hf.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(mine) == list(theirs)  # same names, same order
    assert mine == theirs
    assert [normalize_key(n) for n, _ in hf.named_parameters()] == [n for n, _ in ours.named_parameters()]


def test_base_preset_matches_transformers_default_architecture():
    hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config())
    ours = Wav2Vec2ForPreTraining(Wav2Vec2Config.base())
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters()) == 95_044_608
    theirs = {normalize_key(k): tuple(v.shape) for k, v in hf.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs


def test_config_json_round_trip(saved, tmp_path):
    variant, hf, path = saved
    cfg = Wav2Vec2Config.from_pretrained(path)
    assert cfg.feat_extract_norm == VARIANTS[variant]["feat_extract_norm"]
    assert cfg.conv_dim == SMALL["conv_dim"] and cfg.num_negatives == SMALL["num_negatives"]
    cfg.save_pretrained(tmp_path)
    back = transformers.Wav2Vec2Config.from_pretrained(tmp_path)
    for key, value in SMALL.items():
        assert getattr(back, key) == (list(value) if isinstance(value, tuple) else value), key
    assert back.feature_grad_mult == 1.0  # our extra fields ride along as attributes


@pytest.mark.parametrize("names", ["legacy", "parametrizations"])
def test_our_save_pretrained_loads_in_transformers(saved, tmp_path, names):
    from tinyw2v2.models.wav2vec2.hf import save_pretrained

    variant, _, path = saved
    ours = Wav2Vec2ForPreTraining.from_pretrained(path).eval()
    save_pretrained(ours, tmp_path, weight_norm_names=names)
    hf = transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path).eval()
    x, _, mask, negatives, _ = _inputs(ours, np.float32)
    out = ours(x, mask_time_indices=mask, sampled_negative_indices=negatives)
    with torch.no_grad():
        hf_out = hf(torch.from_numpy(x), mask_time_indices=torch.from_numpy(mask),
                    sampled_negative_indices=torch.from_numpy(negatives))
    assert _rel(out.projected_states, hf_out.projected_states) <= 1e-5
    assert _rel(out.loss, hf_out.loss) <= 1e-5


def test_pytorch_model_bin_loads(saved, tmp_path):
    """A pickled torch state dict with the old weight-norm names (transformers 5 no longer writes .bin files)."""
    variant, hf, path = saved
    hf.config.save_pretrained(tmp_path)
    state = {k.replace("parametrizations.weight.original0", "weight_g")
              .replace("parametrizations.weight.original1", "weight_v"): v for k, v in hf.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    a = Wav2Vec2ForPreTraining.from_pretrained(tmp_path)
    b = Wav2Vec2ForPreTraining.from_pretrained(path)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)


@pytest.mark.parametrize("head", ["Wav2Vec2Model", "Wav2Vec2ForCTC"])
def test_encoder_weights_load_from_model_and_ctc_checkpoints(saved, tmp_path, head):
    variant = saved[0]
    torch.manual_seed(1)
    hf = getattr(transformers, head)(_hf_config(variant)).eval()
    hf.save_pretrained(tmp_path)
    encoder = hf if head == "Wav2Vec2Model" else hf.wav2vec2
    x = np.random.default_rng(3).standard_normal((2, L)).astype(np.float32)
    with torch.no_grad():
        expected = encoder(torch.from_numpy(x)).last_hidden_state
    model = Wav2Vec2Model.from_pretrained(tmp_path).eval()
    assert _rel(model(x).last_hidden_state, expected) <= 1e-5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full = Wav2Vec2ForPreTraining.from_pretrained(tmp_path).eval()
    assert any("quantizer.codevectors" in str(w.message) for w in caught)
    assert "quantizer.codevectors" in full.loading_info["missing_keys"]
    assert _rel(full.wav2vec2(x).last_hidden_state, expected) <= 1e-5
