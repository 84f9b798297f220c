"""The context network: positional convolution, then a stack of Transformer layers (post-LN or pre-LN).

Parameter names follow transformers (``encoder.pos_conv_embed.conv.weight_g`` / ``weight_v`` / ``bias``,
``encoder.layer_norm.*``, ``encoder.layers.{i}.attention.{q,k,v,out}_proj.*``, ``...layer_norm.*``,
``...feed_forward.{intermediate,output}_dense.*``, ``...final_layer_norm.*``).

post-LN (``do_stable_layer_norm=False``, BASE):
    x <- x + posconv(x); x <- Dropout(LN(x)); each layer:
        x <- LN1(x + Drop(MHA(x)));  x <- LN2(x + Drop(fc2(Drop(GELU(fc1 x)))))
pre-LN (``do_stable_layer_norm=True``, LARGE):
    x <- Dropout(x + posconv(x)); each layer:
        x <- x + Drop(MHA(LN1 x));   x <- x + Drop(fc2(Drop(GELU(fc1(LN2 x)))))
    and a final LN after the last layer.
Padded frames are zeroed before the positional convolution and are never attended to (as keys).
LayerDrop (training only): layer i is skipped when a host draw u ~ U[0, 1) is below ``layerdrop``
(one draw per layer per forward, shared by the batch; transformers' rule).
"""
from __future__ import annotations

import math

import numpy as np

from ... import functional as F
from ... import nn, ops
from ...tensor import Tensor


def _dropout_multiplier(generator, shape, p: float, dtype):
    """keep / (1 - p) with keep ~ Bernoulli(1 - p), drawn on the generator's device (attention dropout)."""
    keep = generator.random(shape, dtype=np.float32) >= np.float32(p)
    return keep.astype(dtype) * np.dtype(dtype).type(1.0 / (1.0 - p))


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is g * v / ||v|| with the norm over (out, in) per kernel tap (weight_norm dim=2).

    Parameters: ``bias`` (O,), ``weight_g`` (1, 1, K), ``weight_v`` (O, C/groups, K).
    """

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.kernel_size, self.groups, self.padding = kernel, groups, kernel // 2
        fan_in = channels // groups * kernel
        bound = 1.0 / math.sqrt(fan_in)
        v = nn.default_generator().uniform(-bound, bound, size=(channels, channels // groups, kernel))
        # registration order = transformers' state-dict order (bias, then the weight-norm pair)
        self.bias = nn.Parameter(nn.default_generator().uniform(-bound, bound, size=(channels,)))
        self.weight_g = nn.Parameter(np.sqrt((v * v).sum(axis=(0, 1), keepdims=True)))  # (1, 1, K)
        self.weight_v = nn.Parameter(v)

    def extra_repr(self) -> str:
        O, Cg, K = self.weight_v.shape
        return f"{O}, {O}, kernel_size={K}, padding={self.padding}, groups={self.groups}, weight_norm_dim=2"

    def weight(self) -> Tensor:
        return F.weight_norm(self.weight_v, self.weight_g, dim=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class PositionalConvEmbedding(nn.Module):
    """(B, T, D) -> (B, T, D): grouped conv (kernel K, padding K//2) -> drop the last frame if K is even -> GELU."""

    def __init__(self, config):
        super().__init__()
        self.conv = WeightNormConv1d(config.hidden_size, config.num_conv_pos_embeddings,
                                     config.num_conv_pos_embedding_groups)
        self.num_pad_remove = 1 if config.num_conv_pos_embeddings % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        y = self.conv(x.swapaxes(1, 2))                    # (B, T, D) -> (B, D, T) -> (B, D, T + 1 - K % 2)
        if self.num_pad_remove:
            y = y[:, :, :T]                                # SamePad: drop the extra last frame -> (B, D, T)
        y = F.gelu(y)
        return y.swapaxes(1, 2)                            # (B, D, T) -> (B, T, D)


class Attention(nn.Module):
    """Multi-head self-attention with biases on q, k, v and out; scores scaled by head_dim^-0.5."""

    def __init__(self, config, generators):
        super().__init__()
        self._gen = generators
        D, H = config.hidden_size, config.num_attention_heads
        self.num_heads, self.head_dim = H, D // H
        self.dropout = float(config.attention_dropout)
        self.k_proj = nn.Linear(D, D)
        self.v_proj = nn.Linear(D, D)
        self.q_proj = nn.Linear(D, D)
        self.out_proj = nn.Linear(D, D)

    def forward(self, x: Tensor, attn_mask=None) -> Tensor:
        B, T, D = x.shape
        H, Dh = self.num_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, Dh).swapaxes(1, 2)  # (B, T, D) -> (B, T, H, Dh) -> (B, H, T, Dh)
        k = self.k_proj(x).reshape(B, T, H, Dh).swapaxes(1, 2)  # (B, T, D) -> (B, H, T, Dh)
        v = self.v_proj(x).reshape(B, T, H, Dh).swapaxes(1, 2)  # (B, T, D) -> (B, H, T, Dh)
        drop = None
        if self.training and self.dropout > 0:
            drop = _dropout_multiplier(self._gen.device, (B, H, T, T), self.dropout, x.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_mask=drop)
        y = y.swapaxes(1, 2).reshape(B, T, D)              # (B, H, T, Dh) -> (B, T, H, Dh) -> (B, T, D)
        return self.out_proj(y)


class FeedForward(nn.Module):
    """fc1 (D -> FFN) -> GELU -> Dropout(activation_dropout) -> fc2 (FFN -> D) -> Dropout(hidden_dropout)."""

    def __init__(self, config, generators):
        super().__init__()
        self._gen = generators
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.intermediate_dense(x))
        h = self.intermediate_dropout(h, generator=self._gen.device)
        h = self.output_dense(h)
        return self.output_dropout(h, generator=self._gen.device)


class EncoderLayer(nn.Module):
    """One Transformer layer; ``pre_ln`` selects the pre-LN (stable) placement of the two LayerNorms."""

    def __init__(self, config, generators, pre_ln: bool):
        super().__init__()
        self._gen = generators
        self.pre_ln = pre_ln
        self.attention = Attention(config, generators)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config, generators)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, attn_mask=None) -> Tensor:
        g = self._gen.device
        if self.pre_ln:
            x = x + self.dropout(self.attention(self.layer_norm(x), attn_mask), generator=g)
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(self.attention(x, attn_mask), generator=g))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    """Positional conv + Transformer layers. forward(x (B, T, D), frame_mask (B, T) bool or None).

    Returns (last_hidden_state (B, T, D), hidden_states): hidden_states is transformers' tuple, the input
    of layer 0 followed by each executed layer's output (before the final LN of the pre-LN variant), or
    None unless ``output_hidden_states``.
    """

    def __init__(self, config, generators):
        super().__init__()
        self._gen = generators
        self.pre_ln = bool(config.do_stable_layer_norm)
        self.layerdrop = float(config.layerdrop)
        self.pos_conv_embed = PositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([EncoderLayer(config, generators, self.pre_ln)
                                     for _ in range(config.num_hidden_layers)])

    def forward(self, x: Tensor, frame_mask=None, output_hidden_states: bool = False):
        attn_mask = None
        if frame_mask is not None:
            B, T = frame_mask.shape
            x = ops.where(frame_mask.reshape(B, T, 1), x, 0.0)  # (B, T) -> (B, T, 1): zero the padded frames
            attn_mask = frame_mask.reshape(B, 1, 1, T)          # (B, T) -> (B, 1, 1, T): keys to attend
        x = x + self.pos_conv_embed(x)
        if not self.pre_ln:
            x = self.layer_norm(x)
        x = self.dropout(x, generator=self._gen.device)
        hidden_states = [x] if output_hidden_states else None
        skip = np.zeros(len(self.layers), dtype=bool)
        if self.training and self.layerdrop > 0:
            skip = self._gen.host.random(len(self.layers)) < self.layerdrop
        for layer, skipped in zip(self.layers, skip):
            if skipped:
                continue
            x = layer(x, attn_mask)
            if output_hidden_states:
                hidden_states.append(x)
        if self.pre_ln:
            x = self.layer_norm(x)
        return x, (tuple(hidden_states) if output_hidden_states else None)
