"""The built-in synthetic corpus for the training commands: generated once into ``corpus_dir`` and reused while its
parameters stay the same (a stamp file records them)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..data import generate_corpus
from .common import arg


@dataclass
class CorpusArgs:
    """The synthetic corpus a run generates when ``data`` is "synthetic" (the base of PretrainArgs and FinetuneArgs)."""
    corpus_dir: str = arg("data/synthetic", "where the synthetic corpus is generated (once)")
    corpus_speakers: int = arg(24, "speakers of the synthetic corpus")
    corpus_heldout: int = arg(4, "of them held out (never heard in training)")
    corpus_utterances: int = arg(100, "utterances per speaker")
    corpus_seed: int = arg(0, "seed of the synthetic corpus")


def prepare_corpus(args) -> Path:
    """Generate the synthetic corpus into ``args.corpus_dir`` unless it is already there; returns its path.
    ``args``: a PretrainArgs or FinetuneArgs (corpus_dir, corpus_speakers, corpus_heldout, corpus_utterances,
    corpus_seed)."""
    root = Path(args.corpus_dir)
    spec = {"speakers": args.corpus_speakers, "heldout": args.corpus_heldout,
            "utterances": args.corpus_utterances, "seed": args.corpus_seed}
    stamp = root / "tinyw2v2-corpus.json"
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return root
    t0 = time.perf_counter()
    generate_corpus(root, num_speakers=args.corpus_speakers, utterances_per_speaker=args.corpus_utterances,
                    seed=args.corpus_seed, heldout_speakers=args.corpus_heldout)
    stamp.write_text(json.dumps(spec))
    print(f"generated the synthetic corpus in {root} ({time.perf_counter() - t0:.0f} s)")
    return root
