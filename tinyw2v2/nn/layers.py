"""The layers the model is built from, named and shaped like ``torch.nn``'s: ``ModuleList``, ``Linear``,
``LayerNorm``, ``GroupNorm``, ``Conv1d``, ``Dropout``.

Layers draw their default initialisation (torch's distributions) from a NumPy ``Generator`` passed as ``rng=`` (or
from a fresh, unseeded one), on the host, then move it to ``device=``; ``init=False`` leaves zeros for an owner
that initialises the layer itself (``reset_parameters``).
They compute with ``tinyw2v2.functional``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import functional as F
from .module import Module, Parameter

__all__ = ["ModuleList", "Linear", "LayerNorm", "GroupNorm", "Conv1d", "Dropout"]


def _fill(param, values) -> None:
    """Write values (drawn on the host or on a device) into a parameter, keeping its dtype and device."""
    if not backend.is_array(values):
        values = np.asarray(values)
    values = values if values.dtype == param.dtype else values.astype(param.dtype)
    param.data = backend.to_device(values, param.device)


def _uniform(rng, bound: float, shape) -> np.ndarray:
    """U(-bound, bound) of ``shape`` drawn from ``rng`` (None: a fresh, unseeded generator), float64 on the host."""
    return (rng if rng is not None else np.random.default_rng()).uniform(-bound, bound, size=shape)


class ModuleList(Module):
    """A list of modules registered as "0", "1", ... (like ``torch.nn.ModuleList``)."""

    def __init__(self, modules=None):
        super().__init__()
        for m in modules or []:
            self.append(m)

    def append(self, module) -> "ModuleList":
        self.register_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def _index(self, i: int) -> str:
        n = len(self._modules)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a ModuleList of length {n}")
        return str(i % n)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return self._modules[self._index(i)]

    def __setitem__(self, i, module):
        self.register_module(self._index(i), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(): iterate over it")



class Linear(Module):
    """y = x W^T + b. ``weight`` (out_features, in_features), ``bias`` (out_features) as in torch.

    Default init (torch's distribution): W and b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)); torch's
    kaiming_uniform_(a=sqrt(5)) has exactly this bound for W. ``init=False`` leaves zeros for an owner that
    initialises the layer itself (``reset_parameters(rng)`` draws the default later).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None, device=None, dtype=None,
                 init: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(np.zeros((out_features, in_features)), dtype=dtype, device=device)
        if bias:
            self.bias = Parameter(np.zeros(out_features), dtype=dtype, device=device)
        else:
            self.register_parameter("bias", None)
        if init:
            self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        """W, b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)), drawn from ``rng`` (or an unseeded one)."""
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        _fill(self.weight, _uniform(rng, bound, self.weight.shape))
        if self.bias is not None:
            _fill(self.bias, _uniform(rng, bound, self.bias.shape))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` axes; ``weight`` = 1, ``bias`` = 0 of that shape."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape), dtype=dtype, device=device)
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape), dtype=dtype, device=device)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self, rng=None) -> None:
        """weight = 1, bias = 0."""
        if self.weight is not None:
            _fill(self.weight, np.ones(self.weight.shape))
        if self.bias is not None:
            _fill(self.bias, np.zeros(self.bias.shape))

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalise (N, C, *) over each of ``num_groups`` channel groups and the trailing axes; per-channel affine."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps = float(eps)
        self.affine = bool(affine)
        if affine:
            self.weight = Parameter(np.ones(num_channels), dtype=dtype, device=device)
            self.bias = Parameter(np.zeros(num_channels), dtype=dtype, device=device)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    reset_parameters = LayerNorm.reset_parameters

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class Conv1d(Module):
    """1-D convolution (cross-correlation) over (N, C_in, T). ``weight`` (C_out, C_in/groups, K), ``bias`` (C_out).

    Default init (torch's distribution): W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in/groups * K.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding=0,
                 dilation: int = 1, groups: int = 1, bias: bool = True, rng=None, device=None, dtype=None,
                 init: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                             f"by groups ({groups})")
        if isinstance(kernel_size, (tuple, list)):
            (kernel_size,) = kernel_size
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, int(groups)
        self.weight = Parameter(np.zeros((out_channels, in_channels // groups, kernel_size)), dtype=dtype,
                                device=device)
        if bias:
            self.bias = Parameter(np.zeros(out_channels), dtype=dtype, device=device)
        else:
            self.register_parameter("bias", None)
        if init:
            self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        """W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in/groups * K, from ``rng`` (or an unseeded one)."""
        fan_in = self.in_channels // self.groups * self.kernel_size
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        _fill(self.weight, _uniform(rng, bound, self.weight.shape))
        if self.bias is not None:
            _fill(self.bias, _uniform(rng, bound, self.bias.shape))

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                           dilation=self.dilation, groups=self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")


class Dropout(Module):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p), in training mode only.

    Randomness: ``forward(x, mask=None, generator=None)``; an explicit ``mask`` (boolean keep-mask shaped like
    ``x``, on its device) makes the call reproducible; otherwise the mask is drawn from ``generator``, else from
    ``self.generator`` (a ``tinyw2v2.backend.default_rng(seed, device)``, or a function returning one: a model
    passes its own, so that reseeding or moving the model reaches every dropout), else from ``F.dropout``'s own
    default. In eval mode, or with p = 0, ``x`` is returned unchanged (the mask is ignored).
    """

    def __init__(self, p: float = 0.5, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = generator

    def forward(self, x, mask=None, generator=None):
        if not self.training or self.p == 0.0:
            return x
        if generator is None:
            generator = self.generator() if callable(self.generator) else self.generator
        return F.dropout(x, self.p, training=True, mask=mask, generator=generator)

    def extra_repr(self):
        return f"p={self.p}"
