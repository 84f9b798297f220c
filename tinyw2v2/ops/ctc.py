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
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..tensor import Function, Tensor, no_grad

NEG = -1e30        # log(0): finite, so that NEG + NEG - NEG stays NEG (no inf - inf = NaN)
_IMPOSSIBLE = -1e29  # a log-likelihood below this is log(0): no alignment exists


def _extend(targets, target_lengths, blank, xp):
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


def _logsumexp_rows(x):
    """log sum_s exp(x[n, s]) for (N, L) -> (N,), shifted by the row max (rows of NEG stay about NEG)."""
    xp = get_array_module(x)
    m = x.max(axis=1, keepdims=True)  # (N, 1)
    return (m + xp.log(xp.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


def _recursion(E, mask, start):
    """The alpha recursion in log space for R rows at once; the only Python loop is over time.

    The R rows of L states live in one flat line of M = R * (L + 2) cells: row r holds two padding cells
    and then its states, state s of row r at cell r (L + 2) + 2 + s. So the three states a state s reads
    (s-2, s-1, s) are the three cells before and at its own, for every row at once, and each step works on
    contiguous arrays. Padding cells have E = NEG: they stay about NEG and feed nothing.

    E (K, M) emissions (log y) per step and cell, mask (M,): 0 where the skip s-2 -> s is allowed, NEG where
    not; start (R,): the cell where each row starts. With alpha[-1] = 0 at the start cell, NEG elsewhere:
        alpha[t, j] = E[t, j] + logsumexp(alpha[t-1, j-2] + mask[j], alpha[t-1, j-1], alpha[t-1, j])
    Returns A (K+1, 2+M): A[t+1, 2:] = alpha[t], A[:, :2] = NEG (what cells 0 and 1 read as j-2, j-1).
    """
    xp = get_array_module(E)
    K, M = E.shape
    A = xp.empty((K + 1, 2 + M), dtype=E.dtype)  # (K+1, 2+M): the loop fills A[1:, 2:]
    A[:, :2] = NEG
    A[0] = NEG
    A[0, 2 + start] = 0  # alpha[-1]: a virtual state before frame 0
    taps = backend.sliding_window(A, 3, 1, axis=1)  # (K+1, M, 3): taps[t, j, k] = A[t, j+k] = alpha[t-1, j-2+k]
    taps = xp.moveaxis(taps, 2, 1)  # (K+1, 3, M), still a view of A
    mask3 = xp.zeros((3, M), dtype=E.dtype)  # (3, M): only the skip tap k = 0 is masked
    mask3[0] = mask
    out = A[:, 2:]  # (K+1, M), a view: out[t+1] = alpha[t]
    Z = xp.empty((3, M), dtype=E.dtype)  # fresh temporaries, reused every step
    Z0, Z1, Z2 = Z
    m = xp.empty(M, dtype=E.dtype)
    s = xp.empty(M, dtype=E.dtype)
    for t in range(K):  # 10 in-place calls on contiguous arrays per frame
        xp.add(taps[t], mask3, out=Z)      # Z[k, j] = alpha[t-1, j-2+k] (+ NEG for a forbidden skip)
        xp.maximum(Z0, Z1, out=m)
        xp.maximum(m, Z2, out=m)           # m = max_k Z[k]: the shift that keeps exp from overflowing
        xp.subtract(Z, m, out=Z)
        xp.exp(Z, out=Z)
        xp.add(Z0, Z1, out=s)
        xp.add(s, Z2, out=s)               # s = sum_k exp(Z[k] - m), in [1, 3]
        xp.log(s, out=s)
        xp.add(s, m, out=s)                # logsumexp_k Z[k]
        xp.add(s, E[t], out=out[t + 1])    # alpha[t] = E[t] + logsumexp
    return A


class CTCLoss(Function):
    """loss[n] = -log p(l_n | x_n),  p = sum over alignments pi (length Tn, collapsing to l_n) of prod_t y[t, n, pi_t]

    log_probs (T, N, C) -> loss (N,), reduced by ``reduction``; targets padded (N, S) int, lengths (N,) int.

    forward (docs/ctc.md, sections 1-3):
        E[t, n, s] = log_probs[t, n, ext[n, s]]  for t < Tn;  for t >= Tn a virtual frame that only the final
                     blank emits: E[t, n, s] = 0 if s = Ln - 1 else NEG (it leaves every sum unchanged)
        alpha      = _recursion(E, skip, start at s = 0)                                       (T, N, L)
        beta       = the same recursion on the time- and label-reversed problem, in the same loop:
                     beta[t, n, s] = alpha_rev[T-1-t, n, L-1-s]  (includes the emission at t, like alpha)
        log p[n]   = logsumexp_s(alpha[t, n, s] + beta[t, n, s] - E[t, n, s])   for any t
    backward (section 4):
        gamma[t, n, s] = exp(alpha + beta - E - log p[n])   the posterior of state s at frame t  (T, N, L)
        dlog_probs[t, n, c] = -g[n] * sum_{s: ext[n, s] = c} gamma[t, n, s]  for t < Tn, else 0    (T, N, C)
                              (one batched matmul with the one-hot onehot[n, s, c] = [ext[n, s] = c])
    where g[n] is the upstream gradient of loss[n] (after the reduction's 1/N and 1/max(Sn, 1)).
    This is the derivative with respect to log_probs as free inputs. torch's native kernel returns
    exp(log_probs) * g[n] more (for t < Tn): the same gradient once it goes through log_softmax, whose
    backward removes exactly that term (docs/ctc.md, section 5).
    Impossible alignments: loss = inf (0 with zero_infinity) and a zero gradient (torch gives NaN there
    unless zero_infinity).
    """

    def forward(self, log_probs, targets=None, input_lengths=None, target_lengths=None, blank=0,
                reduction="mean", zero_infinity=False):
        xp = get_array_module(log_probs)
        dtype = log_probs.dtype
        T, N, C = log_probs.shape
        ext, skip = _extend(targets, target_lengths, blank, xp)  # (N, L), (N, L)
        L = ext.shape[1]
        P = L + 2  # cells per row in the flat layout (two padding cells, then the L states)
        ext_len = 2 * target_lengths + 1  # (N,) Ln
        n_idx = xp.arange(N)  # (N,)

        # Frames t >= Tn become virtual frames that only the final blank emits, with probability 1: the sums
        # over alignments do not change, and every row runs the same T steps. To gather that in one go, the
        # final blank reads an extra class C (a copy of the blank on real frames, log 1 = 0 on virtual ones)
        # and the padding cells read a class C+1 that is always NEG.
        frame = xp.arange(T)[:, None] < input_lengths[None, :]  # (T, N): real frames
        lpx = xp.empty((T, N, C + 2), dtype=dtype)  # (T, N, C+2)
        lpx[:, :, :C] = log_probs
        lpx[:, :, C] = log_probs[:, :, blank]
        lpx[:, :, C + 1] = NEG
        virtual = xp.full(C + 2, NEG, dtype=dtype)  # (C+2,): a virtual frame: NEG for every class but ...
        virtual[C] = 0  # ... the final blank
        lpx = xp.where(frame[:, :, None], lpx, virtual)  # (T, N, C+2)
        xp.maximum(lpx, NEG, out=lpx)  # log(0) = -inf from the caller becomes the finite NEG
        cls = xp.full((N, P), C + 1, dtype=xp.int64)  # (N, P): the class each cell reads
        cls[:, 2:] = ext
        cls[n_idx, 2 + ext_len - 1] = C  # the final blank, state Ln - 1

        # Both recursions in one loop over R = 2N rows: alpha on the first N rows, and on the other N the alpha
        # of the time- and label-reversed problem, which is beta. The loop costs about the same for 2N rows as
        # for N. Without a gradient only log p is needed, from any one frame t: the two recursions meet in the
        # middle after T // 2 + 1 steps each.
        K = T if self._recording else T // 2 + 1  # steps of each recursion; frame t = K - 1 has both
        cls_rev = xp.full((N, P), C + 1, dtype=xp.int64)  # (N, P): labels reversed, padding cells first
        cls_rev[:, 2:] = cls[:, 2:][:, ::-1]
        lp_rows = xp.concatenate([lpx[:K], lpx[::-1][:K]], axis=1)  # (K, 2N, C+2): frames, then frames reversed
        flat = (xp.arange(2 * N)[:, None] * (C + 2) + xp.concatenate([cls, cls_rev], axis=0)).reshape(-1)  # (2N*P,)
        E_flat = xp.take(lp_rows.reshape(K, 2 * N * (C + 2)), flat, axis=1)  # (K, 2N*P): E in the flat layout
        skip_rev = xp.zeros_like(skip)  # (N, L): skip_rev[s'] = skip[L+1-s'], the skip s -> s+2 seen backwards
        skip_rev[:, 2:] = skip[:, ::-1][:, :L - 2]
        mask = xp.full((2 * N, P), NEG, dtype=dtype)  # (2N, P)
        mask[:, 2:] = xp.where(xp.concatenate([skip, skip_rev], axis=0), 0, NEG)
        start = xp.concatenate([n_idx * P + 2, (N + n_idx) * P + 2 + (L - ext_len)])  # (2N,): state 0, state L - Ln
        A = _recursion(E_flat, mask.reshape(-1), start)  # (K+1, 2 + 2N*P)
        A = A[:, 2:].reshape(K + 1, 2 * N, P)[:, :, 2:]  # (K+1, 2N, L): A[t+1] = alpha[t], alpha_rev[t]
        E = E_flat.reshape(K, 2 * N, P)[:, :N, 2:]  # (K, N, L): E[t, n, s] = log y[t, n, ext[n, s]], virtual frames too
        t = K - 1
        alpha_t = A[t + 1, :N]  # (N, L)
        beta_t = A[T - t, N:, ::-1]  # (N, L): beta[t] = alpha_rev[T-1-t] reversed along s
        logp = _logsumexp_rows(alpha_t + beta_t - E[t])  # (N,): the emission at t is in both, count it once
        possible = logp > _IMPOSSIBLE  # (N,)
        loss = xp.where(possible, -logp, xp.inf).astype(dtype)  # (N,)
        if zero_infinity:
            loss = xp.where(possible, loss, 0).astype(dtype)

        if reduction == "none":
            out = loss
            scale = None
        elif reduction == "sum":
            out = loss.sum()
            scale = None
        elif reduction == "mean":
            scale = (1.0 / (xp.maximum(target_lengths, 1) * N)).astype(dtype)  # (N,): 1 / (N max(Sn, 1))
            out = (loss * scale).sum()
        else:
            raise ValueError(f"ctc_loss: reduction must be 'none', 'sum' or 'mean', got {reduction!r}")

        if self._recording:
            self.alpha = A[1:, :N]  # (T, N, L)
            self.beta = A[1:, N:][::-1, :, ::-1]  # (T, N, L), a view: beta[t, n, s] = alpha_rev[T-1-t, n, L-1-s]
            self.E, self.ext, self.frame, self.scale = E, ext, frame, scale
            self.logp = xp.where(possible, logp, 0).astype(dtype)  # (N,): 0 where impossible (gamma is 0 there)
            self.possible = possible
            self.C = C
            self._free = ("alpha", "beta", "E", "ext", "frame", "scale", "logp", "possible")
        return out

    def posteriors(self):
        """gamma[t, n, s] = exp(alpha + beta - E - log p[n]) (T, N, L), after a recording forward.

        The posterior of state s at frame t: sums to 1 over s on real frames t < Tn (1 in the final blank on
        virtual frames t >= Tn), 0 in padded states s >= Ln, and about 0 everywhere for an impossible sequence.
        """
        xp = get_array_module(self.E)
        gamma = self.alpha + self.beta  # (T, N, L)
        gamma -= self.E  # alpha and beta both include the emission at t: count it once
        gamma -= self.logp[None, :, None]
        xp.exp(gamma, out=gamma)
        return gamma

    def backward(self, g):
        xp = get_array_module(g)
        T, N, L = self.E.shape
        gamma = self.posteriors()  # (T, N, L): posterior of state s at frame t, sums to 1 over s on real frames
        onehot = (self.ext[:, :, None] == xp.arange(self.C)[None, None, :]).astype(g.dtype)  # (N, L, C)
        gn = xp.broadcast_to(g, (N,)) if g.ndim == 0 else g  # (N,) upstream of each loss[n]
        if self.scale is not None:
            gn = gn * self.scale
        w = -(self.frame * (gn * self.possible))  # (T, N): -g[n] on real frames of possible samples, else 0
        # scatter over classes: dlp[t, n, c] = sum_s gamma[t, n, s] onehot[n, s, c], batched over n
        per_class = xp.matmul(gamma.transpose(1, 0, 2), onehot)  # (N, T, L) @ (N, L, C) -> (N, T, C)
        grad = xp.empty((T, N, self.C), dtype=g.dtype)  # (T, N, C)
        xp.multiply(per_class.transpose(1, 0, 2), w[:, :, None].astype(g.dtype), out=grad)  # (T, N, C) * (T, N, 1)
        return grad


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
    out = CTCLoss.apply(log_probs, targets=targets, input_lengths=input_lengths, target_lengths=target_lengths,
                        blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    if unbatched and reduction == "none":
        from . import reshape
        out = reshape(out, ())
    return out


def ctc_posteriors(log_probs, targets, input_lengths, target_lengths, blank=0):
    """The CTC alignment lattice: gamma[n, t, s] = P(state s at frame t | l_n, x_n), no gradient.

    Same inputs as ``ctc_loss``. State s indexes the blank-extended labels l' = (b, l1, b, l2, ..., lSn, b)
    (``ext[n, 2j+1] = targets[n, j]``, blank elsewhere), and

        gamma[n, t, s] = alpha_t(s) beta_t(s) / (y_t(l'_s) p(l_n | x_n))          (docs/ctc.md, eq. 7)

    the share of the total alignment probability carried by the walks that sit in state s at frame t. It comes
    from the same alpha-beta recursion as the loss (``CTCLoss.posteriors``, what the backward uses), and
    -sum over the states emitting class c of gamma is the loss's gradient with respect to log_probs[t, n, c].

    Returns an array (not a Tensor) on log_probs' device: (N, T, L) with L = 2 S + 1, or (T, 2 Sn + 1) for
    unbatched (T, C) input. Each real frame t < input_lengths[n] sums to 1 over s; padding frames, padded
    states s >= 2 Sn + 1 and every entry of an impossible sequence (no alignment exists) are 0.
    """
    with no_grad():
        log_probs, targets, input_lengths, target_lengths, unbatched = _prepare(
            log_probs, targets, input_lengths, target_lengths, blank, "ctc_posteriors")
    fn = CTCLoss()
    fn._recording = True  # keep alpha and beta at every frame, as for a backward
    fn.forward(log_probs.data, targets=targets, input_lengths=input_lengths, target_lengths=target_lengths,
               blank=blank, reduction="none")
    gamma = fn.posteriors()  # (T, N, L)
    xp = get_array_module(gamma)
    gamma = gamma * (fn.frame & fn.possible[None, :])[:, :, None]  # padding frames, impossible sequences -> 0
    gamma = xp.ascontiguousarray(gamma.transpose(1, 0, 2))  # (N, T, L)
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
        from . import reshape
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
