"""The feature encoder f: X -> Z (7 strided 1-D convolutions on the raw waveform) and the feature projection.

Module tree and parameter names follow transformers (``feature_extractor.conv_layers.{i}.conv.weight``,
``feature_extractor.conv_layers.{i}.layer_norm.{weight,bias}``, ``feature_projection.*``):

- "group" mode (BASE): conv 0 -> GroupNorm(C groups, C channels) (each channel normalised over time,
  per utterance) -> GELU; convs 1.. -> GELU.
- "layer" mode (LARGE): every conv -> LayerNorm over the channels of each frame -> GELU.
- GELU is the exact erf form. No padding anywhere: T <- floor((T - k) / s) + 1 per layer.

Two fairseq extras live here too, because they act on the encoder's output z: the gradient scale
(``feature_grad_mult``: forward identity, backward times 0.1 for BASE; 0 freezes the CNN) and the feature
penalty mean(z^2) (``feature_penalty_weight``, 10 for BASE).
"""
from __future__ import annotations

import math

from ... import functional as F
from ... import nn
from ...tensor import Tensor, no_grad
from . import init


class ConvLayer(nn.Module):
    """conv -> (GroupNorm | LayerNorm over channels | nothing) -> GELU, on (B, C_in, T) -> (B, C_out, T')."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool, norm: str,
                 eps: float = 1e-5):
        super().__init__()
        self.norm = norm
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=kernel, stride=stride, bias=bias, init=False)
        if norm == "group":
            self.layer_norm = nn.GroupNorm(num_groups=out_dim, num_channels=out_dim, eps=eps, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, eps=eps)
        elif norm != "none":
            raise ValueError(f"unknown conv norm {norm!r}")

    def reset_parameters(self, rng) -> None:
        """kaiming_normal for the weight (std sqrt(2 / fan_in), fan_in = C_in/groups * k; fairseq and transformers),
        U(+-sqrt(groups / (C_in k))) for a bias; the norm's weight 1 and bias 0."""
        conv = self.conv
        _, in_per_group, k = conv.weight.shape
        init.normal_(conv.weight, rng, math.sqrt(2.0 / (in_per_group * k)))
        if conv.bias is not None:
            bound = math.sqrt(conv.groups / (conv.in_channels * k))
            init.uniform_(conv.bias, rng, -bound, bound)
        if self.norm != "none":
            self.layer_norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)                                   # (B, C_out, T')
        if self.norm == "group":
            x = self.layer_norm(x)
        elif self.norm == "layer":
            x = x.swapaxes(1, 2)                           # (B, C, T') -> (B, T', C)
            x = self.layer_norm(x)
            x = x.swapaxes(1, 2)                           # (B, T', C) -> (B, C, T')
        return F.gelu(x)


class FeatureEncoder(nn.Module):
    """Raw waveform (B, L) -> latent speech representations z (B, C, T), T = num_frames(L)."""

    def __init__(self, config):
        super().__init__()
        layers = []
        in_dim = 1
        for i, (dim, k, s) in enumerate(zip(config.conv_dim, config.conv_kernel, config.conv_stride)):
            if config.feat_extract_norm == "group":
                norm = "group" if i == 0 else "none"
            else:
                norm = "layer"
            layers.append(ConvLayer(in_dim, dim, k, s, config.conv_bias, norm))
            in_dim = dim
        self.conv_layers = nn.ModuleList(layers)
        self.grad_mult = float(config.feature_grad_mult)
        self.penalty_weight = float(config.feature_penalty_weight)

    def reset_parameters(self, rng) -> None:
        for layer in self.conv_layers:
            layer.reset_parameters(rng)

    def forward(self, input_values: Tensor) -> Tensor:
        """z = f(x); the gradient into the CNN is multiplied by ``feature_grad_mult`` (fairseq's GradMultiply:
        0.1 for BASE; 0 runs the CNN without a graph, frozen)."""
        if self.grad_mult == 0:
            with no_grad():
                return self.encode(input_values)
        z = self.encode(input_values)
        return z if self.grad_mult == 1.0 else F.grad_scale(z, self.grad_mult)

    def encode(self, input_values: Tensor) -> Tensor:
        """The convolutions alone: (B, L) -> (B, C, T)."""
        B, L = input_values.shape
        x = input_values.reshape(B, 1, L)                  # (B, L) -> (B, 1, L)
        for layer in self.conv_layers:
            x = layer(x)
        return x

    def penalty(self, z: Tensor) -> Tensor:
        """fairseq's feature penalty mean(z^2) of the (gradient-scaled) CNN output, a 0-d Tensor; it takes part in
        the backward only when ``feature_penalty_weight`` > 0 (otherwise it is logged, not trained)."""
        if self.penalty_weight > 0:
            return F.feature_penalty(z)
        with no_grad():
            return F.feature_penalty(z)


class FeatureProjection(nn.Module):
    """(B, T, C) CNN features -> LayerNorm -> Linear(C, D) -> Dropout.

    Returns (projected (B, T, D), normed (B, T, C)); the normed features are the quantiser's input and
    the ``extract_features`` output.
    """

    def __init__(self, config, generators):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size, init=False)
        self.dropout = nn.Dropout(config.feat_proj_dropout, generator=generators.device_generator)
        self.projection_init = config.projection_init
        self.initializer_range = config.initializer_range

    def reset_parameters(self, rng) -> None:
        """torch's default Linear init (fairseq, transformers), or N(0, initializer_range) with
        ``projection_init="normal"``; LayerNorm 1, 0."""
        self.layer_norm.reset_parameters()
        reset_projection(self.projection, rng, self.projection_init, self.initializer_range)

    def forward(self, features: Tensor):
        normed = self.layer_norm(features)
        hidden = self.dropout(self.projection(normed))
        return hidden, normed


def reset_projection(linear, rng, how: str, std: float) -> None:
    """The projections' init: torch's default U(+-1/sqrt(fan_in)) (``how="torch"``), or N(0, std) with a zero bias."""
    if how == "normal":
        init.normal_(linear.weight, rng, std)
        init.constant_(linear.bias, 0.0)
    else:
        linear.reset_parameters(rng)
