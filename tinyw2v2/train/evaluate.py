"""Speech recognition with a fine-tuned CTC model: ``tinyw2v2 evaluate`` and ``tinyw2v2 transcribe``.

- ``load_ctc_model(path)``: a ``tinyw2v2 finetune`` run directory (or its checkpoint.npz) with its vocab.json,
  or a transformers directory (config.json + weights + vocab.json); the head's size is checked against the
  vocabulary (``VocabularyMismatchError`` names both sizes and the file).
- ``recognize``: eval-mode greedy CTC decoding of many utterances, in length-sorted zero-padded batches. A
  layer-norm CNN gets the attention mask; a group-norm CNN gets no mask (transformers' advice: its
  normalisation was trained on zero-padded input) and its frame counts come from the true lengths.
- ``evaluate_utterances``: corpus CER / WER (jiwer), mean CTC loss per utterance and the per-utterance results.
- ``evaluate``: the table for ``tinyw2v2 evaluate`` (overall and per speaker) plus the worst utterances.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import backend
from .. import functional as F
from ..data import AudioDataset, collate, load_audio, make_batches
from ..models.wav2vec2.ctc import VocabularyMismatchError, Wav2Vec2ForCTC, pack_labels, vocabulary_mismatch
from ..tensor import no_grad
from ..text import EncodeStats, Vocabulary, error_rates, pad_labels, utterance_error_rates

SAMPLE_RATE = 16000


class EvaluationError(RuntimeError):
    """A model, vocabulary or data set that cannot be evaluated; the message says what to do."""


# ----------------------------------------------------------------------------------------------
# models


def find_checkpoint(path) -> Path | None:
    p = Path(path)
    if p.is_file() and p.suffix == ".npz":
        return p
    if p.is_dir() and (p / "checkpoint.npz").is_file():
        return p / "checkpoint.npz"
    return None


def load_ctc_model(path, vocab=None, device: str = "cpu"):
    """(model in eval mode, Vocabulary) from a fine-tuning run / checkpoint or a transformers directory.

    ``vocab``: a vocab.json (or its directory) to use instead of the one next to the model.
    """
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path}: no such file or directory")
    ckpt = find_checkpoint(path)
    vocab_path = Path(vocab) if vocab is not None else (ckpt.parent if ckpt is not None else path) / "vocab.json"
    if vocab_path.is_dir():
        vocab_path = vocab_path / "vocab.json"
    if not vocab_path.is_file():
        raise EvaluationError(f"{vocab_path}: no vocabulary; a fine-tuning run writes vocab.json beside its checkpoint "
                              "(pass --vocab PATH to use another)")
    vocabulary = Vocabulary.load(vocab_path)
    if ckpt is not None:
        model = Wav2Vec2ForCTC.from_finetuning_checkpoint(ckpt, device=device, vocab_size=len(vocabulary),
                                                          vocab_path=vocab_path)
    elif (path / "config.json").is_file():
        model = Wav2Vec2ForCTC.from_pretrained(path, device=device, vocab_size=len(vocabulary))
    else:
        raise EvaluationError(f"{path}: neither a fine-tuning run (checkpoint.npz) nor a transformers directory "
                              "(config.json + model.safetensors)")
    if model.vocab_size != len(vocabulary):  # pragma: no cover - both loaders check already
        raise vocabulary_mismatch(model.vocab_size, len(vocabulary), path, f"the vocabulary {str(vocab_path)!r}")
    return model.eval(), vocabulary


# ----------------------------------------------------------------------------------------------
# recognition


def uses_attention_mask(config) -> bool:
    """transformers' rule: pass the attention mask to layer-norm CNNs only."""
    return config.feat_extract_norm == "layer"


def model_inputs(model, waves):
    """Zero-padded (B, L) input and the keyword arguments that tell the model the true lengths."""
    x, mask, lengths = collate(waves)
    if uses_attention_mask(model.config):
        return x, {"attention_mask": mask}
    return x, {"sample_lengths": lengths}


def recognize(model, vocab: Vocabulary, waves, labels=None, batch_seconds: float = 32.0) -> dict:
    """Greedy transcripts (and, with ``labels``, the CTC loss per utterance) of a list of waveforms.

    Returns {"hypotheses": [str], "losses": [float] or None}; eval mode, no gradients.
    """
    was = model.training
    model.eval()
    hyps = [None] * len(waves)
    losses = [None] * len(waves) if labels is not None else None
    order = make_batches([len(w) for w in waves], max_batch_seconds=batch_seconds, shuffle=False)
    try:
        with no_grad():
            for idx in order:
                x, kw = model_inputs(model, [waves[i] for i in idx])
                out = model(x, **kw)
                per = None
                if labels is not None:   # per-utterance CTC loss (inf where no alignment exists)
                    targets, target_lengths = pack_labels(pad_labels([labels[i] for i in idx]), vocab.blank_id)
                    log_probs = F.log_softmax(out.logits, axis=-1).swapaxes(0, 1)     # (B, T, V) -> (T, B, V)
                    per = backend.to_numpy(F.ctc_loss(log_probs, targets, out.output_lengths, target_lengths,
                                                      blank=model.config.pad_token_id, reduction="none").data)
                texts = vocab.greedy_decode(out.logits, out.output_lengths)
                for j, i in enumerate(idx):
                    hyps[i] = texts[j]
                    if per is not None:
                        losses[i] = float(per[j])
    finally:
        model.train(was)
    return {"hypotheses": hyps, "losses": losses}


def evaluate_utterances(model, vocab: Vocabulary, utterances, batch_seconds: float = 32.0) -> dict:
    """CER / WER / loss over ``utterances`` (dicts with id, audio, text, labels); rows per utterance included."""
    waves = [u["audio"] for u in utterances]
    labels = [u["labels"] for u in utterances]
    rec = recognize(model, vocab, waves, labels, batch_seconds)
    refs = [u["text"] for u in utterances]
    rates = error_rates(refs, rec["hypotheses"])
    finite = [l for l in rec["losses"] if l is not None and math.isfinite(l)]
    rows = [{"id": u["id"], "reference": u["text"], "hypothesis": h, "loss": l}
            for u, h, l in zip(utterances, rec["hypotheses"], rec["losses"])]
    return {"cer": rates["cer"], "wer": rates["wer"], "loss": float(np.mean(finite)) if finite else float("nan"),
            "utterances": len(utterances), "char_errors": rates["char_errors"], "chars": rates["chars"],
            "word_errors": rates["word_errors"], "words": rates["words"], "rows": rows}


def worst_examples(rows, count: int = 10) -> list:
    """The ``count`` utterances with the most character errors relative to their length (CER, then length)."""
    scored = []
    for r in rows:
        cer, wer = utterance_error_rates(r["reference"], r["hypothesis"])
        if math.isnan(cer):
            continue
        scored.append(dict(r, cer=cer, wer=wer))
    scored.sort(key=lambda r: (-r["cer"], -len(r["reference"]), r["id"]))
    return scored[:count]


# ----------------------------------------------------------------------------------------------
# data


def load_labelled_utterances(path, vocab: Vocabulary, normalize: bool = False, strict: bool = False,
                             limit: int | None = None, seed: int = 1234, stats: EncodeStats | None = None):
    """Every readable utterance with a transcript (or a random ``limit`` of them, chosen with ``seed``) as dicts
    (id, speaker, audio, text, labels); unreadable files are skipped and counted in the returned report."""
    ds = AudioDataset.from_path(path, strict=strict, normalize=normalize)
    labelled = [i for i, it in enumerate(ds.items) if it.transcript is not None]
    if not labelled:
        raise EvaluationError(f"{path}: no transcripts (a LibriSpeech-style directory with *.trans.txt, or a .tsv "
                              "manifest with a .wrd / .ltr file, is needed)")
    if limit and limit < len(labelled):
        rng = np.random.default_rng(seed)
        labelled = sorted(rng.choice(labelled, size=limit, replace=False).tolist())
    stats = stats if stats is not None else EncodeStats()
    out = []
    for i in labelled:
        item = ds[i]
        if item is None:
            continue
        out.append({"id": item["id"], "speaker": item["id"].split("-")[0], "audio": item["audio"],
                    "text": item["transcript"], "labels": vocab.encode(item["transcript"], stats)})
    return out, {"skipped_bad": len(ds.skipped), "files": len(labelled), "encode": stats}


# ----------------------------------------------------------------------------------------------
# the commands


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def evaluate(model_path, data=None, vocab=None, max_utterances: int | None = None, worst: int = 10,
             device: str = "cpu", normalize: bool | None = None, batch_seconds: float = 32.0,
             out_json=None) -> dict:
    """CER / WER of a fine-tuned model on a labelled data set: a markdown table (overall and per speaker) and the
    worst utterances. ``data`` defaults to the held-out split the run was evaluated on."""
    model, vocabulary = load_ctc_model(model_path, vocab, device)
    args = {}
    ckpt = find_checkpoint(model_path)
    if ckpt is not None and (ckpt.parent / "args.json").is_file():
        args = json.loads((ckpt.parent / "args.json").read_text())
    if data is None:
        data = args.get("resolved_eval_data")
        if data is None:
            raise EvaluationError("pass --data: a labelled data set (LibriSpeech-style directory or .tsv manifest)")
    if normalize is None:
        normalize = bool(args.get("normalize", False))
    stats = EncodeStats()
    utts, info = load_labelled_utterances(data, vocabulary, normalize=normalize, limit=max_utterances, stats=stats)
    if not utts:
        raise EvaluationError(f"{data}: no readable labelled audio")
    result = evaluate_utterances(model, vocabulary, utts, batch_seconds)
    rows = result.pop("rows")
    speakers = {}
    for u, r in zip(utts, rows):
        speakers.setdefault(u["speaker"], []).append(r)
    per_speaker = {s: error_rates([r["reference"] for r in rs], [r["hypothesis"] for r in rs]) | {"n": len(rs)}
                   for s, rs in sorted(speakers.items())}
    table = ["| set | utterances | CER | WER | loss / utt |", "|---|---|---|---|---|",
             f"| all | {result['utterances']} | {_fmt(result['cer'])} | {_fmt(result['wer'])} | "
             f"{_fmt(result['loss'])} |"]
    for s, r in per_speaker.items():
        table.append(f"| speaker {s} | {r['n']} | {_fmt(r['cer'])} | {_fmt(r['wer'])} | |")
    worst_rows = worst_examples(rows, worst)
    lines = [f"\nworst {len(worst_rows)} utterances (by CER):"]
    for r in worst_rows:
        lines.append(f"  {r['id']}  CER {r['cer']:.2f}  WER {r['wer']:.2f}\n    ref: {r['reference']}\n"
                     f"    hyp: {r['hypothesis']}")
    notes = []
    if info["skipped_bad"]:
        notes.append(f"skipped {info['skipped_bad']} unreadable files")
    if stats.unknown:
        notes.append(stats.report())
    text = "\n".join(table + lines + ([""] + notes if notes else []))
    payload = {"model": str(model_path), "data": str(data), **result, "per_speaker": per_speaker,
               "worst": worst_rows, "unknown_characters": stats.unknown, "skipped_bad": info["skipped_bad"]}
    if out_json is not None:
        Path(out_json).write_text(json.dumps(payload, indent=2, default=float))
    return {"table": text, "results": payload}


def transcribe(model_path, files, vocab=None, device: str = "cpu", normalize: bool | None = None,
               batch_seconds: float = 32.0) -> list:
    """[(file, transcript)] for audio files (any rate / channels: resampled to 16 kHz mono)."""
    model, vocabulary = load_ctc_model(model_path, vocab, device)
    if normalize is None:
        ckpt = find_checkpoint(model_path)
        args_file = ckpt.parent / "args.json" if ckpt is not None else None
        normalize = bool(json.loads(args_file.read_text()).get("normalize", False)) \
            if args_file is not None and args_file.is_file() else False
    waves = [load_audio(f, SAMPLE_RATE, normalize=normalize) for f in files]
    rec = recognize(model, vocabulary, waves, batch_seconds=batch_seconds)
    return list(zip([str(f) for f in files], rec["hypotheses"]))


__all__ = ["EvaluationError", "VocabularyMismatchError", "load_ctc_model", "recognize", "evaluate_utterances",
           "worst_examples", "load_labelled_utterances", "evaluate", "transcribe"]
