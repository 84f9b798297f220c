"""gelu / linear / dropout benchmarks at wav2vec 2.0 shapes (see bench_ops.py).

gelu: after the first conv block (1, 512, 3199) (1 s of audio), a tiny feature encoder (8, 64, 3199) and
the transformer FFN (8, 49, 3072); linear: post_extract_proj 512 -> 768 and FFN fc1 768 -> 3072 on 8
utterances of 1 s (49 frames); dropout p = 0.1 on (8, 49, 768).
"""
import numpy as np
from harness import Bench

import tinyw2v2.functional as F


def _x(*shape):
    return lambda r: (r.standard_normal(shape, dtype="float32"),)


def _linear(shape, n_in, n_out):
    return lambda r: (r.standard_normal(shape, dtype="float32"),
                      (r.standard_normal((n_out, n_in), dtype="float32") / np.sqrt(n_in)).astype("float32"),
                      r.standard_normal(n_out, dtype="float32"))


def _torch_gelu(x):
    import torch.nn.functional as tF
    return tF.gelu(x)


def _torch_linear(x, w, b):
    import torch.nn.functional as tF
    return tF.linear(x, w, b)


def _torch_dropout(x):
    import torch.nn.functional as tF
    return tF.dropout(x, 0.1, training=True)


BENCHES = [
    Bench("gelu", "(1,512,3199)", _x(1, 512, 3199), F.gelu, _torch_gelu),
    Bench("gelu", "(8,64,3199)", _x(8, 64, 3199), F.gelu, _torch_gelu),
    Bench("gelu", "(8,49,3072)", _x(8, 49, 3072), F.gelu, _torch_gelu),
    Bench("linear", "(8,49,512)->768", _linear((8, 49, 512), 512, 768), F.linear, _torch_linear),
    Bench("linear", "(8,49,768)->3072", _linear((8, 49, 768), 768, 3072), F.linear, _torch_linear),
    Bench("dropout", "(8,49,768) p=0.1 (mask drawn)", _x(8, 49, 768), lambda x: F.dropout(x, 0.1), _torch_dropout),
]
