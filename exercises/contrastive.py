"""Exercise 5: the backward of wav2vec 2.0's contrastive loss (cosine logits, temperature, K negatives).

Forward (written for you). For each of N frames: a prediction x (D), its target y_0 and K negatives y_1 .. y_K:

    s_c = x . y_c / (|x| |y_c|)            cosine similarity, c = 0 .. K
    l_c = s_c / tau
    loss = sum over frames of  logsumexp_c(l_c) - l_0       (cross-entropy with target 0)

Your part: ``backward``, returning (dx, dy0, dyk). The derivation is in docs/contrastive.md, section
"contrastive_loss(...)", paragraph "Backward" (it uses the cosine's backward of section "cosine_similarity(...)").
No duplicates, no mask, and no eps clamp on the norms here.

Check it:  python -m exercises.check contrastive
"""
import numpy as np

from tinyw2v2 import Function


class ContrastiveLoss(Function):
    """x (N, D) predictions, y0 (N, D) targets, yk (K, N, D) negatives -> the summed loss (a scalar)."""

    def forward(self, x, y0, yk, temperature=0.1):
        y = np.concatenate([y0[None], yk])                      # (1+K, N, D): the candidates, positive first
        nx = np.linalg.norm(x, axis=-1)                         # |x|      (N,)
        ny = np.linalg.norm(y, axis=-1)                         # |y_c|    (1+K, N)
        s = np.einsum("nd,cnd->cn", x, y) / (nx * ny)           # cosines  (1+K, N)
        l = s / temperature                                     # logits   (1+K, N)
        m = l.max(axis=0)                                       # (N,)
        e = np.exp(l - m)
        p = e / e.sum(axis=0)                                   # softmax over the 1+K candidates
        self.tau = temperature
        self.save_for_backward(x, y, nx, ny, s, p)
        return (m + np.log(e.sum(axis=0)) - l[0]).sum()         # sum_n logsumexp(l) - l_0

    def backward(self, g):
        x, y, nx, ny, s, p = self.saved_tensors                 # g: the upstream, a 0-d array
        # TODO: dl (1+K, N), ds, then dx (N, D) and dy (1+K, N, D); return dx, dy[0], dy[1:]
        raise NotImplementedError("fill in ContrastiveLoss.backward")
