"""The checker itself: it passes correct backwards and catches planted bugs in every op family."""
import numpy as np
import pytest

import tinyw2v2 as tw
from tinyw2v2 import ops
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops.elementwise import Mul
from tinyw2v2.ops.matmul import MatMul
from tinyw2v2.ops.reduce import Max, Var
from tinyw2v2.ops.shape import GetItem
from tinyw2v2.ops.softmax import LogSoftmax, Softmax


def planted(base, backward):
    """A subclass of ``base`` whose backward is replaced by a wrong one."""
    return type(f"Buggy{base.__name__}", (base,), {"backward": backward})


class BuggySoftmax(Softmax):
    def backward(self, g):  # y * (g - mean(g)): right for a constant upstream, wrong in general
        (y,) = self.saved_tensors
        return y * (g - g.mean(axis=self.axis, keepdims=True))


BUGS = {
    "elementwise mul (swapped factors)": (lambda a, b: planted(Mul, lambda self, g: (g * self.saved_tensors[0], g * self.saved_tensors[1])).apply(a, b),
                                         lambda r: (r.standard_normal((3, 4)), r.standard_normal((3, 4)))),
    "matmul (missing transpose)": (lambda a, b: planted(MatMul, lambda self, g: (g @ self.saved_tensors[1].swapaxes(-1, -2), (g.swapaxes(-1, -2) @ self.saved_tensors[0]).swapaxes(-1, -2) * 1.01)).apply(a, b),
                                   lambda r: (r.standard_normal((3, 4)), r.standard_normal((4, 2)))),
    "reduce var (forgot factor 2)": (lambda a: planted(Var, lambda self, g: Var.backward(self, g) / 2).apply(a, axis=1),
                                     lambda r: (r.standard_normal((3, 5)),)),
    "reduce max (gradient to every element)": (lambda a: planted(Max, lambda self, g: np.broadcast_to(np.expand_dims(g, 1), self.saved_tensors[0].shape)).apply(a, axis=1),
                                               lambda r: (r.standard_normal((3, 5)),)),
    "shape getitem (repeated index assigned, not added)": (
        lambda a, i: planted(GetItem, lambda self, g: _assign(self, g)).apply(a, index=i),
        lambda r: (r.standard_normal((4, 3)), np.array([1, 1, 2]))),
    "softmax (mean instead of weighted sum)": (lambda a: BuggySoftmax.apply(a, axis=-1), lambda r: (r.standard_normal((3, 5)),)),
    "log_softmax (sign)": (lambda a: planted(LogSoftmax, lambda self, g: -LogSoftmax.backward(self, g)).apply(a, axis=-1),
                           lambda r: (r.standard_normal((2, 4)),)),
}


def _assign(self, g):
    dx = np.zeros(self.shape)
    dx[self.index] = g  # drops repeated indices: the classic scatter bug
    return dx


@pytest.mark.parametrize("name", list(BUGS))
def test_planted_bug_is_caught(name):
    fn, make = BUGS[name]
    with pytest.raises(GradcheckError):
        tw.gradcheck(fn, *make(np.random.default_rng(0)))


def test_error_names_input_index_and_values():
    fn, make = BUGS["softmax (mean instead of weighted sum)"]
    with pytest.raises(GradcheckError, match=r"input 0 at index \(\d+, \d+\): analytic .*, numeric"):
        tw.gradcheck(fn, *make(np.random.default_rng(0)))


def test_fast_mode_catches_a_bug_too():
    fn, make = BUGS["softmax (mean instead of weighted sum)"]
    with pytest.raises(GradcheckError, match="random direction"):
        tw.gradcheck(fn, np.random.default_rng(1).standard_normal((30, 40)), mode="fast")
    assert tw.gradcheck(ops.softmax, np.random.default_rng(1).standard_normal((30, 40)), mode="fast")


def test_a_plain_sum_upstream_would_miss_the_softmax_bug():
    """Why gradcheck draws a random upstream: with all ones, the buggy softmax backward is exact."""
    x = tw.tensor(np.random.default_rng(0).standard_normal((3, 5)), requires_grad=True, dtype=tw.float64)
    BuggySoftmax.apply(x, axis=-1).sum().backward()
    assert np.allclose(x.grad, 0.0, atol=1e-12)  # the true gradient of sum(softmax) is 0 too


def test_non_reentrant_backward_is_caught():
    calls = []

    def flaky_backward(self, g):
        calls.append(1)
        return g * self.saved_tensors[1] * (1 + 1e-6 * len(calls)), g * self.saved_tensors[0]

    with pytest.raises(GradcheckError, match="reentrant"):
        tw.gradcheck(lambda a, b: planted(Mul, flaky_backward).apply(a, b), np.ones(3), np.ones(3), atol=1e-3)


def test_zero_upstream_check():
    def bad(self, g):
        return g + 1.0

    with pytest.raises(GradcheckError, match="zero upstream"):
        tw.gradcheck(lambda a: planted(ops.Neg, bad).apply(a) * 0 + a, np.ones(3), atol=10, rtol=10)


def test_gradient_dtype_and_constant_inputs():
    # integer and boolean inputs are passed through untouched
    assert tw.gradcheck(lambda a, m: ops.masked_fill(a, m, 0.0), np.random.randn(3, 3), np.eye(3, dtype=bool))
    with pytest.raises(ValueError, match="no input"):
        tw.gradcheck(lambda m: m, np.eye(2, dtype=bool))
