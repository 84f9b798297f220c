"""``TUNING``: the knobs that choose between code paths inside the tuned ops (cache-block sizes, GEMM layouts, when a
softmax may skip its max-shift), and ``tuning(**knobs)`` to change some of them inside a ``with`` block. Their
defaults were measured on the CPU (docs/performance.md); tests set them to run every path on small inputs."""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass


@dataclass
class Tuning:
    # conv1d: "auto" multiplies long batched NumPy outputs one (batch, group) block at a time ("batch_major") and
    # folds the batch into the GEMM's columns otherwise ("folded"); the kernel taps are turned into columns in
    # chunks of about conv_chunk_elements, each summing over at least conv_min_reduction (channel, tap) pairs
    conv_layout: str = "auto"
    conv_long_output: int = 512
    conv_chunk_elements: int = 1 << 24
    conv_min_reduction: int = 512
    # layer_norm / group_norm: rows are normalised in blocks of about this many elements (the passes over one
    # block stay in the cache)
    norm_block_elements: int = 1 << 17
    # float32 GELU: elements per cache block
    gelu_block_elements: int = 1 << 16
    # softmax and attention on NumPy: skip the max-shift when every score is known to lie within +-60
    skip_bounded_shift: bool = True
    # on a device (CuPy, emulated): GELU, LayerNorm, GroupNorm, AdamW and gradient clipping run as the fused
    # kernels of ops/fast/kernels.py; False (or TINYW2V2_FUSED=0 in the environment) runs their unfused array code
    fused_kernels: bool = os.environ.get("TINYW2V2_FUSED", "1") != "0"


TUNING = Tuning()


@contextlib.contextmanager
def tuning(**changes):
    """Context manager: change some ``TUNING`` knobs inside it (unknown names raise ``TypeError``)."""
    names = {f.name for f in dataclasses.fields(Tuning)}
    unknown = set(changes) - names
    if unknown:
        raise TypeError(f"unknown tuning knobs {sorted(unknown)}; known: {sorted(names)}")
    previous = {k: getattr(TUNING, k) for k in changes}
    for k, v in changes.items():
        setattr(TUNING, k, v)
    try:
        yield TUNING
    finally:
        for k, v in previous.items():
            setattr(TUNING, k, v)
