"""CTC fine-tuning end to end on a handful of synthetic utterances: steps, resume, time budget, evaluation,
transcription, and bad input (unknown characters, transcripts longer than the output, mismatched vocabularies)."""
import json
import shutil

import numpy as np
import pytest

from tinyw2v2 import nn, optim
from tinyw2v2.data import generate_corpus
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
from tinyw2v2.models.wav2vec2.ctc import Wav2Vec2ForCTC
from tinyw2v2.text import Vocabulary
from tinyw2v2.io import save_checkpoint
from tinyw2v2.train.evaluate import EvaluationError, evaluate, load_ctc_model, transcribe
from tinyw2v2.train.finetune import (FinetuneArgs, LabelledBatches, TrainingError, choose_subset, finetune,
                                     read_metrics)
from tinyw2v2.cli import main as run_cli

SMALL = {"conv_dim": (16,) * 7, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2,
         "num_codevectors_per_group": 8, "codevector_dim": 16, "proj_codevector_dim": 16, "num_negatives": 5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, num_speakers=3, utterances_per_speaker=6, seed=0, heldout_speakers=1)
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A (random) tinyw2v2 pretraining checkpoint of the SMALL architecture."""
    config = Wav2Vec2Config.tiny(**SMALL)
    model = Wav2Vec2ForPreTraining(config, seed=5)
    path = tmp_path_factory.mktemp("pre") / "checkpoint.npz"
    save_checkpoint(path, model, optim.AdamW(model.parameters()), {"config": config.to_dict(), "step": 3, "args": {}})
    return path, model


def args_for(corpus, out, **kw):
    values = dict(data=str(corpus / "train"), eval_data=str(corpus / "test"), overrides=dict(SMALL), steps=12,
                  batch_seconds=6.0, log_every=3, eval_every=6, checkpoint_every=6, eval_utterances=3,
                  out=str(out), progress=False, lr=1e-3, labels=6)
    values.update(kw)
    return FinetuneArgs(**values)


def strip_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_steps_then_resume_reproduce_the_uninterrupted_run(corpus, tmp_path, pretrained):
    path, pre = pretrained
    full = finetune(args_for(corpus, tmp_path / "full", init=str(path)))
    assert full["metrics"]["step"] == 12 and full["labelled_utterances"] == 6
    records = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert records[0]["step"] == 0 and {"eval_cer", "eval_wer", "eval_loss"} <= set(records[0])
    assert [r["step"] for r in records if "eval_cer" in r] == [0, 6, 12]
    assert all(np.isfinite(r["loss"]) for r in records[1:])
    assert (tmp_path / "full" / "plots" / "finetuning.png").stat().st_size > 10_000
    vocab = Vocabulary.load(tmp_path / "full")
    assert vocab.tokens[:5] == ["<pad>", "<s>", "</s>", "<unk>", "|"]
    # the CNN stays as pretrained (frozen); the encoder above it moves
    state, _ = nn.load_arrays(tmp_path / "full" / "checkpoint.npz")
    ref = pre.state_dict()
    cnn = [k for k in ref if k.startswith("wav2vec2.feature_extractor.")]
    assert all(np.array_equal(state["model." + k], ref[k]) for k in cnn)
    assert not np.array_equal(state["model.wav2vec2.encoder.layers.0.attention.q_proj.weight"],
                              ref["wav2vec2.encoder.layers.0.attention.q_proj.weight"])

    finetune(args_for(corpus, tmp_path / "part", init=str(path), stop_at=6))
    assert read_metrics(tmp_path / "part" / "metrics.jsonl")[-1]["step"] == 6
    finetune(args_for(corpus, tmp_path / "part", init=str(path), resume=True))
    assert strip_time(read_metrics(tmp_path / "part" / "metrics.jsonl")) == strip_time(records)
    # stopped between two logged lines (log_every=3): the half-filled interval travels in the checkpoint
    finetune(args_for(corpus, tmp_path / "odd", init=str(path), stop_at=4))
    finetune(args_for(corpus, tmp_path / "odd", init=str(path), resume=True))
    assert strip_time(read_metrics(tmp_path / "odd" / "metrics.jsonl")) == strip_time(records)
    a, meta_a = nn.load_arrays(tmp_path / "full" / "checkpoint.npz")
    b, _ = nn.load_arrays(tmp_path / "part" / "checkpoint.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert meta_a["vocab"] == vocab.tokens

    # the exported transformers-format directory loads back with the same logits
    x = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32)
    ours = Wav2Vec2ForCTC.from_finetuning_checkpoint(tmp_path / "full" / "checkpoint.npz").eval()
    exported = Wav2Vec2ForCTC.from_pretrained(tmp_path / "full" / "model").eval()
    np.testing.assert_allclose(exported(x).logits.data, ours(x).logits.data, rtol=1e-6, atol=1e-6)
    assert Vocabulary.load(tmp_path / "full" / "model") == vocab


def test_from_scratch_with_freeze_finetune_updates_and_a_time_budget(corpus, tmp_path):
    result = finetune(args_for(corpus, tmp_path / "scratch", steps=10 ** 6, minutes=0.02, freeze_finetune_updates=3,
                               log_every=1, eval_every=0, eval_every_seconds=0.4, checkpoint_every=10 ** 6))
    records = read_metrics(tmp_path / "scratch" / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["frozen"] for r in steps[:4]] == [True, True, True, False]
    assert 1.2 <= result["train_seconds"] < 1.2 + 5.0   # stops once the budget is spent (one step past it)
    assert "eval_cer" in records[-1] and len([r for r in records if "eval_cer" in r]) >= 2
    lrs = [r["lr"] for r in steps]
    assert lrs[-1] < max(lrs)                            # the schedule reached its decay over the budget
    args = json.loads((tmp_path / "scratch" / "args.json").read_text())
    assert args["origin"].startswith("random init")


def test_nan_loss_stops_with_a_clear_message(corpus, tmp_path, monkeypatch):
    original = Wav2Vec2ForCTC.forward
    calls = {"n": 0}

    def poisoned(self, *a, **kw):
        out = original(self, *a, **kw)
        if self.training and out.loss is not None:
            calls["n"] += 1
            if calls["n"] == 8:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Wav2Vec2ForCTC, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"step 7: the loss is nan.*checkpoint.npz.*--resume"):
        finetune(args_for(corpus, tmp_path / "nan"))
    _, meta = nn.load_arrays(tmp_path / "nan" / "checkpoint.npz")
    assert meta["step"] == 6


def test_labelled_subset_by_count_or_fraction():
    a = choose_subset(100, 30, seed=0)
    assert len(a) == 30 and list(a) == sorted(a) and np.array_equal(a, choose_subset(100, 30, seed=0))
    assert not np.array_equal(a, choose_subset(100, 30, seed=1))
    assert len(choose_subset(100, 0.02, seed=0)) == 2 and len(choose_subset(10, 0.01, seed=0)) == 1
    assert len(choose_subset(7, None, seed=0)) == 7
    with pytest.raises(TrainingError, match="only 7"):
        choose_subset(7, 8, seed=0)
    with pytest.raises(TrainingError, match="whole number"):
        choose_subset(7, 2.5, seed=0)


def test_batches_are_a_function_of_the_step():
    lengths = np.arange(1, 21) * 16000
    a, b = LabelledBatches(lengths, 8.0, seed=3), LabelledBatches(lengths, 8.0, seed=3)
    first = [a(s).tolist() for s in range(12)]
    assert [b(s).tolist() for s in reversed(range(12))] == first[::-1]
    epoch0 = sorted(i for s in range(len(a._epoch(0))) for i in a(s))
    assert epoch0 == list(range(20))                      # one epoch covers every utterance once
    assert all(len(a(s)) * lengths[a(s)].max() <= 8 * 16000 or len(a(s)) == 1 for s in range(12))


def _librispeech_copy(corpus, dest, transcripts):
    """A LibriSpeech-style directory with the first utterances of the corpus and the given transcripts."""
    files = sorted((corpus / "train").rglob("*.flac"))[:len(transcripts)]
    d = dest / "1" / "1"
    d.mkdir(parents=True)
    lines = []
    for i, (f, text) in enumerate(zip(files, transcripts)):
        shutil.copy(f, d / f"1-1-{i:04d}.flac")
        lines.append(f"1-1-{i:04d} {text}\n")
    (d / "1-1.trans.txt").write_text("".join(lines))
    return dest


def test_unknown_characters_are_counted_and_too_long_transcripts_skipped(corpus, tmp_path, capsys):
    texts = ["SIX TWO", "ONE", "TWO SIX", "ZERO ONE", "ONE" + " ONE" * 400, "SEVEN ONE"]
    data = _librispeech_copy(corpus, tmp_path / "data", texts)
    vocab = Vocabulary.build(["SIX TWO ONE ZR"])       # no 'V' nor 'E' of SEVEN... E is in ONE; no 'V'
    vocab.save(tmp_path / "voc")
    result = finetune(args_for(corpus, tmp_path / "run", data=str(data), labels=None, vocab=str(tmp_path / "voc"),
                               steps=2, eval_every=2, checkpoint_every=2))
    printed = capsys.readouterr().out
    assert "5 labelled utterances used of 6 chosen" in printed
    assert "skipped 1 whose transcript is longer than the model's output frames" in printed and "--strict" in printed
    assert "outside the vocabulary" in printed and "'V' x1" in printed
    assert result["skipped_too_long"] == 1 and result["unknown_characters"] == 1
    with pytest.raises(TrainingError, match=r"1-1-0004: its transcript needs \d+ CTC frames"):
        finetune(args_for(corpus, tmp_path / "strict", data=str(data), labels=None, strict=True, steps=2))


def test_mismatched_vocabularies_are_clear_errors(corpus, tmp_path, capsys):
    finetune(args_for(corpus, tmp_path / "ft", steps=2, eval_every=2, checkpoint_every=2))
    vocab = Vocabulary.load(tmp_path / "ft")
    small = Vocabulary(vocab.tokens[:-2])
    small.save(tmp_path / "small")
    # continuing a fine-tuned model with another vocabulary
    with pytest.raises(TrainingError, match=rf"{len(vocab)} outputs.*{len(small)} entries"):
        finetune(args_for(corpus, tmp_path / "again", init=str(tmp_path / "ft"), vocab=str(tmp_path / "small"),
                          steps=2))
    # evaluating or transcribing with another vocabulary
    message = rf"checkpoint.npz has {len(vocab)} outputs.*small/vocab.json. has {len(small)} entries"
    with pytest.raises(Exception, match=message):
        load_ctc_model(tmp_path / "ft", vocab=tmp_path / "small")
    assert run_cli(["evaluate", str(tmp_path / "ft"), "--vocab", str(tmp_path / "small")]) == 2
    assert f"{len(vocab)} outputs" in capsys.readouterr().err
    # resuming with another vocabulary
    with pytest.raises(TrainingError, match="another vocabulary"):
        finetune(args_for(corpus, tmp_path / "ft", vocab=str(tmp_path / "small"), resume=True, steps=4))
    with pytest.raises(EvaluationError, match="no vocabulary"):
        load_ctc_model(tmp_path / "ft", vocab=tmp_path / "nowhere.json")


def test_cli_finetune_evaluate_transcribe(corpus, tmp_path, capsys, pretrained):
    path, _ = pretrained
    args = ["finetune", "--init", str(path), "--data", str(corpus / "train"), "--eval-data", str(corpus / "test"),
            "--labels", "0.5", "--steps", "3", "--batch-seconds", "6", "--out", str(tmp_path / "cli"),
            "--no-progress", "--log-every", "1", "--eval-every", "3", "--eval-utterances", "2",
            "--set", "mask_time_prob=0.3", "--phase-ratio", "0.2", "0.3", "0.5"]
    assert run_cli(args) == 0
    out = capsys.readouterr().out
    assert "finetuning.png" in out and "checkpoint:" in out and "6 labelled utterances used" in out
    saved = json.loads((tmp_path / "cli" / "args.json").read_text())
    assert saved["labels"] == 0.5 and saved["overrides"]["mask_time_prob"] == 0.3
    assert saved["phase_ratio"] == [0.2, 0.3, 0.5]

    assert run_cli(["evaluate", str(tmp_path / "cli"), "--utterances", "3", "--worst", "2",
                    "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "| all | 3 |" in out and "worst 2 utterances" in out and "ref:" in out
    assert json.loads((tmp_path / "eval.json").read_text())["utterances"] == 3

    files = [str(p) for p in sorted((corpus / "test").rglob("*.flac"))[:2]]
    assert run_cli(["transcribe", *files, "--model", str(tmp_path / "cli")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == files
    pairs = transcribe(tmp_path / "cli" / "model", files)          # the transformers-format export
    assert [p[1] for p in pairs] == [l.split("\t", 1)[1] if "\t" in l else "" for l in lines]
    result = evaluate(tmp_path / "cli", max_utterances=2)
    assert result["results"]["utterances"] == 2 and "per_speaker" in result["results"]
    assert run_cli(["transcribe", str(tmp_path / "missing.wav"), "--model", str(tmp_path / "cli")]) == 2


def test_bad_init_and_unlabelled_data_are_clear_errors(corpus, tmp_path):
    with pytest.raises(TrainingError, match="--init"):
        finetune(args_for(corpus, tmp_path / "x", init=str(tmp_path)))
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    shutil.copy(sorted((corpus / "train").rglob("*.flac"))[0], folder / "a.flac")
    with pytest.raises(TrainingError, match="no transcripts"):
        finetune(args_for(corpus, tmp_path / "y", data=str(folder)))


def test_finetune_and_evaluate_on_the_emulated_device(corpus, tmp_path):
    """The loop makes no implicit host copy (the emulated device refuses them, as CuPy does)."""
    result = finetune(args_for(corpus, tmp_path / "emu", device="emulated", steps=2, eval_every=2,
                               checkpoint_every=2))
    assert result["metrics"]["step"] == 2 and np.isfinite(result["metrics"]["eval_cer"])
    assert evaluate(tmp_path / "emu", max_utterances=2, device="emulated")["results"]["utterances"] == 2
