"""Normalisation benchmarks at wav2vec 2.0 BASE shapes (see bench_ops.py).

group_norm: the first conv block's (B, 512, T) output with 512 groups (T = 3199: 1 s of 16 kHz audio after the
first conv, kernel 10, stride 5), and a tiny-model (8, 64, T) variant; layer_norm: the transformer's (B, 49, 768)
and the feature encoder's layer-norm mode, where the model transposes (B, 512, T) to (B, T, 512) and normalises
over the 512 channels.
"""
from harness import Bench

import tinyw2v2.functional as F


def _xwb(shape, c):
    return lambda r: (r.standard_normal(shape, dtype="float32"), r.standard_normal(c, dtype="float32"),
                      r.standard_normal(c, dtype="float32"))


def _torch_gn(groups):
    def f(x, w, b):
        import torch.nn.functional as tF
        return tF.group_norm(x, groups, w, b)
    return f


def _torch_ln(n):
    def f(x, w, b):
        import torch.nn.functional as tF
        return tF.layer_norm(x, (n,), w, b)
    return f


BENCHES = [
    Bench("group_norm", "(1,512,3199) G=512 affine", _xwb((1, 512, 3199), 512),
          lambda x, w, b: F.group_norm(x, 512, w, b), _torch_gn(512)),
    Bench("group_norm", "(8,64,3199) G=64 affine", _xwb((8, 64, 3199), 64),
          lambda x, w, b: F.group_norm(x, 64, w, b), _torch_gn(64)),
    Bench("layer_norm", "(8,49,768) over 768 affine", _xwb((8, 49, 768), 768),
          lambda x, w, b: F.layer_norm(x, 768, w, b), _torch_ln(768)),
    Bench("layer_norm", "(8,3199,512) over 512 affine", _xwb((8, 3199, 512), 512),
          lambda x, w, b: F.layer_norm(x, 512, w, b), _torch_ln(512)),
]
