"""The Gumbel vector quantiser: G groups of V learned codewords; each frame picks one codeword per group.

Parameters (transformers' names): ``codevectors`` (1, G*V, d/G), ``weight_proj`` Linear(C, G*V).

    logits = weight_proj(features)                        (B, T, G*V) -> (B*T*G, V)
    training: probs = gumbel_softmax(logits, tau, hard=True)   one-hot forward, soft gradient
    eval:     probs = onehot(argmax logits)                   no noise, no gradient into weight_proj
    quantised = per group, the chosen codeword; groups concatenated -> (B, T, d)

Perplexities (all over the masked frames when a mask is given, else over all frames):
    prob_perplexity = sum_g exp(H(mean_n softmax(logits_ng)))   (no noise, no temperature; drives the
                      diversity loss in training, fairseq's ``prob_perplexity``)
    code_perplexity = the same formula on the hard one-hot codes (fairseq's ``code_perplexity``)
    ``perplexity`` returned for the loss follows transformers: prob_perplexity in training,
    code_perplexity in eval.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from ... import functional as F
from ... import nn
from ...tensor import Tensor, no_grad


class GumbelVectorQuantizer(nn.Module):
    def __init__(self, config, generators):
        super().__init__()
        self._gen = generators
        self.num_groups = config.num_codevector_groups
        self.num_vars = config.num_codevectors_per_group
        G, V = self.num_groups, self.num_vars
        self.codevectors = nn.Parameter(np.zeros((1, G * V, config.codevector_dim // G)))
        self.weight_proj = nn.Linear(config.conv_dim[-1], G * V)
        self.temperature = float(config.max_gumbel_temperature)

    def extra_repr(self) -> str:
        return f"groups={self.num_groups}, vars={self.num_vars}, temperature={self.temperature:g}"

    def forward(self, features: Tensor, mask=None, gumbel_noise=None):
        """features (B, T, C); mask (B, T) bool on the device or None; gumbel_noise: (B, T, G, V) or any
        array holding B*T*G*V values (transformers' draw order), used instead of fresh noise in training.

        Returns (quantised (B, T, d), perplexity, stats) where stats holds prob_perplexity and
        code_perplexity (0-d Tensors without gradient; prob_perplexity only in training).
        """
        B, T, _ = features.shape
        G, V = self.num_groups, self.num_vars
        N = B * T
        logits = self.weight_proj(features)                       # (B, T, G*V)
        flat = logits.reshape(N * G, V)                           # (B, T, G*V) -> (B*T*G, V)
        stats = {}
        if self.training:
            noise = None
            if gumbel_noise is not None:
                noise = gumbel_noise.data if isinstance(gumbel_noise, Tensor) else gumbel_noise
                noise = backend.to_device(noise, features.device).astype(flat.dtype)
                noise = noise.reshape(N * G, V)                   # (..) -> (B*T*G, V)
            probs = F.gumbel_softmax(flat, tau=self.temperature, hard=True, noise=noise,
                                     generator=self._gen.device)  # (B*T*G, V) one-hot
            soft = F.softmax(logits.reshape(N, G, V), axis=-1)    # (B, T, G*V) -> (B*T, G, V)
            perplexity = F.codevector_perplexity(soft, G, V, mask=_flat_mask(mask, N))
            stats["prob_perplexity"] = perplexity.detach()
            codes = probs.data
        else:
            xp = flat.xp
            index = flat.data.argmax(axis=-1)                     # (B*T*G,)
            codes = (xp.arange(V)[None, :] == index[:, None]).astype(flat.dtype)  # (B*T*G, V) one-hot
            probs = Tensor(codes, _copy=False)
            perplexity = None
        with no_grad():
            code_ppl = F.codevector_perplexity(Tensor(codes, _copy=False).reshape(N, G, V), G, V,  # (B*T, G, V)
                                               mask=_flat_mask(mask, N))
        stats["code_perplexity"] = code_ppl
        if perplexity is None:
            perplexity = code_ppl
        quantised = F.codevector_lookup(probs.reshape(N, G * V), self.codevectors, G)  # (B*T*G, V) -> (B*T, G*V)
        return quantised.reshape(B, T, -1), perplexity, stats    # (B*T, d) -> (B, T, d)


def _flat_mask(mask, n):
    return None if mask is None else mask.reshape(n)             # (B, T) -> (B*T,)
