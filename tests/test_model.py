"""The wav2vec 2.0 model: config, masking and negatives, shapes, padding, quantiser modes, gradients, devices, I/O.

Parity with transformers is in test_hf_parity.py; everything here runs without torch.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import tinyw2v2 as tw
from tinyw2v2 import backend, optim
from tinyw2v2.models.wav2vec2 import (Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2Model, compute_mask_indices,
                                      sample_negative_indices)
from tinyw2v2.models.wav2vec2.hf import save_pretrained

MICRO = dict(
    conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), hidden_size=16, num_hidden_layers=2,
    num_attention_heads=2, intermediate_size=32, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
    num_codevector_groups=2, num_codevectors_per_group=4, codevector_dim=8, proj_codevector_dim=6, num_negatives=4,
    mask_time_prob=0.5, mask_time_length=3, mask_time_min_masks=2)
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  feat_quantizer_dropout=0.0, layerdrop=0.0)
L = 800   # 39 frames with MICRO's CNN


def micro(**overrides) -> Wav2Vec2Config:
    values = dict(MICRO)
    values.update(overrides)
    return Wav2Vec2Config(**values)


def audio(batch=2, length=L, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((batch, length)).astype(dtype)


# ----------------------------------------------------------------------------------------------
# config


def test_presets():
    tiny = Wav2Vec2Config.tiny()
    assert tiny.conv_dim == (64,) * 7 and tiny.conv_kernel == (10, 3, 3, 3, 3, 2, 2)
    assert tiny.conv_stride == (5, 2, 2, 2, 2, 2, 2)
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads,
            tiny.intermediate_size) == (128, 4, 4, 512)
    assert (tiny.num_conv_pos_embeddings, tiny.num_conv_pos_embedding_groups) == (32, 4)
    assert (tiny.num_codevector_groups, tiny.num_codevectors_per_group, tiny.codevector_dim) == (2, 32, 64)
    assert tiny.num_negatives == 20 and tiny.mask_time_prob == 0.65
    assert (tiny.feature_penalty_weight, tiny.feature_grad_mult, tiny.hidden_dropout, tiny.attention_dropout,
            tiny.feat_proj_dropout, tiny.feat_quantizer_dropout, tiny.layerdrop) == (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.05)
    assert 0.9e6 < Wav2Vec2ForPreTraining(tiny).num_parameters() < 1.1e6
    assert tiny.receptive_field == 400 and tiny.inputs_to_logits_ratio == 320
    assert [tiny.num_frames(n) for n in (399, 400, 16000, 32000, 250000)] == [0, 1, 49, 99, 781]
    base, large = Wav2Vec2Config.base(), Wav2Vec2Config.large()
    assert (base.hidden_size, base.num_hidden_layers, base.feat_extract_norm, base.do_stable_layer_norm) == \
        (768, 12, "group", False)
    assert (base.feature_grad_mult, base.feature_penalty_weight, base.layerdrop) == (0.1, 10.0, 0.05)
    assert (large.hidden_size, large.num_hidden_layers, large.feat_extract_norm, large.do_stable_layer_norm,
            large.conv_bias, large.codevector_dim) == (1024, 24, "layer", True, True, 768)
    assert Wav2Vec2Config.preset("tiny", num_negatives=5).num_negatives == 5
    with pytest.raises(ValueError):
        Wav2Vec2Config.preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        Wav2Vec2Config(hidden_size=100, num_attention_heads=12)


def test_config_json_round_trip(tmp_path):
    cfg = Wav2Vec2Config.tiny(layerdrop=0.0)
    cfg.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "wav2vec2" and raw["conv_dim"] == [64] * 7
    raw["some_future_key"] = 3
    (tmp_path / "config.json").write_text(json.dumps(raw))
    back = Wav2Vec2Config.from_pretrained(tmp_path)
    assert back.extra["some_future_key"] == 3
    assert back.replace(extra={}) == cfg.replace(extra={})
    assert back.to_dict()["some_future_key"] == 3   # unknown keys survive a round trip


def test_gumbel_temperature_schedule():
    cfg = Wav2Vec2Config.tiny()
    assert cfg.gumbel_temperature(0) == 2.0
    assert cfg.gumbel_temperature(1000) == pytest.approx(2.0 * 0.999995 ** 1000)
    assert cfg.gumbel_temperature(10 ** 6) == 0.5   # clamped at the minimum (reached near 277k updates)
    model = Wav2Vec2ForPreTraining(micro(), seed=0)
    assert model.update_gumbel_temperature(100_000) == pytest.approx(2.0 * 0.999995 ** 100_000)
    assert model.quantizer.temperature == pytest.approx(2.0 * 0.999995 ** 100_000)


# ----------------------------------------------------------------------------------------------
# masking and negatives (host NumPy)


def test_mask_span_semantics():
    rng = np.random.default_rng(0)
    B, T, p, M = 6, 200, 0.65, 10
    for _ in range(20):
        mask = compute_mask_indices((B, T), p, M, require_same_masks=False, rng=rng)
        for row in mask:
            assert not row[-1]                       # starts stop at T - M - 1: the last frame is never masked
            runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0])))[::2]
            assert (runs >= M).all()                 # spans merge, never shorter than M
            n_spans_max = int(p * T / M + 1)
            assert M <= row.sum() <= n_spans_max * M
    # equal counts per row with require_same_masks (fairseq), otherwise they vary
    mask = compute_mask_indices((B, T), p, M, rng=rng)
    assert len(set(mask.sum(axis=1))) == 1
    # the masked fraction of fairseq's algorithm (reference section 3a: 0.46 at B=6, T=781)
    frac = np.mean([compute_mask_indices((6, 781), p, M, rng=rng).mean() for _ in range(20)])
    assert 0.43 < frac < 0.49


def test_mask_span_count_probabilistic_rounding():
    """num_mask = max(min_masks, floor(p T / M + u)): mean count p T / M when the spans cannot overlap."""
    rng = np.random.default_rng(1)
    B, T, M = 2000, 1000, 1
    mask = compute_mask_indices((B, T), 0.0125, M, min_masks=0, require_same_masks=False, rng=rng)
    counts = mask.sum(axis=1)                        # M = 1: count = number of spans
    assert set(np.unique(counts)) == {12, 13}        # floor(12.5 + u)
    assert abs(counts.mean() - 12.5) < 0.05
    mask = compute_mask_indices((4, 100), 0.0, 5, min_masks=2, require_same_masks=False, rng=rng)
    assert (mask.sum(axis=1) >= 5).all()             # at least min_masks spans


def test_mask_respects_padding():
    rng = np.random.default_rng(2)
    lengths = np.array([50, 30, 20])
    mask = compute_mask_indices((3, 50), 0.65, 5, lengths=lengths, require_same_masks=False, rng=rng)
    for row, n in zip(mask, lengths):
        assert not row[n - 1:].any()                  # nothing at or after the last valid frame
        assert row[: n - 1].any()
    padding = np.arange(50)[None, :] >= lengths[:, None]
    same = compute_mask_indices((3, 50), 0.65, 5, padding_mask=padding, rng=np.random.default_rng(2),
                                require_same_masks=False)
    assert np.array_equal(same, mask)
    equal = compute_mask_indices((3, 50), 0.65, 5, lengths=lengths, rng=rng)
    assert len(set(equal.sum(axis=1))) == 1


def test_mask_too_short_raises():
    with pytest.raises(ValueError, match="too short to mask"):
        compute_mask_indices((2, 12), 0.65, 10, rng=0)
    compute_mask_indices((2, 13), 0.65, 10, rng=0)   # 10 + 2 spans + 1
    with pytest.raises(ValueError, match="row 1"):
        compute_mask_indices((2, 40), 0.65, 10, lengths=[40, 12], rng=0)


def test_negatives_come_from_other_masked_frames_of_the_same_utterance():
    rng = np.random.default_rng(3)
    B, T, K = 4, 60, 30
    mask = compute_mask_indices((B, T), 0.5, 4, require_same_masks=False, rng=rng)
    neg = sample_negative_indices((B, T), K, mask, rng)
    assert neg.shape == (B, T, K) and neg.dtype == np.int64
    for b in range(B):
        for t in range(T):
            frames = neg[b, t] - b * T
            if mask[b, t]:
                assert mask[b, frames].all()          # masked frames only
                assert (frames != t).all()            # never the positive itself
                assert ((frames >= 0) & (frames < T)).all()   # same utterance
            else:
                assert (neg[b, t] == b * T).all()     # transformers' filler, ignored by the loss


def test_negatives_are_uniform_over_the_other_masked_frames():
    rng = np.random.default_rng(4)
    mask = np.zeros((1, 20), dtype=bool)
    mask[0, [2, 3, 4, 10, 11, 17]] = True
    neg = sample_negative_indices((1, 20), 6000, mask, rng)
    frames, counts = np.unique(neg[0, 3], return_counts=True)
    assert list(frames) == [2, 4, 10, 11, 17]
    assert np.all(np.abs(counts / 6000 - 0.2) < 0.02)


def test_negatives_need_two_masked_frames():
    mask = np.zeros((2, 10), dtype=bool)
    mask[0, 3:6] = True
    mask[1, 4] = True
    with pytest.raises(ValueError, match="row 1 has a single masked frame"):
        sample_negative_indices((2, 10), 3, mask, 0)
    mask[1, 4] = False
    neg = sample_negative_indices((2, 10), 3, mask, 0)   # a row without masked frames is fine
    assert (neg[1] == 10).all()


# ----------------------------------------------------------------------------------------------
# the model


def test_tiny_forward_shapes():
    cfg = Wav2Vec2Config.tiny()
    model = Wav2Vec2ForPreTraining(cfg, seed=0).eval()
    x = audio(2, 16000)
    out = model(x, output_hidden_states=True)
    T = 49
    assert out.projected_states.shape == (2, T, 64) and out.projected_quantized_states.shape == (2, T, 64)
    assert out.extract_features.shape == (2, T, 64) and out.last_hidden_state.shape == (2, T, 128)
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1
    assert all(h.shape == (2, T, 128) for h in out.hidden_states)
    assert out.mask_time_indices.shape == (2, T) and out.sampled_negative_indices.shape == (2, T, 20)
    assert out.num_masked == int(out.mask_time_indices.sum()) > 0
    for name in ("loss", "contrastive_loss", "diversity_loss", "feature_penalty", "codevector_perplexity",
                 "code_perplexity", "accuracy"):
        value = float(getattr(out, name))
        assert np.isfinite(value), name
    assert out.prob_perplexity is None              # soft perplexity: training mode only
    assert 1.0 <= float(out.code_perplexity) <= 64
    assert 0.0 <= float(out.accuracy) <= 1.0
    assert cfg.feature_penalty_weight == 0.0        # the tiny preset's short-run recipe has no penalty
    assert float(out.loss) == pytest.approx(float(out.contrastive_loss) + 0.1 * float(out.diversity_loss), rel=1e-5)


def test_loss_terms_and_feature_grad_mult():
    """diversity = (GV - ppl)/GV * N; penalty weighted by beta*N; feature_grad_mult scales only CNN gradients."""
    x = audio()
    grads = {}
    for mult in (1.0, 0.1):
        cfg = micro(feature_grad_mult=mult, feature_penalty_weight=10.0, **NO_DROPOUT)
        model = Wav2Vec2ForPreTraining(cfg, seed=0).train()
        model.manual_seed(5)
        out = model(x)
        GV = cfg.num_codevectors
        assert float(out.diversity_loss) == pytest.approx((GV - float(out.prob_perplexity)) / GV * out.num_masked,
                                                          rel=1e-5)
        assert float(out.loss) == pytest.approx(float(out.contrastive_loss) + 0.1 * float(out.diversity_loss)
                                                + 10 * float(out.feature_penalty) * out.num_masked, rel=1e-5)
        out.loss.backward()
        grads[mult] = {n: p.grad.copy() for n, p in model.named_parameters()}
    for name, g in grads[1.0].items():
        scale = 0.1 if name.startswith("wav2vec2.feature_extractor.") else 1.0
        np.testing.assert_allclose(grads[0.1][name], scale * g, rtol=2e-4, atol=1e-6 * np.abs(g).max(),
                                   err_msg=name)


def test_frozen_feature_encoder_when_grad_mult_is_zero():
    model = Wav2Vec2ForPreTraining(micro(feature_grad_mult=0.0, **NO_DROPOUT), seed=0)
    model(audio()).loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("wav2vec2.feature_extractor."):
            assert p.grad is None, name
        elif "k_proj.bias" not in name:
            assert p.grad is not None, name


def test_reproducible_with_seed():
    a = Wav2Vec2ForPreTraining(micro(), seed=7)
    b = Wav2Vec2ForPreTraining(micro(), seed=7)
    c = Wav2Vec2ForPreTraining(micro(), seed=8)
    for (na, pa), (_, pb), (_, pc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert np.array_equal(pa, pb), na
    assert not np.array_equal(a.state_dict()["quantizer.codevectors"], c.state_dict()["quantizer.codevectors"])
    x = audio()
    oa, ob = a.train()(x), b.train()(x)
    assert np.array_equal(oa.mask_time_indices, ob.mask_time_indices)
    assert np.array_equal(oa.sampled_negative_indices, ob.sampled_negative_indices)
    assert float(oa.loss) == float(ob.loss)
    # given masks and negatives reproduce a run exactly (eval mode: no other randomness)
    a.eval()
    r1 = a(x, mask_time_indices=oa.mask_time_indices, sampled_negative_indices=oa.sampled_negative_indices)
    r2 = a(x, mask_time_indices=oa.mask_time_indices, sampled_negative_indices=oa.sampled_negative_indices)
    assert float(r1.loss) == float(r2.loss)


def test_init_follows_transformers_rules():
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(), seed=0)
    sd = model.state_dict()
    assert np.abs(sd["wav2vec2.encoder.layers.0.attention.q_proj.weight"].std() - 0.02) < 0.002
    assert (sd["wav2vec2.encoder.layers.0.attention.q_proj.bias"] == 0).all()
    w = sd["wav2vec2.feature_extractor.conv_layers.1.conv.weight"]
    assert abs(w.std() - np.sqrt(2 / (64 * 3))) < 0.01              # kaiming normal
    assert abs(sd["quantizer.weight_proj.weight"].std() - 1.0) < 0.05
    cv = sd["quantizer.codevectors"]
    assert cv.min() >= 0 and cv.max() < 1                            # U[0, 1)
    assert sd["wav2vec2.masked_spec_embed"].min() >= 0
    bound = 1 / np.sqrt(128)
    assert np.abs(sd["project_hid.weight"]).max() <= bound            # torch's default Linear
    g, v = sd["wav2vec2.encoder.pos_conv_embed.conv.weight_g"], sd["wav2vec2.encoder.pos_conv_embed.conv.weight_v"]
    np.testing.assert_allclose(g, np.sqrt((v.astype(np.float64) ** 2).sum(axis=(0, 1), keepdims=True)), rtol=1e-5)
    assert abs(v.std() - 2 / np.sqrt(32 * 128)) < 0.005
    assert (sd["wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight"] == 1).all()


def test_state_dict_names_follow_transformers():
    model = Wav2Vec2ForPreTraining(micro(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True))
    names = list(model.state_dict())
    assert names[:3] == ["wav2vec2.masked_spec_embed", "wav2vec2.feature_extractor.conv_layers.0.conv.weight",
                         "wav2vec2.feature_extractor.conv_layers.0.conv.bias"]
    expected = {
        "wav2vec2.feature_extractor.conv_layers.2.layer_norm.weight",
        "wav2vec2.feature_projection.layer_norm.bias", "wav2vec2.feature_projection.projection.weight",
        "wav2vec2.encoder.pos_conv_embed.conv.bias", "wav2vec2.encoder.pos_conv_embed.conv.weight_g",
        "wav2vec2.encoder.pos_conv_embed.conv.weight_v", "wav2vec2.encoder.layer_norm.weight",
        "wav2vec2.encoder.layers.1.attention.q_proj.weight", "wav2vec2.encoder.layers.1.attention.out_proj.bias",
        "wav2vec2.encoder.layers.1.layer_norm.weight", "wav2vec2.encoder.layers.1.final_layer_norm.bias",
        "wav2vec2.encoder.layers.1.feed_forward.intermediate_dense.weight",
        "wav2vec2.encoder.layers.1.feed_forward.output_dense.bias",
        "quantizer.codevectors", "quantizer.weight_proj.weight", "quantizer.weight_proj.bias",
        "project_hid.weight", "project_hid.bias", "project_q.weight", "project_q.bias"}
    assert expected <= set(names)
    assert names[-4:] == ["project_hid.weight", "project_hid.bias", "project_q.weight", "project_q.bias"]
    assert model.state_dict()["quantizer.codevectors"].shape == (1, 8, 4)
    assert model.state_dict()["wav2vec2.encoder.pos_conv_embed.conv.weight_g"].shape == (1, 1, 4)
    group = Wav2Vec2ForPreTraining(micro())
    assert "wav2vec2.feature_extractor.conv_layers.1.layer_norm.weight" not in group.state_dict()
    assert "wav2vec2.feature_extractor.conv_layers.0.conv.bias" not in group.state_dict()


def test_padded_batch_matches_unpadded_utterances():
    """Layer-norm variant, eval: a zero-padded row with its attention mask gives its unpadded outputs."""
    model = Wav2Vec2ForPreTraining(micro(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True),
                                   seed=0).eval()
    x = audio(2, L)
    short = 560
    x[1, short:] = 0
    attention_mask = (np.arange(L)[None, :] < np.array([L, short])[:, None]).astype(np.int64)
    T, Ts = model.num_frames(L), model.num_frames(short)
    none = np.zeros((2, T), dtype=bool)
    batched = model.wav2vec2(x, attention_mask=attention_mask, mask_time_indices=none, output_hidden_states=True)
    alone = model.wav2vec2(x[1:, :short], mask_time_indices=np.zeros((1, Ts), bool), output_hidden_states=True)
    for hb, ha in zip(batched.hidden_states, alone.hidden_states):
        np.testing.assert_allclose(hb.numpy()[1, :Ts], ha.numpy()[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batched.last_hidden_state.numpy()[1, :Ts], alone.last_hidden_state.numpy()[0],
                               rtol=1e-4, atol=1e-5)
    # the pretraining forward samples masks and negatives inside the valid frames only
    out = model.train()(x, attention_mask=attention_mask)
    assert not out.mask_time_indices[1, Ts - 1:].any()
    assert ((out.sampled_negative_indices[1] - T) < Ts - 1).all()
    assert np.isfinite(float(out.loss))


def test_too_short_input_raises():
    model = Wav2Vec2ForPreTraining(micro(), seed=0)
    with pytest.raises(ValueError, match="input too short: 30 samples"):
        model(audio(2, 30))
    with pytest.raises(ValueError, match="too short to mask"):
        model(audio(2, 100))                  # 7 frames: fewer than mask_length + spans + 1
    model(audio(2, model.config.min_samples_to_mask()))


def test_eval_uses_argmax_codes_and_train_uses_gumbel_noise():
    cfg = micro(**NO_DROPOUT)
    model = Wav2Vec2ForPreTraining(cfg, seed=0).eval()
    x = audio()
    out1, out2 = model(x), model(x)
    np.testing.assert_array_equal(out1.projected_quantized_states.numpy(), out2.projected_quantized_states.numpy())
    # codes = argmax of weight_proj logits, per group
    logits = model.quantizer.weight_proj(out1.extract_features).numpy()
    logits = logits.reshape(2, -1, 2, 4)  # (B, T, G*V) -> (B, T, G, V)
    codes = logits.argmax(-1)
    cv = model.quantizer.codevectors.numpy()[0].reshape(2, 4, -1)  # (G*V, d) -> (G, V, d)
    expected = np.concatenate([cv[0][codes[..., 0]], cv[1][codes[..., 1]]], axis=-1)
    q = model.project_q.weight.numpy()
    np.testing.assert_allclose(out1.projected_quantized_states.numpy(),
                               expected @ q.T + model.project_q.bias.numpy(), rtol=1e-5, atol=1e-6)
    out1.loss.backward()
    assert model.quantizer.weight_proj.weight.grad is None       # no gradient through an argmax
    assert model.quantizer.codevectors.grad is not None
    # training: Gumbel noise decides; a huge noise on one codeword per group forces it everywhere
    model.train()
    T = model.num_frames(L)
    noise = np.zeros((2, T, 2, 4), dtype=np.float32)
    noise[..., 3] = 1e3
    out = model(x, gumbel_noise=noise)
    forced = out.projected_quantized_states.numpy().reshape(-1, 6)  # (B, T, P) -> (B*T, P)
    np.testing.assert_allclose(forced, np.broadcast_to(forced[0], forced.shape), rtol=1e-6, atol=1e-6)
    assert float(out.code_perplexity) == pytest.approx(2.0)      # one code per group
    out.loss.backward()
    assert model.quantizer.weight_proj.weight.grad is not None   # straight-through gradient
    # fresh noise: codes differ between two training forwards
    a, b = model(x), model(x)
    assert not np.array_equal(a.projected_quantized_states.numpy(), b.projected_quantized_states.numpy())


def test_layerdrop_and_hidden_states():
    model = Wav2Vec2ForPreTraining(micro(layerdrop=1.0), seed=0)
    out = model.train()(audio(), output_hidden_states=True)
    assert len(out.hidden_states) == 1                           # every layer dropped
    out = model.eval()(audio(), output_hidden_states=True)
    assert len(out.hidden_states) == 3                           # eval: no layerdrop


def _parameter_slots(model):
    slots = []
    for _, module in model.named_modules():
        for name, p in module._parameters.items():
            if p is not None:
                slots.append((module, name, p))
    return slots


def test_whole_model_gradcheck_float64():
    """Every parameter and the input, float64, random directions, eval mode (deterministic argmax codes)."""
    cfg = micro(feature_penalty_weight=10.0, feature_grad_mult=1.0, **NO_DROPOUT)
    model = Wav2Vec2ForPreTraining(cfg, seed=0).to(np.float64).eval()
    x = audio(2, 640, dtype=np.float64)
    T = model.num_frames(640)
    rng = np.random.default_rng(0)
    mask = compute_mask_indices((2, T), 0.5, 3, rng=rng)
    negatives = sample_negative_indices((2, T), cfg.num_negatives, mask, rng)
    slots = _parameter_slots(model)

    def loss(x, *params):
        for (module, name, _), p in zip(slots, params):
            module._parameters[name] = p
        return model(x, mask_time_indices=mask, sampled_negative_indices=negatives).loss

    inputs = [tw.Tensor(x, requires_grad=True, dtype=np.float64)]
    inputs += [tw.Tensor(p.data, requires_grad=True, dtype=np.float64) for _, _, p in slots]
    try:
        assert tw.gradcheck(loss, *inputs, mode="fast", n_directions=3, rtol=1e-5, atol=1e-7)
    finally:
        for module, name, p in slots:
            module._parameters[name] = p


def test_training_step_on_device(device):
    """Forward, backward and AdamW on each device ("emulated" refuses any implicit host copy, as CuPy does)."""
    dev = device
    cfg = micro(feature_grad_mult=0.1, feature_penalty_weight=10.0, layerdrop=0.5)  # dropouts 0.1 (defaults)
    model = Wav2Vec2ForPreTraining(cfg, seed=0).to(dev).train()
    before = {n: backend.to_numpy(p.data).copy() for n, p in model.named_parameters()}
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    out = model(audio())                                          # host audio: moved once, explicitly
    assert out.loss.device == backend.normalize_device(dev)
    (out.loss * (1.0 / out.num_masked)).backward()
    optim.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    opt.zero_grad()
    for n, p in model.named_parameters():
        assert p.device == backend.normalize_device(dev), n
        assert np.isfinite(backend.to_numpy(p.data)).all(), n
    changed = [n for n, p in model.named_parameters() if not np.array_equal(before[n], backend.to_numpy(p.data))]
    assert "quantizer.codevectors" in changed and "wav2vec2.feature_extractor.conv_layers.0.conv.weight" in changed
    # the same step on the CPU gives the same loss (same seeds: masks, negatives and init come from the host)
    cpu = Wav2Vec2ForPreTraining(cfg, seed=0).eval()
    dev_eval = Wav2Vec2ForPreTraining(cfg, seed=0).to(dev).eval()
    a, b = cpu(audio()), dev_eval(audio())
    assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-5)


def test_npz_and_pretrained_round_trips(tmp_path):
    model = Wav2Vec2ForPreTraining(micro(), seed=0)
    model.save(tmp_path / "ckpt.npz", metadata={"step": 3})
    other = Wav2Vec2ForPreTraining(micro(), seed=1)
    assert other.load(tmp_path / "ckpt.npz") == {"step": 3}
    for k, v in model.state_dict().items():
        assert np.array_equal(v, other.state_dict()[k]), k
    for names in ("legacy", "parametrizations"):
        save_pretrained(model, tmp_path / names, weight_norm_names=names)
        back = Wav2Vec2ForPreTraining.from_pretrained(tmp_path / names)
        assert back.config.replace(extra={}) == model.config.replace(extra={})
        for k, v in model.state_dict().items():
            assert np.array_equal(v, back.state_dict()[k]), k
    # an encoder-only model reads the encoder out of a pretraining checkpoint, and vice versa
    enc = Wav2Vec2Model.from_pretrained(tmp_path / "legacy")
    assert np.array_equal(enc.state_dict()["encoder.layers.0.attention.q_proj.weight"],
                          model.state_dict()["wav2vec2.encoder.layers.0.attention.q_proj.weight"])
    enc.save_pretrained(tmp_path / "encoder")
    with pytest.warns(UserWarning, match="quantizer.codevectors"):
        full = Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "encoder")
    assert np.array_equal(full.state_dict()["wav2vec2.encoder.layers.0.attention.q_proj.weight"],
                          model.state_dict()["wav2vec2.encoder.layers.0.attention.q_proj.weight"])
    f64 = Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "legacy", dtype=np.float64)
    assert f64.dtype == np.float64


def test_mask_helpers_take_device_arrays():
    from tinyw2v2 import backend
    from tinyw2v2.models.wav2vec2 import compute_mask_indices, sample_negative_indices

    lengths = backend.to_device(np.array([30, 24]), "emulated")
    mask = compute_mask_indices((2, 30), 0.65, 5, lengths=lengths, rng=0)
    negatives = sample_negative_indices((2, 30), 4, backend.to_device(mask, "emulated"), rng=0)
    assert mask.shape == (2, 30) and not mask[1, 24:].any() and negatives.shape == (2, 30, 4)


def test_duplicate_negatives_are_found_by_their_codes_not_by_float_equality():
    """Two frames that chose the same codewords have the same target; a GEMM may round the two rows differently by
    an ulp, and an exact comparison of the vectors would then miss the duplicate (transformers' parity test did)."""
    from tinyw2v2.models.wav2vec2.modeling import masked_contrastive_loss

    rng = np.random.default_rng(0)
    B, T, P, K = 1, 4, 3, 2
    context = tw.tensor(rng.standard_normal((B, T, P)))
    q = rng.standard_normal((B, T, P))
    q[0, 1] = q[0, 0] + np.float32(1e-7)                  # frame 1: frame 0's code, rounded differently
    codes = np.array([[[3, 1], [3, 1], [0, 2], [5, 5]]])   # (B, T, G)
    mask = np.array([[True, True, True, False]])
    negatives = np.array([[[1, 2], [0, 2], [0, 1], [0, 0]]])
    _, _, by_vectors = masked_contrastive_loss(context, tw.tensor(q), mask, negatives, 0.1)
    _, _, by_codes = masked_contrastive_loss(context, tw.tensor(q), mask, negatives, 0.1, codes=codes)
    assert int(by_vectors.item()) == 0 and int(by_codes.item()) == 2    # frame 0's negative 1, frame 1's negative 0


def test_model_diagram_shapes_match_a_forward():
    """The shapes printed in the model figure (diagram.py) are the ones a forward makes."""
    from tinyw2v2.models.wav2vec2.diagram import draw_model, shapes
    cfg = micro(**NO_DROPOUT)
    model = Wav2Vec2ForPreTraining(cfg, seed=0)
    B = 3
    x = np.random.default_rng(0).standard_normal((B, L)).astype(np.float32)
    out = model(tw.tensor(x), output_hidden_states=True)
    s = shapes(cfg, batch=B, seconds=L / 16000)
    assert s["T"] == cfg.num_frames(L) == out.projected_states.shape[1]
    assert out.extract_features.shape == s["features"]
    assert out.last_hidden_state.shape == s["c"]
    assert out.projected_states.shape == s["context"]
    assert out.projected_quantized_states.shape == s["targets"]
    assert tuple(out.codevector_indices.shape) == (B, s["T"], cfg.num_codevector_groups)
    assert 0 < out.num_masked <= s["N"]
    fig = draw_model(cfg, batch=B, seconds=L / 16000)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert str(s["context"]).replace(" ", "") in texts.replace(" ", "")
