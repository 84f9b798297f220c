"""A picture of the whole pretraining model with every tensor's shape, drawn with matplotlib from a config.

    from tinyw2v2.models.wav2vec2 import Wav2Vec2Config
    from tinyw2v2.models.wav2vec2.diagram import draw_model
    fig = draw_model(Wav2Vec2Config.tiny(), batch=24, seconds=1.0)   # a matplotlib Figure
    fig.savefig("model.png")

The boxes follow the paper's Figure 1 and ``Wav2Vec2ForPreTraining.forward``: the feature encoder's 7 convolutions,
the projection, the masking, the context network, the quantiser, the two projections into the target space and
the loss. Shapes use B utterances of ``seconds`` each at 16 kHz; N is the expected number of masked frames.
"""
from __future__ import annotations


def shapes(config, batch: int = 1, seconds: float = 1.0) -> dict:
    """The tensors of one forward: name -> shape tuple (ints), for ``batch`` crops of ``seconds``."""
    L = int(round(seconds * 16000))
    T = config.num_frames(L)
    lengths, t = [], L
    for k, s in zip(config.conv_kernel, config.conv_stride):
        t = (t - k) // s + 1
        lengths.append(t)
    spans = max(config.mask_time_min_masks, int(config.mask_time_prob * T / config.mask_time_length + 1))
    N = batch * min(T, spans * config.mask_time_length)       # at most: spans = int(p T / M + u), u in [0, 1)
    G, V = config.num_codevector_groups, config.num_codevectors_per_group
    return {"waveform": (batch, L), "conv lengths": tuple(lengths), "z": (batch, config.conv_dim[-1], T),
            "features": (batch, T, config.conv_dim[-1]), "hidden": (batch, T, config.hidden_size),
            "c": (batch, T, config.hidden_size), "context": (batch, T, config.proj_codevector_dim),
            "logits": (batch * T, G * V), "q": (batch, T, config.codevector_dim),
            "targets": (batch, T, config.proj_codevector_dim), "candidates": (1 + config.num_negatives, N),
            "T": T, "N": N}


def _fmt(shape) -> str:
    return "(" + ", ".join(f"{n:,}" for n in shape) + ")"


def draw_model(config, batch: int = 1, seconds: float = 1.0, title: str | None = None):
    """A matplotlib Figure of the model for ``config`` with each tensor's shape (no pyplot: a notebook's backend
    is left alone)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    s = shapes(config, batch, seconds)
    c = config
    fig = Figure(figsize=(13, 7.2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 13), ax.set_ylim(0, 7.2), ax.axis("off")

    def box(x, y, w, h, text, colour):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=colour, ec="0.3", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)

    def arrow(x0, y0, x1, y1, label=None, dx=0.08, dy=0.0):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="0.25", lw=1))
        if label:
            ax.text((x0 + x1) / 2 + dx, (y0 + y1) / 2 + dy, label, fontsize=8, color="navy", va="center",
                    ha="left" if dx > 0 else "center")

    convs = ", ".join(f"{k}/{st}" for k, st in zip(c.conv_kernel, c.conv_stride))
    norm = "GroupNorm in conv 0" if c.feat_extract_norm == "group" else "LayerNorm in every conv"
    box(0.3, 0.3, 3.0, 0.7, f"waveform x\n{_fmt(s['waveform'])} at 16 kHz", "#f2f2f2")
    arrow(1.8, 1.0, 1.8, 1.35)
    box(0.3, 1.35, 3.0, 1.0, f"feature encoder f: {len(c.conv_dim)} convolutions\nkernel/stride {convs}\n"
                             f"{c.conv_dim[-1]} channels, {norm}, GELU", "#dbe9f6")
    arrow(1.8, 2.35, 1.8, 2.75, f"z {_fmt(s['z'])}")
    box(0.3, 2.75, 3.0, 0.8, f"LayerNorm over {c.conv_dim[-1]} channels\n-> features {_fmt(s['features'])}",
        "#dbe9f6")
    # context branch
    arrow(3.3, 3.15, 4.3, 3.15)
    box(4.3, 2.75, 2.8, 0.8, f"projection {c.conv_dim[-1]} -> {c.hidden_size}\n{_fmt(s['hidden'])}", "#e5f2dc")
    arrow(5.7, 3.55, 5.7, 3.95)
    box(4.3, 3.95, 2.8, 0.8, f"mask: spans of {c.mask_time_length} frames\n(mask_prob {c.mask_time_prob}) "
                             f"-> mask embedding", "#fff2cc")
    arrow(5.7, 4.75, 5.7, 5.15)
    ln = "pre-LN" if c.do_stable_layer_norm else "post-LN"
    box(4.3, 5.15, 2.8, 1.0, f"context network g\npositional conv (kernel {c.num_conv_pos_embeddings})\n"
                             f"{c.num_hidden_layers} x Transformer ({ln}, {c.num_attention_heads} heads)", "#e5f2dc")
    arrow(7.1, 5.65, 8.0, 5.65, f"c\n{_fmt(s['c'])}", dx=0, dy=0.3)
    box(8.0, 5.3, 2.3, 0.7, f"project_hid {c.hidden_size} -> {c.proj_codevector_dim}\n"
                            f"{_fmt(s['context'])}", "#e5f2dc")
    # quantiser branch
    arrow(1.8, 3.55, 1.8, 4.6)
    G, V = c.num_codevector_groups, c.num_codevectors_per_group
    box(0.3, 4.6, 3.0, 1.2, f"quantiser: {G} groups x {V} codewords\nlogits {_fmt(s['logits'])}\n"
                            f"hard Gumbel softmax: one codeword\nper group, concatenated -> q {_fmt(s['q'])}", "#fce4d6")
    arrow(3.3, 5.2, 8.0, 4.55)
    box(8.0, 4.2, 2.3, 0.7, f"project_q {c.codevector_dim} -> {c.proj_codevector_dim}\n{_fmt(s['targets'])}",
        "#fce4d6")
    # loss
    arrow(10.3, 5.65, 10.9, 5.2)
    arrow(10.3, 4.55, 10.9, 4.9)
    box(10.9, 4.1, 1.9, 1.9, f"masked frames only\nN <= {s['N']:,}\ncos(c_t, q) / {c.contrastive_logits_temperature}"
                             f"\nfor q_t and {c.num_negatives}\nnegatives: logits\n{_fmt(s['candidates'])}", "#fff2cc")
    arrow(11.85, 4.1, 11.85, 3.2)
    penalty = f"\n+ {c.feature_penalty_weight:g} N mean(z^2)" if c.feature_penalty_weight else ""
    box(10.2, 1.9, 2.6, 1.3, f"L = L_m + {c.diversity_loss_weight:g} L_d{penalty}\nL_m: cross-entropy, target 0\n"
                             f"L_d = (G V - perplexity) / (G V)", "#f8cbad")
    ax.text(0.3, 6.85, title or f"wav2vec 2.0, {batch} x {seconds:g} s: T = {s['T']} frames of 20 ms",
            fontsize=11, weight="bold")
    return fig


def main(argv=None) -> None:
    """python -m tinyw2v2.models.wav2vec2.diagram --preset tiny --batch 8 --seconds 1 --out model-tiny.png"""
    import argparse

    from .config import Wav2Vec2Config
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("tiny", "base"), default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    config = Wav2Vec2Config.tiny() if a.preset == "tiny" else Wav2Vec2Config.base()
    draw_model(config, a.batch, a.seconds, title=f"wav2vec 2.0 {a.preset}, {a.batch} x {a.seconds:g} s: "
               f"T = {shapes(config, a.batch, a.seconds)['T']} frames of 20 ms").savefig(a.out, dpi=90)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

__all__ = ["draw_model", "shapes"]
