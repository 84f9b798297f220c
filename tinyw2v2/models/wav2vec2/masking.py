"""Span masking and negative sampling for the contrastive task: pure NumPy, on the host.

Both run on small integer/boolean arrays before the forward pass (as transformers does them in the data
collator and fairseq on the CPU), draw from an explicit ``numpy.random.Generator``, and return host
arrays; the model moves them to its device once.

``compute_mask_indices`` follows fairseq's ``compute_mask_indices`` (``mask_type="static"``,
``no_overlap=False``), in its current (HEAD) form: for each utterance of ``sz`` valid frames,

    num_mask = max(min_masks, floor(mask_prob * sz / mask_length + u)),   u ~ U[0, 1) drawn per row
    starts   = num_mask distinct values from {0, ..., sz - mask_length - 1}
    masked   = union of [start, start + mask_length)                       (overlapping spans merge)

so the last valid frame is never masked; with ``require_same_masks`` every row then keeps a uniformly
random subset of exactly min_b(count_b) of its masked frames (fragmenting spans, as fairseq does).
fairseq's special case for very short rows (shrinking the start range, which can mask a whole row and
then raise) is replaced by an upfront error: every row needs at least mask_length + max_num_mask + 1
frames, where max_num_mask = max(min_masks, floor(mask_prob * sz / mask_length + 1)).

``sample_negative_indices`` follows transformers' ``_sample_negative_indices`` (= fairseq's
``sample_negatives`` with ``cross_sample_negatives=0``): each masked frame gets K indices drawn uniformly,
with replacement, from the *other* masked frames of its own utterance; indices point into the flattened
(B*T) frames; unmasked frames get their row's first frame (b*T), which the loss ignores.
"""
from __future__ import annotations

import numpy as np

from ... import backend


def _host(a):
    """A host copy of an array given on any device (Tensors too): masks are built on the host."""
    a = getattr(a, "data", a)
    return backend.to_numpy(a) if backend.is_array(a) else np.asarray(a)


def _rng(rng):
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    return rng


def _lengths(batch_size: int, seq_len: int, lengths=None, padding_mask=None) -> np.ndarray:
    """Valid frames per row, from ``lengths`` (B,) or a frame-level ``padding_mask`` (B, T) (True = padded)."""
    if lengths is not None and padding_mask is not None:
        raise ValueError("give either lengths or padding_mask, not both")
    if padding_mask is not None:
        padding_mask = _host(padding_mask).astype(bool)
        if padding_mask.shape != (batch_size, seq_len):
            raise ValueError(f"padding_mask has shape {padding_mask.shape}, expected {(batch_size, seq_len)}")
        return seq_len - padding_mask.sum(axis=1).astype(np.int64)
    if lengths is None:
        return np.full(batch_size, seq_len, dtype=np.int64)
    lengths = _host(lengths).astype(np.int64).reshape(-1)  # (B,)
    if lengths.shape != (batch_size,) or (lengths < 0).any() or (lengths > seq_len).any():
        raise ValueError(f"lengths must be {batch_size} integers in [0, {seq_len}], got {lengths}")
    return lengths


def min_frames_to_mask(mask_prob: float, mask_length: int, min_masks: int, num_frames: int) -> int:
    """Fewest valid frames a row of ``num_frames`` may have: mask_length + max possible span count + 1."""
    max_num_mask = max(min_masks, int(mask_prob * num_frames / mask_length + 1))
    return mask_length + max_num_mask + 1


def compute_mask_indices(shape, mask_prob: float, mask_length: int, *, min_masks: int = 2, lengths=None,
                         padding_mask=None, require_same_masks: bool = True, rng=None) -> np.ndarray:
    """Random time-span mask (B, T) bool with fairseq semantics (see the module docstring).

    shape: (B, T) frames. lengths: optional (B,) valid frames per row (right padding), or padding_mask
    (B, T) bool, True = padded; padded frames are never masked. rng: a ``numpy.random.Generator`` (or a seed).
    Raises ``ValueError`` when a row is too short to be masked with a frame left over.
    """
    batch_size, seq_len = (int(s) for s in shape)
    if mask_length < 1:
        raise ValueError(f"mask_length must be at least 1, got {mask_length}")
    rng = _rng(rng)
    sz = _lengths(batch_size, seq_len, lengths, padding_mask)  # (B,)
    mask = np.zeros((batch_size, seq_len), dtype=bool)
    if batch_size == 0 or mask_prob <= 0 and min_masks <= 0:
        return mask

    # number of spans per row, with probabilistic rounding (a fresh u per row)
    u = rng.random(batch_size)
    num_mask = np.maximum(min_masks, np.floor(mask_prob * sz / mask_length + u)).astype(np.int64)  # (B,)
    need = np.array([min_frames_to_mask(mask_prob, mask_length, min_masks, int(n)) for n in sz])
    short = np.nonzero((sz < need) & (num_mask > 0))[0]
    if short.size:
        b = int(short[0])
        raise ValueError(
            f"input too short to mask: row {b} has {int(sz[b])} valid frames, but mask_length={mask_length} "
            f"with mask_prob={mask_prob} and min_masks={min_masks} needs at least {int(need[b])} frames "
            f"(use longer audio or a smaller mask_length)")

    # distinct starts in {0, ..., sz - mask_length - 1}: the num_mask smallest of iid random keys
    num_starts = np.maximum(sz - mask_length, 0)  # (B,)
    max_starts = int(num_starts.max())
    if max_starts > 0:
        keys = rng.random((batch_size, max_starts))
        keys[np.arange(max_starts)[None, :] >= num_starts[:, None]] = np.inf   # outside the start range
        order = np.argsort(keys, axis=1, kind="stable")                        # (B, max_starts)
        take = np.arange(max_starts)[None, :] < num_mask[:, None]              # first num_mask per row
        rows, slots = np.nonzero(take)
        starts = order[rows, slots]                                            # (S,) one entry per span
        span_rows = np.repeat(rows, mask_length)                               # (S*mask_length,)
        span_cols = (starts[:, None] + np.arange(mask_length)[None, :]).reshape(-1)  # (S, ml) -> (S*ml,)
        mask[span_rows, span_cols] = True                                      # overlaps merge

    if require_same_masks and batch_size > 1:
        counts = mask.sum(axis=1)
        target = int(counts.min())
        if (counts > target).any():
            # keep a uniformly random subset of exactly `target` masked frames in every row
            keys = np.where(mask, rng.random(mask.shape), np.inf)
            rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
            mask &= rank < target
    return mask


def sample_negative_indices(shape, num_negatives: int, mask_time_indices=None, rng=None) -> np.ndarray:
    """Negative indices (B, T, K) int64 into the flattened B*T frames, from the other masked frames.

    For masked frame t of row b with rank r among the row's n masked frames: draw j uniformly from
    {0, ..., n-2}, use j + (j >= r) (so never the frame itself, and uniform over the other n-1), then map
    the rank back to its frame and add b*T. Unmasked frames get b*T (ignored by the loss). A row with
    exactly one masked frame has no negative to draw: ``ValueError``.
    """
    batch_size, seq_len = (int(s) for s in shape)
    rng = _rng(rng)
    if mask_time_indices is None:
        mask = np.ones((batch_size, seq_len), dtype=bool)
    else:
        mask = _host(mask_time_indices).astype(bool)
        if mask.shape != (batch_size, seq_len):
            raise ValueError(f"mask_time_indices has shape {mask.shape}, expected {(batch_size, seq_len)}")
    counts = mask.sum(axis=1)  # (B,)
    lonely = np.nonzero(counts == 1)[0]
    if lonely.size:
        raise ValueError(f"row {int(lonely[0])} has a single masked frame: negatives need at least 2 masked "
                         "frames per utterance")
    offsets = (np.arange(batch_size, dtype=np.int64) * seq_len)[:, None, None]  # (B, 1, 1)
    out = np.broadcast_to(offsets, (batch_size, seq_len, num_negatives)).copy()  # (B, T, K)
    rows, cols = np.nonzero(mask)                                      # masked frames, row-major
    if rows.size == 0 or num_negatives == 0:
        return out
    rank = (np.cumsum(mask, axis=1) - 1)[rows, cols]                   # (N,) rank within its row
    positions = np.argsort(~mask, axis=1, kind="stable")               # (B, T): masked frames first, in order
    high = (counts[rows] - 1)[:, None]                                 # (N, 1) other masked frames
    j = rng.integers(0, high, size=(rows.size, num_negatives))         # (N, K) in [0, n-2]
    j += j >= rank[:, None]                                            # skip the frame itself
    frames = positions[rows[:, None], j]                               # (N, K) absolute frame index
    out[rows, cols] = frames + rows[:, None] * seq_len
    return out


def sample_pretraining_targets(config, shape, rng, lengths=None, mask_time_indices=None):
    """The random part of one pretraining step, drawn on the host: (mask (B, T) bool, negatives (B, T, K) int64).

    The span mask uses the config's ``mask_time_prob``, ``mask_time_length``, ``mask_time_min_masks`` and
    ``mask_time_require_same_masks``; every masked frame gets ``num_negatives`` indices of other masked frames of
    its utterance (flat b*T + t, transformers' convention). ``lengths`` (B,): valid frames per row, or None.
    With ``mask_time_indices`` (B, T) given, only the negatives are drawn, for that mask.
    The training loop calls this (as transformers' data collator does) and passes both to the model's forward;
    the forward calls it itself for what it is not given.
    """
    if mask_time_indices is None:
        mask = sample_time_mask(config, shape, rng, lengths)
    else:
        mask = _host(mask_time_indices).astype(bool)
    return mask, sample_negative_indices(shape, config.num_negatives, mask, rng)


def host_targets(mask_time_indices, sampled_negative_indices, shape):
    """Host copies of a forward's targets, checked: mask (B, T) bool and negatives (B, T, K) int64, each None when
    not given (negatives without a mask are refused: the loss covers masked frames)."""
    mask = negatives = None
    if mask_time_indices is not None:
        mask = _host(mask_time_indices).astype(bool)
        if mask.shape != tuple(shape):
            raise ValueError(f"mask_time_indices has shape {mask.shape}, expected {tuple(shape)}")
    if sampled_negative_indices is not None:
        if mask is None:
            raise ValueError("sampled_negative_indices needs mask_time_indices (the loss covers masked frames)")
        negatives = _host(sampled_negative_indices).astype(np.int64)
        if negatives.ndim != 3 or negatives.shape[:2] != tuple(shape):
            raise ValueError(f"sampled_negative_indices has shape {negatives.shape}, expected {tuple(shape)} + (K,)")
    return mask, negatives


def sample_time_mask(config, shape, rng, lengths=None) -> np.ndarray:
    """The span mask (B, T) bool with the config's settings (mask_time_prob, _length, _min_masks,
    _require_same_masks), drawn from ``rng`` on the host."""
    c = config
    return compute_mask_indices(shape, c.mask_time_prob, c.mask_time_length, min_masks=c.mask_time_min_masks,
                                lengths=lengths, require_same_masks=c.mask_time_require_same_masks, rng=rng)
