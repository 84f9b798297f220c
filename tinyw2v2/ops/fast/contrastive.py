"""The tuned duplicate test of the contrastive loss: ``ops.contrastive.duplicates_of_positive``, reading less.

``duplicates_of_positive`` gives the reference's answer (``tests/test_fast_ops.py``, ``tests/test_ops_contrastive.py``):
on the host only the (k, b, t) whose first feature already matches are compared in full, instead of the whole
(K, B, T, D) negatives array (as much memory traffic as the loss itself); on a device the reference's one
comparison (the data-dependent ``nonzero`` would be a sync point).
"""
from __future__ import annotations

from ... import backend
from ...backend import get_array_module
from .. import contrastive as reference
from ..dispatch import tuned


@tuned(reference.duplicates_of_positive)
def duplicates_of_positive(targets, negatives):
    """neg_is_pos = (targets[None] == negatives).all(-1): (K, B, T), comparing in full only the candidates."""
    if backend.is_device_array(negatives):
        return reference.duplicates_of_positive(targets, negatives)
    xp = get_array_module(targets, negatives)
    first = negatives[..., 0] == targets[None, ..., 0]         # (K, B, T): a necessary condition, cheap
    rows = xp.nonzero(first)                                   # (k, b, t) index arrays of the candidates
    same = (negatives[rows] == targets[rows[1:]]).all(axis=-1)  # (R, D) == (R, D) -> (R,)
    first[rows] = same
    return first
