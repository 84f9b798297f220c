"""The tuned CTC loss: the reference formulas of ``tinyw2v2/ops/ctc.py``, with fewer and larger array calls per frame.

``CTCLoss`` equals ``tinyw2v2.ops.ctc.CTCLoss`` (same loss, same gradient, same posteriors on real frames;
``tests/test_fast_ops.py`` checks every catalogue case in float64, ``tests/test_ops_ctc.py`` a model-sized batch).
What it changes (docs/ctc.md, "The tuned version"):

- one recursion for alpha and beta: beta is the alpha of the time- and label-reversed problem, so both run in
  the same loop over 2N rows, which costs about as much per step as N rows;
- a flat layout: the 2N rows of L states live in one line of 2N (L + 2) cells with two padding cells per row, so
  a state's three predecessors are the three cells before it and each step is 10 in-place calls on contiguous
  arrays (``_recursion``);
- no masks in the loop: frames t >= Tn become virtual frames that only the final blank emits (probability 1),
  gathered in one go through two extra classes (C: the final blank, C + 1: padding cells, always log 0);
- without a gradient, alpha and beta meet in the middle: T // 2 + 1 steps instead of T;
- backward reuses the saved alpha and beta (``posteriors``) and scatters over the classes with one batched matmul.
"""
from __future__ import annotations

from ... import backend
from ...backend import get_array_module
from .. import ctc as reference
from ..ctc import IMPOSSIBLE, NEG, lattice, logsumexp_states, reduce_losses
from ..dispatch import tuned
from .kernels import ctc_recursion_kernel, use_fused


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
    if use_fused(E):  # on a device: every frame in one launch
        _KERNEL(xp.ascontiguousarray(E), xp.ascontiguousarray(mask), A, K, M, grid=1, block=min(1024, max(M, 1)))
        return A
    _loop(E, mask, A)
    return A


def _loop(E, mask, A, K=None, M=None):
    """The recursion's loop over frames, in place on A (also the NumPy twin of the fused kernel)."""
    xp = get_array_module(E)
    K, M = E.shape
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


_KERNEL = ctc_recursion_kernel(_loop)


@tuned(reference.CTCLoss)
class CTCLoss(reference.CTCLoss):
    """``ops.ctc.CTCLoss`` (same inputs, loss and gradient), with alpha and beta in one flat recursion.

    log_probs (T, N, C) -> loss (N,), reduced by ``reduction``; targets padded (N, S) int, lengths (N,) int.

    forward (docs/ctc.md, sections 1-3, "The tuned version"):
        E[t, n, s] = log_probs[t, n, ext[n, s]]  for t < Tn;  for t >= Tn a virtual frame that only the final
                     blank emits: E[t, n, s] = 0 if s = Ln - 1 else NEG (it leaves every sum unchanged)
        alpha      = _recursion(E, skip, start at s = 0)                                       (T, N, L)
        beta       = the same recursion on the time- and label-reversed problem, in the same loop:
                     beta[t, n, s] = alpha_rev[T-1-t, n, L-1-s]  (includes the emission at t, like alpha)
        log p[n]   = logsumexp_s(alpha[t, n, s] + beta[t, n, s] - E[t, n, s])   for any t
                     (t = T - 1 with a gradient; t = T // 2 without, where the two recursions meet)
    backward (section 4):
        gamma[t, n, s] = exp(alpha + beta - E - log p[n])   the posterior of state s at frame t  (T, N, L)
        dlog_probs[t, n, c] = -g[n] * sum_{s: ext[n, s] = c} gamma[t, n, s]  for t < Tn, else 0    (T, N, C)
                              (one batched matmul with the one-hot onehot[n, s, c] = [ext[n, s] = c])
    where g[n] is the upstream gradient of loss[n] (after the reduction's 1/N and 1/max(Sn, 1)).
    Saved: alpha, beta (T, N, L) (views of the recursion's buffer), E (T, N, L) with its virtual frames, ext,
    frame, scale, logp, possible. On virtual frames t >= Tn gamma is 1 in the final blank (the reference's is 0
    there); the backward's frame mask and ``alignment_posteriors`` zero those frames in both.
    """

    def forward(self, log_probs, targets=None, input_lengths=None, target_lengths=None, blank=0,
                reduction="mean", zero_infinity=False):
        T, N, C = log_probs.shape
        ext, skip, ext_len, frame = lattice(log_probs, targets, input_lengths, target_lengths, blank)
        xp, dtype, L = get_array_module(log_probs), log_probs.dtype, ext.shape[1]
        P = L + 2  # cells per row in the flat layout (two padding cells, then the L states)
        n_idx = xp.arange(N)  # (N,)

        # Frames t >= Tn become virtual frames that only the final blank emits, with probability 1: the sums
        # over alignments do not change, and every row runs the same T steps. To gather that in one go, the
        # final blank reads an extra class C (a copy of the blank on real frames, log 1 = 0 on virtual ones)
        # and the padding cells read a class C+1 that is always NEG.
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
        K = T if self.recording else T // 2 + 1  # steps of each recursion; frame t = K - 1 has both
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
        logp = logsumexp_states(alpha_t + beta_t - E[t])  # (N,): the emission at t is in both, count it once
        out, scale = reduce_losses(logp, target_lengths, reduction, zero_infinity, dtype)
        possible = logp > IMPOSSIBLE  # (N,)

        if self.recording:
            alpha = A[1:, :N]  # (T, N, L)
            beta = A[1:, N:][::-1, :, ::-1]  # (T, N, L), a view: beta[t, n, s] = alpha_rev[T-1-t, n, L-1-s]
            self.keep(alpha, beta, E, ext, frame, scale, logp, possible, C)
        return out

    def posteriors(self):
        """gamma[t, n, s] = exp(alpha + beta - E - log p[n]) (T, N, L), after a recording forward, in place.

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
