"""Pretraining end to end on a handful of synthetic utterances: steps, resume, NaN stop, bad input."""
import json

import numpy as np
import pytest
import soundfile as sf

from tinyw2v2 import nn
from tinyw2v2.cli import main
from tinyw2v2.data import generate_corpus
from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining
from tinyw2v2.train.pretrain import PretrainArgs, TrainingError, pretrain, read_metrics

SMALL = {"conv_dim": (16,) * 7, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2,
         "num_codevectors_per_group": 8, "codevector_dim": 16, "proj_codevector_dim": 16, "num_negatives": 5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, num_speakers=3, utterances_per_speaker=6, seed=0, heldout_speakers=1)
    return root


def args_for(corpus, out, **kw):
    values = dict(data=str(corpus / "train"), eval_data=str(corpus / "test"), overrides=dict(SMALL), steps=20,
                  batch_seconds=2.0, crop_seconds=1.0, log_every=5, eval_every=10, checkpoint_every=10,
                  eval_utterances=5, eval_seconds=1.0, eval_batch=2, out=str(out), progress=False, lr=5e-4)
    values.update(kw)
    return PretrainArgs(**values)


def strip_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_twenty_steps_then_resume_reproduces_the_uninterrupted_run(corpus, tmp_path):
    full = pretrain(args_for(corpus, tmp_path / "full"))
    assert full["metrics"]["step"] == 20
    records = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert records[0]["step"] == 0 and "eval_accuracy" in records[0]
    assert all(np.isfinite(r["loss"]) for r in records[1:])
    assert [r["step"] for r in records if "eval_accuracy" in r] == [0, 10, 20]
    assert (tmp_path / "full" / "plots" / "pretraining.png").stat().st_size > 10_000

    pretrain(args_for(corpus, tmp_path / "part", stop_at=10))
    assert read_metrics(tmp_path / "part" / "metrics.jsonl")[-1]["step"] == 10
    pretrain(args_for(corpus, tmp_path / "part", resume=True))
    assert strip_time(read_metrics(tmp_path / "part" / "metrics.jsonl")) == strip_time(records)
    # stopped between two logged lines: the half-filled interval travels in the checkpoint
    pretrain(args_for(corpus, tmp_path / "odd", stop_at=7, checkpoint_every=7))
    pretrain(args_for(corpus, tmp_path / "odd", resume=True))
    assert strip_time(read_metrics(tmp_path / "odd" / "metrics.jsonl")) == strip_time(records)
    a, _ = nn.load_arrays(tmp_path / "full" / "checkpoint.npz")
    b, _ = nn.load_arrays(tmp_path / "part" / "checkpoint.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(corpus, tmp_path, monkeypatch):
    original = Wav2Vec2ForPreTraining.forward
    calls = {"n": 0}

    def poisoned(self, *a, **kw):
        out = original(self, *a, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 13:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Wav2Vec2ForPreTraining, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"step 12: the loss is nan.*checkpoint.npz.*--resume"):
        pretrain(args_for(corpus, tmp_path / "nan"))
    _, meta = nn.load_arrays(tmp_path / "nan" / "checkpoint.npz")
    assert meta["step"] == 10


def test_resume_with_another_config_is_refused(corpus, tmp_path):
    pretrain(args_for(corpus, tmp_path / "run", steps=10, stop_at=10))
    other = dict(SMALL, hidden_size=48)
    with pytest.raises(TrainingError, match="another model config"):
        pretrain(args_for(corpus, tmp_path / "run", overrides=other, resume=True))


def test_bad_files_are_skipped_with_a_count_or_fatal_with_strict(corpus, tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    wavs = sorted((corpus / "train").rglob("*.flac"))[:4]
    for i, w in enumerate(wavs):
        (folder / f"good{i}.flac").write_bytes(w.read_bytes())
    (folder / "corrupt.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(folder / "short.wav", np.zeros(100, dtype=np.float32), 16000)
    sf.write(folder / "nan.wav", np.full(20000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    pretrain(args_for(corpus, tmp_path / "skip", data=str(folder), steps=2, stop_at=None, checkpoint_every=2,
                      eval_every=2, log_every=1))
    printed = capsys.readouterr().out
    assert "skipped 3 bad files" in printed and "and 0 shorter" in printed and "of 7" in printed
    with pytest.raises(Exception, match="corrupt.wav|nan.wav"):
        pretrain(args_for(corpus, tmp_path / "strict", data=str(folder), steps=2, strict=True))


def test_no_usable_audio_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="empty"):
        pretrain(PretrainArgs(data=str(tmp_path / "empty"), out=str(tmp_path / "o"), progress=False))


def test_cli_pretrain_and_analyze(corpus, tmp_path, capsys):
    args = ["pretrain", "--data", str(corpus / "train"), "--eval-data", str(corpus / "test"), "--steps", "3",
            "--batch-seconds", "2", "--crop-seconds", "1", "--out", str(tmp_path / "cli"), "--no-progress",
            "--log-every", "1", "--eval-every", "3", "--eval-utterances", "2"]
    for k, v in SMALL.items():
        args += ["--set", f"{k}={v!r}".replace(" ", "")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "plots:" in out and "pretraining.png" in out
    assert main(["analyze", str(tmp_path / "cli"), "--data", str(corpus / "test"), "--utterances", "4"]) == 0
    out = capsys.readouterr().out
    assert "PNMI" in out and "codes_vs_phones.png" in out
    result = json.loads((tmp_path / "cli" / "analysis.json").read_text())
    assert set(result) >= {"trained", "random init", "frames"}


def test_pretraining_runs_on_the_emulated_device(corpus, tmp_path):
    """The whole loop (batches, masks, negatives, AdamW, eval, metrics) with no implicit host copy."""
    r = pretrain(args_for(corpus, tmp_path / "emu", device="emulated", steps=3, log_every=1, eval_every=3,
                          checkpoint_every=3))
    assert r["metrics"]["step"] == 3 and np.isfinite(r["metrics"]["loss"])


def test_logged_training_metrics_are_weighted_means_over_the_interval():
    from tinyw2v2.train.pretrain import IntervalMeans

    m = IntervalMeans()
    m.add({"loss": 1.0, "accuracy": 0.0, "negatives_identical": 0.10}, weights={"accuracy": 1, "negatives_identical": 10},
          maxima=("negatives_identical",))
    m.add({"loss": 3.0, "accuracy": 1.0, "negatives_identical": 0.0}, weights={"accuracy": 3, "negatives_identical": 30},
          maxima=("negatives_identical",))
    resumed = IntervalMeans(m.state())
    for means in (m.pop(), resumed.pop()):
        assert means == pytest.approx({"loss": 2.0, "accuracy": 0.75, "negatives_identical": 0.025,
                                       "negatives_identical_batch_max": 0.10})
    assert m.pop() == {}
