"""The feature encoder (7 strided 1-D convolutions on the raw waveform) and the feature projection.

Module tree and parameter names follow transformers (``feature_extractor.conv_layers.{i}.conv.weight``,
``feature_extractor.conv_layers.{i}.layer_norm.{weight,bias}``, ``feature_projection.*``):

- "group" mode (BASE): conv 0 -> GroupNorm(C groups, C channels) (each channel normalised over time,
  per utterance) -> GELU; convs 1.. -> GELU.
- "layer" mode (LARGE): every conv -> LayerNorm over the channels of each frame -> GELU.
- GELU is the exact erf form. No padding anywhere: T <- floor((T - k) / s) + 1 per layer.
"""
from __future__ import annotations

from ... import functional as F
from ... import nn
from ...tensor import Tensor


class ConvLayer(nn.Module):
    """conv -> (GroupNorm | LayerNorm over channels | nothing) -> GELU, on (B, C_in, T) -> (B, C_out, T')."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool, norm: str,
                 eps: float = 1e-5):
        super().__init__()
        self.norm = norm
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=kernel, stride=stride, bias=bias)
        if norm == "group":
            self.layer_norm = nn.GroupNorm(num_groups=out_dim, num_channels=out_dim, eps=eps, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, eps=eps)
        elif norm != "none":
            raise ValueError(f"unknown conv norm {norm!r}")

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
    """Raw waveform (B, L) -> CNN features (B, C, T) with T = num_frames(L)."""

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

    def forward(self, input_values: Tensor) -> Tensor:
        B, L = input_values.shape
        x = input_values.reshape(B, 1, L)                  # (B, L) -> (B, 1, L)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    """(B, T, C) CNN features -> LayerNorm -> Linear(C, D) -> Dropout.

    Returns (projected (B, T, D), normed (B, T, C)); the normed features are the quantiser's input and
    the ``extract_features`` output.
    """

    def __init__(self, config, generators):
        super().__init__()
        self._gen = generators
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, features: Tensor):
        normed = self.layer_norm(features)
        hidden = self.projection(normed)
        hidden = self.dropout(hidden, generator=self._gen.device)
        return hidden, normed
