"""Solution of exercise 4: Gumbel softmax, hard one-hot forward, the soft softmax's backward (straight-through)."""
import numpy as np

from tinyw2v2 import Function


class GumbelSoftmax(Function):
    """y = softmax((x + g) / tau) along the last axis, or its one-hot argmax (hard=True, straight-through)."""

    def forward(self, x, g, tau=1.0, hard=True):
        z = (x + g) / tau
        e = np.exp(z - z.max(axis=-1, keepdims=True))          # shifted: no overflow for small tau
        s = e / e.sum(axis=-1, keepdims=True)                  # the soft sample
        self.tau = tau
        self.save_for_backward(s)
        if not hard:
            return s
        winner = s.argmax(axis=-1)[..., None]                  # (..., 1)
        return (np.arange(s.shape[-1]) == winner).astype(s.dtype)   # exact one-hot

    def backward(self, dy):
        (s,) = self.saved_tensors
        dz = s * (dy - (dy * s).sum(axis=-1, keepdims=True))   # softmax backward, the soft relaxation's
        return dz / self.tau, None                             # z = (x + g) / tau; the noise is a constant
