"""Which ``Function`` an op runs: the reference one of its teaching file, or the tuned one of ``ops/fast/``.

Every op family has a reference ``Function`` in ``tinyw2v2/ops/<family>.py`` whose forward and backward are the
formulas of its docs page, line for line. Where speed needs more (cache blocks, fused chains, fewer temporaries,
other GEMM layouts), a tuned ``Function`` of the same name lives in ``tinyw2v2/ops/fast/<family>.py`` and registers
itself as the reference's tuned version (``@tuned(reference.LayerNorm)``); the public op chooses with one line::

    return pick(LayerNorm).apply(x, weight, bias, ...)

The tuned versions are the default. ``tests/test_fast_ops.py`` proves, for every case of the gradient-check
catalogue, that both give the same forward and backward in float64; the catalogue itself runs on both.

    import tinyw2v2 as tw
    with tw.reference_ops():           # everything inside runs the reference Functions (slower, same numbers)
        out = model(x)
    tw.use_reference_ops(True)         # the same switch, for the rest of the program
"""
from __future__ import annotations

import contextlib

_reference = False
_tuned: dict = {}          # reference Function -> its tuned version (filled by tinyw2v2/ops/fast/)


def reference_ops_enabled() -> bool:
    """True while ops run their reference Functions."""
    return _reference


def use_reference_ops(enabled: bool = True) -> None:
    """Switch every op to its reference Function (``True``) or back to the tuned one (``False``)."""
    global _reference
    _reference = bool(enabled)


@contextlib.contextmanager
def reference_ops(enabled: bool = True):
    """Context manager: inside it every op runs its reference Function (``enabled=False``: the tuned ones)."""
    previous = _reference
    use_reference_ops(enabled)
    try:
        yield
    finally:
        use_reference_ops(previous)


def tuned(reference):
    """Class decorator of a tuned Function: ``@tuned(norm.LayerNorm) class LayerNorm(norm.LayerNorm): ...`` makes it
    the version ``pick(norm.LayerNorm)`` runs."""
    def register(cls):
        _tuned[reference] = cls
        return cls

    return register


def pick(reference):
    """The Function to run for ``reference``: its tuned version, unless the reference ops are switched on (or it
    has none)."""
    return reference if _reference else _tuned.get(reference, reference)
