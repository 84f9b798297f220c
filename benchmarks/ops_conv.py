"""Convolution benchmarks at the shapes wav2vec 2.0 uses (see bench_ops.py).

Feature encoder (BASE, one second of 16 kHz audio): layer 0 (512, 1, 10) stride 5, layers 1-4 (512, 512, 3)
stride 2, layers 5-6 (512, 512, 2) stride 2, no bias; the tiny preset's layer 0 has 64 channels.
Positional convolution: BASE (768, 48, 128) padding 64 groups 16 with bias, tiny (128, 32, 32) padding 16 groups 4.
"""
from harness import Bench

from tinyw2v2.ops.conv import conv1d, weight_norm


def _arrays(*shapes):
    return lambda r: tuple(r.standard_normal(s, dtype="float32") for s in shapes)


def _conv(name, x, w, bias=False, **kw):
    shapes = (x, w) + (((w[0],),) if bias else ())
    label = f"x{x} w{w}" + "".join(f" {k[0]}={v}" for k, v in kw.items()) + (" +bias" if bias else "")

    def torch_conv(*a):
        import torch
        return torch.nn.functional.conv1d(*a, **kw)

    return Bench(name, label, _arrays(*shapes), lambda *a: conv1d(*a, **kw), torch_conv)


def _torch_weight_norm(v, g):
    import torch
    return torch._weight_norm(v, g, 2)


BENCHES = [
    _conv("conv1d", (1, 1, 16000), (512, 1, 10), stride=5),                       # BASE layer 0
    _conv("conv1d", (1, 512, 3199), (512, 512, 3), stride=2),                     # BASE layer 1
    _conv("conv1d", (1, 512, 199), (512, 512, 2), stride=2),                      # BASE layer 5
    _conv("conv1d", (8, 1, 16000), (512, 1, 10), stride=5),                       # BASE layer 0, batch 8
    _conv("conv1d", (8, 512, 3199), (512, 512, 3), stride=2),                     # BASE layer 1, batch 8
    _conv("conv1d", (8, 1, 16000), (64, 1, 10), stride=5),                        # tiny layer 0
    _conv("conv1d", (8, 768, 49), (768, 48, 128), bias=True, padding=64, groups=16),  # BASE positional conv
    _conv("conv1d", (8, 128, 49), (128, 32, 32), bias=True, padding=16, groups=4),    # tiny positional conv
    Bench("weight_norm", "v(768,48,128) g(1,1,128) dim=2", _arrays((768, 48, 128), (1, 1, 128)),
          lambda v, g: weight_norm(v, g, 2), _torch_weight_norm),
]
