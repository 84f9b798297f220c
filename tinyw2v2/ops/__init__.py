"""Core differentiable operations of the engine, one family per file.

elementwise: add sub mul div neg pow exp log sqrt tanh sigmoid abs maximum clip where masked_fill
reduce:      sum mean max var
shape:       reshape transpose/permute swapaxes getitem concatenate stack pad
matmul:      matmul
softmax:     softmax log_softmax logsumexp
"""
from .elementwise import (Abs, Add, Cast, Clip, Div, Exp, Log, Maximum, Mul, Neg, Pow, Sigmoid, Sqrt,  # noqa: F401
                          Sub, Tanh, Where, abs, add, clip, div, exp, log, masked_fill, maximum, mul, neg, pow,
                          sigmoid, sqrt, sub, tanh, where)
from .matmul import MatMul, matmul  # noqa: F401
from .reduce import Max, Sum, Var, max, mean, sum, var  # noqa: F401
from .shape import (Concatenate, GetItem, Pad, Reshape, Stack, Transpose, concatenate, getitem, pad,  # noqa: F401
                    permute, reshape, stack, swapaxes, transpose)
from .softmax import LogSoftmax, LogSumExp, Softmax, log_softmax, logsumexp, softmax  # noqa: F401


from . import methods  # noqa: E402,F401  (gives Tensor its operators and methods: x + y, x.sum(), ...)
from . import fast  # noqa: E402,F401  (registers the tuned Functions with the dispatch)
