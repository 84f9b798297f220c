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
                  eval_utterances=5, eval_batch_seconds=2.0, out=str(out), progress=False, lr=5e-4)
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
    assert out.startswith("PNMI above chance") and "codes_vs_phones.png" in out
    result = json.loads((tmp_path / "cli" / "analysis.json").read_text())
    assert set(result) >= {"trained", "random init", "frames"}


def test_pretraining_runs_on_the_emulated_device(corpus, tmp_path):
    """The whole loop (batches, masks, negatives, AdamW, eval, metrics) with no implicit host copy."""
    r = pretrain(args_for(corpus, tmp_path / "emu", device="emulated", steps=3, log_every=1, eval_every=3,
                          checkpoint_every=3))
    assert r["metrics"]["step"] == 3 and np.isfinite(r["metrics"]["loss"])


def test_logged_training_metrics_are_weighted_means_over_the_interval():
    from tinyw2v2.train.common import IntervalMeans

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


def test_held_out_evaluation_scores_every_utterance_short_ones_included(corpus, tmp_path):
    from tinyw2v2.models.wav2vec2 import Wav2Vec2Config
    from tinyw2v2.train.pretrain import load_waveforms, make_eval_set

    config = Wav2Vec2Config.tiny(**SMALL)
    waves, _ = load_waveforms(corpus / "test", config.min_samples_to_mask(), False, False)
    eval_set = make_eval_set(waves, config, batch_seconds=3.0)
    assert eval_set.utterances == len(waves) == 6
    assert sum(x.shape[0] for x, _, _ in eval_set.batches) == len(waves)
    for x, mask, negatives in eval_set.batches:   # each batch: cropped to its shortest, masks and negatives fit it
        T = config.num_frames(x.shape[1])
        assert mask.shape == (x.shape[0], T) and negatives.shape == (x.shape[0], T, config.num_negatives)
    shortest = min(w.shape[0] for w in waves)
    assert min(x.shape[1] for x, _, _ in eval_set.batches) == shortest   # the shortest utterance is scored too
    r = pretrain(args_for(corpus, tmp_path / "run", steps=2, eval_utterances=None, eval_every=2))
    assert r["eval_utterances"] == 6
    assert r["metrics"]["eval_frames"] == sum(int(m.sum()) for _, m, _ in make_eval_set(
        waves, Wav2Vec2Config.tiny(**SMALL), batch_seconds=2.0).batches)


def test_schedules_span_the_run_by_steps_or_by_minutes():
    from tinyw2v2.train.pretrain import RunSchedule

    s = RunSchedule(PretrainArgs(steps=100, lr=1e-3, warmup=0.1, schedule="linear", max_temperature=2.0,
                                 min_temperature=0.5))
    assert s.lr(0, 0.0) == 0.0 and s.lr(10, 0.0) == pytest.approx(1e-3) and s.lr(55, 0.0) == pytest.approx(5e-4)
    assert s.temperature(0, 0.0) == 2.0 and s.temperature(50, 0.0) == pytest.approx(1.0)
    assert s.temperature(100, 0.0) == pytest.approx(0.5) and s.finished(100, 0.0) and not s.finished(99, 1e9)
    flat = RunSchedule(PretrainArgs(steps=100, lr=1e-3, warmup=0.1, schedule="constant"))
    assert flat.lr(5, 0.0) == pytest.approx(5e-4) and flat.lr(55, 0.0) == flat.lr(99, 0.0) == pytest.approx(1e-3)
    tri = RunSchedule(PretrainArgs(steps=100, lr=1e-3, warmup=0.1))    # the default: tri_stage, decay 0.2
    assert tri.lr(5, 0.0) == pytest.approx(5e-4) and tri.lr(80, 0.0) == pytest.approx(1e-3)   # hold until 80%
    assert tri.lr(90, 0.0) == pytest.approx(1e-4) and tri.lr(100, 0.0) == pytest.approx(1e-5)  # 0.01 ** ((p - 0.8) / 0.2)
    with pytest.raises(TrainingError, match="--decay"):
        RunSchedule(PretrainArgs(steps=100, warmup=0.5, schedule="tri_stage", decay=0.6))
    t = RunSchedule(PretrainArgs(steps=None, minutes=1.0, lr=1e-3, warmup=0.1, schedule="linear"))
    assert t.lr(7, 30.0) == pytest.approx(1e-3 * (1 - 0.5) / (1 - 0.1), rel=1e-5)   # half the minute gone
    assert t.temperature(7, 30.0) == pytest.approx(1.0) and t.finished(10 ** 6, 60.0) and not t.finished(10 ** 6, 59.0)
    both = RunSchedule(PretrainArgs(steps=100, minutes=1.0))      # whichever comes first
    assert both.progress(50, 45.0) == 0.75 and both.progress(80, 6.0) == 0.8
    fixed = RunSchedule(PretrainArgs(steps=1000, anneal_steps=100))  # fairseq-style: per step, whatever the length
    assert fixed.temperature(50, 0.0) == pytest.approx(1.0) and fixed.temperature(500, 0.0) == 0.5
    with pytest.raises(TrainingError, match="--steps or --minutes"):
        RunSchedule(PretrainArgs(steps=None, minutes=None))


def test_a_time_budget_ends_the_run_and_the_schedules_with_it(corpus, tmp_path):
    r = pretrain(args_for(corpus, tmp_path / "timed", steps=None, minutes=0.05, log_every=1, eval_every=10 ** 6,
                          checkpoint_every=10 ** 6, schedule="linear"))
    records = read_metrics(tmp_path / "timed" / "metrics.jsonl")
    assert 3.0 <= r["train_seconds"] < 3.0 + 2.0 * max(records[-1]["seconds"] / records[-1]["step"], 0.5)
    assert "eval_accuracy" in records[-1] and records[-1]["step"] == r["metrics"]["step"] > 1
    assert records[-1]["lr"] < 0.5 * max(x["lr"] for x in records[1:])   # decayed by the end of the budget
    assert (tmp_path / "timed" / "checkpoint.npz").exists()


@pytest.mark.parametrize("argv, message", [
    (["--steps", "-3"], "--steps must be at least 1"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--minutes", "0"], "--minutes must be positive"),
    (["--set", "nonexistent_key=1"], "nonexistent_key"),
    (["--set", "hidden_size=130"], "hidden_size 130"),
    (["--set", "hidden_size"], "KEY=VALUE"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--data", "/nonexistent/audio"], "/nonexistent/audio"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--batch-seconds", "-1"], "--batch-seconds must be positive, got -1"),
    (["--crop-seconds", "0"], "--crop-seconds must be positive"),
    (["--eval-batch-seconds", "-2"], "--eval-batch-seconds must be positive"),
    (["--log-every", "0"], "--log-every must be positive"),
    (["--eval-every", "-5"], "--eval-every must be positive"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be positive"),
])
def test_bad_pretrain_options_end_in_one_clear_line(corpus, tmp_path, capsys, argv, message):
    base = ["pretrain", "--data", str(corpus / "train"), "--eval-data", str(corpus / "test"), "--out",
            str(tmp_path / "bad"), "--no-progress"]
    argv = argv if argv[0] != "--data" else argv + ["--eval-data", str(corpus / "test")]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--init", "/nonexistent/run"], "--init /nonexistent/run"),
    (["finetune", "--batch-seconds", "0"], "--batch-seconds must be positive"),
    (["finetune", "--log-every", "-1"], "--log-every must be positive"),
    (["finetune", "--eval-every", "-1"], "--eval-every must be positive, or 0"),
    (["check", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_options_of_other_commands_end_in_one_clear_line_before_any_work(tmp_path, capsys, argv, message):
    """Checked first: nothing is generated (the synthetic corpus), trained or printed (the check's table)."""
    extra = ["--corpus-dir", str(tmp_path / "corpus"), "--out", str(tmp_path / "run")] if argv[0] == "finetune" else []
    assert main(argv + extra) == 2
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert out == "" and not (tmp_path / "corpus").exists() and not (tmp_path / "run").exists()


def test_cuda_without_a_gpu_is_one_clear_line(corpus, tmp_path, capsys):
    from tinyw2v2 import backend

    if backend.cuda_available():
        pytest.skip("this machine has a GPU")
    assert main(["pretrain", "--data", str(corpus / "train"), "--eval-data", str(corpus / "test"), "--steps", "1",
                 "--out", str(tmp_path / "gpu"), "--no-progress", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no GPU is usable here" in err and "--device cpu" in err and err.count("\n") == 1


def test_resume_without_a_checkpoint_says_it_starts_from_scratch(corpus, tmp_path, capsys):
    pretrain(args_for(corpus, tmp_path / "fresh", steps=2, resume=True, checkpoint_every=2, eval_every=2))
    assert "no checkpoint in" in capsys.readouterr().out and (tmp_path / "fresh" / "checkpoint.npz").exists()


def test_export_writes_a_transformers_directory(corpus, tmp_path, capsys):
    from tinyw2v2.models.wav2vec2 import Wav2Vec2ForPreTraining as Model

    pretrain(args_for(corpus, tmp_path / "run", steps=2, checkpoint_every=2, eval_every=2))
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert "Wav2Vec2ForPreTraining.from_pretrained" in capsys.readouterr().out
    loaded = Model.from_pretrained(tmp_path / "hf")
    ours = nn.load_arrays(tmp_path / "run" / "checkpoint.npz")[0]
    for name, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value, ours["model." + name], err_msg=name)
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "hf2")]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err


def test_the_defaults_are_the_plateau_studys_main_job_row():
    """docs/results.md ("Leaving the plateau"): the tiny preset's short-run recipe is the study's row F with the lr
    held to 80% of the run and then decayed, and the README's main job is its row b12_900_tri_stage."""
    import sys
    from pathlib import Path

    from tinyw2v2.cli import build_parser, dataclass_from_options
    from tinyw2v2.train.pretrain import build_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import plateau

    def parsed(row):
        cmd = plateau.BY_NAME[row].command(0, 1000, 50, 1, Path("runs/x"))
        return dataclass_from_options(PretrainArgs, build_parser().parse_args(cmd[1:]))

    default, f, main = PretrainArgs(), parsed("F"), parsed("b12_900_tri_stage")
    assert build_config(f).to_dict() == build_config(default).to_dict() == build_config(main).to_dict()
    for name in ("lr", "warmup", "batch_seconds", "crop_seconds", "max_temperature", "min_temperature",
                 "anneal_fraction", "anneal_steps", "schedule", "weight_decay", "betas", "adam_eps", "clip_norm",
                 "steps"):
        assert getattr(main, name) == getattr(default, name), name
        if name not in ("schedule", "steps"):
            assert getattr(f, name) == getattr(default, name), name
    assert (f.schedule, default.schedule) == ("linear", "tri_stage")


def test_the_summary_says_whether_the_run_left_the_plateau():
    from tinyw2v2.cli import pretraining_summary

    def summary(acc, loss):
        start = {"step": 0, "eval_accuracy": 0.07, "eval_loss": 3.16}
        end = {"step": 900, "eval_accuracy": acc, "eval_loss": loss, "eval_frames": 12620}
        return pretraining_summary({"metrics": end, "initial": start, "num_negatives": 20, "train_seconds": 158,
                                    "eval_utterances": 400, "plots": ["run/plots/pretraining.png"]}, run="run")

    learned, leaving, flat = summary(0.459, 1.72), summary(0.12, 2.8), summary(0.06, 3.04)
    assert "chance 1/21 = 0.048" in learned and "it learned: 9.6x chance" in learned
    assert "leaving the initial plateau" in leaving
    assert "still on the initial plateau" in flat and "Leaving the plateau" in flat
    assert all("run/plots/pretraining.png" in s and "tinyw2v2 analyze run" in s for s in (learned, leaving, flat))
