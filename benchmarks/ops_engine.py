"""Core-op benchmarks at model-like shapes (see bench_ops.py)."""
from harness import Bench

import tinyw2v2.ops as ops

BENCHES = [
    Bench("matmul", "(8,500,768)@(768,768)", lambda r: (r.standard_normal((8, 500, 768), dtype="float32"),
                                                     r.standard_normal((768, 768), dtype="float32")),
          ops.matmul, lambda a, b: a @ b),
    Bench("softmax", "(8,12,500,500) axis -1", lambda r: (r.standard_normal((8, 12, 500, 500), dtype="float32"),),
          lambda x: ops.softmax(x, -1), lambda x: x.softmax(-1)),
    Bench("log_softmax", "(8,500,101) axis -1", lambda r: (r.standard_normal((8, 500, 101), dtype="float32"),),
          lambda x: ops.log_softmax(x, -1), lambda x: x.log_softmax(-1)),
]
