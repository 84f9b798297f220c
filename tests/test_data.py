"""Tests for tinyw2v2.data: synthetic corpus, audio reading, dataset layouts, batching."""
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tinyw2v2.data import (
    LEXICON, PHONES, AudioDataset, AudioError, DatasetError, collate, collate_phones, frame_labels,
    generate_corpus, load_audio, make_batches, make_speaker, normalize_audio, num_frames,
    read_manifest, scan_librispeech, synthesize_utterance, write_manifest,
)

SR = 16000


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    meta = generate_corpus(out, num_speakers=4, utterances_per_speaker=5, seed=0, heldout_speakers=1)
    return out, meta


# ---------------------------------------------------------------- synthetic corpus

def test_generation_deterministic(corpus, tmp_path):
    out, _ = corpus
    generate_corpus(tmp_path / "a", num_speakers=4, utterances_per_speaker=5, seed=0,
                    heldout_speakers=1, workers=2)
    generate_corpus(tmp_path / "b", num_speakers=4, utterances_per_speaker=5, seed=1, heldout_speakers=1)
    same, a, b = _files(out), _files(tmp_path / "a"), _files(tmp_path / "b")
    assert same == a  # every byte (audio, transcripts, alignments, corpus.json), workers too
    flacs = [k for k in same if k.endswith(".flac")]
    assert len(flacs) == 20
    assert all(same[k] != b.get(k) for k in flacs)


def test_corpus_contents(corpus):
    out, meta = corpus
    assert json.loads((out / "corpus.json").read_text()) == meta
    assert meta["phones"][0] == "sil" and meta["phones"] == PHONES and 12 <= len(PHONES) <= 16
    train, test = set(meta["splits"]["train"]), set(meta["splits"]["test"])
    assert len(train) == 3 and test == set(meta["heldout_speakers"]) and not train & test
    for split, spks in meta["splits"].items():
        assert {int(p.name) for p in (out / split).iterdir() if p.is_dir()} == set(spks)
    for f in out.rglob("*.flac"):
        x, sr = sf.read(f, dtype="float32")
        assert sr == SR and 1.0 <= len(x) / SR <= 3.0
        assert np.isfinite(x).all() and 0.3 <= np.abs(x).max() <= 0.95
    for tf in out.rglob("*.trans.txt"):
        for line in tf.read_text().splitlines():
            uid, text = line.split(" ", 1)
            assert (tf.parent / f"{uid}.flac").exists()
            assert text == text.upper() and all(w in LEXICON for w in text.split())


def test_alignments(corpus):
    out, _ = corpus
    al = np.load(out / "train" / "alignments.npz")
    for f in (out / "train").rglob("*.flac"):
        L = sf.info(f).frames
        labels, seg = al[f.stem], al[f.stem + ".segments"]
        assert len(labels) == (L - 400) // 320 + 1 == num_frames(L)
        assert seg[0, 1] == 0 and seg[-1, 2] == L and (seg[1:, 1] == seg[:-1, 2]).all()
        assert np.array_equal(labels, frame_labels(seg, L))
        assert labels[0] == 0 and set(labels.tolist()) > {0}


def test_frame_labels_centre_rule():
    seg = [(0, 0, 500), (3, 500, 900), (0, 900, 1200)]
    # frames: centres 200, 520, 840 -> sil, 3, 3 ; L=1200 -> floor(800/320)+1 = 3 frames
    assert frame_labels(seg, 1200).tolist() == [0, 3, 3]
    assert len(frame_labels(seg, 399)) == 0 and len(frame_labels(seg, 400)) == 1


def test_synthesize_utterance_speakers_differ():
    rng = np.random.default_rng(3)
    spks = [make_speaker(rng, i) for i in range(6)]
    assert len({s.f0 for s in spks}) == 6 and len({s.vtl_scale for s in spks}) == 6
    audio, seg = synthesize_utterance(rng, spks[0], ["SIX", "SHE"])
    assert audio.dtype == np.float32 and seg[-1][2] == len(audio)
    assert [PHONES[p] for p, _, _ in seg if p] == ["s", "iy", "k", "s", "sh", "iy"]
    with pytest.raises(ValueError, match="not in LEXICON"):
        synthesize_utterance(rng, spks[0], ["HELLO"])


# ---------------------------------------------------------------- dataset layouts

def test_librispeech_layout(corpus):
    out, _ = corpus
    ds = AudioDataset.from_path(out / "train")
    assert len(ds) == 15
    ex = ds[0]
    assert ex["audio"].dtype == np.float32 and ex["audio"].ndim == 1
    assert ex["transcript"] and ex["transcript"] == ex["transcript"].upper()
    assert len(ex["phones"]) == num_frames(len(ex["audio"]))
    cropped = AudioDataset.from_librispeech(out / "train", max_samples=8000, rng=np.random.default_rng(0))
    ex2 = cropped[0]
    assert len(ex2["audio"]) == 8000 and len(ex2["phones"]) == num_frames(8000)

    class FixedOffset:  # a Generator stand-in: every crop starts at sample 640 (= frame 2)
        def integers(self, lo, hi):
            return 640
    ex3 = AudioDataset.from_librispeech(out / "train", max_samples=8000, rng=FixedOffset())[0]
    np.testing.assert_array_equal(ex3["audio"], ex["audio"][640:8640])
    np.testing.assert_array_equal(ex3["phones"], ex["phones"][2:2 + num_frames(8000)])


def test_manifest_layout(corpus, tmp_path):
    out, _ = corpus
    items = scan_librispeech(out / "test")
    tsv = tmp_path / "test.tsv"
    write_manifest(items, out, tsv)
    lines = tsv.read_text().splitlines()
    assert Path(lines[0]) == out.resolve() and lines[1].split("\t")[1] == str(sf.info(items[0].path).frames)
    back = read_manifest(tsv)  # .wrd
    assert [(b.id, b.transcript) for b in back] == [(i.id, i.transcript) for i in items]
    tsv.with_suffix(".wrd").unlink()
    assert [b.transcript for b in read_manifest(tsv)] == [i.transcript for i in items]  # from .ltr
    ds = AudioDataset.from_path(tsv)
    assert len(ds) == 5 and ds[0]["transcript"] == items[0].transcript and "phones" in ds[0]
    assert (ds.lengths() == [sf.info(i.path).frames for i in items]).all()
    (tmp_path / "bad.tsv").write_text(f"{out}\ntest/x.flac\tnot-a-number\n")
    with pytest.raises(DatasetError, match="bad.tsv:2"):
        read_manifest(tmp_path / "bad.tsv")


def test_folder_layout(tmp_path):
    t = np.arange(SR) / SR
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 200 * t), SR)
    sf.write(tmp_path / "sub" / "b.flac", 0.3 * np.sin(2 * np.pi * 300 * t), SR)
    sf.write(tmp_path / "sub" / "c.ogg", 0.3 * np.sin(2 * np.pi * 400 * t), SR)
    (tmp_path / "notes.txt").write_text("not audio")
    ds = AudioDataset.from_path(tmp_path)
    assert [it.id for it in ds.items] == ["a", "sub/b", "sub/c"]
    exs = list(ds)
    assert all(e["transcript"] is None and "phones" not in e and len(e["audio"]) == SR for e in exs)


# ---------------------------------------------------------------- audio reading

def _peak_hz(x, sr=SR):
    return np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * sr / len(x)


@pytest.mark.parametrize("sr,hz", [(8000, 440.0), (44100, 1000.0), (22050, 3000.0)])
def test_resampling(tmp_path, sr, hz):
    t = np.arange(sr) / sr  # 1 s
    sf.write(tmp_path / "s.wav", 0.5 * np.sin(2 * np.pi * hz * t), sr, subtype="FLOAT")
    x = load_audio(tmp_path / "s.wav")
    assert x.dtype == np.float32 and len(x) == SR
    assert abs(_peak_hz(x) - hz) <= 1.0
    assert 0.45 < np.abs(x[100:-100]).max() < 0.55


def test_stereo_rule_and_normalize(tmp_path):
    t = np.arange(SR) / SR
    left, right = 0.5 * np.sin(2 * np.pi * 300 * t), 0.1 * np.ones(SR)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "st.wav"), (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(load_audio(tmp_path / "st.wav", mono="first"), left, atol=1e-6)
    with pytest.raises(ValueError, match="mono"):
        load_audio(tmp_path / "st.wav", mono="last")
    y = load_audio(tmp_path / "st.wav", normalize=True)
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-3
    z = (left + right) / 2
    np.testing.assert_allclose(y, (z - z.mean()) / np.sqrt(z.var() + 1e-5), atol=1e-5)
    np.testing.assert_allclose(normalize_audio(np.zeros(10)), 0.0)


def _bad_files(d):
    d.mkdir(exist_ok=True)
    (d / "zero_bytes.wav").write_bytes(b"")
    (d / "garbage.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    sf.write(d / "no_frames.wav", np.zeros((0,)), SR)
    sf.write(d / "nan.wav", np.array([0.1] * 500 + [np.nan] + [0.1] * 500), SR, subtype="FLOAT")
    sf.write(d / "short.wav", np.full(300, 0.1), SR)
    sf.write(d / "short8k.wav", np.full(150, 0.1), 8000)  # 300 samples at 16 kHz
    return {"missing.wav": "not found", "zero_bytes.wav": "empty", "garbage.flac": "corrupt",
            "no_frames.wav": "empty", "nan.wav": "NaN/Inf", "short.wav": "min_samples",
            "short8k.wav": "min_samples"}


def test_bad_inputs_give_clear_errors(tmp_path):
    for name, words in _bad_files(tmp_path).items():
        with pytest.raises(AudioError, match=words) as e:
            load_audio(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)
        assert isinstance(e.value, ValueError) and e.value.__cause__ is None
    assert len(load_audio(tmp_path / "short.wav", min_samples=0)) == 300


def test_missing_transcript(corpus, tmp_path):
    import shutil
    root = tmp_path / "ls"
    shutil.copytree(corpus[0] / "test", root)
    tf = next(root.rglob("*.trans.txt"))
    lines = tf.read_text().splitlines()
    tf.write_text("\n".join(lines[1:]) + "\n")
    uid = lines[0].split()[0]
    with pytest.raises(DatasetError, match=f"{uid}.flac: no transcript line"):
        AudioDataset.from_path(root)
    tf.unlink()
    with pytest.raises(DatasetError, match="no \\*.trans.txt"):
        scan_librispeech(root)


def test_skip_with_count_vs_strict(tmp_path, caplog):
    d = tmp_path / "mix"
    _bad_files(d)
    t = np.arange(SR) / SR
    sf.write(d / "good1.wav", 0.3 * np.sin(2 * np.pi * 200 * t), SR)
    sf.write(d / "good2.flac", 0.3 * np.sin(2 * np.pi * 250 * t), SR)
    ds = AudioDataset.from_folder(d)
    assert len(ds) == 8
    with caplog.at_level(logging.WARNING, logger="tinyw2v2.data"):
        good = list(ds)
    assert [g["id"] for g in good] == ["good1", "good2"]
    assert len(ds.skipped) == 6 and "skipped 6 of 8 files" in caplog.text
    assert ds.lengths().tolist().count(0) == 3  # header-less files count as length 0
    with pytest.raises(AudioError):
        list(AudioDataset.from_folder(d, strict=True))


def test_a_missing_soundfile_is_its_own_clear_error_not_a_bad_file(tmp_path, monkeypatch):
    """Without the soundfile package no file can be read: that is said once, with the install line, and raised even
    by a dataset that skips bad files (it used to call every file corrupt and skip them all)."""
    from tinyw2v2.data.audio import SoundfileMissingError, audio_info

    t = np.arange(SR) / SR
    sf.write(tmp_path / "good.wav", 0.3 * np.sin(2 * np.pi * 200 * t), SR)
    monkeypatch.setitem(sys.modules, "soundfile", None)         # import soundfile now raises ImportError
    for read in (audio_info, load_audio):
        with pytest.raises(SoundfileMissingError, match="pip install soundfile") as e:
            read(tmp_path / "good.wav")
        assert isinstance(e.value, ImportError) and not isinstance(e.value, AudioError)
        assert "corrupt" not in str(e.value)
    ds = AudioDataset.from_folder(tmp_path)
    with pytest.raises(SoundfileMissingError):
        ds[0]
    assert ds.skipped == {}
    with pytest.raises(SoundfileMissingError):
        ds.lengths()
    with pytest.raises(AudioError, match="not found"):             # a missing file is still a bad file
        audio_info(tmp_path / "missing.wav")


def test_the_command_line_says_soundfile_is_missing_in_one_line(tmp_path, monkeypatch, capsys):
    from tinyw2v2.cli import main

    t = np.arange(SR) / SR
    (tmp_path / "audio").mkdir()
    for i in range(3):
        sf.write(tmp_path / "audio" / f"u{i}.wav", 0.3 * np.sin(2 * np.pi * 200 * t), SR)
    monkeypatch.setitem(sys.modules, "soundfile", None)
    code = main(["pretrain", "--data", str(tmp_path / "audio"), "--steps", "1", "--no-progress",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install soundfile" in err and "Traceback" not in err


# ---------------------------------------------------------------- batching

def test_make_batches_and_collate():
    rng = np.random.default_rng(0)
    lengths = rng.integers(16000, 48000, size=50)
    batches = make_batches(lengths, max_batch_seconds=10, rng=np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(50))
    assert all(len(b) * lengths[b].max() <= 160000 for b in batches)
    again = make_batches(lengths, max_tokens=160000, rng=np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert all(len(b) <= 2 for b in make_batches(lengths, max_tokens=10**9, max_batch_size=2))
    assert [len(b) for b in make_batches([5, 100, 0], max_tokens=50)] == [1, 1]  # too long -> alone
    with pytest.raises(ValueError):
        make_batches(lengths)

    wavs = [np.ones(n, np.float32) for n in (5, 3, 7)]
    x, mask, lens = collate(wavs + [None], pad_to_multiple=4)
    assert x.shape == mask.shape == (3, 8) and x.dtype == np.float32 and mask.dtype == bool
    assert lens.tolist() == [5, 3, 7] and (x.sum(1) == lens).all() and (mask.sum(1) == lens).all()
    x2, mask2, lens2 = collate(wavs, crop_to_shortest=True, rng=rng)
    assert x2.shape == (3, 3) and mask2.all()
    ph = collate_phones([{"phones": np.array([1, 2])}, {"phones": np.array([3])}])
    assert ph.tolist() == [[1, 2], [3, -100]]
