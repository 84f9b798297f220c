"""group_norm and layer_norm: against torch.nn.functional in float64 on awkward shapes, planted backward bugs,
float32 on every device, and the numerics the brief asks for (two-pass variance, eps inside the sqrt)."""
import numpy as np
import pytest

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops import fast
from tinyw2v2.ops.norm import GroupNorm, LayerNorm

from conftest import torch_or_skip


def t64(x):
    return tw.tensor(x, requires_grad=True, dtype=tw.float64)


def run_both(torch, ours, theirs, arrays, transpose=False):
    """Forward and backward (random upstream) of ours and torch's on the same float64 arrays."""
    rng = np.random.default_rng(7)
    mine = [t64(a) for a in arrays]
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    x0, xt0 = (mine[0].swapaxes(1, 2), tt[0].transpose(1, 2)) if transpose else (mine[0], tt[0])
    y = ours(x0, *mine[1:])
    yt = theirs(xt0, *tt[1:])
    up = rng.standard_normal(tuple(yt.shape))
    y.backward(up)
    yt.backward(torch.tensor(up))
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(mine, tt):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-11)


# --- (a) against torch ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,groups,affine,transpose", [
    ((2, 6, 5), 3, True, False), ((1, 5, 7), 5, True, False), ((2, 4, 3), 1, True, False),
    ((3, 2, 1), 2, True, False),          # one element per group: y = bias, dx = 0
    ((2, 3, 2, 3), 3, True, False),       # 4-D
    ((2, 7, 4), 2, True, True),           # transposed (non-contiguous) input (B, T, C) -> (B, C, T)
    ((2, 4, 5), 2, False, False), ((1, 512, 9), 512, True, False),
])
def test_group_norm_matches_torch(shape, groups, affine, transpose):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 2 + 0.5
    C = shape[2] if transpose else shape[1]
    arrays = [x] + ([rng.standard_normal(C), rng.standard_normal(C)] if affine else [])
    run_both(torch, lambda x, *wb: F.group_norm(x, groups, *wb),
             lambda x, *wb: torch.nn.functional.group_norm(x, groups, *wb), arrays, transpose)


@pytest.mark.parametrize("shape,nshape,affine,transpose", [
    ((2, 3, 5), (5,), True, False), ((2, 3, 4, 5), (4, 5), True, False), ((1, 7), (7,), False, False),
    ((5, 2, 3), (2,), True, True), ((4, 1), (1,), True, False), ((3, 2, 4, 6), (6,), True, False),
])
def test_layer_norm_matches_torch(shape, nshape, affine, transpose):
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) - 1.0
    arrays = [x] + ([rng.standard_normal(nshape), rng.standard_normal(nshape)] if affine else [])
    run_both(torch, lambda x, *wb: F.layer_norm(x, nshape, *wb),
             lambda x, *wb: torch.nn.functional.layer_norm(x, nshape, *wb), arrays, transpose)


def test_weight_only_and_bias_only_match_torch_with_the_missing_one_set_to_identity():
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 4, 6)), rng.standard_normal(4), rng.standard_normal(4)
    ref = torch.nn.functional.group_norm(torch.tensor(x), 2, torch.tensor(w), torch.zeros(4, dtype=torch.float64))
    np.testing.assert_allclose(F.group_norm(t64(x), 2, t64(w)).data, ref.numpy(), rtol=1e-12, atol=1e-12)
    ref = torch.nn.functional.group_norm(torch.tensor(x), 2, torch.ones(4, dtype=torch.float64), torch.tensor(b))
    np.testing.assert_allclose(F.group_norm(t64(x), 2, None, t64(b)).data, ref.numpy(), rtol=1e-12, atol=1e-12)
    ln = torch.nn.functional.layer_norm(torch.tensor(x), (6,), None, torch.tensor(b[:2].repeat(3)))
    np.testing.assert_allclose(F.layer_norm(t64(x), 6, None, t64(b[:2].repeat(3))).data, ln.numpy(), rtol=1e-12)


# --- (b) planted backward bugs ------------------------------------------------------------------------------

class GroupNormStatisticsAsConstants(GroupNorm):
    """dx = rstd * dxhat: treats mu and rstd as constants (forgets both mean terms)."""

    def backward(self, g):
        xhat, rstd, w = self.saved_tensors                                 # (B, C, S), (B, G, 1), (C,)
        B, C, S = xhat.shape
        dxhat = g.reshape(B, C, S) * w.reshape(C, 1)
        dx = dxhat.reshape(B, self.G, -1) * rstd                           # group rows
        return (dx.reshape(self.shape),) + GroupNorm.backward(self, g)[1:]


class GroupNormMeansOverChannelsOnly(GroupNorm):
    """The right formula, but with the means over each channel's trailing axes instead of over the whole group."""

    def backward(self, g):
        xhat, rstd, w = self.saved_tensors                                 # (B, C, S): channel rows
        B, C, S = xhat.shape
        d = g.reshape(B, C, S) * w.reshape(C, 1)
        r = np.repeat(rstd, C // self.G, axis=1)                           # (B, G, 1) -> (B, C, 1)
        dx = r * (d - d.mean(-1, keepdims=True) - xhat * (d * xhat).mean(-1, keepdims=True))
        return (dx.reshape(self.shape),) + GroupNorm.backward(self, g)[1:]


class LayerNormForgetsMean(LayerNorm):
    """dx = rstd * (dxhat - xhat * mean(dxhat * xhat)): drops the - mean(dxhat) term."""

    def backward(self, g):
        xhat, rstd, w = self.saved_tensors                                 # (M, N), (M, 1), (N,)
        dxhat = g.reshape(xhat.shape) * w
        dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdims=True))
        return (dx.reshape(self.shape),) + LayerNorm.backward(self, g)[1:]


class LayerNormWeightGradWithoutXhat(LayerNorm):
    """dweight = sum g (the bias gradient) instead of sum g * xhat."""

    def backward(self, g):
        dx, dw, db = LayerNorm.backward(self, g)
        return dx, db.copy(), db


@pytest.mark.parametrize("bug", [GroupNormStatisticsAsConstants, GroupNormMeansOverChannelsOnly])
def test_planted_group_norm_bug_is_caught(bug):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 6, 5)), rng.standard_normal(6), rng.standard_normal(6)
    fn = lambda x, w, b: bug.apply(x, w, b, num_groups=3, eps=1e-5)  # noqa: E731
    with pytest.raises(GradcheckError):
        tw.gradcheck(fn, x, w, b)
    assert tw.gradcheck(lambda x, w, b: F.group_norm(x, 3, w, b), x, w, b)


@pytest.mark.parametrize("bug", [LayerNormForgetsMean, LayerNormWeightGradWithoutXhat])
def test_planted_layer_norm_bug_is_caught(bug):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    fn = lambda x, w, b: bug.apply(x, w, b, n_axes=1, eps=1e-5)  # noqa: E731
    with pytest.raises(GradcheckError):
        tw.gradcheck(fn, x, w, b)


# --- (c) float32 on every device ------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["group_norm", "layer_norm"])
def test_float32_on_device_equals_cpu(device, op):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 33)).astype(np.float32)
    w, b = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    up = rng.standard_normal(x.shape).astype(np.float32)
    if op == "layer_norm":
        x = np.ascontiguousarray(x.transpose(0, 2, 1))  # (2, 33, 8): normalise the 8 features
        up = np.ascontiguousarray(up.transpose(0, 2, 1))
        fn = lambda x, w, b: F.layer_norm(x, 8, w, b)  # noqa: E731
    else:
        fn = lambda x, w, b: F.group_norm(x, 4, w, b)  # noqa: E731
    results = []
    for dev in ("cpu", device):
        ts = [tw.tensor(a, requires_grad=True, device=dev) for a in (x, w, b)]
        y = fn(*ts)
        y.backward(backend.to_device(up, dev))
        assert y.dtype == np.float32 and y.device.startswith(dev)
        results.append([backend.to_numpy(a) for a in (y.data, *(t.grad for t in ts))])
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-5)


# --- (d) numerics and errors ------------------------------------------------------------------------------------

def test_two_pass_variance_survives_a_large_mean_in_float32():
    """At mean 1e3 and std 1, a one-pass E[x^2] - E[x]^2 in float32 is off by percents; two passes are not."""
    rng = np.random.default_rng(4)
    x32 = (1e3 + rng.standard_normal((2, 4, 200))).astype(np.float32)
    ref = x32.astype(np.float64)
    ref = (ref - ref.mean(-1, keepdims=True)) / np.sqrt(ref.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(F.group_norm(tw.tensor(x32), 4).data, ref, atol=1e-3)
    np.testing.assert_allclose(F.layer_norm(tw.tensor(x32), 200).data, ref, atol=1e-3)
    mu = x32.mean(-1, keepdims=True)
    one_pass = (x32 - mu) / np.sqrt((x32 * x32).mean(-1, keepdims=True) - mu * mu + np.float32(1e-5))
    assert np.abs(one_pass - ref).max() > 1e-2  # what the test would catch


def test_eps_inside_the_sqrt():
    """A constant group has var 0: y = 0 * rstd + bias exactly; a variance equal to eps gives rstd = 1/sqrt(2 eps)."""
    x = np.full((1, 2, 5), 3.0)
    b = np.array([0.5, -1.0])
    y = F.group_norm(t64(x), 2, None, t64(b))
    np.testing.assert_array_equal(y.data, np.broadcast_to(b[:, None], (1, 2, 5)))
    x = np.array([[1.0, -1.0]]) * np.sqrt(1e-3)  # variance 1e-3 = eps
    np.testing.assert_allclose(F.layer_norm(t64(x), 2, eps=1e-3).data, [[1 / np.sqrt(2), -1 / np.sqrt(2)]], rtol=1e-12)


def test_group_norm_with_one_group_per_channel_normalises_each_channel_over_time():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 50))
    y = F.group_norm(t64(x), 3).data
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1 / (1 + 1e-5 / x.var(-1)), rtol=1e-10)


def test_no_grad_saves_nothing_and_bad_arguments_raise():
    x = tw.tensor(np.ones((2, 4, 3)))
    with tw.no_grad():
        y = F.group_norm(x, 2)
    assert y._ctx is None
    with pytest.raises(ValueError, match="does not divide"):
        F.group_norm(x, 3)
    with pytest.raises(ValueError, match="does not end with"):
        F.layer_norm(x, (4,))


def test_gradients_flow_only_where_asked():
    rng = np.random.default_rng(6)
    x = t64(rng.standard_normal((2, 4, 3)))
    w = tw.tensor(rng.standard_normal(4), dtype=tw.float64)  # no grad
    b = t64(rng.standard_normal(4))
    F.group_norm(x, 2, w, b).backward(np.ones((2, 4, 3)))
    assert x.grad is not None and w.grad is None and b.grad is not None
    np.testing.assert_allclose(b.grad, 6.0)


@pytest.mark.parametrize("block", [1, 40, 10 ** 9])
def test_cache_blocks_do_not_change_the_result(block):
    """The tuned ops run block by block over rows (one row per block with block=1, a partial last block with 40)."""
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((3, 6, 7)), rng.standard_normal(6), rng.standard_normal(6)
    up = rng.standard_normal((3, 6, 7))
    results = []
    for blk in (10 ** 9, block):
        out = []
        for fn, args in ((lambda x, w, b: F.group_norm(x, 3, w, b), (x, w, b)),
                         (lambda x, w, b: F.layer_norm(x, 7, w, b), (x, w[:1].repeat(7), b[:1].repeat(7)))):
            ts = [t64(a) for a in args]
            with fast.tuning(norm_block_elements=blk):
                y = fn(*ts)
                y.backward(up)
            out += [y.data] + [t.grad for t in ts]
        results.append(out)
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-13)
