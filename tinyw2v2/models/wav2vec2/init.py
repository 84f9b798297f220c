"""Initialisers for ``reset_parameters``: each draws from an explicit NumPy generator on the host and writes the
values into a parameter (cast to its dtype, moved to its device explicitly), like ``torch.nn.init`` does in place.

The wav2vec 2.0 modules build their layers without drawing anything (``init=False``) and draw once, when the top
model calls ``reset_parameters(rng)``; every module initialises its own parameters and calls its children in a
fixed order, so one seed gives one set of weights. What each module draws, and why: docs/model.md.
"""
from __future__ import annotations

import numpy as np

from ... import backend


def copy_(param, values) -> None:
    """param = values (host values, cast to the parameter's dtype and moved to its device)."""
    param.data = backend.to_device(np.asarray(values, dtype=param.dtype), param.device)


def normal_(param, rng: np.random.Generator, std: float, mean: float = 0.0) -> None:
    """param ~ N(mean, std^2)."""
    copy_(param, rng.normal(mean, std, size=param.shape))


def uniform_(param, rng: np.random.Generator, low: float, high: float) -> None:
    """param ~ U[low, high)."""
    copy_(param, rng.uniform(low, high, size=param.shape))


def constant_(param, value: float) -> None:
    """param = value everywhere (no draw)."""
    copy_(param, np.full(param.shape, value))
