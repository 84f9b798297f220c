"""``Wav2Vec2ForCTC``: the wav2vec 2.0 encoder with a linear CTC head, transformers' module tree and loss.

    model = Wav2Vec2ForCTC.from_pretraining_checkpoint("runs/pretrain/checkpoint.npz", vocab_size=len(vocab))
    model = Wav2Vec2ForCTC.from_pretrained("some/transformers/dir")        # config.json + model.safetensors
    out = model(waveforms, attention_mask=mask, labels=labels)           # labels (B, S) padded with -100
    out.logits                                                            # (B, T, V)
    out.loss.backward()

Module tree (= transformers' state-dict names): ``wav2vec2.*`` (``Wav2Vec2Model``), ``dropout``
(``final_dropout``, no parameters), ``lm_head`` (Linear(hidden_size, vocab_size), initialised N(0, 0.02),
bias 0, like transformers' ``_init_weights``).

Loss (transformers' ``ForCTCLoss``): labels equal to -100 or to the blank (``pad_token_id``) are padding and
are dropped (the rest of each row is packed to the left); ``log_softmax`` over the vocabulary, transposed to
(T, B, V); ``F.ctc_loss(blank=pad_token_id, reduction=config.ctc_loss_reduction,
zero_infinity=config.ctc_zero_infinity)``; the frames per row come from the attention mask through the CNN
length formula, else from ``sample_lengths`` (the true lengths of zero-padded input given without a mask, as
transformers recommends for group-norm models), else every row has all T frames.

In training mode the encoder applies SpecAugment as transformers does during fine-tuning: time spans are
replaced by the learnt mask embedding (``mask_time_prob``, ``mask_time_length``) and channel spans are zeroed
(``mask_feature_prob``, ``mask_feature_length``); LayerDrop and dropout follow the config.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from ... import backend
from ... import functional as F
from ... import nn
from ...io import read_checkpoint
from ...tensor import Tensor, no_grad
from . import init
from .config import Wav2Vec2Config
from .modeling import Wav2Vec2Model, Wav2Vec2PreTrainedModel, ModelOutput


class VocabularyMismatchError(ValueError):
    """A CTC head whose output size differs from the vocabulary (or checkpoint) it is used with."""


def vocabulary_mismatch(head_size: int, vocab_size: int, where,
                        what: str = "the vocabulary") -> VocabularyMismatchError:
    return VocabularyMismatchError(
        f"vocabulary mismatch: the CTC head (lm_head) of {where} has {head_size} outputs, but {what} has "
        f"{vocab_size} entries; fine-tune a new head for this vocabulary (from_pretraining_checkpoint / "
        f"from_pretrained(..., vocab_size={vocab_size}, new_head=True)) or use the vocab.json the model was "
        "trained with")


@dataclass
class Wav2Vec2CTCOutput(ModelOutput):
    loss: Tensor = None                 # CTC loss (reduced per config.ctc_loss_reduction)
    logits: Tensor = None               # (B, T, V) before the softmax
    hidden_states: tuple = None
    output_lengths: np.ndarray = None   # (B,) host int64: valid frames per row (the CTC input lengths)
    target_lengths: np.ndarray = None   # (B,) host int64: labels per row after dropping padding


class Wav2Vec2ForCTC(Wav2Vec2PreTrainedModel):
    """Wav2Vec2Model -> Dropout(final_dropout) -> lm_head Linear(hidden_size, vocab_size)."""

    def __init__(self, config: Wav2Vec2Config, seed=0):
        super().__init__(config, seed)
        if config.vocab_size is None or int(config.vocab_size) < 2:
            raise ValueError(f"Wav2Vec2ForCTC needs config.vocab_size >= 2 (blank + at least one label), "
                             f"got {config.vocab_size}")
        if not 0 <= config.pad_token_id < config.vocab_size:
            raise ValueError(f"the CTC blank is config.pad_token_id = {config.pad_token_id}, which is not an id "
                             f"of the {config.vocab_size}-entry vocabulary")
        self.wav2vec2 = Wav2Vec2Model(config, generators=self.generators, init=False)
        self.dropout = nn.Dropout(config.final_dropout, generator=self.generators.device_generator)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, init=False)
        self.reset_parameters(self.generators.host)

    def reset_parameters(self, rng) -> None:
        """The encoder as in pretraining, then lm_head ~ N(0, initializer_range) with bias 0 (transformers)."""
        self.wav2vec2.reset_parameters(rng)
        init.normal_(self.lm_head.weight, rng, self.config.initializer_range)
        init.constant_(self.lm_head.bias, 0.0)

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head.weight.shape[0])

    # --- freezing ------------------------------------------------------------------------------------
    def freeze_feature_encoder(self) -> None:
        """No gradient for the CNN (transformers' freeze_feature_encoder; fairseq's feature_grad_mult = 0)."""
        self.wav2vec2.feature_extractor.requires_grad_(False)

    def freeze_base_model(self, frozen: bool = True, keep_feature_encoder_frozen: bool = True) -> None:
        """Freeze (or unfreeze) everything but ``lm_head``; unfreezing keeps the CNN frozen unless told otherwise."""
        self.wav2vec2.requires_grad_(not frozen)
        if not frozen and keep_feature_encoder_frozen:
            self.freeze_feature_encoder()

    # --- forward -------------------------------------------------------------------------------------
    def forward(self, input_values, attention_mask=None, labels=None, sample_lengths=None, mask_time_indices=None,
                output_hidden_states: bool = False) -> Wav2Vec2CTCOutput:
        """input_values (B, L); attention_mask (B, L) 1 = real sample (right padding); labels (B, S) ints padded
        with -100 (or the blank id); sample_lengths (B,) true lengths of zero-padded rows given without an
        attention mask (used only for the CTC frame counts); mask_time_indices (B, T) bool, else sampled in
        training when mask_time_prob > 0."""
        c = self.config
        labels_host = None
        if labels is not None:
            labels_host = np.asarray(backend.to_numpy(labels.data if isinstance(labels, Tensor) else labels))
            if not np.issubdtype(labels_host.dtype, np.integer):
                raise TypeError(f"labels must be integers, got {labels_host.dtype}")
            if labels_host.ndim == 1:
                labels_host = labels_host[None, :]
            if labels_host.size and labels_host.max() >= c.vocab_size:
                raise ValueError(f"label values must be < vocab_size = {c.vocab_size}, got {labels_host.max()} "
                                 "(labels made with another vocabulary?)")
            if labels_host.size and ((labels_host < 0) & (labels_host != -100)).any():
                raise ValueError("labels must be in [0, vocab_size) or -100 (padding)")
        if sample_lengths is not None and attention_mask is not None:
            raise ValueError("give attention_mask or sample_lengths, not both")
        base = self.wav2vec2(input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices,
                             output_hidden_states=output_hidden_states)
        hidden = self.dropout(base.last_hidden_state)
        logits = self.lm_head(hidden)                                          # (B, T, V)
        B, T = logits.shape[0], logits.shape[1]
        L = input_values.shape[-1] if hasattr(input_values, "shape") else np.shape(input_values)[-1]
        if attention_mask is not None:
            output_lengths = self.frame_lengths(attention_mask, B, T)
        elif sample_lengths is not None:
            sl = np.asarray(backend.to_numpy(getattr(sample_lengths, "data", sample_lengths)), dtype=np.int64)
            if sl.shape != (B,) or (sl < 1).any() or (sl > L).any():
                raise ValueError(f"sample_lengths must be {B} integers in [1, {L}], got {sl}")
            output_lengths = np.minimum(self.num_frames(sl), T)
        else:
            output_lengths = np.full(B, T, dtype=np.int64)
        out = Wav2Vec2CTCOutput(logits=logits, hidden_states=base.hidden_states,
                                output_lengths=np.asarray(output_lengths, dtype=np.int64).reshape(B))
        if labels_host is None:
            return out
        if labels_host.shape[0] != B:
            raise ValueError(f"labels have {labels_host.shape[0]} rows for a batch of {B}")
        targets, target_lengths = pack_labels(labels_host, c.pad_token_id)
        log_probs = F.log_softmax(logits, axis=-1).swapaxes(0, 1)             # (B, T, V) -> (T, B, V)
        out.loss = F.ctc_loss(log_probs, targets, out.output_lengths, target_lengths, blank=c.pad_token_id,
                              reduction=c.ctc_loss_reduction, zero_infinity=c.ctc_zero_infinity)
        out.target_lengths = target_lengths
        return out

    # --- building ------------------------------------------------------------------------------------
    @classmethod
    def from_pretraining_checkpoint(cls, path, vocab_size: int, seed=0, device="cpu", **config_overrides):
        """A CTC model whose encoder (``wav2vec2.*``) comes from a tinyw2v2 pretraining checkpoint
        (``runs/.../checkpoint.npz``) and whose ``lm_head`` is new (vocab_size outputs, transformers' init).

        ``config_overrides`` change the fine-tuning settings (dropouts, masking, layerdrop, CTC reduction);
        the architecture must stay the checkpoint's. The quantiser and projections are dropped. A
        fine-tuning checkpoint (with an ``lm_head``) is refused here: load it with ``from_finetuning_checkpoint``.
        """
        path = os.fspath(path)
        state, _, meta = read_checkpoint(path)
        if any(k.startswith("lm_head.") for k in state):
            raise ValueError(f"{path} already has a CTC head (a fine-tuning checkpoint): load it with "
                             "Wav2Vec2ForCTC.from_finetuning_checkpoint")
        config = Wav2Vec2Config.from_dict(meta["config"]).replace(vocab_size=int(vocab_size), **config_overrides)
        model = cls(config, seed=seed)
        model.load_encoder_state(state, path)
        return model.to(device) if device is not None and backend.normalize_device(device) != "cpu" else model

    def load_encoder_state(self, state: dict, where="the checkpoint") -> list:
        """Copy the ``wav2vec2.*`` arrays of ``state`` into the encoder (shapes must match); returns the keys
        that kept their fresh initialisation (the mask embedding, when the checkpoint had none)."""
        ours = dict(self.wav2vec2.state_dict())
        enc = {k[len("wav2vec2."):]: v for k, v in state.items() if k.startswith("wav2vec2.")}
        if not enc:
            raise ValueError(f"{where}: no wav2vec2.* weights (not a wav2vec 2.0 checkpoint)")
        missing = [k for k in ours if k not in enc]
        fresh_ok = [k for k in missing if k == "masked_spec_embed"]
        required = [k for k in missing if k not in fresh_ok]
        if required:
            raise ValueError(f"{where}: the encoder weights {required[:5]}{' ...' if len(required) > 5 else ''} "
                             "are missing (another architecture?)")
        for k in ours:
            if k in enc and tuple(enc[k].shape) != tuple(ours[k].shape):
                raise ValueError(f"{where}: wav2vec2.{k} has shape {tuple(enc[k].shape)}, the model expects "
                                 f"{tuple(ours[k].shape)} (the config does not match the checkpoint)")
        self.wav2vec2.load_state_dict({k: v for k, v in enc.items() if k in ours}, strict=False)
        if fresh_ok:
            warnings.warn(f"{where} has no wav2vec2.masked_spec_embed (pretrained without masking): the mask "
                          "embedding keeps its fresh initialisation", stacklevel=3)
        return ["wav2vec2." + k for k in fresh_ok]

    @classmethod
    def from_finetuning_checkpoint(cls, path, seed=0, device="cpu", vocab_size: int | None = None,
                                   vocab_path=None):
        """A fine-tuned model from a ``tinyw2v2 finetune`` checkpoint; ``vocab_size`` (or the vocab.json at
        ``vocab_path``) is checked against the checkpoint's head (a clear ``VocabularyMismatchError``)."""
        path = os.fspath(path)
        state, _, meta = read_checkpoint(path)
        if "lm_head.weight" not in state:
            raise ValueError(f"{path} has no CTC head (lm_head): it is a pretraining checkpoint; fine-tune it with "
                             "`tinyw2v2 finetune --init` first")
        config = Wav2Vec2Config.from_dict(meta["config"])
        head = int(state["lm_head.weight"].shape[0])
        if head != config.vocab_size:
            raise vocabulary_mismatch(head, config.vocab_size, path, "its config")
        if vocab_size is not None and int(vocab_size) != head:
            raise vocabulary_mismatch(head, int(vocab_size), path,
                                      f"the vocabulary {os.fspath(vocab_path)!r}" if vocab_path else "the vocabulary")
        model = cls(config, seed=seed)
        model.load_state_dict(state)
        return model.to(device) if device is not None and backend.normalize_device(device) != "cpu" else model

    @classmethod
    def from_pretrained(cls, path, seed=0, device="cpu", dtype=None, strict: bool = True,
                        vocab_size: int | None = None, new_head: bool = False, **config_overrides):
        """Load a transformers directory (config.json + weights) through ``hf.from_pretrained``.

        - A ``Wav2Vec2ForCTC`` directory: its head is loaded; ``vocab_size``, when given, must equal the head's
          output size (else ``VocabularyMismatchError`` naming both sizes and the weights file), unless
          ``new_head=True``, which drops the stored head and starts a fresh one of ``vocab_size`` outputs.
        - A ``Wav2Vec2Model`` / ``Wav2Vec2ForPreTraining`` directory: the encoder is loaded and the head is new
          (``vocab_size`` outputs, or config.vocab_size).
        ``config_overrides`` (dropouts, masking, ...) are applied to the config before building.
        """
        from .hf import convert_state_dict, load_pretrained_weights, read_weights

        config = Wav2Vec2Config.from_pretrained(path)
        weights_file = _weights_file(path)
        state = read_weights(path)
        head = state.get("lm_head.weight")
        if head is not None and head.shape[0] != config.vocab_size:
            raise vocabulary_mismatch(int(head.shape[0]), config.vocab_size, weights_file,
                                      f"{os.path.join(os.fspath(path), 'config.json')!r}")
        if vocab_size is not None and head is not None and int(vocab_size) != head.shape[0] and not new_head:
            raise vocabulary_mismatch(int(head.shape[0]), int(vocab_size), weights_file)
        if vocab_size is not None:
            config_overrides["vocab_size"] = int(vocab_size)
        if config_overrides:
            config = config.replace(**config_overrides)
        model = cls(config, seed=seed)
        if dtype is not None:
            model.to(dtype=dtype)
        if device is not None and backend.normalize_device(device) != "cpu":
            model.to(device)
        if head is not None and new_head:
            state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
            converted, ignored = convert_state_dict(state, model)
            ours = dict(model.state_dict())
            missing = [k for k in ours if k not in converted and not k.startswith("lm_head.")
                       and k != "wav2vec2.masked_spec_embed"]
            unexpected = [k for k in converted if k not in ours]
            if strict and (missing or unexpected):
                raise RuntimeError(f"loading {os.fspath(path)!r} into Wav2Vec2ForCTC: missing keys {missing}, "
                                   f"unexpected keys {unexpected}")
            model.load_state_dict({k: v for k, v in converted.items() if k in ours}, strict=False)
            model.loading_info = {"missing_keys": [k for k in ours if k not in converted],
                                  "unexpected_keys": unexpected,
                                  "ignored_keys": ignored + ["lm_head.weight", "lm_head.bias"]}
        else:
            load_pretrained_weights(model, path, strict=strict)
        return model

    # --- inference -----------------------------------------------------------------------------------
    def transcribe_ids(self, input_values, attention_mask=None, sample_lengths=None):
        """Eval-mode argmax ids (B, T) on the host and the valid frames per row (B,)."""
        was = self.training
        self.eval()
        try:
            with no_grad():
                out = self(input_values, attention_mask=attention_mask, sample_lengths=sample_lengths)
        finally:
            self.train(was)
        ids = backend.to_numpy(out.logits.data.argmax(axis=-1))
        return ids, out.output_lengths


def pack_labels(labels: np.ndarray, blank: int):
    """(B, S) labels with -100 / blank padding anywhere -> (B, S') left-packed targets and (B,) lengths
    (transformers' masked_select, kept 2-D: the entries past each length are ignored by ctc_loss)."""
    keep = (labels != -100) & (labels != blank)                                # (B, S)
    lengths = keep.sum(axis=1).astype(np.int64)                                # (B,)
    order = np.argsort(~keep, axis=1, kind="stable")                           # kept entries first, in order
    packed = np.take_along_axis(labels, order, axis=1)[:, :max(int(lengths.max()) if lengths.size else 0, 1)]
    packed = np.where(np.arange(packed.shape[1])[None, :] < lengths[:, None], packed, 0).astype(np.int64)
    return packed, lengths


def _weights_file(path) -> str:
    from .hf import SAFE_INDEX, SAFE_WEIGHTS, TORCH_INDEX, TORCH_WEIGHTS

    p = os.fspath(path)
    if os.path.isfile(p):
        return p
    for name in (SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS, TORCH_INDEX):
        if os.path.exists(os.path.join(p, name)):
            return os.path.join(p, name)
    return p


__all__ = ["Wav2Vec2ForCTC", "Wav2Vec2CTCOutput", "VocabularyMismatchError", "pack_labels"]
