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
from . import init


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
        # registration order = transformers' state-dict order (bias, then the weight-norm pair)
        self.bias = nn.Parameter(np.zeros(channels))
        self.weight_g = nn.Parameter(np.zeros((1, 1, kernel)))
        self.weight_v = nn.Parameter(np.zeros((channels, channels // groups, kernel)))

    def reset_parameters(self, rng) -> None:
        """fairseq's init: v ~ N(0, 2 / sqrt(k D)) (std), g = ||v|| per tap (so the weight equals v), bias 0.
        transformers intends the same, but its normal_ does not reach the weight-normed parameters."""
        O, _, K = self.weight_v.shape
        v = rng.normal(0.0, 2.0 * math.sqrt(1.0 / (K * O)), size=self.weight_v.shape)
        init.copy_(self.weight_v, v)
        init.copy_(self.weight_g, np.sqrt((v * v).sum(axis=(0, 1), keepdims=True)))  # (O, Cg, K) -> (1, 1, K)
        init.constant_(self.bias, 0.0)

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

    def reset_parameters(self, rng) -> None:
        self.conv.reset_parameters(rng)

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
        self.generators = generators
        D, H = config.hidden_size, config.num_attention_heads
        self.num_heads, self.head_dim = H, D // H
        self.dropout = float(config.attention_dropout)
        self.initializer_range = config.initializer_range
        self.k_proj = nn.Linear(D, D, init=False)
        self.v_proj = nn.Linear(D, D, init=False)
        self.q_proj = nn.Linear(D, D, init=False)
        self.out_proj = nn.Linear(D, D, init=False)

    def reset_parameters(self, rng) -> None:
        """Every projection N(0, initializer_range), bias 0 (fairseq's init_bert_params, transformers' init)."""
        for proj in (self.k_proj, self.v_proj, self.q_proj, self.out_proj):
            init.normal_(proj.weight, rng, self.initializer_range)
            init.constant_(proj.bias, 0.0)

    def forward(self, x: Tensor, attn_mask=None) -> Tensor:
        B, T, D = x.shape
        H, Dh = self.num_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, Dh).swapaxes(1, 2)  # (B, T, D) -> (B, T, H, Dh) -> (B, H, T, Dh)
        k = self.k_proj(x).reshape(B, T, H, Dh).swapaxes(1, 2)  # (B, T, D) -> (B, H, T, Dh)
        v = self.v_proj(x).reshape(B, T, H, Dh).swapaxes(1, 2)  # (B, T, D) -> (B, H, T, Dh)
        drop = None
        if self.training and self.dropout > 0:
            drop = _dropout_multiplier(self.generators.device, (B, H, T, T), self.dropout, x.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_mask=drop)
        y = y.swapaxes(1, 2).reshape(B, T, D)              # (B, H, T, Dh) -> (B, T, H, Dh) -> (B, T, D)
        return self.out_proj(y)


class FeedForward(nn.Module):
    """fc1 (D -> FFN) -> GELU -> Dropout(activation_dropout) -> fc2 (FFN -> D) -> Dropout(hidden_dropout)."""

    def __init__(self, config, generators):
        super().__init__()
        self.intermediate_dropout = nn.Dropout(config.activation_dropout, generator=generators.device_generator)
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size, init=False)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size, init=False)
        self.output_dropout = nn.Dropout(config.hidden_dropout, generator=generators.device_generator)
        self.initializer_range = config.initializer_range

    def reset_parameters(self, rng) -> None:
        """Both Linears N(0, initializer_range), bias 0."""
        for dense in (self.intermediate_dense, self.output_dense):
            init.normal_(dense.weight, rng, self.initializer_range)
            init.constant_(dense.bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(h))


class EncoderLayer(nn.Module):
    """One Transformer layer; ``pre_ln`` selects the pre-LN (stable) placement of the two LayerNorms."""

    def __init__(self, config, generators, pre_ln: bool):
        super().__init__()
        self.pre_ln = pre_ln
        self.attention = Attention(config, generators)
        self.dropout = nn.Dropout(config.hidden_dropout, generator=generators.device_generator)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config, generators)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def reset_parameters(self, rng) -> None:
        self.attention.reset_parameters(rng)
        self.layer_norm.reset_parameters()
        self.feed_forward.reset_parameters(rng)
        self.final_layer_norm.reset_parameters()

    def forward(self, x: Tensor, attn_mask=None) -> Tensor:
        if self.pre_ln:
            x = x + self.dropout(self.attention(self.layer_norm(x), attn_mask))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(self.attention(x, attn_mask)))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    """Positional conv + Transformer layers. forward(x (B, T, D), frame_mask (B, T) bool or None).

    Returns (last_hidden_state (B, T, D), hidden_states): hidden_states is transformers' tuple, the input
    of layer 0 followed by each executed layer's output (before the final LN of the pre-LN variant), or
    None unless ``output_hidden_states``.
    """

    def __init__(self, config, generators):
        super().__init__()
        self.generators = generators
        self.pre_ln = bool(config.do_stable_layer_norm)
        self.layerdrop = float(config.layerdrop)
        self.pos_conv_embed = PositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout, generator=generators.device_generator)
        self.layers = nn.ModuleList([EncoderLayer(config, generators, self.pre_ln)
                                     for _ in range(config.num_hidden_layers)])

    def reset_parameters(self, rng) -> None:
        self.pos_conv_embed.reset_parameters(rng)
        self.layer_norm.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters(rng)

    def forward(self, x: Tensor, frame_mask=None, output_hidden_states: bool = False):
        attn_mask = None
        if frame_mask is not None:
            B, T = frame_mask.shape
            x = ops.where(frame_mask.reshape(B, T, 1), x, 0.0)  # (B, T) -> (B, T, 1): zero the padded frames
            attn_mask = frame_mask.reshape(B, 1, 1, T)          # (B, T) -> (B, 1, 1, T): keys to attend
        x = x + self.pos_conv_embed(x)
        if not self.pre_ln:
            x = self.layer_norm(x)
        x = self.dropout(x)
        hidden_states = [x] if output_hidden_states else None
        skip = np.zeros(len(self.layers), dtype=bool)
        if self.training and self.layerdrop > 0:
            skip = self.generators.host.random(len(self.layers)) < self.layerdrop
        for layer, skipped in zip(self.layers, skip):
            if skipped:
                continue
            x = layer(x, attn_mask)
            if output_hidden_states:
                hidden_states.append(x)
        if self.pre_ln:
            x = self.layer_norm(x)
        return x, (tuple(hidden_states) if output_hidden_states else None)
