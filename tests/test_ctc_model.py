"""Wav2Vec2ForCTC and the character vocabulary: parity with transformers (logits, CTC loss, gradients), loading
from pretraining checkpoints and transformers directories, vocabulary mismatches, freezing, masking, decoding.

The transformers comparisons (skipped without torch / transformers) use random small models saved with
``save_pretrained`` (both variants: group-norm CNN + post-LN, layer-norm CNN + pre-LN), loaded with our
``from_pretrained``, in eval mode, on the same audio and labels (-100 padding, a repeated letter, rows of
different lengths). Relative error = max|ours - theirs| / max|theirs|.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tinyw2v2 import optim
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
from tinyw2v2.models.wav2vec2.ctc import VocabularyMismatchError, Wav2Vec2ForCTC, pack_labels
from tinyw2v2.text import (UNK_CHAR, EncodeStats, Vocabulary, VocabularyError, ctc_min_frames, error_rates,
                           pad_labels)
from tinyw2v2.io import save_checkpoint

SMALL = dict(
    conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), hidden_size=32, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=64, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
    num_codevector_groups=2, num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=12,
    num_negatives=5, mask_time_prob=0.5, mask_time_length=3, hidden_dropout=0.0, attention_dropout=0.0,
    activation_dropout=0.0, feat_proj_dropout=0.0, feat_quantizer_dropout=0.0, layerdrop=0.0, final_dropout=0.0,
    vocab_size=12)
VARIANTS = {
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "layer_preln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}
B, L = 3, 800          # T = 39 frames
LABELS = np.array([[5, 6, 6, 7, 4, 8, -100, -100],      # a repeated label (6, 6) needs a blank between
                   [9, 10, 11, 4, 5, 5, 5, 6],
                   [7, -100, 8, -100, 9, -100, -100, -100]])  # -100 in the middle: dropped, the rest packed


def _rel(ours, theirs) -> float:
    a = np.asarray(getattr(ours, "data", ours), dtype=np.float64)
    b = theirs.detach().double().numpy() if hasattr(theirs, "detach") else np.asarray(theirs, np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


# ----------------------------------------------------------------------------------------------
# transformers parity

_SAVED = {}


def _saved(variant, tmp_path_factory):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    if variant not in _SAVED:
        torch.manual_seed(0)
        hf = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**SMALL, **VARIANTS[variant]))
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(0.05 * torch.randn_like(p))
        path = tmp_path_factory.mktemp("ctc_" + variant)
        hf.save_pretrained(path)
        _SAVED[variant] = str(path)
    return _SAVED[variant]


@pytest.fixture(scope="module", params=list(VARIANTS))
def saved(request, tmp_path_factory):
    return request.param, _saved(request.param, tmp_path_factory)


@pytest.mark.torchref
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "attention_mask"])
def test_logits_loss_and_gradients_match_transformers(saved, reduction, padded):
    import torch
    import transformers

    variant, path = saved
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(path).eval()
    ours = Wav2Vec2ForCTC.from_pretrained(path).eval()
    hf.config.ctc_loss_reduction = ours.config.ctc_loss_reduction = reduction
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, L)).astype(np.float32)
    mask = None
    if padded:
        mask = (np.arange(L)[None, :] < np.array([800, 650, 520])[:, None]).astype(np.int64)
        x = (x * mask).astype(np.float32)
    hf_out = hf(torch.from_numpy(x), attention_mask=None if mask is None else torch.from_numpy(mask),
                labels=torch.from_numpy(LABELS))
    out = ours(x, attention_mask=mask, labels=LABELS)
    assert out.logits.shape == tuple(hf_out.logits.shape) == (B, 39, SMALL["vocab_size"])
    assert _rel(out.logits, hf_out.logits) <= 1e-5
    assert _rel(out.loss, hf_out.loss) <= 1e-5
    assert out.target_lengths.tolist() == [6, 8, 3]
    expected_frames = [39, 39, 39] if mask is None else ours.num_frames(np.array([800, 650, 520])).tolist()
    assert out.output_lengths.tolist() == expected_frames
    hf_out.loss.backward()
    out.loss.backward()
    params = dict(ours.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in hf.parameters() if p.grad is not None)
    bad = {}
    for name, p in hf.named_parameters():
        from tinyw2v2.models.wav2vec2.hf import normalize_key

        mine = params[normalize_key(name)]
        if p.grad is None or "k_proj.bias" in name:   # mathematically zero (softmax ignores a per-row constant)
            g = 0.0 if mine.grad is None else float(np.abs(mine.grad).max())
            assert g / scale <= 1e-5, name
            continue
        err = _rel(mine.grad, p.grad)
        if not err <= 1e-4:
            bad[name] = err
    assert not bad, f"gradient mismatch: {bad}"


@pytest.mark.torchref
def test_zero_infinity_and_impossible_rows_match_transformers(saved):
    import torch
    import transformers

    variant, path = saved
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(path).eval()
    ours = Wav2Vec2ForCTC.from_pretrained(path).eval()
    labels = np.full((2, 45), -100)
    labels[0, :5] = [5, 6, 7, 8, 9]
    labels[1, :] = np.tile([5, 6, 7], 15)  # 45 labels > 39 frames: no alignment
    x = np.random.default_rng(2).standard_normal((2, L)).astype(np.float32)
    for zero in (False, True):
        hf.config.ctc_zero_infinity = ours.config.ctc_zero_infinity = zero
        hf.config.ctc_loss_reduction = ours.config.ctc_loss_reduction = "sum"
        with torch.no_grad():
            expected = hf(torch.from_numpy(x), labels=torch.from_numpy(labels)).loss
        got = float(ours(x, labels=labels).loss)
        if zero:
            assert np.isfinite(got) and abs(got - float(expected)) <= 1e-5 * abs(float(expected))
        else:
            assert np.isinf(got) and np.isinf(float(expected))


@pytest.mark.torchref
def test_state_dict_names_equal_transformers(saved):
    import transformers
    from tinyw2v2.models.wav2vec2.hf import normalize_key

    variant, path = saved
    hf = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**SMALL, **VARIANTS[variant]))
    ours = Wav2Vec2ForCTC(Wav2Vec2Config(**SMALL, **VARIANTS[variant]))
    theirs = {normalize_key(k): tuple(v.shape) for k, v in hf.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    assert list(ours.state_dict())[-2:] == ["lm_head.weight", "lm_head.bias"]


@pytest.mark.torchref
def test_our_ctc_save_pretrained_loads_in_transformers(saved, tmp_path):
    import torch
    import transformers

    variant, path = saved
    ours = Wav2Vec2ForCTC.from_pretrained(path).eval()
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["Wav2Vec2ForCTC"]
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path).eval()
    x = np.random.default_rng(4).standard_normal((2, L)).astype(np.float32)
    with torch.no_grad():
        expected = hf(torch.from_numpy(x)).logits
    assert _rel(ours(x).logits, expected) <= 1e-5


@pytest.mark.torchref
def test_transformers_directory_with_another_vocabulary_is_a_clear_error(saved, tmp_path):
    variant, path = saved
    with pytest.raises(VocabularyMismatchError, match=r"12 outputs.*20 entries") as e:
        Wav2Vec2ForCTC.from_pretrained(path, vocab_size=20)
    assert "model.safetensors" in str(e.value)
    fresh = Wav2Vec2ForCTC.from_pretrained(path, vocab_size=20, new_head=True)   # a new head on purpose
    assert fresh.lm_head.weight.shape == (20, 32)
    same = Wav2Vec2ForCTC.from_pretrained(path)
    np.testing.assert_array_equal(fresh.wav2vec2.encoder.layers[0].attention.q_proj.weight.data,
                                  same.wav2vec2.encoder.layers[0].attention.q_proj.weight.data)
    # config.json that disagrees with the stored head
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["vocab_size"] = 30
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VocabularyMismatchError, match=r"12 outputs.*30 entries"):
        Wav2Vec2ForCTC.from_pretrained(bad)


@pytest.mark.torchref
def test_pretraining_directory_gets_a_fresh_head(tmp_path):
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**SMALL, **VARIANTS["group_postln"])).eval()
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = Wav2Vec2ForCTC.from_pretrained(tmp_path, vocab_size=7).eval()
    assert any("lm_head" in str(w.message) for w in caught)
    assert model.lm_head.weight.shape == (7, 32)
    x = np.random.default_rng(0).standard_normal((1, L)).astype(np.float32)
    with torch.no_grad():
        expected = hf.wav2vec2(torch.from_numpy(x)).last_hidden_state
    assert _rel(model.wav2vec2(x).last_hidden_state, expected) <= 1e-5


# ----------------------------------------------------------------------------------------------
# the model without transformers


def _config(**kw):
    return Wav2Vec2Config(**dict(SMALL, **VARIANTS["group_postln"], **kw))


def test_labels_are_packed_like_transformers_masked_select():
    packed, lengths = pack_labels(LABELS, blank=0)
    assert lengths.tolist() == [6, 8, 3]
    assert packed[0, :6].tolist() == [5, 6, 6, 7, 4, 8]
    assert packed[2, :3].tolist() == [7, 8, 9]
    packed, lengths = pack_labels(np.array([[0, 5, 0, 6]]), blank=0)   # blank ids are padding too
    assert lengths.tolist() == [2] and packed[0, :2].tolist() == [5, 6]


def test_bad_labels_are_refused():
    model = Wav2Vec2ForCTC(_config()).eval()
    x = np.zeros((1, L), np.float32)
    with pytest.raises(ValueError, match="vocab_size = 12"):
        model(x, labels=np.array([[3, 12]]))
    with pytest.raises(ValueError, match="-100"):
        model(x, labels=np.array([[3, -5]]))
    with pytest.raises(ValueError, match="vocab_size >= 2"):
        Wav2Vec2ForCTC(_config(vocab_size=1))


def test_sample_lengths_give_the_ctc_frames_without_an_attention_mask():
    model = Wav2Vec2ForCTC(_config()).eval()
    x = np.random.default_rng(0).standard_normal((3, L)).astype(np.float32)
    x[1, 600:] = 0
    out = model(x, sample_lengths=np.array([800, 600, 500]), labels=LABELS)
    assert out.output_lengths.tolist() == model.num_frames(np.array([800, 600, 500])).tolist()
    # the loss is that of the logits cut to each row's frames
    from tinyw2v2 import functional as F

    for row in range(3):
        n = out.output_lengths[row]
        single = F.ctc_loss(F.log_softmax(out.logits[row:row + 1, :n], axis=-1).swapaxes(0, 1),
                            pack_labels(LABELS[row:row + 1], 0)[0], [n], [out.target_lengths[row]], reduction="sum")
        assert np.isfinite(float(single))
    total = sum(float(F.ctc_loss(F.log_softmax(out.logits[r:r + 1, :out.output_lengths[r]], axis=-1).swapaxes(0, 1),
                                 pack_labels(LABELS[r:r + 1], 0)[0], [out.output_lengths[r]], [out.target_lengths[r]],
                                 reduction="sum")) for r in range(3))
    assert abs(float(out.loss) - total) <= 1e-4 * total
    with pytest.raises(ValueError, match="not both"):
        model(x, attention_mask=np.ones((3, L)), sample_lengths=[800, 600, 500])


def test_freeze_feature_encoder_and_base_model():
    model = Wav2Vec2ForCTC(_config()).train()
    model.freeze_feature_encoder()
    x = np.random.default_rng(0).standard_normal((3, L)).astype(np.float32)
    model.manual_seed(0)
    model(x, labels=LABELS).loss.backward()
    cnn = [p for n, p in model.named_parameters() if n.startswith("wav2vec2.feature_extractor.")]
    assert cnn and all(p.grad is None for p in cnn)
    assert model.lm_head.weight.grad is not None
    assert model.wav2vec2.encoder.layers[0].attention.q_proj.weight.grad is not None
    model.zero_grad()
    model.freeze_base_model()
    model(x, labels=LABELS).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("wav2vec2."))
    assert model.lm_head.weight.grad is not None
    model.freeze_base_model(False)
    assert all(not p.requires_grad for p in cnn)
    assert model.wav2vec2.encoder.layers[0].attention.q_proj.weight.requires_grad


def test_time_and_channel_masking_only_in_training():
    x = np.random.default_rng(0).standard_normal((2, 1600)).astype(np.float32)
    model = Wav2Vec2ForCTC(_config(mask_time_prob=0.0, mask_feature_prob=0.0)).eval()
    plain = model(x).logits.data
    for kw in (dict(mask_time_prob=0.5, mask_feature_prob=0.0), dict(mask_time_prob=0.0, mask_feature_prob=0.5,
                                                                    mask_feature_length=4)):
        masked = Wav2Vec2ForCTC(_config(**kw))
        masked.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=False)
        masked.eval()
        np.testing.assert_allclose(masked(x).logits.data, plain, rtol=1e-6, atol=1e-6)
        masked.train()
        assert not np.allclose(masked(x).logits.data, plain, atol=1e-4)
    # an explicit time mask replaces exactly those frames by the mask embedding
    model = Wav2Vec2ForCTC(_config(mask_time_prob=0.5)).train()
    T = model.num_frames(1600)
    mask = np.zeros((2, T), bool)
    mask[:, 3:8] = True
    a = model(x, mask_time_indices=mask).logits.data
    b = model(x, mask_time_indices=mask).logits.data
    np.testing.assert_allclose(a, b, rtol=1e-6)


def _pretraining_checkpoint(tmp_path, **cfg):
    config = Wav2Vec2Config(**dict(SMALL, **VARIANTS["group_postln"], **cfg))
    model = Wav2Vec2ForPreTraining(config, seed=3)
    opt = optim.AdamW(model.parameters())
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, opt, {"config": config.to_dict(), "step": 7, "args": {}})
    return path, model


def test_from_pretraining_checkpoint_copies_the_encoder_and_makes_a_new_head(tmp_path):
    path, pre = _pretraining_checkpoint(tmp_path)
    model = Wav2Vec2ForCTC.from_pretraining_checkpoint(path, vocab_size=9, final_dropout=0.2, mask_feature_prob=0.1)
    assert model.config.vocab_size == 9 and model.config.final_dropout == 0.2
    theirs = pre.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("wav2vec2."):
            np.testing.assert_array_equal(v, theirs[k], err_msg=k)
    assert model.lm_head.weight.shape == (9, 32)
    assert abs(float(model.lm_head.weight.data.std()) - 0.02) < 0.01 and not np.any(model.lm_head.bias.data)
    x = np.random.default_rng(0).standard_normal((1, L)).astype(np.float32)
    np.testing.assert_allclose(model.eval().wav2vec2(x).last_hidden_state.data,
                               pre.eval().wav2vec2(x).last_hidden_state.data, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        Wav2Vec2ForCTC.from_pretraining_checkpoint(path, vocab_size=9, hidden_size=64,
                                                   num_conv_pos_embedding_groups=4)


def test_finetuning_checkpoint_with_another_vocabulary_is_a_clear_error(tmp_path):
    model = Wav2Vec2ForCTC(_config(vocab_size=9))
    path = tmp_path / "ft.npz"
    save_checkpoint(path, model, optim.AdamW(model.parameters()), {"config": model.config.to_dict(), "step": 1})
    loaded = Wav2Vec2ForCTC.from_finetuning_checkpoint(path, vocab_size=9)
    np.testing.assert_array_equal(loaded.lm_head.weight.data, model.lm_head.weight.data)
    with pytest.raises(VocabularyMismatchError, match=r"9 outputs.*14 entries") as e:
        Wav2Vec2ForCTC.from_finetuning_checkpoint(path, vocab_size=14, vocab_path="x/vocab.json")
    assert "ft.npz" in str(e.value) and "x/vocab.json" in str(e.value)
    with pytest.raises(ValueError, match="from_finetuning_checkpoint"):
        Wav2Vec2ForCTC.from_pretraining_checkpoint(path, vocab_size=9)
    pre, _ = _pretraining_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="pretraining checkpoint"):
        Wav2Vec2ForCTC.from_finetuning_checkpoint(pre)


def test_a_few_steps_fit_one_batch():
    """The loss falls when the model is trained on one batch (the head and the encoder learn)."""
    model = Wav2Vec2ForCTC(_config(mask_time_prob=0.0)).train()
    model.freeze_feature_encoder()
    opt = optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    x = np.random.default_rng(0).standard_normal((3, L)).astype(np.float32)
    losses = []
    for _ in range(30):
        out = model(x, labels=LABELS)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss))
    assert losses[-1] < 0.5 * losses[0]


# ----------------------------------------------------------------------------------------------
# vocabulary, decoding, error rates


def test_vocabulary_layout_and_round_trip(tmp_path):
    vocab = Vocabulary.build(["SIX  TWO", " ZERO ONE "])
    assert vocab.tokens[:5] == ["<pad>", "<s>", "</s>", "<unk>", "|"]
    assert vocab.tokens[5:] == sorted(set("SIXTWOZERONE"))
    assert vocab.blank_id == 0 and vocab.delimiter_id == 4
    path = vocab.save(tmp_path)
    assert json.loads(path.read_text()) == {t: i for i, t in enumerate(vocab.tokens)}
    assert Vocabulary.load(tmp_path) == vocab
    assert vocab.encode("SIX TWO").tolist() == [vocab.index[c] if c != " " else 4 for c in "SIX TWO"]


def test_unknown_characters_are_counted_and_mapped_to_unk():
    vocab = Vocabulary.build(["AB C"])
    stats = EncodeStats()
    ids = vocab.encode_batch(["AB  C", "AXB", "Q Q"], stats)
    assert ids[1].tolist() == [vocab.index["A"], vocab.unk_id, vocab.index["B"]]
    assert stats.unknown == 3 and stats.utterances_with_unknown == 2 and stats.unknown_chars == {"X": 1, "Q": 2}
    assert "3 of 10 characters in 2 of 3 transcripts" in stats.report() and "'Q' x2" in stats.report()


def test_greedy_decoding_collapses_repeats_and_drops_blanks():
    vocab = Vocabulary.build(["HELO WRD"])
    i = vocab.index
    frames = [0, i["H"], i["H"], 0, i["E"], i["L"], i["L"], 0, i["L"], i["O"], 4, 4, 0, i["W"], vocab.unk_id, 0]
    assert vocab.decode_ids(frames) == "HELLO W" + UNK_CHAR
    assert vocab.decode_ids(frames, length=4) == "H"
    assert vocab.decode_ids([4, 0, i["H"], 4, 4, 0, 4]) == "H"
    logits = np.full((2, 5, len(vocab)), -5.0, np.float32)
    logits[0, np.arange(5), [i["H"], 0, i["E"], i["E"], 0]] = 5
    logits[1, np.arange(5), [i["O"], i["O"], 0, 0, i["W"]]] = 5
    assert vocab.greedy_decode(logits, lengths=[5, 3]) == ["HE", "O"]
    with pytest.raises(VocabularyError, match="does not match this vocabulary"):
        vocab.decode_ids([len(vocab)])


@pytest.mark.torchref
def test_transformers_tokenizer_reads_our_vocabulary(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    vocab = Vocabulary.build(["SIX TWO", "ZERO ONE"])
    vocab.save(tmp_path)
    tok = transformers.Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    assert tok("SIX ONE").input_ids == vocab.encode("SIX ONE").tolist()
    assert tok.pad_token_id == 0 and tok.word_delimiter_token == "|"
    frames = [0, 5, 5, 0, 6, 4, 4, 7, 0, 7]
    assert tok.decode(frames) == vocab.decode_ids(frames)


def test_malformed_vocabularies_are_refused(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    with pytest.raises(VocabularyError, match="starts with"):
        Vocabulary.load(tmp_path)
    (tmp_path / "vocab.json").write_text("{")
    with pytest.raises(VocabularyError, match="not valid JSON"):
        Vocabulary.load(tmp_path)
    with pytest.raises(VocabularyError, match="no vocabulary file"):
        Vocabulary.load(tmp_path / "missing")


def test_error_rates_and_helpers():
    r = error_rates(["SIX TWO", "ONE"], ["SIX TOO", ""])
    assert r["chars"] == 10 and r["words"] == 3
    assert r["char_errors"] == 1 + 3 and r["word_errors"] == 2
    assert r["cer"] == pytest.approx(0.4) and r["wer"] == pytest.approx(2 / 3)
    assert error_rates([""], ["X"])["empty_references"] == 1
    assert ctc_min_frames([5, 5, 6, 6, 6]) == 5 + 3 and ctc_min_frames([]) == 0
    assert pad_labels([[1, 2], [3]]).tolist() == [[1, 2], [3, -100]]


def test_forward_backward_and_decoding_on_every_device(device):
    """No implicit host copies (the emulated device raises on them); the same loss and gradient as on the CPU."""
    labels = np.array([[5, 6, 6, -100], [7, 8, 9, 10]])
    x = np.random.default_rng(0).standard_normal((2, L)).astype(np.float32)
    results = {}
    for dev in ("cpu", device):
        model = Wav2Vec2ForCTC(_config(mask_time_prob=0.3, mask_feature_prob=0.2, mask_feature_length=4), seed=1)
        model.to(dev).eval()
        out = model(x, sample_lengths=np.array([800, 700]), labels=labels)
        out.loss.backward()
        from tinyw2v2 import backend

        results[dev] = (float(out.loss), backend.to_numpy(model.lm_head.weight.grad),
                        Vocabulary(["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ABCDEFG")).greedy_decode(
                            out.logits, out.output_lengths))
        model.train()
        model(x, attention_mask=np.ones((2, L)), labels=labels).loss.backward()   # masking in training mode
    (a, ga, ta), (b, gb, tb) = results["cpu"], results[device]
    assert abs(a - b) <= 1e-5 * abs(a)
    # float32 sums in another order (the device takes the one-block paths): a few small entries of a gradient
    # whose largest is ~30 differ by ~6e-5 on some CPUs, about 2e-6 of the largest
    np.testing.assert_allclose(gb, ga, rtol=1e-4, atol=1e-5 * np.abs(ga).max())
    assert ta == tb
