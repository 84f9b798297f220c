"""Files: atomic writes, .npz array archives with metadata, and one-file training checkpoints.

Everything tinyw2v2 writes goes through ``atomic_write``: the data goes to a temporary file in the same directory,
which is flushed, fsync'ed and renamed over the target with ``os.replace`` (then the directory is fsync'ed), so a
crash or a NaN never leaves a torn file and the last good version survives.

    save_arrays(path, {"w": w}, metadata={"step": 3});  arrays, meta = load_arrays(path)
    save_checkpoint(path, model, optimizer, {"config": ..., "step": 10})      # model + optimiser + trainer state
    state, optim_arrays, meta = read_checkpoint(path);  load_optimizer(optimizer, optim_arrays, meta)

Optimiser state is flattened in one way (``flatten_optimizer``): each moment array as ``"<i>.<key>"`` (i the
parameter's index in group order), every other value (step counts, hyper-parameters) in JSON metadata.
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
import zipfile

import numpy as np

from . import backend
from .tensor import Tensor

_METADATA_KEY = "__metadata__"
_MODEL, _OPTIM = "model.", "optim."


class CheckpointError(ValueError):
    """A file that is not a readable tinyw2v2 checkpoint (the message names the file)."""


# ----------------------------------------------------------------------------------------------
# atomic writes


def atomic_write(path, write) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then make it ``path`` atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (best effort: not every platform can open a directory)
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform dependent
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover - platform dependent
        pass
    finally:
        os.close(dir_fd)


def write_text(path, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


# ----------------------------------------------------------------------------------------------
# .npz archives


def as_array(value):
    """A raw array from a Tensor, an array (any device), a torch tensor or a number."""
    if isinstance(value, Tensor):
        return value.data
    if backend.is_array(value):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def save_arrays(path, arrays, metadata=None) -> None:
    """Write ``arrays`` (name -> array on any device, copied to the host explicitly) to the .npz ``path``
    atomically; ``metadata`` (a JSON string, or anything ``json.dumps`` takes) is stored under ``__metadata__``."""
    host = {}
    for name, a in arrays.items():
        if name == _METADATA_KEY:
            raise KeyError(f"{_METADATA_KEY!r} is reserved for the metadata")
        host[name] = backend.to_numpy(as_array(a))
    if metadata is not None:
        host[_METADATA_KEY] = np.array(metadata if isinstance(metadata, str) else json.dumps(metadata))

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **host)

    atomic_write(path, write)


def load_arrays(path):
    """Read an .npz written by ``save_arrays``: (ordered dict name -> host array, metadata or None).

    Metadata that is valid JSON is decoded (a dict, ...); any other string is returned as is. A missing file
    raises ``FileNotFoundError`` and an unreadable one ``CheckpointError``, both naming the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = collections.OrderedDict((name, z[name]) for name in z.files)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"checkpoint file {path!r} is corrupt or not an .npz checkpoint: {e}") from e
    metadata = arrays.pop(_METADATA_KEY, None)
    if metadata is not None:
        metadata = str(metadata[()])
        try:
            metadata = json.loads(metadata)
        except ValueError:
            pass
    return arrays, metadata


# ----------------------------------------------------------------------------------------------
# optimiser state and training checkpoints


def flatten_optimizer(optimizer) -> tuple:
    """(arrays, metadata): the optimiser's moments as ``{"<i>.<key>": array}`` and the rest as JSON-able metadata
    ``{"type", "param_groups", "steps", "scalars": {"<i>": {key: value}}}``."""
    sd = optimizer.state_dict()
    arrays, scalars = {}, {}
    for i, s in sd["state"].items():
        for key, value in s.items():
            if key in optimizer.ARRAY_KEYS:
                arrays[f"{i}.{key}"] = value
            else:
                scalars.setdefault(str(i), {})[key] = value
    return arrays, {"type": type(optimizer).__name__, "param_groups": sd["param_groups"], "steps": sd["steps"],
                    "scalars": scalars}


def unflatten_optimizer(arrays: dict, metadata: dict) -> dict:
    """The ``state_dict()`` that ``flatten_optimizer`` flattened."""
    state = {int(i): dict(s) for i, s in metadata["scalars"].items()}
    for name, a in arrays.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = a
    return {"state": state, "param_groups": metadata["param_groups"], "steps": metadata["steps"]}


def save_checkpoint(path, model, optimizer, metadata: dict) -> None:
    """One atomic .npz: the model's state dict (``model.*``), the optimiser's moments (``optim.*``) and the trainer's
    ``metadata`` (JSON) with the rest of the optimiser state under ``"optimizer"``."""
    arrays = {_MODEL + k: v for k, v in model.state_dict().items()}
    optim_arrays, optim_meta = flatten_optimizer(optimizer)
    arrays.update({_OPTIM + k: v for k, v in optim_arrays.items()})
    save_arrays(path, arrays, json.dumps(dict(metadata, optimizer=optim_meta)))


def read_checkpoint(path):
    """(model state dict, optimiser arrays, metadata) from a training checkpoint, with clear errors."""
    arrays, meta = load_arrays(path)
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{os.fspath(path)!r} is not a tinyw2v2 training checkpoint (no trainer metadata)")
    model_state = {k[len(_MODEL):]: v for k, v in arrays.items() if k.startswith(_MODEL)}
    optim_arrays = {k[len(_OPTIM):]: v for k, v in arrays.items() if k.startswith(_OPTIM)}
    return model_state, optim_arrays, meta


def load_optimizer(optimizer, optim_arrays: dict, meta: dict) -> None:
    """Restore the optimiser state of a training checkpoint read by ``read_checkpoint``."""
    optimizer.load_state_dict(unflatten_optimizer(optim_arrays, meta["optimizer"]))
