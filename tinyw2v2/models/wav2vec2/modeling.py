"""``Wav2Vec2Model`` (CNN + Transformer) and ``Wav2Vec2ForPreTraining`` (+ quantiser, projections, loss).

The module tree is transformers', so ``named_parameters()`` gives transformers' state-dict names
(``wav2vec2.feature_extractor.conv_layers.0.conv.weight``, ``wav2vec2.encoder.pos_conv_embed.conv.weight_g``,
``quantizer.codevectors``, ``project_hid.weight``, ...). See docs/model.md for the maths and the loss.

    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(), seed=0)
    out = model(waveforms)                       # (B, L) NumPy/CuPy array or Tensor
    out.loss.backward()                          # loss summed over masked frames (divide grads by out.num_masked)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ... import backend
from ... import functional as F
from ... import nn, ops
from ...tensor import Tensor, no_grad
from .config import Wav2Vec2Config
from .encoder import Encoder, WeightNormConv1d
from .feature_encoder import FeatureEncoder, FeatureProjection
from .generators import Generators
from .masking import compute_mask_indices, sample_negative_indices
from .quantizer import GumbelVectorQuantizer


# ----------------------------------------------------------------------------------------------
# Outputs


class _Output:
    """Dataclass outputs that also index like a dict (``out["loss"]``) and list their fields."""

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class Wav2Vec2BaseModelOutput(_Output):
    last_hidden_state: Tensor = None             # (B, T, D), after the final LN of the pre-LN variant
    extract_features: Tensor = None              # (B, T, C) LayerNormed CNN features (quantiser input)
    hidden_states: tuple = None                  # input of layer 0, then each layer's output (transformers 5)
    feature_penalty: Tensor = None               # 0-d: mean of the squared CNN output (fairseq's features_pen)
    frame_mask: object = None                    # (B, T) bool device array, True = real frame (None: no padding)


@dataclass
class Wav2Vec2ForPreTrainingOutput(_Output):
    loss: Tensor = None                          # contrastive + a*diversity + b*penalty*N (a sum over masked frames)
    contrastive_loss: Tensor = None              # sum over the N masked frames of -log softmax(logits)[0]
    diversity_loss: Tensor = None                # (GV - perplexity) / GV * N (transformers' scaling)
    feature_penalty: Tensor = None               # mean(z^2) of the CNN output (weighted by b*N in the loss)
    codevector_perplexity: Tensor = None         # the perplexity in the diversity loss (soft: train, hard: eval)
    prob_perplexity: Tensor = None               # soft-probability perplexity over masked frames (train only)
    code_perplexity: Tensor = None               # hard-code perplexity over masked frames
    accuracy: Tensor = None                      # fraction of masked frames whose positive wins (fairseq's rule)
    num_masked: int = None                       # N: number of masked frames in the batch
    projected_states: Tensor = None              # (B, T, P) project_hid of the context vectors
    projected_quantized_states: Tensor = None    # (B, T, P) project_q of the quantised features
    extract_features: Tensor = None              # (B, T, C)
    last_hidden_state: Tensor = None             # (B, T, D)
    hidden_states: tuple = None
    mask_time_indices: np.ndarray = None         # (B, T) bool, host copy of the mask used
    sampled_negative_indices: np.ndarray = None  # (B, T, K) int64, host copy of the negatives used


# ----------------------------------------------------------------------------------------------
# Base class: config, generators, device, weights I/O


class Wav2Vec2PreTrainedModel(nn.Module):
    """Holds the config and the random generators; initialises weights like transformers' ``_init_weights``."""

    base_model_prefix = "wav2vec2"

    def __init__(self, config: Wav2Vec2Config, seed=0, _generators=None):
        super().__init__()
        config.validate()
        self.config = config
        self._gen = _generators if _generators is not None else Generators(seed)

    # --- device / dtype -----------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def to(self, device=None, dtype=None):
        super().to(device, dtype)
        if device is not None and isinstance(device, str) and backend.normalize_device(device) != self._gen.device_name:
            self._gen.to(device)
        return self

    def manual_seed(self, seed) -> "Wav2Vec2PreTrainedModel":
        """Restart the model's generators (masks, negatives, layerdrop, dropout, Gumbel noise) from ``seed``."""
        self._gen.reseed(seed)
        return self

    @property
    def generator(self) -> np.random.Generator:
        """The host generator (masks, negatives, layerdrop)."""
        return self._gen.host

    # --- lengths -----------------------------------------------------------------------------------
    def num_frames(self, num_samples):
        """Frames after the CNN for an int or an integer array of sample counts (host)."""
        t = np.asarray(num_samples, dtype=np.int64)
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            t = np.maximum((t - k) // s + 1, 0)
        return int(t) if t.ndim == 0 else t

    def _input(self, input_values) -> Tensor:
        """The waveform as a Tensor on the model's device and dtype (explicit copies only)."""
        device, dtype = self.device, self.dtype
        if isinstance(input_values, Tensor):
            x = input_values
            if x.device != device:
                x = x.to(device=device)
            return x.to(dtype=dtype) if x.dtype != dtype else x
        data = input_values if backend.is_array(input_values) else np.asarray(input_values)
        data = backend.to_device(data, device)
        return Tensor(data.astype(dtype) if data.dtype != dtype else data, _copy=False)

    def _prepare(self, input_values, attention_mask):
        """(x, T, lengths): the waveform Tensor (B, L), its frame count, and valid frames per row (or None)."""
        x = self._input(input_values)
        B, L = x.shape
        T = self.num_frames(L)
        if T <= 0:
            raise ValueError(f"input too short: {L} samples give no frame (the CNN needs at least "
                             f"{self.config.receptive_field} samples)")
        return x, T, self._frame_lengths(attention_mask, B, T)

    def _sample_time_mask(self, B: int, T: int, lengths):
        """Span mask (B, T) on the host with the config's settings, from the model's host generator."""
        c = self.config
        return compute_mask_indices((B, T), c.mask_time_prob, c.mask_time_length, min_masks=c.mask_time_min_masks,
                                    lengths=lengths, require_same_masks=c.mask_time_require_same_masks,
                                    rng=self._gen.host)

    def _frame_lengths(self, attention_mask, batch: int, frames: int):
        """Valid frames per row (host int64) from a sample-level attention mask (B, L), or None."""
        if attention_mask is None:
            return None
        mask = backend.to_numpy(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
        if mask.ndim != 2 or mask.shape[0] != batch:
            raise ValueError(f"attention_mask must be (B, L) with B = {batch}, got {mask.shape}")
        lengths = np.minimum(self.num_frames(mask.astype(bool).sum(axis=1)), frames)  # (B,)
        if (lengths <= 0).any():
            raise ValueError(f"attention_mask: row {int(np.argmin(lengths))} is shorter than one frame "
                             f"({self.config.receptive_field} samples)")
        return lengths

    # --- weights ------------------------------------------------------------------------------------
    def init_weights(self, seed=None) -> "Wav2Vec2PreTrainedModel":
        """(Re)initialise every parameter like transformers' ``_init_weights`` (see ``init_weights``)."""
        init_weights(self, np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed)
        return self

    @classmethod
    def from_pretrained(cls, path, seed=0, device="cpu", dtype=None, strict: bool = True):
        """Load a transformers-format directory (config.json + model.safetensors or pytorch_model.bin)."""
        from .hf import from_pretrained

        return from_pretrained(cls, path, seed=seed, device=device, dtype=dtype, strict=strict)

    def save_pretrained(self, path, safe_serialization: bool = True) -> None:
        """Write config.json and model.safetensors (or pytorch_model.bin) in transformers' format."""
        from .hf import save_pretrained

        save_pretrained(self, path, safe_serialization=safe_serialization)


# ----------------------------------------------------------------------------------------------
# Wav2Vec2Model


class Wav2Vec2Model(Wav2Vec2PreTrainedModel):
    """CNN feature encoder, feature projection, time masking, Transformer encoder."""

    def __init__(self, config: Wav2Vec2Config, seed=0, _generators=None, _init: bool = True):
        super().__init__(config, seed, _generators)
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config, self._gen)
        if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
            self.masked_spec_embed = nn.Parameter(np.zeros(config.hidden_size))
        else:
            self.register_parameter("masked_spec_embed", None)
        self.encoder = Encoder(config, self._gen)
        if _init:
            self.init_weights(self._gen.host)

    def forward(self, input_values, attention_mask=None, mask_time_indices=None,
                output_hidden_states: bool = False) -> Wav2Vec2BaseModelOutput:
        """input_values (B, L); attention_mask (B, L) (1 = real sample, right padding); mask_time_indices
        (B, T) bool frames to replace by the mask embedding (as transformers: only when given, or sampled in
        training when ``mask_time_prob > 0``)."""
        x, T, lengths = self._prepare(input_values, attention_mask)
        if mask_time_indices is None and self.training and self.config.apply_spec_augment \
                and self.config.mask_time_prob > 0:
            mask_time_indices = self._sample_time_mask(x.shape[0], T, lengths)
        return self._forward(x, lengths, mask_time_indices, output_hidden_states)

    def _forward(self, x: Tensor, lengths, mask_time_indices, output_hidden_states: bool):
        c = self.config
        B, L = x.shape
        device = x.device
        # 1. CNN (B, L) -> (B, C, T), fairseq's gradient scale, feature penalty
        if c.feature_grad_mult > 0:
            z = self.feature_extractor(x)
            if c.feature_grad_mult != 1.0:
                z = F.grad_scale(z, c.feature_grad_mult)
        else:
            with no_grad():
                z = self.feature_extractor(x)
        if c.feature_penalty_weight > 0:
            penalty = F.feature_penalty(z)
        else:
            with no_grad():
                penalty = F.feature_penalty(z)
        T = z.shape[2]
        # 2. projection
        hidden, extract_features = self.feature_projection(z.swapaxes(1, 2))  # (B, C, T) -> (B, T, C)
        # 3. masks on the device (each moved once)
        frame_mask = None
        if lengths is not None and (lengths < T).any():
            frame_mask = backend.to_device(np.arange(T)[None, :] < lengths[:, None], device)  # (B, T)
        if mask_time_indices is not None and c.apply_spec_augment:  # transformers ignores the mask otherwise
            if self.masked_spec_embed is None:
                raise ValueError("mask_time_indices given, but the model has no masked_spec_embed "
                                 "(config.mask_time_prob == 0 and mask_feature_prob == 0)")
            mask = _as_device_bool(mask_time_indices, device, (B, T), "mask_time_indices")
            hidden = ops.where(mask.reshape(B, T, 1), self.masked_spec_embed, hidden)  # (B, T) -> (B, T, 1)
        if self.training and c.apply_spec_augment and c.mask_feature_prob > 0:
            D = hidden.shape[2]
            channels = compute_mask_indices((B, D), c.mask_feature_prob, c.mask_feature_length,
                                            min_masks=c.mask_feature_min_masks, require_same_masks=False,
                                            rng=self._gen.host)
            channels = backend.to_device(channels, device)
            hidden = ops.masked_fill(hidden, channels.reshape(B, 1, D), 0.0)  # (B, D) -> (B, 1, D)
        # 4. Transformer
        last, hidden_states = self.encoder(hidden, frame_mask, output_hidden_states)
        return Wav2Vec2BaseModelOutput(last_hidden_state=last, extract_features=extract_features,
                                       hidden_states=hidden_states, feature_penalty=penalty, frame_mask=frame_mask)


def _as_device_bool(mask, device, shape, name):
    data = mask.data if isinstance(mask, Tensor) else mask
    if not backend.is_array(data):
        data = np.asarray(data)
    if tuple(data.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(data.shape)}, expected {tuple(shape)}")
    data = backend.to_device(data, device)
    return data if data.dtype == bool else data.astype(bool)


# ----------------------------------------------------------------------------------------------
# Wav2Vec2ForPreTraining


class Wav2Vec2ForPreTraining(Wav2Vec2PreTrainedModel):
    """wav2vec 2.0 with the quantiser and the contrastive + diversity (+ feature penalty) loss."""

    def __init__(self, config: Wav2Vec2Config, seed=0):
        super().__init__(config, seed)
        self.wav2vec2 = Wav2Vec2Model(config, _generators=self._gen, _init=False)
        self.dropout_features = nn.Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelVectorQuantizer(config, self._gen)
        self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)
        self.init_weights(self._gen.host)

    # --- Gumbel temperature ------------------------------------------------------------------------
    def set_gumbel_temperature(self, temperature: float) -> None:
        self.quantizer.temperature = float(temperature)

    def gumbel_temperature(self, step: int) -> float:
        """max(tau_max * decay^step, tau_min) from the config (fairseq's schedule)."""
        return self.config.gumbel_temperature(step)

    def update_gumbel_temperature(self, step: int) -> float:
        """Set the temperature for ``step`` completed updates and return it."""
        tau = self.gumbel_temperature(step)
        self.set_gumbel_temperature(tau)
        return tau

    def freeze_feature_encoder(self) -> None:
        self.wav2vec2.feature_extractor.requires_grad_(False)

    # --- forward -------------------------------------------------------------------------------------
    def forward(self, input_values, attention_mask=None, mask_time_indices=None, sampled_negative_indices=None,
                gumbel_noise=None, output_hidden_states: bool = False) -> Wav2Vec2ForPreTrainingOutput:
        """input_values (B, L) array or Tensor; attention_mask (B, L) (1 = real sample; right padding);
        mask_time_indices (B, T) bool; sampled_negative_indices (B, T, K) ints into the flattened B*T frames
        (transformers' convention); gumbel_noise (B, T, G, V) Gumbel samples for the training-mode quantiser.

        Masks and negatives not given are sampled from the model's host generator (in train and eval mode,
        when ``mask_time_prob > 0``), so an evaluation loss is available; everything random is also
        returned (``out.mask_time_indices``, ``out.sampled_negative_indices``) for exact reproduction.
        """
        c = self.config
        x, T, lengths = self._prepare(input_values, attention_mask)
        B = x.shape[0]
        rng = self._gen.host

        if mask_time_indices is not None:
            mask_host = backend.to_numpy(mask_time_indices.data if isinstance(mask_time_indices, Tensor)
                                         else mask_time_indices).astype(bool)
        elif c.apply_spec_augment and c.mask_time_prob > 0:
            mask_host = self._sample_time_mask(B, T, lengths)
        else:
            mask_host = None
        if mask_host is not None and mask_host.shape != (B, T):
            raise ValueError(f"mask_time_indices has shape {mask_host.shape}, expected {(B, T)}")
        if sampled_negative_indices is not None:
            if mask_host is None:
                raise ValueError("sampled_negative_indices needs mask_time_indices (the loss covers masked frames)")
            neg_host = backend.to_numpy(sampled_negative_indices.data if isinstance(sampled_negative_indices, Tensor)
                                        else sampled_negative_indices).astype(np.int64)
            if neg_host.shape[:2] != (B, T) or neg_host.ndim != 3:
                raise ValueError(f"sampled_negative_indices has shape {neg_host.shape}, expected {(B, T)} + (K,)")
        elif mask_host is not None:
            neg_host = sample_negative_indices((B, T), c.num_negatives, mask_host, rng)
        else:
            neg_host = None

        device = x.device
        mask = backend.to_device(mask_host, device) if mask_host is not None else None  # (B, T) bool, once
        base = self.wav2vec2._forward(x, lengths, mask, output_hidden_states)

        # 1. project every context vector to the target space
        projected = self.project_hid(base.last_hidden_state)               # (B, T, P)
        # 2. quantise every (unmasked, LayerNormed) CNN feature and project it
        feats = self.dropout_features(base.extract_features, generator=self._gen.device)
        quantised, perplexity, stats = self.quantizer(feats, mask, gumbel_noise)
        projected_q = self.project_q(quantised)                            # (B, T, P)

        out = Wav2Vec2ForPreTrainingOutput(
            feature_penalty=base.feature_penalty, codevector_perplexity=perplexity,
            prob_perplexity=stats.get("prob_perplexity"), code_perplexity=stats["code_perplexity"],
            projected_states=projected, projected_quantized_states=projected_q,
            extract_features=base.extract_features, last_hidden_state=base.last_hidden_state,
            hidden_states=base.hidden_states, mask_time_indices=mask_host, sampled_negative_indices=neg_host)
        if neg_host is None:
            return out

        # 3. contrastive loss over the masked frames only: gather them (indices built on the host, moved once)
        P, K = projected.shape[2], neg_host.shape[2]
        frames = np.flatnonzero(mask_host)                                 # (N,) flat indices b*T + t
        n_masked = int(frames.size)
        negatives = np.ascontiguousarray(neg_host.reshape(B * T, K)[frames].T)  # (B, T, K) -> (B*T, K) -> (K, N)
        frames_dev = backend.to_device(frames, device)
        negatives_dev = backend.to_device(negatives, device)
        pred_flat = projected.reshape(B * T, P)                            # (B, T, P) -> (B*T, P)
        q_flat = projected_q.reshape(B * T, P)                             # (B, T, P) -> (B*T, P)
        contrastive, accuracy = F.contrastive_loss(
            pred_flat[frames_dev], q_flat[frames_dev], q_flat[negatives_dev],  # (N, P), (N, P), (K, N, P)
            c.contrastive_logits_temperature, return_accuracy=True)
        # 4. diversity loss (transformers: times the number of masked frames) and the feature penalty
        GV = c.num_codevectors
        diversity = (GV - perplexity) * (n_masked / GV)
        loss = contrastive + c.diversity_loss_weight * diversity
        if c.feature_penalty_weight > 0:
            loss = loss + base.feature_penalty * (c.feature_penalty_weight * n_masked)
        out.loss, out.contrastive_loss, out.diversity_loss = loss, contrastive, diversity
        out.accuracy, out.num_masked = accuracy, n_masked
        return out


# ----------------------------------------------------------------------------------------------
# Initialisation (transformers' _init_weights; see docs/model.md)


def _set(param, array) -> None:
    """Replace a parameter's values by a host array (cast to its dtype, moved to its device explicitly)."""
    param.data = backend.to_device(np.asarray(array, dtype=param.dtype), param.device)


def init_weights(model: nn.Module, rng: np.random.Generator) -> None:
    """Initialise like transformers' ``Wav2Vec2PreTrainedModel._init_weights``, drawing from ``rng``:

    - Linear: W ~ N(0, initializer_range), b = 0; except the feature projection, project_hid and
      project_q (torch's default: W, b ~ U(+-1/sqrt(fan_in))) and the quantiser's weight_proj
      (W ~ N(0, 1), b = 0); quantiser codevectors ~ U[0, 1); masked_spec_embed ~ U[0, 1)
    - CNN convolutions: kaiming_normal (std sqrt(2 / fan_in)), bias ~ U(+-sqrt(groups / (C_in * k)))
    - positional conv: v ~ N(0, 2 / sqrt(k * D)), g = ||v|| per tap (so the weight equals v), bias 0
      (fairseq's init; transformers intends the same but its normal_ does not reach the weight-normed
      parameters, which keep torch's default conv init)
    - LayerNorm / GroupNorm: weight 1, bias 0.
    """
    config = getattr(model, "config", None)
    std = config.initializer_range if config is not None else 0.02
    special = set()
    for module in model.modules():
        if isinstance(module, FeatureProjection):
            special.add(id(module.projection))
        if isinstance(module, Wav2Vec2ForPreTraining):
            special.update((id(module.project_hid), id(module.project_q)))
        if isinstance(module, GumbelVectorQuantizer):
            special.add(id(module.weight_proj))
    for module in model.modules():
        if isinstance(module, nn.Linear):
            out_f, in_f = module.weight.shape
            if id(module) in special:
                continue  # set below by its owner
            _set(module.weight, rng.normal(0.0, std, size=(out_f, in_f)))
            if module.bias is not None:
                _set(module.bias, np.zeros(out_f))
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                _set(module.weight, np.ones(module.weight.shape))
            if module.bias is not None:
                _set(module.bias, np.zeros(module.bias.shape))
        elif isinstance(module, nn.Conv1d):
            out_c, in_per_group, k = module.weight.shape
            fan_in = in_per_group * k
            _set(module.weight, rng.normal(0.0, math.sqrt(2.0 / fan_in), size=module.weight.shape))
            if module.bias is not None:
                bound = math.sqrt(module.groups / (module.in_channels * k))
                _set(module.bias, rng.uniform(-bound, bound, size=(out_c,)))
        elif isinstance(module, WeightNormConv1d):
            out_c, in_per_group, k = module.weight_v.shape
            v = rng.normal(0.0, 2.0 * math.sqrt(1.0 / (k * out_c)), size=module.weight_v.shape)
            _set(module.weight_v, v)
            _set(module.weight_g, np.sqrt((v * v).sum(axis=(0, 1), keepdims=True)))  # (1, 1, K)
            _set(module.bias, np.zeros(out_c))
        elif isinstance(module, FeatureProjection):
            _projection_init(module.projection, rng, config)
        elif isinstance(module, GumbelVectorQuantizer):
            w = module.weight_proj
            _set(w.weight, rng.normal(0.0, getattr(config, "quantizer_weight_std", 1.0), size=w.weight.shape))
            _set(w.bias, np.zeros(w.bias.shape))
            if getattr(config, "codevector_init", "uniform") == "normal":
                _set(module.codevectors, rng.normal(0.0, 1.0, size=module.codevectors.shape))
            else:
                _set(module.codevectors, rng.uniform(0.0, 1.0, size=module.codevectors.shape))
        elif isinstance(module, Wav2Vec2Model):
            if module.masked_spec_embed is not None:
                _set(module.masked_spec_embed, rng.uniform(0.0, 1.0, size=module.masked_spec_embed.shape))
        elif isinstance(module, Wav2Vec2ForPreTraining):
            _projection_init(module.project_hid, rng, config)
            _projection_init(module.project_q, rng, config)


def _projection_init(linear, rng, config) -> None:
    """The projections' init: torch's default (fairseq, transformers) or, with ``projection_init="normal"``,
    N(0, initializer_range) with zero bias like the encoder's Linears."""
    if getattr(config, "projection_init", "torch") == "normal":
        _set(linear.weight, rng.normal(0.0, config.initializer_range, size=linear.weight.shape))
        _set(linear.bias, np.zeros(linear.bias.shape))
    else:
        _torch_default_linear(linear, rng)


def _torch_default_linear(linear, rng) -> None:
    """torch's Linear.reset_parameters: W, b ~ U(+-1/sqrt(fan_in))."""
    out_f, in_f = linear.weight.shape
    bound = 1.0 / math.sqrt(in_f)
    _set(linear.weight, rng.uniform(-bound, bound, size=(out_f, in_f)))
    if linear.bias is not None:
        _set(linear.bias, rng.uniform(-bound, bound, size=(out_f,)))


__all__ = ["Wav2Vec2Model", "Wav2Vec2ForPreTraining", "Wav2Vec2PreTrainedModel", "Wav2Vec2BaseModelOutput",
           "Wav2Vec2ForPreTrainingOutput", "init_weights"]
