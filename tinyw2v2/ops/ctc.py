"""Connectionist temporal classification (CTC) loss, with a hand-written backward from the alpha-beta posteriors.

ctc_loss:       -log p(l | x), p the sum over every alignment of the label sequence l with the input frames
                (Graves et al. 2006); torch.nn.functional.ctc_loss semantics.
ctc_posteriors: gamma[n, t, s], the posterior probability that the alignment is in state s of the blank-extended
                labels at frame t (the alignment lattice; no gradient). The same alpha-beta pass as the loss.

Derivation: docs/ctc.md. Notation: T frames (the longest input), N batch, C classes (blank included),
S the longest target, L = 2S + 1 the length of the blank-extended label sequence l' = (b, l1, b, l2, ..., lS, b),
Tn = input_lengths[n], Sn = target_lengths[n], Ln = 2Sn + 1. Everything is in log space; "-inf" is the
finite sentinel NEG = -1e30 (exp(NEG) = 0 in float32 and float64), so that sums and differences of
impossible entries never make NaN.
The reference ``CTCLoss`` below is the page's formulas: the alpha recursion over the frames on (N, L) arrays, the
beta recursion the same way backwards, the per-utterance lengths as masks. The tuned one (the default) is
``ops.fast.ctc.CTCLoss``: alpha and beta in one flat recursion over 2N rows, virtual frames instead of masks, and
a no-grad forward that stops halfway.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..tensor import Function, Tensor, no_grad
from .dispatch import pick
from .shape import reshape

NEG = -1e30         # log(0): finite, so that NEG + NEG - NEG stays NEG (no inf - inf = NaN)
IMPOSSIBLE = -1e29  # a log-likelihood below this is log(0): no alignment exists


def extend_labels(targets, target_lengths, blank, xp):
    """The blank-extended labels and where a skip (s-2 -> s) is allowed.

    ext[n, 2j+1] = targets[n, j] for j < Sn, blank everywhere else               (N, L)
    skip[n, s]   = ext[n, s] != blank and ext[n, s] != ext[n, s-2]  (s >= 2)      (N, L)
    """
    N, S = targets.shape
    L = 2 * S + 1
    j = xp.arange(S)  # (S,)
    labels = xp.where(j[None, :] < target_lengths[:, None], targets, blank)  # (N, S): padding -> blank
    ext = xp.full((N, L), blank, dtype=xp.int64)  # (N, L)
    ext[:, 1::2] = labels
    skip = xp.zeros((N, L), dtype=bool)  # (N, L)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return ext, skip


def lattice(log_probs, targets, input_lengths, target_lengths, blank):
    """What both CTC forwards start from: the blank-extended labels and their skips (``extend_labels``), their
    lengths and the real frames.

    ext, skip (N, L);  ext_len[n] = Ln = 2 Sn + 1  (N,);  frame[t, n] = t < Tn  (T, N)
    """
    xp = get_array_module(log_probs)
    ext, skip = extend_labels(targets, target_lengths, blank, xp)  # (N, L), (N, L)
    ext_len = 2 * target_lengths + 1  # (N,) Ln
    frame = xp.arange(log_probs.shape[0])[:, None] < input_lengths[None, :]  # (T, N): real frames t < Tn
    return ext, skip, ext_len, frame


def _shift(a, k):
    """out[n, s] = a[n, s - k] where 0 <= s - k < L, else NEG: k > 0 reads k states to the left, k < 0 to the right."""
    xp = get_array_module(a)
    L = a.shape[1]
    out = xp.full_like(a, NEG)  # (N, L)
    if k >= 0:
        out[:, k:] = a[:, :max(L - k, 0)]
    else:
        out[:, :max(L + k, 0)] = a[:, -k:]
    return out


def _logsumexp3(z0, z1, z2):
    """logsumexp(z0, z1, z2) elementwise: m + log(exp(z0 - m) + exp(z1 - m) + exp(z2 - m)), m = max(z0, z1, z2)."""
    xp = get_array_module(z0)
    m = xp.maximum(xp.maximum(z0, z1), z2)
    return m + xp.log(xp.exp(z0 - m) + xp.exp(z1 - m) + xp.exp(z2 - m))


def reduce_losses(logp, target_lengths, reduction: str, zero_infinity: bool, dtype):
    """(out, scale): the per-utterance losses -log p (N,) (+inf where no alignment exists, 0 with zero_infinity)
    reduced like torch: "none" (N,), "sum", or "mean" = sum_n loss_n / (N max(S_n, 1)); ``scale`` (N,) is the
    mean's 1 / (N max(S_n, 1)) (None otherwise), which the backward applies too."""
    xp = get_array_module(logp)
    N = logp.shape[0]
    possible = logp > IMPOSSIBLE  # (N,)
    loss = xp.where(possible, -logp, xp.inf).astype(dtype)  # (N,)
    if zero_infinity:
        loss = xp.where(possible, loss, 0).astype(dtype)
    if reduction == "none":
        return loss, None
    if reduction == "sum":
        return loss.sum(), None
    if reduction == "mean":
        scale = (1.0 / (xp.maximum(target_lengths, 1) * N)).astype(dtype)  # (N,): 1 / (N max(Sn, 1))
        return (loss * scale).sum(), scale
    raise ValueError(f"ctc_loss: reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


def logsumexp_states(x):
    """log sum_s exp(x[n, s]): (N, L) -> (N,), shifted by the row max (a row of NEG gives about NEG)."""
    xp = get_array_module(x)
    m = x.max(axis=1, keepdims=True)  # (N, 1)
    return (m + xp.log(xp.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]  # (N, 1) -> (N,)


class CTCLoss(Function):
    """loss[n] = -log p(l_n | x_n),  p = sum over alignments pi (length Tn, collapsing to l_n) of prod_t y[t, n, pi_t]

    log_probs (T, N, C) -> loss (N,), reduced by ``reduction``; targets padded (N, S) int, lengths (N,) int.
    ext, skip (N, L), ext_len (N,) and frame (T, N) from ``lattice``; E[t, n, s] = log_probs[t, n, ext[n, s]] (T, N, L).

    forward (docs/ctc.md, sections 2-3), all in log space, one (N, L) array per frame:
        alpha[-1, n, s] = 0 if s = 0 else NEG                                   (the virtual start)
        alpha[t, n, s]  = E[t, n, s] + logsumexp(alpha[t-1, n, s], alpha[t-1, n, s-1],
                                                 alpha[t-1, n, s-2] + mask[n, s])        for t < Tn     (3)
                          NEG                                                            for t >= Tn
                          (mask = 0 where skip[n, s], NEG elsewhere)
        log p[n]        = logsumexp(alpha[Tn-1, n, Ln-1], alpha[Tn-1, n, Ln-2])   (alpha[-1] if Tn = 0)   (2)
        beta[Tn, n, s]  = 0 if s = Ln - 1 else NEG                              (the virtual end)
        beta[t, n, s]   = E[t, n, s] + logsumexp(beta[t+1, n, s], beta[t+1, n, s+1],
                                                 beta[t+1, n, s+2] + mask[n, s+2])       for t < Tn     (4)
                          NEG                                                            for t >= Tn
        loss[n]         = -log p[n], inf where log p[n] < IMPOSSIBLE (0 with zero_infinity)
    backward (section 4):
        gamma[t, n, s]      = exp(alpha + beta - E - log p[n])   the posterior of state s at frame t  (T, N, L)
        dlog_probs[t, n, c] = -g[n] * sum_{s: ext[n, s] = c} gamma[t, n, s]  for t < Tn, else 0    (T, N, C)
    where g[n] is the upstream gradient of loss[n] (after the reduction's 1/N and 1/max(Sn, 1)), and 0 for an
    impossible sequence (log p[n] is replaced by 0 there, so gamma is exp(about NEG) = 0, not NaN).
    This is the derivative with respect to log_probs as free inputs. torch's native kernel returns
    exp(log_probs) * g[n] more (for t < Tn): the same gradient once it goes through log_softmax, whose
    backward removes exactly that term (docs/ctc.md, section 5).
    Impossible alignments: loss = inf (0 with zero_infinity) and a zero gradient (torch gives NaN there
    unless zero_infinity).
    Saved: alpha, beta, E (T, N, L), ext (N, L), frame (T, N), scale (N,) or None, logp, possible (N,), C.
    The tuned version is ``ops.fast.ctc.CTCLoss``.
    """

    def forward(self, log_probs, targets=None, input_lengths=None, target_lengths=None, blank=0,
                reduction="mean", zero_infinity=False):
        T, N, C = log_probs.shape
        ext, skip, ext_len, frame = lattice(log_probs, targets, input_lengths, target_lengths, blank)
        xp, dtype, L = get_array_module(log_probs), log_probs.dtype, ext.shape[1]
        n_idx = xp.arange(N)  # (N,)
        E = log_probs[:, n_idx[:, None], ext]  # (T, N, C) -> (T, N, L): E[t, n, s] = log_probs[t, n, ext[n, s]]
        E = xp.maximum(E, NEG)  # log(0) = -inf from the caller becomes the finite NEG
        mask = xp.where(skip, 0, NEG).astype(dtype)  # (N, L): mask[n, s] of (3)
        mask_next = _shift(mask, -2)  # (N, L): mask_next[n, s] = mask[n, s+2], the skip s -> s+2 of (4)
        s_idx = xp.arange(L)[None, :]  # (1, L)
        final = (s_idx == ext_len[:, None] - 1) | (s_idx == ext_len[:, None] - 2)  # (N, L): states Ln-1, Ln-2

        # alpha: forwards over the frames; each sequence's last real alpha gives log p (2)
        start = xp.full((N, L), NEG, dtype=dtype)  # (N, L): alpha[-1], log 1 in state 0
        start[:, 0] = 0
        alpha = xp.full((T, N, L), NEG, dtype=dtype)  # (T, N, L)
        prev, last = start, start
        for t in range(T):
            a = E[t] + _logsumexp3(prev, _shift(prev, 1), _shift(prev, 2) + mask)  # (N, L): (3)
            real = frame[t][:, None]  # (N, 1)
            alpha[t] = xp.where(real, a, NEG)
            last = xp.where(real, a, last)  # alpha[Tn-1] once frame t = Tn-1 is past
            prev = alpha[t]
        logp = logsumexp_states(xp.where(final, last, NEG))  # (N,): log(alpha[Tn-1, Ln-1] + alpha[Tn-1, Ln-2])
        out, scale = reduce_losses(logp, target_lengths, reduction, zero_infinity, dtype)
        possible = logp > IMPOSSIBLE  # (N,)

        if self.recording:
            # beta: backwards over the frames, from the virtual end beta[Tn] of each sequence (4)
            end = xp.full((N, L), NEG, dtype=dtype)  # (N, L): beta[Tn], log 1 in the final blank Ln - 1
            end[n_idx, ext_len - 1] = 0
            beta = xp.full((T, N, L), NEG, dtype=dtype)  # (T, N, L)
            nxt = end
            for t in reversed(range(T)):
                b = E[t] + _logsumexp3(nxt, _shift(nxt, -1), _shift(nxt, -2) + mask_next)  # (N, L): (4)
                real = frame[t][:, None]  # (N, 1)
                beta[t] = xp.where(real, b, NEG)
                nxt = xp.where(real, b, end)  # frames t >= Tn: the frame after t - 1 is still the virtual end
            self.keep(alpha, beta, E, ext, frame, scale, logp, possible, C)
        return out

    def keep(self, alpha, beta, E, ext, frame, scale, logp, possible, C):
        """Save what ``posteriors`` and the backward read (the engine frees it after the backward); log p[n] is
        kept as 0 where the sequence is impossible, so that gamma is exp(about NEG) = 0 there, not NaN."""
        xp = get_array_module(logp)
        self.alpha, self.beta, self.E, self.ext, self.frame, self.scale = alpha, beta, E, ext, frame, scale
        self.logp = xp.where(possible, logp, 0).astype(E.dtype)  # (N,)
        self.possible = possible
        self.C = C
        self._free = ("alpha", "beta", "E", "ext", "frame", "scale", "logp", "possible")

    def posteriors(self):
        """gamma[t, n, s] = exp(alpha + beta - E - log p[n]) (T, N, L), after a recording forward.

        The posterior of state s at frame t: sums to 1 over s on real frames t < Tn, 0 on padding frames
        t >= Tn and in padded states s >= Ln, and about 0 everywhere for an impossible sequence.
        """
        xp = get_array_module(self.E)
        return xp.exp(self.alpha + self.beta - self.E - self.logp[None, :, None])  # (N,) -> (1, N, 1)

    def backward(self, g):
        xp = get_array_module(g)
        N = self.E.shape[1]
        gamma = self.posteriors()  # (T, N, L)
        onehot = (self.ext[:, :, None] == xp.arange(self.C)[None, None, :]).astype(g.dtype)  # (N, L, C)
        per_class = xp.matmul(gamma.transpose(1, 0, 2), onehot)  # (N, T, L) @ (N, L, C) -> (N, T, C)
        per_class = per_class.transpose(1, 0, 2)  # (N, T, C) -> (T, N, C): sum over the states s emitting c
        gn = xp.broadcast_to(g, (N,)) if g.ndim == 0 else g  # (N,): the upstream of each loss[n]
        if self.scale is not None:
            gn = gn * self.scale
        w = -(gn * self.possible) * self.frame  # (T, N): -g[n] on real frames of possible sequences, else 0
        return (per_class * w[:, :, None]).astype(g.dtype)  # (T, N, C) * (T, N, 1)

    @classmethod
    def alignment_posteriors(cls, log_probs, targets, input_lengths, target_lengths, blank=0):
        """gamma (T, N, L) of one forward with every frame kept (as for a backward), 0 on padding frames t >= Tn
        and for impossible sequences. Arrays in and out: log_probs (T, N, C), targets (N, S), lengths (N,)."""
        fn = cls()
        fn.recording = True  # keep alpha and beta at every frame
        fn.forward(log_probs, targets=targets, input_lengths=input_lengths, target_lengths=target_lengths,
                   blank=blank, reduction="none")
        gamma = fn.posteriors()  # (T, N, L)
        return gamma * (fn.frame & fn.possible[None, :])[:, :, None]  # (T, N) -> (T, N, 1)


def _as_int_array(x, name):
    """Lengths and targets: Tensor, array, list or int -> an int64 array (host arrays stay on the host)."""
    if isinstance(x, Tensor):
        x = x.data
    if backend.is_array(x):
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"ctc_loss: {name} must hold integers, got {x.dtype}")
        return x.astype(np.int64) if x.dtype != np.int64 else x
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"ctc_loss: {name} must hold integers, got {a.dtype}")
    return a.astype(np.int64)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """Like ``torch.nn.functional.ctc_loss``: the CTC negative log-likelihood of ``targets`` given ``log_probs``.

    log_probs: (T, N, C) log-probabilities (log_softmax over C), or (T, C) for one unbatched sequence.
    targets: (N, S) padded (entries past target_lengths[n] ignored) or 1-D, the N targets concatenated;
        labels in [0, C), never ``blank``. input_lengths, target_lengths: (N,) ints (arrays, lists or Tensors),
        input_lengths[n] <= T, target_lengths[n] <= S.
    reduction: 'none' -> (N,) losses; 'sum'; 'mean' -> mean over n of loss[n] / max(target_lengths[n], 1).
    zero_infinity: impossible alignments (input too short for the target and its repeats) give loss 0
        instead of inf; their gradient is 0 either way.
    The gradient is d loss / d log_probs (docs/ctc.md); it equals torch's after a log_softmax.
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"ctc_loss: reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    log_probs, targets, input_lengths, target_lengths, unbatched = _prepare(
        log_probs, targets, input_lengths, target_lengths, blank, "ctc_loss")
    out = pick(CTCLoss).apply(log_probs, targets=targets, input_lengths=input_lengths, target_lengths=target_lengths,
                        blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    if unbatched and reduction == "none":
        out = reshape(out, ())
    return out


def ctc_posteriors(log_probs, targets, input_lengths, target_lengths, blank=0):
    """The CTC alignment lattice: gamma[n, t, s] = P(state s at frame t | l_n, x_n), no gradient.

    Same inputs as ``ctc_loss``. State s indexes the blank-extended labels l' = (b, l1, b, l2, ..., lSn, b)
    (``ext[n, 2j+1] = targets[n, j]``, blank elsewhere), and

        gamma[n, t, s] = alpha_t(s) beta_t(s) / (y_t(l'_s) p(l_n | x_n))          (docs/ctc.md, eq. 7)

    the share of the total alignment probability carried by the walks that sit in state s at frame t. It comes
    from the same alpha-beta recursion as the loss (``CTCLoss.alignment_posteriors``, from the ``posteriors`` that
    the backward uses), and -sum over the states emitting class c of gamma is the loss's gradient with respect
    to log_probs[t, n, c].

    Returns an array (not a Tensor) on log_probs' device: (N, T, L) with L = 2 S + 1, or (T, 2 Sn + 1) for
    unbatched (T, C) input. Each real frame t < input_lengths[n] sums to 1 over s; padding frames, padded
    states s >= 2 Sn + 1 and every entry of an impossible sequence (no alignment exists) are 0.
    """
    with no_grad():
        log_probs, targets, input_lengths, target_lengths, unbatched = _prepare(
            log_probs, targets, input_lengths, target_lengths, blank, "ctc_posteriors")
    gamma = pick(CTCLoss).alignment_posteriors(log_probs.data, targets, input_lengths, target_lengths, blank)
    xp = get_array_module(gamma)
    gamma = xp.ascontiguousarray(gamma.transpose(1, 0, 2))  # (T, N, L) -> (N, T, L)
    return gamma[0] if unbatched else gamma


def _prepare(log_probs, targets, input_lengths, target_lengths, blank, name):
    """Check and normalise ctc_loss's inputs: (log_probs (T, N, C) Tensor, targets (N, S), input_lengths (N,),
    target_lengths (N,) int64 arrays on log_probs' device, unbatched)."""
    if not isinstance(log_probs, Tensor):
        log_probs = Tensor(log_probs, _copy=False)
    if log_probs.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: log_probs must be float32 or float64, got {log_probs.dtype}")
    unbatched = log_probs.ndim == 2
    if unbatched:  # (T, C) -> (T, 1, C)
        log_probs = reshape(log_probs, (log_probs.shape[0], 1, log_probs.shape[1]))
        targets = _as_int_array(targets, "targets").reshape(1, -1)  # (S,) -> (1, S)
        input_lengths = _as_int_array(input_lengths, "input_lengths").reshape(1)
        target_lengths = _as_int_array(target_lengths, "target_lengths").reshape(1)
    if log_probs.ndim != 3:
        raise ValueError(f"{name}: log_probs must be (T, N, C) or (T, C), got {log_probs.shape}")
    T, N, C = log_probs.shape
    if T < 1:
        raise ValueError(f"{name}: log_probs has no frames (T = 0)")
    if not 0 <= blank < C:
        raise ValueError(f"{name}: blank {blank} is not a class of C = {C}")
    targets = _as_int_array(targets, "targets")
    input_lengths = _as_int_array(input_lengths, "input_lengths").reshape(-1)
    target_lengths = _as_int_array(target_lengths, "target_lengths").reshape(-1)
    if input_lengths.shape != (N,) or target_lengths.shape != (N,):
        raise ValueError(f"{name}: input_lengths and target_lengths must have N = {N} entries, "
                         f"got {tuple(input_lengths.shape)} and {tuple(target_lengths.shape)}")
    device = log_probs.device
    if targets.ndim == 1:  # concatenated -> padded (N, S); needs the lengths on the host (a sync if on a device)
        lengths = backend.to_numpy(target_lengths)
        if targets.shape[0] != lengths.sum():
            raise ValueError(f"{name}: 1-D targets hold {targets.shape[0]} labels, "
                             f"target_lengths sum to {lengths.sum()}")
        S = int(lengths.max()) if N else 0
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (N,)
        index = starts[:, None] + np.minimum(np.arange(S)[None, :], np.maximum(lengths[:, None] - 1, 0))  # (N, S)
        index = backend.to_device(np.minimum(index, max(targets.shape[0] - 1, 0)), backend.device_of(targets))
        targets = targets[index] if targets.shape[0] else backend.get_array_module(targets).zeros((N, S), np.int64)
    elif targets.ndim != 2 or targets.shape[0] != N:
        raise ValueError(f"{name}: targets must be (N, S) padded or 1-D concatenated, got {tuple(targets.shape)}")
    S = targets.shape[1]
    for what, a in (("targets", targets), ("input_lengths", input_lengths), ("target_lengths", target_lengths)):
        if isinstance(a, np.ndarray):  # host data is checked here; device data is trusted (a check would sync)
            _check_host(what, a, T, S, C, blank, target_lengths)
    targets, input_lengths, target_lengths = (backend.to_device(a, device)
                                              for a in (targets, input_lengths, target_lengths))
    return log_probs, targets, input_lengths, target_lengths, unbatched


def _check_host(name, a, T, S, C, blank, target_lengths):
    if name == "input_lengths" and a.size and (a.min() < 0 or a.max() > T):
        raise ValueError(f"ctc_loss: input_lengths must be in [0, T = {T}], got {a.tolist()}")
    if name == "target_lengths" and a.size and (a.min() < 0 or a.max() > S):
        raise ValueError(f"ctc_loss: target_lengths must be in [0, S = {S}], got {a.tolist()}")
    if name == "targets" and isinstance(target_lengths, np.ndarray) and a.size:
        used = np.arange(S)[None, :] < target_lengths[:, None]  # (N, S): entries that are labels
        labels = a[used]
        if labels.size and (labels.min() < 0 or labels.max() >= C):
            raise ValueError(f"ctc_loss: target labels must be in [0, C = {C}), got {labels.min()}..{labels.max()}")
        if (labels == blank).any():
            raise ValueError(f"ctc_loss: a target holds the blank label {blank}")
