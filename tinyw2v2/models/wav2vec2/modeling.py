"""``Wav2Vec2Model`` (CNN + Transformer) and ``Wav2Vec2ForPreTraining`` (+ quantiser, projections, loss).

The module tree is transformers', so ``named_parameters()`` gives transformers' state-dict names
(``wav2vec2.feature_extractor.conv_layers.0.conv.weight``, ``wav2vec2.encoder.pos_conv_embed.conv.weight_g``,
``quantizer.codevectors``, ``project_hid.weight``, ...). See docs/model.md for the maths and the loss.

    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(), seed=0)
    mask, negatives = model.sample_targets(B, model.num_frames(L))   # or let the forward draw them
    out = model(waveforms, mask_time_indices=mask, sampled_negative_indices=negatives)   # (B, L) array or Tensor
    out.loss.backward()                          # loss summed over masked frames (divide grads by out.num_masked)
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ... import backend
from ... import functional as F
from ... import nn, ops
from ...tensor import Tensor
from . import init
from .config import Wav2Vec2Config
from .encoder import Encoder
from .feature_encoder import FeatureEncoder, FeatureProjection, reset_projection
from .generators import Generators
from .masking import compute_mask_indices, host_targets, sample_pretraining_targets, sample_time_mask
from .quantizer import GumbelVectorQuantizer


# ----------------------------------------------------------------------------------------------
# Outputs


class ModelOutput:
    """Dataclass outputs that also index like a dict (``out["loss"]``) and list their fields."""

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class Wav2Vec2BaseModelOutput(ModelOutput):
    last_hidden_state: Tensor = None             # (B, T, D), after the final LN of the pre-LN variant
    extract_features: Tensor = None              # (B, T, C) LayerNormed CNN features (quantiser input)
    hidden_states: tuple = None                  # input of layer 0, then each layer's output (transformers 5)
    feature_penalty: Tensor = None               # 0-d: mean of the squared CNN output (fairseq's features_pen)
    frame_mask: object = None                    # (B, T) bool device array, True = real frame (None: no padding)


@dataclass
class Wav2Vec2ForPreTrainingOutput(ModelOutput):
    loss: Tensor = None                          # contrastive + a*diversity + b*penalty*N (a sum over masked frames)
    contrastive_loss: Tensor = None              # sum over the N masked frames of -log softmax(logits)[0]
    diversity_loss: Tensor = None                # (GV - perplexity) / GV * N (transformers' scaling)
    feature_penalty: Tensor = None               # mean(z^2) of the CNN output (weighted by b*N in the loss)
    codevector_perplexity: Tensor = None         # the perplexity in the diversity loss (soft: train, hard: eval)
    prob_perplexity: Tensor = None               # soft-probability perplexity over masked frames (train only)
    code_perplexity: Tensor = None               # hard-code perplexity over masked frames
    accuracy: Tensor = None                      # fraction of masked frames whose positive wins (fairseq's rule)
    negatives_identical: Tensor = None           # how many of the N*K negatives equal their positive (logit -inf)
    num_masked: int = None                       # N: number of masked frames in the batch
    projected_states: Tensor = None              # (B, T, P) project_hid of the context vectors
    projected_quantized_states: Tensor = None    # (B, T, P) project_q of the quantised features
    codevector_indices: object = None            # (B, T, G) int64 on the device: the codeword of each group
    extract_features: Tensor = None              # (B, T, C)
    last_hidden_state: Tensor = None             # (B, T, D)
    hidden_states: tuple = None
    mask_time_indices: np.ndarray = None         # (B, T) bool, host copy of the mask used
    sampled_negative_indices: np.ndarray = None  # (B, T, K) int64, host copy of the negatives used


# ----------------------------------------------------------------------------------------------
# Base class: config, generators, device, weights I/O


class Wav2Vec2PreTrainedModel(nn.Module):
    """Holds the config and the random generators (``generators``: host for masks, negatives and LayerDrop; device
    for dropout and Gumbel noise); its subclasses initialise their weights once, in ``reset_parameters``."""

    base_model_prefix = "wav2vec2"

    def __init__(self, config: Wav2Vec2Config, seed=0, generators=None):
        super().__init__()
        config.validate()
        self.config = config
        self.generators = generators if generators is not None else Generators(seed)

    # --- device / dtype -----------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def to(self, device=None, dtype=None):
        super().to(device, dtype)
        if device is not None and isinstance(device, str) and \
                backend.normalize_device(device) != self.generators.device_name:
            self.generators.to(device)
        return self

    def manual_seed(self, seed) -> "Wav2Vec2PreTrainedModel":
        """Restart the model's generators (masks, negatives, layerdrop, dropout, Gumbel noise) from ``seed``."""
        self.generators.reseed(seed)
        return self

    @property
    def generator(self) -> np.random.Generator:
        """The host generator (masks, negatives, layerdrop)."""
        return self.generators.host

    # --- lengths -----------------------------------------------------------------------------------
    def num_frames(self, num_samples):
        """Frames after the CNN for an int or an integer array of sample counts (host)."""
        t = np.asarray(num_samples, dtype=np.int64)
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            t = np.maximum((t - k) // s + 1, 0)
        return int(t) if t.ndim == 0 else t

    def prepare_input(self, input_values, attention_mask=None):
        """(x, T, lengths): the waveform as a Tensor (B, L) on the model's device and dtype (explicit copies only),
        its frame count T, and the valid frames per row from a sample-level ``attention_mask`` (host, or None)."""
        x = self._input(input_values)
        B, L = x.shape
        T = self.num_frames(L)
        if T <= 0:
            raise ValueError(f"input too short: {L} samples give no frame (the CNN needs at least "
                             f"{self.config.receptive_field} samples)")
        return x, T, self.frame_lengths(attention_mask, B, T)

    def frame_lengths(self, attention_mask, batch: int, frames: int):
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

    def _input(self, input_values) -> Tensor:
        device, dtype = self.device, self.dtype
        if isinstance(input_values, Tensor):
            x = input_values if input_values.device == device else input_values.to(device=device)
            return x.to(dtype=dtype) if x.dtype != dtype else x
        data = input_values if backend.is_array(input_values) else np.asarray(input_values)
        data = backend.to_device(data, device)
        return Tensor(data.astype(dtype) if data.dtype != dtype else data, _copy=False)

    # --- weights ------------------------------------------------------------------------------------
    def init_weights(self, seed=None) -> "Wav2Vec2PreTrainedModel":
        """Draw every parameter again (``reset_parameters``) from ``seed`` (an int or a NumPy Generator)."""
        self.reset_parameters(seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed))
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
    """The feature encoder f: X -> Z, the feature projection, time masking and the context network g: Z -> C."""

    def __init__(self, config: Wav2Vec2Config, seed=0, generators=None, init: bool = True):
        super().__init__(config, seed, generators)
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config, self.generators)
        if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
            self.masked_spec_embed = nn.Parameter(np.zeros(config.hidden_size))
        else:
            self.register_parameter("masked_spec_embed", None)
        self.encoder = Encoder(config, self.generators)
        if init:
            self.reset_parameters(self.generators.host)

    def reset_parameters(self, rng) -> None:
        """masked_spec_embed ~ U[0, 1) (fairseq, transformers), then the CNN, the projection and the encoder."""
        if self.masked_spec_embed is not None:
            init.uniform_(self.masked_spec_embed, rng, 0.0, 1.0)
        self.feature_extractor.reset_parameters(rng)
        self.feature_projection.reset_parameters(rng)
        self.encoder.reset_parameters(rng)

    def forward(self, input_values, attention_mask=None, mask_time_indices=None,
                output_hidden_states: bool = False) -> Wav2Vec2BaseModelOutput:
        """input_values (B, L); attention_mask (B, L) (1 = real sample, right padding); mask_time_indices
        (B, T) bool frames to replace by the mask embedding (as transformers: only when given, or sampled in
        training when ``mask_time_prob > 0``)."""
        c = self.config
        x, T, lengths = self.prepare_input(input_values, attention_mask)
        B = x.shape[0]
        z = self.feature_extractor(x)                                        # (B, C, T) latent representations
        penalty = self.feature_extractor.penalty(z)
        hidden, extract_features = self.feature_projection(z.swapaxes(1, 2))  # (B, C, T) -> (B, T, C) -> (B, T, D)
        if mask_time_indices is None and self.training and c.apply_spec_augment and c.mask_time_prob > 0:
            mask_time_indices = sample_time_mask(c, (B, T), self.generators.host, lengths)
        hidden = self.spec_augment(hidden, mask_time_indices)
        frame_mask = None
        if lengths is not None and (lengths < T).any():
            frame_mask = backend.to_device(np.arange(T)[None, :] < lengths[:, None], x.device)  # (B, T) real frames
        last, hidden_states = self.encoder(hidden, frame_mask, output_hidden_states)  # the context network g
        return Wav2Vec2BaseModelOutput(last_hidden_state=last, extract_features=extract_features,
                                       hidden_states=hidden_states, feature_penalty=penalty, frame_mask=frame_mask)

    def spec_augment(self, hidden: Tensor, mask_time_indices=None) -> Tensor:
        """Masked frames (B, T) get the learnt mask embedding (overwritten, not added); in training, spans of
        channels (``mask_feature_prob``) are zeroed (transformers' order: time first)."""
        c = self.config
        B, T, D = hidden.shape
        if mask_time_indices is not None and c.apply_spec_augment:  # transformers ignores the mask otherwise
            if self.masked_spec_embed is None:
                raise ValueError("mask_time_indices given, but the model has no masked_spec_embed "
                                 "(config.mask_time_prob == 0 and mask_feature_prob == 0)")
            mask = as_device_bool(mask_time_indices, hidden.device, (B, T), "mask_time_indices")
            hidden = ops.where(mask.reshape(B, T, 1), self.masked_spec_embed, hidden)  # (B, T) -> (B, T, 1)
        if self.training and c.apply_spec_augment and c.mask_feature_prob > 0:
            channels = compute_mask_indices((B, D), c.mask_feature_prob, c.mask_feature_length,
                                            min_masks=c.mask_feature_min_masks, require_same_masks=False,
                                            rng=self.generators.host)
            channels = backend.to_device(channels, hidden.device)
            hidden = ops.masked_fill(hidden, channels.reshape(B, 1, D), 0.0)  # (B, D) -> (B, 1, D)
        return hidden


def as_device_bool(mask, device, shape, name):
    """A mask (array, Tensor, list) as a bool array of ``shape`` on ``device`` (an explicit copy if needed)."""
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
    """wav2vec 2.0 with the quantiser and the contrastive + diversity (+ feature penalty) loss (paper, Figure 1)."""

    def __init__(self, config: Wav2Vec2Config, seed=0):
        super().__init__(config, seed)
        self.wav2vec2 = Wav2Vec2Model(config, generators=self.generators, init=False)
        self.dropout_features = nn.Dropout(config.feat_quantizer_dropout, generator=self.generators.device_generator)
        self.quantizer = GumbelVectorQuantizer(config, self.generators)
        self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim, init=False)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim, init=False)
        self.reset_parameters(self.generators.host)

    def reset_parameters(self, rng) -> None:
        """project_hid and project_q first (torch's default init, as fairseq and transformers), then the encoder
        and the quantiser."""
        c = self.config
        reset_projection(self.project_hid, rng, c.projection_init, c.initializer_range)
        reset_projection(self.project_q, rng, c.projection_init, c.initializer_range)
        self.wav2vec2.reset_parameters(rng)
        self.quantizer.reset_parameters(rng)

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

    def sample_targets(self, batch_size: int, num_frames: int, lengths=None, mask_time_indices=None):
        """(mask (B, T), negatives (B, T, K)) for a batch, from the model's host generator: what ``forward`` draws
        when it is not given them (``sample_pretraining_targets``; with a mask given, only its negatives)."""
        return sample_pretraining_targets(self.config, (batch_size, num_frames), self.generators.host, lengths,
                                          mask_time_indices)

    # --- forward -------------------------------------------------------------------------------------
    def forward(self, input_values, attention_mask=None, mask_time_indices=None, sampled_negative_indices=None,
                gumbel_noise=None, output_hidden_states: bool = False) -> Wav2Vec2ForPreTrainingOutput:
        """input_values (B, L) array or Tensor; attention_mask (B, L) (1 = real sample; right padding);
        mask_time_indices (B, T) bool and sampled_negative_indices (B, T, K) ints into the flattened B*T frames
        (transformers' convention), drawn by ``sample_targets`` when not given (in train and eval mode, when
        ``mask_time_prob > 0``, so an evaluation loss exists); gumbel_noise (B, T, G, V) Gumbel samples for the
        training-mode quantiser. Everything random is returned as well, for exact reproduction."""
        cfg = self.config
        x, T, lengths = self.prepare_input(input_values, attention_mask)    # (B, L) Tensor on the model's device
        B = x.shape[0]
        if sampled_negative_indices is None and (mask_time_indices is not None or
                                                 cfg.apply_spec_augment and cfg.mask_time_prob > 0):
            mask_time_indices, sampled_negative_indices = self.sample_targets(B, T, lengths, mask_time_indices)
        mask, negatives = host_targets(mask_time_indices, sampled_negative_indices, (B, T))  # (B, T), (B, T, K)
        mask_dev = None if mask is None else backend.to_device(mask, x.device)  # (B, T) bool, moved once

        # z = f(X); c = g(z with the masked frames replaced); q = quantiser(z)          (section 2, Figure 1)
        base = self.wav2vec2(x, attention_mask, mask_time_indices=mask_dev, output_hidden_states=output_hidden_states)
        z = base.extract_features                          # (B, T, C) the CNN's latents, LayerNormed
        c = self.project_hid(base.last_hidden_state)       # (B, T, P) the context vectors, in the target space
        quantized = self.quantizer(self.dropout_features(z), mask_dev, gumbel_noise)   # of z before masking (eq. 1)
        q = self.project_q(quantized.codevectors)          # (B, T, P)

        out = Wav2Vec2ForPreTrainingOutput(
            feature_penalty=base.feature_penalty, codevector_perplexity=quantized.perplexity,
            prob_perplexity=quantized.prob_perplexity, code_perplexity=quantized.code_perplexity,
            projected_states=c, projected_quantized_states=q, extract_features=z,
            last_hidden_state=base.last_hidden_state, hidden_states=base.hidden_states,
            codevector_indices=quantized.indices, mask_time_indices=mask, sampled_negative_indices=negatives)
        if negatives is None:
            return out
        # L = L_m + alpha L_d (+ beta * mean(z^2) * N, fairseq's feature penalty)      (section 3.2, eq. 2)
        N = int(mask.sum())
        L_m, accuracy, identical = masked_contrastive_loss(c, q, mask, negatives, cfg.contrastive_logits_temperature,
                                                           quantized.indices)                 # eq. 3, summed
        GV = cfg.num_codevectors
        L_d = (GV - quantized.perplexity) * (N / GV)                       # eq. 4, as (GV - perplexity) / GV * N
        loss = L_m + cfg.diversity_loss_weight * L_d
        if cfg.feature_penalty_weight > 0:
            loss = loss + base.feature_penalty * (cfg.feature_penalty_weight * N)
        out.loss, out.contrastive_loss, out.diversity_loss = loss, L_m, L_d
        out.accuracy, out.negatives_identical, out.num_masked = accuracy, identical, N
        return out


def masked_contrastive_loss(context, q, mask, negatives, temperature: float, codes=None):
    """L_m summed over the N masked frames (eq. 3): for each, cos(c_t, q_t) against its K negatives q~ / kappa.

    context, q (B, T, P) Tensors; mask (B, T) bool and negatives (B, T, K) int64 on the host (flat b*T + t).
    Only the masked frames are gathered (indices built on the host, moved once). A negative that is the positive's
    own quantised vector is left out (logit -inf). With ``codes`` (B, T, G), the codewords each frame chose, that
    is decided by the codes (the vectors of equal codes are equal, though a GEMM may round two equal rows
    differently); without, by comparing the vectors, as fairseq and transformers do. Returns (loss, accuracy,
    negatives identical to their positive), the last two 0-d Tensors without gradient.
    """
    B, T, P = context.shape
    K = negatives.shape[2]
    frames = np.flatnonzero(mask)                                          # (N,) flat indices b*T + t
    negative_frames = np.ascontiguousarray(negatives.reshape(B * T, K)[frames].T)  # (B, T, K) -> (K, N)
    frames_dev = backend.to_device(frames, backend.device_of(context.data))
    negatives_dev = backend.to_device(negative_frames, backend.device_of(context.data))
    c_flat = context.reshape(B * T, P)                                     # (B, T, P) -> (B*T, P)
    q_flat = q.reshape(B * T, P)                                           # (B, T, P) -> (B*T, P)
    neg_is_pos = None
    if codes is not None:
        codes_flat = codes.reshape(B * T, -1)                              # (B, T, G) -> (B*T, G)
        neg_is_pos = (codes_flat[negatives_dev] == codes_flat[frames_dev][None]).all(axis=-1)  # (K, N)
    return F.contrastive_loss(c_flat[frames_dev], q_flat[frames_dev], q_flat[negatives_dev],  # (N,P) (N,P) (K,N,P)
                              temperature, neg_is_pos=neg_is_pos, return_metrics=True)


def init_weights(module: nn.Module, rng: np.random.Generator) -> None:
    """(Re)initialise a model or one of its parts (feature encoder, encoder, quantiser, ...) from ``rng``, as
    fairseq and transformers do: ``module.reset_parameters(rng)`` (docs/model.md, "Initialisation")."""
    module.reset_parameters(rng)


__all__ = ["Wav2Vec2Model", "Wav2Vec2ForPreTraining", "Wav2Vec2PreTrainedModel", "Wav2Vec2BaseModelOutput",
           "Wav2Vec2ForPreTrainingOutput", "init_weights", "masked_contrastive_loss"]
