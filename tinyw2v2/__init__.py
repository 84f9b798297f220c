"""tinyw2v2: wav2vec 2.0 from scratch on NumPy/CuPy, with a small autograd engine.

    import tinyw2v2 as tw
    x = tw.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    tw.gradcheck(lambda t: t.softmax(-1), tw.tensor([[1.0, 2.0, 3.0]], requires_grad=True))
"""
from . import backend, ops  # noqa: F401
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .ops import concatenate, pad, stack, where  # noqa: F401
from .ops.dispatch import reference_ops, use_reference_ops  # noqa: F401
from .tensor import Function, Tensor, enable_grad, float32, float64, is_grad_enabled, no_grad, tensor  # noqa: F401

__version__ = "0.1.0"
