"""``tinyw2v2 analyze``: do the quantiser's codes line up with phones? Trained model vs its random init.

For each utterance of a corpus with frame-level phone alignments (the synthetic corpus writes them), the
quantiser's eval-mode code of every frame (argmax per group, the G choices combined into one id
i_1 * V^(G-1) + ... + i_G) is paired with the frame's phone; ``tinyw2v2.analysis`` turns the pairs into phone
purity, cluster purity and PNMI, with a shuffled-phone chance level.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import backend
from ..analysis import code_phone_scores, cooccurrence, plot_cooccurrence
from ..data import PHONES, AudioDataset
from ..models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
from ..tensor import Tensor, no_grad
from ..io import read_checkpoint
from .common import TrainingError


def frame_codes(model, audio: np.ndarray) -> np.ndarray:
    """Eval-mode quantiser codes (T,) of one utterance (L,): argmax of each group's logits, combined."""
    G, V = model.quantizer.num_groups, model.quantizer.num_vars
    with no_grad():
        x = Tensor(backend.to_device(audio[None, :].astype(np.float32), model.device), _copy=False)
        z = model.wav2vec2.feature_extractor(x)                               # (1, C, T)
        _, features = model.wav2vec2.feature_projection(z.swapaxes(1, 2))     # (1, T, C)
        logits = model.quantizer.weight_proj(features).data                   # (1, T, G*V)
    choice = backend.to_numpy(logits.reshape(-1, G, V).argmax(-1))            # (T, G)  host copy
    return (choice * (V ** np.arange(G - 1, -1, -1))).sum(-1)                 # (T,) combined code id


def collect(model, dataset, max_utterances: int):
    phones, codes = [], []
    for i in range(min(len(dataset), max_utterances)):
        item = dataset[i]
        if item is None or item.get("phones") is None:
            continue
        c = frame_codes(model, item["audio"])
        p = np.asarray(item["phones"])
        n = min(len(c), len(p))
        phones.append(p[:n])
        codes.append(c[:n])
    if not phones:
        raise TrainingError("no utterance with phone alignments found: analyze needs a corpus made by the synthetic "
                            "generator (alignments.npz beside the audio), e.g. data/synthetic/test")
    return np.concatenate(phones), np.concatenate(codes)


def _load(run):
    """(trained model, config, the run's arguments, where to write) from a pretraining run directory, its
    checkpoint.npz, or a transformers-format directory (config.json + model.safetensors)."""
    run = Path(run)
    if not run.exists():
        raise TrainingError(f"{run}: no such run directory or checkpoint")
    if run.is_dir() and not (run / "checkpoint.npz").exists() and (run / "config.json").exists():
        model = Wav2Vec2ForPreTraining.from_pretrained(run)
        return model, model.config, {}, run
    ckpt = run / "checkpoint.npz" if run.is_dir() else run
    state, _, meta = read_checkpoint(ckpt)
    config = Wav2Vec2Config.from_dict(meta["config"])
    args = meta.get("args", {})
    model = Wav2Vec2ForPreTraining(config, seed=args.get("seed", 0))
    model.load_state_dict(state)
    return model, config, args, ckpt.parent


def analyze(run, data=None, max_utterances: int = 200, device: str = "cpu", out_dir=None) -> dict:
    """PNMI and purities of the run's codes against the frames' phones, next to the same architecture at its random
    initialisation; ``run``: a pretraining run (directory or checkpoint.npz) or a transformers-format directory
    (then ``data`` defaults to data/synthetic/test). Writes analysis.json and plots/codes_vs_phones.png into
    ``out_dir`` (default: the run's directory)."""
    run = Path(run)
    trained, config, args, out_dir_default = _load(run)
    if data is None:
        if args.get("data", "synthetic") != "synthetic":
            raise TrainingError(f"{run}: not a run on the synthetic corpus; pass --data with a corpus split that has "
                                "phone alignments (e.g. data/synthetic/test)")
        data = Path(args.get("corpus_dir", "data/synthetic")) / "test"
    dataset = AudioDataset.from_path(data)
    random_init = Wav2Vec2ForPreTraining(config, seed=args.get("seed", 0))  # the run's starting point
    results, counts = {}, {}
    V, G = config.num_codevectors_per_group, config.num_codevector_groups
    for name, model in (("random init", random_init), ("trained", trained)):
        model.to(device).eval()
        phones, codes = collect(model, dataset, max_utterances)
        results[name] = code_phone_scores(phones, codes, len(PHONES), V ** G)
        counts[name] = cooccurrence(phones, codes, len(PHONES), V ** G)
    results["frames"] = int(len(phones))

    from matplotlib.figure import Figure  # no pyplot: never switches a notebook's backend

    fig = Figure(figsize=(14, 5))
    axes = fig.subplots(1, 2)
    for ax, name in zip(axes, ("random init", "trained")):
        s = results[name]
        plot_cooccurrence(counts[name], PHONES, ax=ax,
                          title=f"{name}: PNMI {s['pnmi']:.3f} - chance {s['chance_pnmi']:.3f} = "
                                f"{s['pnmi'] - s['chance_pnmi']:.3f}, {s['codes_used']} codes")
    fig.tight_layout()
    out_dir = Path(out_dir) if out_dir is not None else out_dir_default
    plot = out_dir / "plots" / "codes_vs_phones.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=100)

    for name in ("random init", "trained"):
        results[name]["pnmi_above_chance"] = results[name]["pnmi"] - results[name]["chance_pnmi"]
    gain = results["trained"]["pnmi_above_chance"], results["random init"]["pnmi_above_chance"]
    lead = (f"PNMI above chance (PNMI minus the same codes against shuffled phones): trained {gain[0]:.3f}, "
            f"random init {gain[1]:.3f}  ({results['frames']} frames of {data})")
    rows = [lead, "", "| model | PNMI - chance | PNMI | chance PNMI | phone purity | cluster purity | codes used |",
            "|---|---|---|---|---|---|---|"]
    for name in ("random init", "trained"):
        s = results[name]
        rows.append(f"| {name} | {s['pnmi_above_chance']:.3f} | {s['pnmi']:.3f} | {s['chance_pnmi']:.3f} | "
                    f"{s['phone_purity']:.3f} | {s['cluster_purity']:.3f} | {s['codes_used']} |")
    (out_dir / "analysis.json").write_text(json.dumps(results, indent=2))
    return {"results": results, "table": "\n".join(rows), "plot": str(plot)}
