"""Held-out accuracy of pretrained models under the two evaluation protocols this project has used.

    python benchmarks/eval_protocols.py RUN_OR_DIR [RUN_OR_DIR ...] [--data data/synthetic/test]

- "whole set" (today's, ``tinyw2v2.train.pretrain.make_eval_set``): every held-out utterance, in length-grouped
  batches cropped to their shortest member, fixed masks and negatives;
- "48 crops" (before December 2026): 48 fixed 1.5 s crops of the held-out utterances at least 1.5 s long (on the
  default corpus 269 of the 400; the shorter ones were skipped), fixed masks and negatives.
Each model is evaluated in eval mode (argmax codes, no noise, no dropout). A RUN is a pretraining run directory (its
checkpoint.npz) or a transformers-format directory (config.json + model.safetensors).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tinyw2v2.io import read_checkpoint
from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining, compute_mask_indices
from tinyw2v2.models.wav2vec2 import sample_negative_indices
from tinyw2v2.train.pretrain import EvalSet, evaluate, load_waveforms, make_eval_set


def load(path) -> Wav2Vec2ForPreTraining:
    path = Path(path)
    ckpt = path / "checkpoint.npz" if path.is_dir() else path
    if ckpt.exists():
        state, _, meta = read_checkpoint(ckpt)
        model = Wav2Vec2ForPreTraining(Wav2Vec2Config.from_dict(meta["config"]))
        model.load_state_dict(state)
        return model
    return Wav2Vec2ForPreTraining.from_pretrained(path)


def forty_eight_crops(waves, config, num=48, seconds=1.5, seed=1234, batch=16) -> EvalSet:
    """The earlier protocol, as it was: 48 random 1.5 s crops (from the start) of the long-enough utterances."""
    samples = int(seconds * 16000)
    rng = np.random.default_rng(seed)
    long_enough = [w for w in waves if w.shape[0] >= samples]
    pick = rng.choice(len(long_enough), size=min(num, len(long_enough)), replace=False)
    x = np.stack([long_enough[i][:samples] for i in sorted(pick)]).astype(np.float32)   # (B, samples)
    T = config.num_frames(samples)
    mask = compute_mask_indices((len(x), T), config.mask_time_prob, config.mask_time_length,
                                min_masks=config.mask_time_min_masks, rng=rng)
    negatives = sample_negative_indices((len(x), T), config.num_negatives, mask, rng)
    batches = [(x[s:s + batch], mask[s:s + batch], negatives[s:s + batch] - s * T) for s in range(0, len(x), batch)]
    return EvalSet(batches, len(x), len(x) * seconds, 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data", default="data/synthetic/test")
    a = parser.parse_args(argv)
    print("| model | whole set: accuracy | loss | masked frames | 48 crops: accuracy | loss | masked frames |")
    print("|---|---|---|---|---|---|---|")
    for run in a.runs:
        model = load(run)
        waves, _ = load_waveforms(a.data, model.config.min_samples_to_mask(), False, False)
        rows = [evaluate(model, make_eval_set(waves, model.config)), evaluate(model, forty_eight_crops(waves, model.config))]
        print(f"| {run} | " + " | ".join(f"{r['eval_accuracy']:.3f} | {r['eval_loss']:.3f} | {r['eval_frames']:,}"
                                         for r in rows) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
