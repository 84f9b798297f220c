"""``Wav2Vec2Config``: every size and switch of the model, with the presets ``tiny``, ``base`` and ``large``.

Field names and defaults are those of transformers' ``Wav2Vec2Config`` (so a transformers ``config.json``
reads and writes without translation); a few fields that only fairseq has are added at the end
(``feature_grad_mult``, ``feature_penalty_weight``, the Gumbel temperature schedule, fairseq's
``require_same_masks``). transformers keeps unknown keys of a ``config.json`` as plain attributes, so a
file written here loads there too.

    cfg = Wav2Vec2Config.tiny()                     # ~1M parameters, for CPU toy training
    cfg = Wav2Vec2Config.preset("base", layerdrop=0.0)
    cfg = Wav2Vec2Config.from_pretrained("some/dir")  # reads some/dir/config.json
    cfg.save_pretrained("out/")                       # writes out/config.json
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

# transformers' config.json carries bookkeeping keys that mean nothing to the model; they are kept in
# ``extra`` so that a round trip writes them back.
_CONV7_KERNEL = (10, 3, 3, 3, 3, 2, 2)
_CONV7_STRIDE = (5, 2, 2, 2, 2, 2, 2)


class ConfigError(ValueError):
    """A config field that does not exist, or a value the model cannot be built with (the message names it)."""


def _check_names(values: dict) -> None:
    names = {f.name for f in dataclasses.fields(Wav2Vec2Config)}
    unknown = sorted(set(values) - names)
    if unknown:
        close = {k: [n for n in sorted(names) if k.split("_")[0] in n][:3] for k in unknown}
        hints = "; ".join(f"{k} (did you mean {', '.join(v)}?)" if v else k for k, v in close.items())
        raise ConfigError(f"unknown config field(s): {hints}. The fields are those of Wav2Vec2Config "
                          "(tinyw2v2/models/wav2vec2/config.py), named as in transformers")


@dataclass
class Wav2Vec2Config:
    # --- feature encoder (CNN) ---------------------------------------------------------------------
    conv_dim: tuple = (512,) * 7
    conv_kernel: tuple = _CONV7_KERNEL
    conv_stride: tuple = _CONV7_STRIDE
    conv_bias: bool = False
    feat_extract_norm: str = "group"           # "group": GroupNorm in conv 0 only; "layer": LayerNorm in every conv
    feat_extract_activation: str = "gelu"
    # --- Transformer -------------------------------------------------------------------------------
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False        # False: post-LN (BASE); True: pre-LN + final LN (LARGE)
    layer_norm_eps: float = 1e-5
    # --- dropout -----------------------------------------------------------------------------------
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    feat_quantizer_dropout: float = 0.0
    final_dropout: float = 0.1
    layerdrop: float = 0.1
    # --- masking -----------------------------------------------------------------------------------
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05              # code parameter = paper's p * M (0.65 for pretraining)
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    # --- quantizer and contrastive task ------------------------------------------------------------
    num_codevectors_per_group: int = 320
    num_codevector_groups: int = 2
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    contrastive_logits_temperature: float = 0.1
    num_negatives: int = 100
    diversity_loss_weight: float = 0.1
    # --- init and CTC head -------------------------------------------------------------------------
    initializer_range: float = 0.02
    vocab_size: int = 32
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = False
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    # --- tinyw2v2 / fairseq extras (not in transformers) --------------------------------------------
    feature_grad_mult: float = 1.0            # fairseq GradMultiply on the CNN output (0: frozen CNN)
    feature_penalty_weight: float = 0.0       # fairseq's beta * mean(z^2) (BASE: 10); 0 = transformers
    mask_time_require_same_masks: bool = True # fairseq: every row gets the batch-minimum masked count
    max_gumbel_temperature: float = 2.0
    min_gumbel_temperature: float = 0.5
    gumbel_temperature_decay: float = 0.999995
    # initialisation variants (the defaults are fairseq's and transformers'; docs/results.md measures the others)
    codevector_init: str = "uniform"          # "uniform": U[0, 1) (fairseq, transformers); "normal": N(0, 1)
    quantizer_weight_std: float = 1.0         # std of the quantiser's weight_proj (fairseq, transformers: 1)
    projection_init: str = "torch"            # project_hid/project_q/feature projection: "torch" U(+-1/sqrt(fan_in)),
                                              # or "normal": N(0, initializer_range) like the encoder's Linears
    # keys of a config.json that this class does not model (kept for a faithful round trip)
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.validate()

    # --- derived quantities --------------------------------------------------------------------------
    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Hop of the feature encoder in samples (320 for the standard CNN)."""
        out = 1
        for s in self.conv_stride:
            out *= s
        return out

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame (400 for the standard CNN)."""
        field_, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride):
            field_ += (k - 1) * jump
            jump *= s
        return field_

    @property
    def num_codevectors(self) -> int:
        return self.num_codevector_groups * self.num_codevectors_per_group

    def num_frames(self, num_samples: int) -> int:
        """Frames after the CNN: iterate T <- floor((T - k) / s) + 1 (0 when the input is too short)."""
        t = int(num_samples)
        for k, s in zip(self.conv_kernel, self.conv_stride):
            t = (t - k) // s + 1
            if t <= 0:
                return 0
        return t

    def min_frames_to_mask(self) -> int:
        """Fewest frames that ``compute_mask_indices`` accepts with this config's mask settings."""
        from .masking import min_frames_to_mask

        for frames in range(1, 1_000_001):
            if frames >= min_frames_to_mask(self.mask_time_prob, self.mask_time_length, self.mask_time_min_masks,
                                            frames):
                return frames
        raise ConfigError(f"mask_time_prob={self.mask_time_prob} with mask_time_length={self.mask_time_length} "
                         "leaves no frame unmasked at any length")

    def min_samples_to_mask(self) -> int:
        """Shortest waveform that ``min_frames_to_mask`` frames come from."""
        return self.receptive_field + (self.min_frames_to_mask() - 1) * self.inputs_to_logits_ratio

    def gumbel_temperature(self, step: int) -> float:
        """The quantiser temperature after ``step`` updates: max(tau_max * decay^step, tau_min)."""
        return max(self.max_gumbel_temperature * self.gumbel_temperature_decay ** int(step),
                   self.min_gumbel_temperature)

    def validate(self) -> None:
        n = len(self.conv_dim)
        if len(self.conv_kernel) != n or len(self.conv_stride) != n:
            raise ConfigError(f"conv_dim, conv_kernel and conv_stride must have the same length, got "
                             f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ConfigError(f"feat_extract_norm must be 'group' or 'layer', not {self.feat_extract_norm!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_conv_pos_embedding_groups "
                             f"{self.num_conv_pos_embedding_groups}")
        if self.codevector_dim % self.num_codevector_groups:
            raise ConfigError(f"codevector_dim {self.codevector_dim} is not divisible by num_codevector_groups "
                             f"{self.num_codevector_groups}")
        if self.codevector_init not in ("uniform", "normal"):
            raise ConfigError(f"codevector_init must be 'uniform' or 'normal', not {self.codevector_init!r}")
        if self.projection_init not in ("torch", "normal"):
            raise ConfigError(f"projection_init must be 'torch' or 'normal', not {self.projection_init!r}")
        for act in (self.hidden_act, self.feat_extract_activation):
            if act != "gelu":
                raise ConfigError(f"only the exact 'gelu' activation is implemented, not {act!r}")

    # --- presets ---------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides) -> "Wav2Vec2Config":
        """About 1M parameters, for pretraining on a CPU in minutes: BASE's recipe at small width, without the
        regularisation that keeps a short run on its initial plateau (docs/results.md, "Leaving the plateau"): no
        feature penalty, no dropout, the CNN's gradient unscaled (LayerDrop 0.05 and the rest stay fairseq's)."""
        values = _fairseq_base_recipe()
        values.update(
            conv_dim=(64,) * 7, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=512, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4,
            num_codevector_groups=2, num_codevectors_per_group=32, codevector_dim=64, proj_codevector_dim=64,
            num_negatives=20,
            feature_penalty_weight=0.0, feature_grad_mult=1.0,
            hidden_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0, feat_quantizer_dropout=0.0,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def base(cls, **overrides) -> "Wav2Vec2Config":
        """wav2vec 2.0 BASE (95M parameters) with fairseq's pretraining recipe (mask 0.65, dropouts, penalty)."""
        values = _fairseq_base_recipe()
        values.update(overrides)
        return cls(**values)

    @classmethod
    def large(cls, **overrides) -> "Wav2Vec2Config":
        """wav2vec 2.0 LARGE (317M): layer-norm CNN with conv bias, pre-LN Transformer, 768-d targets.

        Regularisation follows fairseq's LibriVox LARGE recipe: no dropout, no layerdrop, no feature
        penalty, no CNN gradient scaling, Gumbel temperature (2, 0.1, 0.999995).
        """
        values = dict(
            feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True,
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            codevector_dim=768, proj_codevector_dim=768,
            hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
            feat_quantizer_dropout=0.0, layerdrop=0.0,
            mask_time_prob=0.65, mask_time_length=10, mask_time_min_masks=2, num_negatives=100,
            feature_grad_mult=1.0, feature_penalty_weight=0.0,
            max_gumbel_temperature=2.0, min_gumbel_temperature=0.1, gumbel_temperature_decay=0.999995,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def preset(cls, name: str, **overrides) -> "Wav2Vec2Config":
        _check_names(overrides)
        presets = {"tiny": cls.tiny, "base": cls.base, "large": cls.large}
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}: choose one of {sorted(presets)}")
        return presets[name](**overrides)

    # --- dict / JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A transformers-compatible dict (our extra fields included; transformers keeps them as attributes)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["model_type"] = "wav2vec2"
        out["num_feat_extract_layers"] = self.num_feat_extract_layers
        out.setdefault("architectures", ["Wav2Vec2ForPreTraining"])
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "Wav2Vec2Config":
        """Build from a transformers config dict; keys this class does not know go to ``extra``."""
        values = dict(values)
        model_type = values.get("model_type", "wav2vec2")
        if model_type != "wav2vec2":
            raise ConfigError(f"config.json is for model_type {model_type!r}, not 'wav2vec2'")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        extra = {k: v for k, v in values.items() if k not in names and k not in ("num_feat_extract_layers",)}
        # transformers writes null for some ints (eos may be a list); keep the defaults then
        for key in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"):
            if key in known and not isinstance(known[key], int):
                extra[key] = known.pop(key)
        if values.get("add_adapter") or values.get("adapter_attn_dim") is not None:
            raise ConfigError("adapter layers (add_adapter / adapter_attn_dim) are not implemented")
        if values.get("use_weighted_layer_sum"):
            extra["use_weighted_layer_sum"] = True  # only matters for classification heads (not implemented)
        return cls(**known, extra=extra)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path) -> "Wav2Vec2Config":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_json_file(self, path) -> None:
        """Write atomically (``tinyw2v2.io.write_text``)."""
        from ...io import write_text

        write_text(path, self.to_json_string())

    @classmethod
    def from_pretrained(cls, directory) -> "Wav2Vec2Config":
        """Read ``directory/config.json`` (or a path to a .json file)."""
        path = os.fspath(directory)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        return cls.from_json_file(path)

    def save_pretrained(self, directory) -> None:
        os.makedirs(directory, exist_ok=True)
        self.to_json_file(os.path.join(os.fspath(directory), "config.json"))

    def replace(self, **changes) -> "Wav2Vec2Config":
        """A copy with some fields changed."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)


def _fairseq_base_recipe() -> dict:
    """fairseq's BASE pretraining settings in transformers' field names (reference sections 1-9)."""
    return dict(
        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
        feat_proj_dropout=0.1, feat_quantizer_dropout=0.1, layerdrop=0.05,
        mask_time_prob=0.65, mask_time_length=10, mask_time_min_masks=2,
        num_negatives=100, diversity_loss_weight=0.1,
        feature_grad_mult=0.1, feature_penalty_weight=10.0,
        max_gumbel_temperature=2.0, min_gumbel_temperature=0.5, gumbel_temperature_decay=0.999995,
    )
