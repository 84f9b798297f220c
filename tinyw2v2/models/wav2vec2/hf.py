"""Reading and writing transformers-format model directories (config.json + weights), without torch.

- Weights: ``model.safetensors`` (read and written with ``safetensors.numpy``: no torch needed), sharded
  ``model.safetensors.index.json``, or ``pytorch_model.bin`` (only when torch is installed).
- Weight-norm names: torch's old ``weight_g`` / ``weight_v`` and the parametrisation names
  ``parametrizations.weight.original0`` / ``original1`` (g and v) both load; we write ``weight_g`` /
  ``weight_v`` (most Hub checkpoints; transformers 5 renames them on load), or the parametrisation names
  with ``weight_norm_names="parametrizations"``.
- Prefixes: a ``Wav2Vec2Model`` checkpoint has no ``wav2vec2.`` prefix, ``Wav2Vec2ForPreTraining`` and
  ``Wav2Vec2ForCTC`` have it. Loading into ``Wav2Vec2Model`` takes the encoder weights of any of them;
  loading into ``Wav2Vec2ForPreTraining`` from an encoder-only or CTC checkpoint keeps the freshly
  initialised quantiser and projections (listed in ``model.loading_info["missing_keys"]``).
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np

from ... import backend
from ...io import atomic_write
from .config import Wav2Vec2Config

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"

_G_NEW, _V_NEW = "parametrizations.weight.original0", "parametrizations.weight.original1"
_G_OLD, _V_OLD = "weight_g", "weight_v"
# checkpoint keys of heads this library does not build (ignored when absent from the target model)
_HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_hid.", "project_q.", "projector.", "classifier.",
                  "dropout_features.", "masked_spec_embed", "wav2vec2.masked_spec_embed")


def normalize_key(key: str) -> str:
    """Our name for a checkpoint key: parametrisation weight-norm names -> weight_g / weight_v."""
    if key.endswith(_G_NEW):
        return key[: -len(_G_NEW)] + _G_OLD
    if key.endswith(_V_NEW):
        return key[: -len(_V_NEW)] + _V_OLD
    return key


def to_parametrization_key(key: str) -> str:
    if key.endswith("." + _G_OLD):
        return key[: -len(_G_OLD)] + _G_NEW
    if key.endswith("." + _V_OLD):
        return key[: -len(_V_OLD)] + _V_NEW
    return key


# ----------------------------------------------------------------------------------------------
# Reading


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _read_safetensors(path) -> dict:
    from safetensors.numpy import load_file

    try:
        return load_file(os.fspath(path))
    except (TypeError, ValueError) as e:  # e.g. bfloat16, which NumPy has no dtype for
        raise ValueError(f"cannot read {os.fspath(path)!r} with NumPy ({e}); convert it to float32 first") from e


def _read_torch_bin(path) -> dict:
    torch = _torch()
    if torch is None:
        raise ImportError(f"{os.fspath(path)!r} is a PyTorch pickle: reading it needs torch "
                          "(pip install torch), or convert the checkpoint to model.safetensors")
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().float().numpy() if v.dtype == torch.bfloat16 else v.detach().cpu().numpy()
            for k, v in state.items()}


def read_weights(directory) -> dict:
    """All weights of a transformers directory (or a single weights file) as host NumPy arrays."""
    path = os.fspath(directory)
    if os.path.isfile(path):
        return _read_safetensors(path) if path.endswith(".safetensors") else _read_torch_bin(path)
    candidates = [(SAFE_WEIGHTS, _read_safetensors), (SAFE_INDEX, None), (TORCH_WEIGHTS, _read_torch_bin),
                  (TORCH_INDEX, None)]
    for name, reader in candidates:
        file = os.path.join(path, name)
        if not os.path.exists(file):
            continue
        if reader is not None:
            return reader(file)
        with open(file, encoding="utf-8") as f:
            index = json.load(f)
        shard_reader = _read_safetensors if name == SAFE_INDEX else _read_torch_bin
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(shard_reader(os.path.join(path, shard)))
        return state
    raise FileNotFoundError(f"no weights in {path!r}: expected one of {SAFE_WEIGHTS}, {SAFE_INDEX}, "
                            f"{TORCH_WEIGHTS}, {TORCH_INDEX}")


def convert_state_dict(state: dict, model) -> tuple:
    """Map checkpoint keys onto ``model``'s names: weight-norm names, the ``wav2vec2.`` prefix.

    Returns (state with our names, ignored checkpoint keys).
    """
    ours = dict(model.state_dict())
    prefix = getattr(model, "base_model_prefix", "wav2vec2") + "."
    has_prefix_model = any(k.startswith(prefix) for k in ours)
    state = {normalize_key(k): v for k, v in state.items()}
    has_prefix_ckpt = any(k.startswith(prefix) for k in state)
    if has_prefix_model and not has_prefix_ckpt:        # Wav2Vec2Model checkpoint -> a model with heads
        state = {prefix + k: v for k, v in state.items()}
    elif has_prefix_ckpt and not has_prefix_model:      # ForPreTraining / ForCTC checkpoint -> Wav2Vec2Model
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} | \
                {k: v for k, v in state.items() if not k.startswith(prefix)}
    ignored = [k for k in state if k not in ours and k.startswith(_HEAD_PREFIXES)]
    for k in ignored:
        del state[k]
    return state, ignored


def load_pretrained_weights(model, directory, strict: bool = True) -> dict:
    """Load transformers weights into ``model`` in place; returns loading info (missing / unexpected / ignored).

    strict: unknown checkpoint keys, shape mismatches and missing encoder weights raise; missing
    pretraining heads (quantiser, projections, mask embedding) only warn, since encoder-only and CTC
    checkpoints do not have them.
    """
    state, ignored = convert_state_dict(read_weights(directory), model)
    ours = dict(model.state_dict())
    prefix = getattr(model, "base_model_prefix", "wav2vec2") + "."
    missing = [k for k in ours if k not in state]
    optional = [k for k in missing if k.startswith(_HEAD_PREFIXES) or
                (k.startswith(prefix) and k[len(prefix):].startswith(_HEAD_PREFIXES))]
    required = [k for k in missing if k not in optional]
    unexpected = [k for k in state if k not in ours]
    if strict and (required or unexpected):
        raise RuntimeError(f"loading {os.fspath(directory)!r} into {type(model).__name__}: "
                           f"missing keys {required}, unexpected keys {unexpected}")
    model.load_state_dict({k: v for k, v in state.items() if k in ours}, strict=False)
    if optional:
        warnings.warn(f"{type(model).__name__}: the checkpoint has no {optional}; these keep their fresh "
                      "initialisation", stacklevel=3)
    info = {"missing_keys": missing, "unexpected_keys": unexpected, "ignored_keys": ignored}
    model.loading_info = info
    return info


def from_pretrained(cls, path, seed=0, device="cpu", dtype=None, strict: bool = True):
    """Build ``cls`` from ``path/config.json`` and load its weights (see ``load_pretrained_weights``)."""
    config = Wav2Vec2Config.from_pretrained(path)
    model = cls(config, seed=seed)
    if dtype is not None:
        model.to(dtype=dtype)
    if device is not None and backend.normalize_device(device) != "cpu":
        model.to(device)
    load_pretrained_weights(model, path, strict=strict)
    return model


# ----------------------------------------------------------------------------------------------
# Writing


def export_state_dict(model, weight_norm_names: str = "legacy") -> dict:
    """Host copies of ``model``'s weights under transformers' names."""
    if weight_norm_names not in ("legacy", "parametrizations"):
        raise ValueError("weight_norm_names must be 'legacy' (weight_g/weight_v) or 'parametrizations'")
    out = {}
    for k, v in model.state_dict().items():
        key = to_parametrization_key(k) if weight_norm_names == "parametrizations" else k
        out[key] = np.ascontiguousarray(backend.to_numpy(v))
    return out


def save_pretrained(model, path, safe_serialization: bool = True, weight_norm_names: str = "legacy") -> None:
    """Write ``path/config.json`` and ``path/model.safetensors`` (or ``pytorch_model.bin``, needs torch)."""
    os.makedirs(path, exist_ok=True)
    config = model.config
    values = config.to_dict()
    values["architectures"] = [type(model).__name__]
    values["dtype"] = str(np.dtype(model.dtype))
    config_path = os.path.join(os.fspath(path), "config.json")

    def write_config(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(values, indent=2, sort_keys=True) + "\n")

    atomic_write(config_path, write_config)
    state = export_state_dict(model, weight_norm_names)
    if safe_serialization:
        from safetensors.numpy import save_file

        atomic_write(os.path.join(os.fspath(path), SAFE_WEIGHTS),
                      lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    else:
        torch = _torch()
        if torch is None:
            raise ImportError("safe_serialization=False writes pytorch_model.bin, which needs torch")
        tensors = {k: torch.from_numpy(v) for k, v in state.items()}
        atomic_write(os.path.join(os.fspath(path), TORCH_WEIGHTS), lambda tmp: torch.save(tensors, tmp))
