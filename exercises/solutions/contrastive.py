"""Solution of exercise 5: the contrastive loss's backward, through the softmax, the temperature and the cosines."""
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
        dl = g * p                                              # d(logsumexp(l) - l_0)/dl_c = p_c - [c = 0]
        dl[0] -= g
        ds = dl / self.tau                                      # (1+K, N)
        # s_c = x.y_c / (|x| |y_c|):  ds_c/dx = y_c / (|x| |y_c|) - s_c x / |x|^2, and the same with x and y_c swapped
        dx = np.einsum("cn,cnd->nd", ds / (nx * ny), y) - x * ((ds * s).sum(axis=0) / nx ** 2)[:, None]
        dy = (ds / (nx * ny))[:, :, None] * x - y * (ds * s / ny ** 2)[:, :, None]
        return dx, dy[0], dy[1:]
