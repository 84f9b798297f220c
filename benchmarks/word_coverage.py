"""Per word: how often it occurs in a fine-tuning run's labelled subset, and how often the run gets it right.

    python benchmarks/word_coverage.py runs/low_resource_10min/pretrained [--utterances 400]

With few labels, a CTC model learns the spelling of each word from the handful of times it hears it. This
script reads the run's arguments (labelled data, subset size and seed) to rebuild its labelled subset, decodes
the held-out split greedily, aligns each hypothesis to its reference word by word (jiwer) and prints, for every
word of the held-out transcripts: occurrences in the labelled subset, held-out occurrences, and the share of
those decoded exactly. docs/results.md (low-resource section) quotes its output.
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a fine-tuning run directory (with args.json and checkpoint.npz)")
    p.add_argument("--utterances", type=int, default=0, help="held-out utterances to decode (0 = all)")
    a = p.parse_args(argv)

    import jiwer

    from tinyw2v2.train.evaluate import load_ctc_model, load_labelled_utterances, recognize
    from tinyw2v2.train.finetune import FinetuneArgs, load_training_set

    run = Path(a.run)
    args = json.loads((run / "args.json").read_text())
    train = Path(args.get("resolved_train_data") or args["data"])
    heldout_path = Path(args.get("resolved_eval_data") or args["eval_data"])
    items, _ = load_training_set(train, FinetuneArgs(labels=args["labels"], subset_seed=args["subset_seed"]))
    seen = collections.Counter(w for _, _, text in items for w in text.split())

    model, vocab = load_ctc_model(run)
    heldout, _ = load_labelled_utterances(heldout_path, vocab, limit=a.utterances or None)
    hyps = recognize(model, vocab, [u["audio"] for u in heldout])["hypotheses"]
    total, right = collections.Counter(), collections.Counter()
    for u, hyp in zip(heldout, hyps):
        words = u["text"].split()
        for chunk in jiwer.process_words(u["text"], hyp).alignments[0]:
            for i in range(chunk.ref_start_idx, chunk.ref_end_idx):  # reference words of this chunk
                total[words[i]] += 1
                right[words[i]] += chunk.type == "equal"

    print(f"{run}: {len(items)} labelled utterances, {sum(seen.values())} words ({len(seen)} distinct); "
          f"{len(heldout)} held-out utterances, {sum(total.values())} words")
    print("| word | in the labelled subset | held out | decoded exactly |\n|---|---|---|---|")
    for w in sorted(total, key=lambda w: (-seen[w], w)):
        print(f"| {w} | {seen[w]} | {total[w]} | {right[w] / total[w]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
