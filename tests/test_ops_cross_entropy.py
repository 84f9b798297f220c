"""cross_entropy: against torch.nn.functional.cross_entropy in float64 (reductions, ignore_index, class axis 1
with trailing axes, -inf logits), planted backward bugs, float32 on every device, and its edge cases
(-inf target logit, every row ignored, argument errors)."""
import warnings

import numpy as np
import pytest

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend, ops
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops.cross_entropy import CrossEntropy

from conftest import torch_or_skip


def t64(x):
    return tw.tensor(x, requires_grad=True, dtype=tw.float64)


def compare(torch, x, t, transpose=False, **kw):
    xs = t64(x)
    xt = torch.tensor(x, requires_grad=True)
    y = F.cross_entropy(ops.swapaxes(xs, 0, 1) if transpose else xs, t, **kw)
    yt = torch.nn.functional.cross_entropy(xt.T if transpose else xt, torch.tensor(t), **kw)
    up = np.random.default_rng(3).standard_normal(tuple(yt.shape))
    y.backward(up)
    yt.backward(torch.tensor(up))
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(xs.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-13)


# --- (a) against torch in float64 -------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(7, 5), (1, 3), (4, 3, 6), (2, 5, 3, 2)])
def test_matches_torch(shape, reduction):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3
    t = rng.integers(0, shape[1], shape[:1] + shape[2:])
    t.reshape(-1)[1::3] = -100 if t.size > 1 else t.reshape(-1)[1::3]
    compare(torch, x, t, reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_contrastive_shape_with_inf_negatives_matches_torch(reduction):
    """Logits (B*T, 1 + K): target 0 (the positive), -inf at negatives equal to the positive, unmasked frames -100."""
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (12, 9)) / 0.1
    x[:, 1:][rng.random((12, 8)) < 0.2] = -np.inf
    t = np.where(rng.random(12) < 0.5, 0, -100)
    compare(torch, x, t, reduction=reduction)


def test_custom_ignore_index_large_logits_and_transposed_input_match_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    compare(torch, rng.standard_normal((6, 4)) * 80, rng.integers(0, 4, 6), ignore_index=2)
    compare(torch, rng.standard_normal((5, 8)), rng.integers(0, 5, 8), transpose=True)  # (C, N) -> T -> (N, C)


def test_equals_log_softmax_then_pick():
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    y = F.cross_entropy(tw.tensor(x, dtype=tw.float64), t, reduction="none")
    ref = -ops.log_softmax(tw.tensor(x, dtype=tw.float64), -1).data[np.arange(6), t]
    np.testing.assert_allclose(y.data, ref, rtol=1e-13)


# --- (b) planted backward bugs -------------------------------------------------------------------------------

def _no_onehot(self, g):
    """softmax * w only: forgot the - [c = t] term."""
    e, s, tc, live, count = self.saved_tensors
    return e / s * g / count, None


def _mean_over_all_rows(self, g):
    """the mean divides by every row, ignored ones included."""
    dx, _ = CrossEntropy.backward(self, g)
    return dx * self.saved_tensors[4] / self.saved_tensors[0].shape[0], None


def _onehot_sign(self, g):
    dx, _ = CrossEntropy.backward(self, g)
    e, s, tc, live, count = self.saved_tensors
    w = np.where(live, g / count, 0.0)
    dx[np.arange(len(tc)), tc] += 2 * w
    return dx, None


@pytest.mark.parametrize("bug", [_no_onehot, _mean_over_all_rows, _onehot_sign])
def test_planted_bug_is_caught(bug):
    buggy = type("BuggyCE", (CrossEntropy,), {"backward": bug})
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 4)), np.array([1, -100, 3, 0, 2])
    with pytest.raises(GradcheckError):
        tw.gradcheck(lambda x, t: buggy.apply(x, t, reduction="mean", ignore_index=-100), x, t)


# --- (c) float32 on every device equals the CPU ---------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_float32_on_device_matches_cpu(device, reduction):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 7, 3)) * 4).astype(np.float32)
    x[0, 2:, 0] = -np.inf
    t = rng.integers(0, 7, (6, 3))
    t[1, 1] = -100
    t[0, 0] = 1
    up = rng.standard_normal((6, 3)).astype(np.float32) if reduction == "none" else np.array(1.5, np.float32)
    results = []
    for dev in ("cpu", device):
        xs = tw.tensor(x, requires_grad=True, device=dev)
        y = F.cross_entropy(xs, backend.to_device(t, dev), reduction=reduction)
        y.backward(backend.to_device(up, dev))
        assert y.dtype == np.float32 and xs.grad.dtype == np.float32
        results.append((y.numpy(), backend.to_numpy(xs.grad)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- (d) edge cases ----------------------------------------------------------------------------------------

def test_inf_target_logit_gives_inf_loss_and_zero_gradient():
    x = np.array([[-np.inf, 1.0, 2.0], [0.5, -np.inf, 0.1], [-np.inf, -np.inf, -np.inf]])
    t = np.array([0, 0, 2])  # row 0: target logit -inf; row 1: a -inf negative; row 2: only -inf
    xs = t64(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.cross_entropy(xs, t, reduction="none")
        y.backward(np.ones(3))
    assert y.data[0] == np.inf and y.data[2] == np.inf and np.isfinite(y.data[1])
    assert np.all(xs.grad[0] == 0) and np.all(xs.grad[2] == 0)
    assert xs.grad[1, 1] == 0 and np.isfinite(xs.grad).all()
    p = np.exp(x[1] - np.logaddexp(0.5, 0.1))
    np.testing.assert_allclose(xs.grad[1], p - np.eye(3)[0], rtol=1e-12)
    assert F.cross_entropy(t64(x), t, reduction="sum").item() == np.inf


def test_every_row_ignored_gives_nan_mean_like_torch_and_zero_gradient():
    xs = t64(np.random.default_rng(7).standard_normal((3, 4)))
    t = np.full(3, -100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.cross_entropy(xs, t)
        y.backward()
    assert np.isnan(y.item()) and np.all(xs.grad == 0)
    assert F.cross_entropy(xs, t, reduction="sum").item() == 0.0


def test_argument_errors():
    x = tw.tensor(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, np.zeros(4, int), reduction="avg")
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(x, np.zeros(4))
    with pytest.raises(ValueError, match="does not match"):
        F.cross_entropy(x, np.zeros(3, int))
    with pytest.raises(TypeError, match="different devices"):
        F.cross_entropy(x.to("emulated"), np.zeros(4, int))
