"""Core differentiable operations of the engine, one family per file.

elementwise: add sub mul div neg pow exp log sqrt tanh sigmoid abs maximum clip where masked_fill
reduce:      sum mean max var
shape:       reshape transpose/permute swapaxes getitem concatenate stack pad
matmul:      matmul
softmax:     softmax log_softmax logsumexp
"""
from .elementwise import (Abs, Add, Cast, Clip, Div, Exp, Log, Maximum, Mul, Neg, Pow, Sigmoid, Sqrt,  # noqa: F401
                          Sub, Tanh, Where, clip, masked_fill, maximum, pow, where)
from .matmul import MatMul, matmul  # noqa: F401
from .reduce import Max, Sum, Var, max, mean, sum, var  # noqa: F401
from .shape import (Concatenate, GetItem, Pad, Reshape, Stack, Transpose, concatenate, getitem, pad,  # noqa: F401
                    permute, reshape, stack, swapaxes, transpose)
from .softmax import LogSoftmax, LogSumExp, Softmax, log_softmax, logsumexp, softmax  # noqa: F401


def add(a, b):
    return Add.apply(a, b)


def sub(a, b):
    return Sub.apply(a, b)


def mul(a, b):
    return Mul.apply(a, b)


def div(a, b):
    return Div.apply(a, b)


def neg(x):
    return Neg.apply(x)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def abs(x):
    return Abs.apply(x)
