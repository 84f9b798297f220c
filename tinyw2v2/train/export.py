"""``tinyw2v2 export RUN DIR``: a pretraining or fine-tuning run as a transformers-format directory.

A pretraining checkpoint becomes a ``Wav2Vec2ForPreTraining`` directory (config.json + model.safetensors); a
fine-tuning checkpoint a ``Wav2Vec2ForCTC`` one, with the run's vocab.json and tokenizer_config.json, so that
transformers' ``Wav2Vec2Processor`` / ``Wav2Vec2ForCTC.from_pretrained`` load it.
"""
from __future__ import annotations

from pathlib import Path

from ..io import read_checkpoint
from ..models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
from .common import TrainingError
from .evaluate import find_checkpoint, load_ctc_model


def export_run(run, out) -> dict:
    """Write the run's last checkpoint to ``out``; returns what was written."""
    ckpt = find_checkpoint(run)
    if ckpt is None:
        raise TrainingError(f"{run}: no checkpoint.npz (give a pretraining or fine-tuning run directory or its "
                            "checkpoint.npz)")
    state, _, meta = read_checkpoint(ckpt)
    out = Path(out)
    if "lm_head.weight" in state:
        model, vocab = load_ctc_model(ckpt)
        model.save_pretrained(out)
        vocab.save(out)
        kind, cls, files = "CTC", "Wav2Vec2ForCTC", ["config.json", "model.safetensors", "vocab.json"]
    else:
        model = Wav2Vec2ForPreTraining(Wav2Vec2Config.from_dict(meta["config"]))
        model.load_state_dict(state)
        model.save_pretrained(out)
        kind, cls, files = "pretraining", "Wav2Vec2ForPreTraining", ["config.json", "model.safetensors"]
    return {"kind": kind, "checkpoint": str(ckpt), "step": meta.get("step"), "out": str(out), "files": files,
            "transformers_class": cls}
