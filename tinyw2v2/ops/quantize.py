"""The Gumbel vector quantiser of wav2vec 2.0: ``gumbel_softmax`` and ``codevector_lookup``.

As in transformers' ``Wav2Vec2GumbelVectorQuantizer`` (training mode)::

    logits = weight_proj(features).reshape(N * G, V)                     # N = B*T frames, G groups of V
    probs = gumbel_softmax(logits, tau, hard=True).reshape(N, G * V)    # one-hot per group (straight-through)
    q = codevector_lookup(probs, codevectors, G)                          # (N, G * d/G): one entry per group

Randomness enters as data: ``gumbel_softmax`` draws its noise on the logits' device (or takes it as
``noise=``), so the Function itself is deterministic and can be gradient-checked.
Derivations: docs/quantize.md.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..tensor import Function, Tensor

# ----------------------------------------------------------------------------------------------
# Gumbel noise


_default_generators: dict = {}


def _default_generator(device: str):
    """One lazily created generator per device (``backend.default_rng(None, device)``)."""
    device = backend.normalize_device(device)
    if device not in _default_generators:
        _default_generators[device] = backend.default_rng(None, device)
    return _default_generators[device]


def gumbel_noise(shape, dtype=np.float32, device="cpu", generator=None):
    """Standard Gumbel samples g = -log(-log U) drawn directly on ``device``.

    U ~ Uniform[0, 1) is clipped into [finfo.tiny, 1 - finfo.epsneg] (the smallest normal number and the
    largest number below 1), so both logs are finite: g lies in [-4.5, 16.6] for float32.
    ``generator``: from ``backend.default_rng(seed, device)``; default: one generator per device.
    (torch draws g = -log(E) with E ~ Exp(1); -log U ~ Exp(1), so the distribution is the same.)
    """
    dtype = np.dtype(dtype)
    rng = generator if generator is not None else _default_generator(device)
    u = rng.random(tuple(shape), dtype=dtype)
    xp = get_array_module(u)
    info = np.finfo(dtype)
    xp.clip(u, dtype.type(info.tiny), dtype.type(1 - info.epsneg), out=u)  # in place on a fresh draw
    xp.log(u, out=u)                                                        # log U       in [-87.3, 0)
    xp.negative(u, out=u)                                                   # -log U ~ Exp(1)
    xp.log(u, out=u)
    xp.negative(u, out=u)                                                   # g = -log(-log U)
    return u


# ----------------------------------------------------------------------------------------------
# Gumbel softmax


class GumbelSoftmax(Function):
    """y = softmax((x + g) / tau) along ``axis`` (soft), or its one-hot argmax (hard, straight-through).

    x: logits (any shape), g: Gumbel noise of the same shape (a constant), tau > 0.
    Forward  z = (x + g) / tau,  s = softmax(z),  y = s (soft) or y = onehot(argmax s) (hard).
    Backward (both modes: the hard output passes the soft gradient straight through)
             dz = s * (dy - sum_j dy_j s_j),  dx = dz / tau,  no gradient to g.
    """

    def forward(self, x, g, tau=1.0, hard=False, axis=-1):
        xp = get_array_module(x, g)
        self.axis, self.tau = axis % x.ndim, tau
        z = x + g                                             # fresh temporary: in place from here on
        z /= z.dtype.type(tau)                                # z = (x + g) / tau
        m = z.max(axis=self.axis, keepdims=True)              # (..., 1, ...)
        m = xp.where(xp.isfinite(m), m, xp.zeros((), dtype=z.dtype))  # all -inf row: shift by 0
        z -= m
        xp.exp(z, out=z)
        total = z.sum(axis=self.axis, keepdims=True)          # (..., 1, ...)
        total = xp.where(total > 0, total, xp.ones((), dtype=z.dtype))  # all -inf row: s = 0, not NaN
        z /= total                                            # z now holds s = softmax((x + g) / tau)
        self.save_for_backward(z)
        if not hard:
            return z
        index = xp.expand_dims(z.argmax(axis=self.axis), self.axis)    # (..., 1, ...) argmax of s (as torch)
        shape = [1] * z.ndim
        shape[self.axis] = z.shape[self.axis]
        entries = xp.arange(z.shape[self.axis]).reshape(shape)         # (1, ..., V, ..., 1)
        return (entries == index).astype(z.dtype)                       # exact one-hot

    def backward(self, dy):
        (s,) = self.saved_tensors
        dx = dy - (dy * s).sum(axis=self.axis, keepdims=True)  # dy - sum_j dy_j s_j
        dx *= s                                                # dz = s * (dy - <dy, s>)
        dx *= dx.dtype.type(1.0 / self.tau)                    # dx = dz / tau
        return dx, None


def gumbel_softmax(logits, tau=1.0, hard=False, axis=-1, noise=None, generator=None):
    """Gumbel-softmax sample of ``logits`` along ``axis`` (like ``torch.nn.functional.gumbel_softmax``).

    Returns softmax((logits + g) / tau); with ``hard=True`` the exact one-hot of its argmax, whose
    gradient is the soft one (straight-through estimator, as torch's ``y_hard - y_soft.detach() + y_soft``).
    ``noise``: the Gumbel sample g itself (array or Tensor shaped like ``logits``, on the same device), e.g.
    to reproduce torch's draw ``g = -log(E)``; when None, g = -log(-log U) is drawn on the logits' device
    from ``generator`` (``backend.default_rng(seed, device)``) or a per-device default (see ``gumbel_noise``).
    """
    data = logits.data if isinstance(logits, Tensor) else logits
    if noise is None:
        noise = gumbel_noise(data.shape, data.dtype, backend.device_of(data), generator)
    elif isinstance(noise, Tensor):
        noise = noise.detach()
    return GumbelSoftmax.apply(logits, noise, tau=float(tau), hard=bool(hard), axis=axis)


# ----------------------------------------------------------------------------------------------
# Codebook lookup


class CodevectorLookup(Function):
    """out[n, g] = sum_v p[n, g, v] * C[g, v]: per group, a probability-weighted sum of codebook entries.

    p: probs (..., G*V), one-hot or soft, group-major (entry v of group g at column g*V + v);
    C: codevectors (1, G*V, d) or (G*V, d) (transformers' parameter shape, d = codevector_dim / G).
    out: (..., G*d), the G selected vectors concatenated.  With P_g (N, V) and C_g (V, d) per group:
    Forward   O_g = P_g @ C_g                 (one batched GEMM over the G groups)
    Backward  dP_g = dO_g @ C_g^T,  dC_g = P_g^T @ dO_g
    """

    def forward(self, probs, codevectors, num_groups=2):
        G = num_groups
        GV, d = codevectors.shape[-2:]
        V = GV // G
        if G * V != GV or probs.shape[-1] != GV:
            raise ValueError(f"codevector_lookup: probs (..., {probs.shape[-1]}) and codevectors {codevectors.shape} "
                             f"do not split into {G} groups")
        self.lead, self.cshape = probs.shape[:-1], codevectors.shape
        N = int(np.prod(self.lead, dtype=np.int64))
        P = probs.reshape(N, G, V).transpose(1, 0, 2)          # (N, G*V) -> (G, N, V), a view
        C = codevectors.reshape(G, V, d)                       # (1, G*V, d) -> (G, V, d)
        self.save_for_backward(P, C)
        out = P @ C                                            # (G, N, V) @ (G, V, d) -> (G, N, d)
        return out.transpose(1, 0, 2).reshape(*self.lead, G * d)  # (G, N, d) -> (N, G, d) -> (..., G*d)

    def backward(self, dout):
        P, C = self.saved_tensors
        G, N, V = P.shape
        d = C.shape[-1]
        dO = dout.reshape(N, G, d).transpose(1, 0, 2)          # (..., G*d) -> (N, G, d) -> (G, N, d)
        dP = dC = None
        if self.needs_input_grad[0]:
            dP = dO @ C.transpose(0, 2, 1)                      # (G, N, d) @ (G, d, V) -> (G, N, V)
            dP = dP.transpose(1, 0, 2).reshape(*self.lead, G * V)  # (G, N, V) -> (N, G, V) -> (..., G*V)
        if self.needs_input_grad[1]:
            dC = P.transpose(0, 2, 1) @ dO                      # (G, V, N) @ (G, N, d) -> (G, V, d)
            dC = dC.reshape(self.cshape)                        # (G, V, d) -> (1, G*V, d)
        return dP, dC


def codevector_lookup(probs, codevectors, num_groups):
    """Quantised vectors from per-group codeword probabilities (transformers' quantiser lookup).

    probs (..., G*V) (one-hot from ``gumbel_softmax(hard=True)``, or soft), codevectors (1, G*V, d/G)
    -> (..., d): per group g the sum over v of probs[..., g*V + v] * codevectors[0, g*V + v], groups concatenated.
    Equal to transformers' ``(probs.view(N, G*V, 1) * codevectors).view(N, G, V, -1).sum(-2).view(N, -1)``
    without its (N, G*V, d/G) temporary.
    """
    return CodevectorLookup.apply(probs, codevectors, num_groups=int(num_groups))
