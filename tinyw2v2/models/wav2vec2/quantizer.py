"""The Gumbel vector quantiser: G groups of V learned codewords; each frame picks one codeword per group.

Parameters (transformers' names): ``codevectors`` (1, G*V, d/G), ``weight_proj`` Linear(C, G*V).

    logits = weight_proj(features)                        (B, T, G*V) -> (B*T*G, V)
    training: probs = gumbel_softmax(logits, tau, hard=True)   one-hot forward, soft gradient
    eval:     probs = onehot(argmax logits)                   no noise, no gradient into weight_proj
    quantized = per group, the chosen codeword; groups concatenated -> (B, T, d)

Perplexities (all over the masked frames when a mask is given, else over all frames):
    prob_perplexity = sum_g exp(H(mean_n softmax(logits_ng)))   (no noise, no temperature; drives the
                      diversity loss in training, fairseq's ``prob_perplexity``)
    code_perplexity = the same formula on the hard one-hot codes (fairseq's ``code_perplexity``)
    ``perplexity`` returned for the loss follows transformers: prob_perplexity in training,
    code_perplexity in eval.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ... import backend
from ... import functional as F
from ... import nn
from ...tensor import Tensor, no_grad
from . import init


class QuantizedFeatures(NamedTuple):
    codevectors: Tensor           # (B, T, d): per frame, the chosen codeword of each group, concatenated
    perplexity: Tensor            # the one in the diversity loss: prob_perplexity in training, code_perplexity in eval
    code_perplexity: Tensor       # 0-d, no gradient: of the hard codes (masked frames)
    prob_perplexity: Tensor       # 0-d, no gradient: of the soft probabilities (training only, else None)
    indices: object               # (B, T, G) int64 device array: the codeword chosen in each group


class GumbelVectorQuantizer(nn.Module):
    def __init__(self, config, generators):
        super().__init__()
        self.generators = generators
        self.num_groups = config.num_codevector_groups
        self.num_vars = config.num_codevectors_per_group
        G, V = self.num_groups, self.num_vars
        self.codevectors = nn.Parameter(np.zeros((1, G * V, config.codevector_dim // G)))
        self.weight_proj = nn.Linear(config.conv_dim[-1], G * V, init=False)
        self.temperature = float(config.max_gumbel_temperature)
        self.weight_std, self.codevector_init = config.quantizer_weight_std, config.codevector_init

    def reset_parameters(self, rng) -> None:
        """weight_proj ~ N(0, 1) with bias 0, codevectors ~ U[0, 1) (fairseq and transformers; ``quantizer_weight_std``
        and ``codevector_init="normal"`` change them). With N(0, 1) weights on LayerNormed features the logits have a
        standard deviation of sqrt(C): the choice is nearly hard from the start (docs/results.md measures both)."""
        init.normal_(self.weight_proj.weight, rng, self.weight_std)
        init.constant_(self.weight_proj.bias, 0.0)
        if self.codevector_init == "normal":
            init.normal_(self.codevectors, rng, 1.0)
        else:
            init.uniform_(self.codevectors, rng, 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"groups={self.num_groups}, vars={self.num_vars}, temperature={self.temperature:g}"

    def forward(self, features: Tensor, mask=None, gumbel_noise=None):
        """features (B, T, C); mask (B, T) bool on the device or None; gumbel_noise: (B, T, G, V) or any
        array holding B*T*G*V values (transformers' draw order), used instead of fresh noise in training.

        Returns ``QuantizedFeatures(codevectors (B, T, d), perplexity, code_perplexity, prob_perplexity, indices)``.
        """
        B, T, _ = features.shape
        G, V = self.num_groups, self.num_vars
        N = B * T
        logits = self.weight_proj(features)                       # (B, T, G*V)
        flat = logits.reshape(N * G, V)                           # (B, T, G*V) -> (B*T*G, V)
        prob_ppl = None
        if self.training:
            noise = None
            if gumbel_noise is not None:
                noise = gumbel_noise.data if isinstance(gumbel_noise, Tensor) else gumbel_noise
                noise = backend.to_device(noise, features.device).astype(flat.dtype)
                noise = noise.reshape(N * G, V)                   # (..) -> (B*T*G, V)
            probs = F.gumbel_softmax(flat, tau=self.temperature, hard=True, noise=noise,
                                     generator=self.generators.device)  # (B*T*G, V) one-hot
            soft = F.softmax(logits.reshape(N, G, V), axis=-1)    # (B, T, G*V) -> (B*T, G, V)
            perplexity = F.codevector_perplexity(soft, G, V, mask=_flat_mask(mask, N))
            prob_ppl = perplexity.detach()
            codes = probs.data
            index = codes.argmax(axis=-1)                         # (B*T*G,) the hard choice of each group
        else:
            xp = flat.xp
            index = flat.data.argmax(axis=-1)                     # (B*T*G,)
            codes = (xp.arange(V)[None, :] == index[:, None]).astype(flat.dtype)  # (B*T*G, V) one-hot
            probs = Tensor(codes, _copy=False)
            perplexity = None
        with no_grad():
            code_ppl = F.codevector_perplexity(Tensor(codes, _copy=False).reshape(N, G, V), G, V,  # (B*T, G, V)
                                               mask=_flat_mask(mask, N))
        if perplexity is None:
            perplexity = code_ppl
        quantized = F.codevector_lookup(probs.reshape(N, G * V), self.codevectors, G)  # (B*T*G, V) -> (B*T, G*V)
        return QuantizedFeatures(quantized.reshape(B, T, -1), perplexity, code_ppl, prob_ppl,  # (B*T, d) -> (B, T, d)
                                 index.reshape(B, T, G))          # (B*T*G,) -> (B, T, G)


def _flat_mask(mask, n):
    return None if mask is None else mask.reshape(n)             # (B, T) -> (B*T,)
