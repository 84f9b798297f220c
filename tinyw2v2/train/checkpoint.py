"""One-file training checkpoints: model weights, optimiser state and trainer metadata in one .npz.

Written atomically (``nn.save_arrays``: temporary file, fsync, rename), so a crash or a NaN never leaves
a torn file and the last good checkpoint survives.
"""
from __future__ import annotations

import json
import os

from .. import nn

_MODEL, _OPTIM = "model.", "optim."


def save_checkpoint(path, model, optimizer, metadata: dict) -> None:
    arrays = {_MODEL + k: v for k, v in model.state_dict().items()}
    sd = optimizer.state_dict()
    scalars = {}
    for i, s in sd["state"].items():
        for key, value in s.items():
            if key in optimizer._ARRAY_KEYS:
                arrays[f"{_OPTIM}{i}.{key}"] = value
            else:
                scalars.setdefault(str(i), {})[key] = value
    meta = dict(metadata, optimizer={"param_groups": sd["param_groups"], "steps": sd["steps"], "scalars": scalars})
    nn.save_arrays(path, arrays, json.dumps(meta))


def read_checkpoint(path):
    """(model state dict, optimiser arrays, metadata) from a checkpoint file, with clear errors."""
    arrays, meta = nn.load_arrays(path)
    if not isinstance(meta, dict) or "config" not in meta:
        raise nn.CheckpointError(f"{os.fspath(path)!r} is not a tinyw2v2 training checkpoint (no trainer metadata)")
    model_state = {k[len(_MODEL):]: v for k, v in arrays.items() if k.startswith(_MODEL)}
    optim_arrays = {k[len(_OPTIM):]: v for k, v in arrays.items() if k.startswith(_OPTIM)}
    return model_state, optim_arrays, meta


def load_optimizer(optimizer, optim_arrays: dict, meta: dict) -> None:
    info = meta["optimizer"]
    state = {int(i): dict(s) for i, s in info["scalars"].items()}
    for name, a in optim_arrays.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = a
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"], "steps": info["steps"]})
