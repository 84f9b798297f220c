"""gelu, linear and dropout: against torch.nn.functional in float64, planted backward bugs, float32 on every
device, the float32 GELU's accuracy against the exact erf form, and dropout's mask semantics."""
import numpy as np
import pytest

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops.activation import Dropout, Gelu, Linear

from conftest import torch_or_skip


def t64(x, grad=True):
    return tw.tensor(x, requires_grad=grad, dtype=tw.float64)


def run_both(torch, ours, theirs, arrays, rtol=1e-10):
    rng = np.random.default_rng(7)
    mine = [t64(a) for a in arrays]
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, yt = ours(*mine), theirs(*tt)
    up = rng.standard_normal(tuple(yt.shape))
    y.backward(up)
    yt.backward(torch.tensor(up))
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=rtol, atol=1e-13)
    for a, b in zip(mine, tt):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=rtol, atol=1e-12)


# --- (a) against torch --------------------------------------------------------------------------------------

@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape,scale", [((3, 4), 1.0), ((2, 1, 5), 6.0), ((1, 512, 7), 3.0), ((9,), 30.0)])
def test_gelu_matches_torch(shape, scale, approximate):
    torch = torch_or_skip()
    x = np.random.default_rng(0).standard_normal(shape) * scale
    run_both(torch, lambda x: F.gelu(x, approximate), lambda x: torch.nn.functional.gelu(x, approximate=approximate), [x])


def test_gelu_on_a_transposed_input_matches_torch():
    torch = torch_or_skip()
    x = np.random.default_rng(1).standard_normal((4, 3, 5))
    run_both(torch, lambda x: F.gelu(x.swapaxes(0, 2)), lambda x: torch.nn.functional.gelu(x.transpose(0, 2)), [x])


@pytest.mark.parametrize("xshape,out,bias", [((3, 4), 5, True), ((2, 3, 4), 2, False), ((4,), 3, True),
                                             ((1, 1, 2, 3), 1, True), ((2, 5, 7, 3), 6, False)])
def test_linear_matches_torch(xshape, out, bias):
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(xshape), rng.standard_normal((out, xshape[-1]))] + ([rng.standard_normal(out)] if bias else [])
    run_both(torch, F.linear, torch.nn.functional.linear, arrays)


def test_linear_on_a_transposed_input_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((2, 4, 3)), rng.standard_normal((5, 4)), rng.standard_normal(5)]
    run_both(torch, lambda x, w, b: F.linear(x.swapaxes(1, 2), w, b),
             lambda x, w, b: torch.nn.functional.linear(x.transpose(1, 2), w, b), arrays)


@pytest.mark.parametrize("shape,mshape,p", [((3, 4), (3, 4), 0.3), ((2, 3, 4), (2, 1, 4), 0.5), ((5, 2), (5, 2), 0.9)])
def test_dropout_with_a_mask_matches_torch_composed(shape, mshape, p):
    """torch draws its own mask, so compare with x * mask / (1 - p) composed from torch primitives."""
    torch = torch_or_skip()
    rng = np.random.default_rng(4)
    mask = rng.random(mshape) >= p
    run_both(torch, lambda x: F.dropout(x, p, mask=mask), lambda x: x * torch.tensor(mask) / (1 - p),
             [rng.standard_normal(shape)], rtol=1e-14)


# --- (b) planted backward bugs ----------------------------------------------------------------------------------

class GeluWithoutDensityTerm(Gelu):
    """dx = g * Phi(x): forgets the x phi(x) term of the product rule."""

    def backward(self, g):
        import scipy.special
        return g * 0.5 * (1 + scipy.special.erf(self.x / np.sqrt(2)))

    def forward(self, x, approximate="none"):
        self.x = x
        return Gelu.forward(self, x, approximate)


class LinearWeightGradTransposedInputs(Linear):
    """dW = X^T G instead of G^T X: the transpose of the right gradient."""

    def backward(self, g):
        dx, dw, *rest = Linear.backward(self, g)
        return (dx, dw.T, *rest)   # square weight: the shape passes, the values do not


class LinearBiasGradMean(Linear):
    def backward(self, g):
        dx, dw, db = Linear.backward(self, g)
        return dx, dw, db / g.reshape(-1, g.shape[-1]).shape[0]   # mean over rows instead of the sum


class DropoutForgetsScale(Dropout):
    def backward(self, g):
        (mask,) = self.saved_tensors
        return g * mask, None


BUGS = {
    "gelu: missing x phi(x)": (lambda x: GeluWithoutDensityTerm.apply(x), lambda r: (r.standard_normal((3, 4)),)),
    # x is not drawn first: gradcheck's upstream v comes from the same seed, and v = x makes dW symmetric
    "linear: dW transposed": (lambda w, x, b: LinearWeightGradTransposedInputs.apply(x, w, b),
                              lambda r: (r.standard_normal((4, 4)), r.standard_normal((2, 3, 4)), r.standard_normal(4))),
    "linear: db a mean": (lambda x, w, b: LinearBiasGradMean.apply(x, w, b),
                          lambda r: (r.standard_normal((5, 3)), r.standard_normal((2, 3)), r.standard_normal(2))),
    "dropout: forgets 1/(1-p)": (lambda x: DropoutForgetsScale.apply(x, np.arange(12).reshape(3, 4) % 3 > 0, p=0.4),
                                 lambda r: (r.standard_normal((3, 4)),)),
}


@pytest.mark.parametrize("name", list(BUGS))
def test_planted_bug_is_caught(name):
    fn, make = BUGS[name]
    with pytest.raises(GradcheckError):
        tw.gradcheck(fn, *make(np.random.default_rng(0)))


# --- (c) float32 on every device ----------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["gelu", "gelu_tanh", "linear", "dropout"])
def test_float32_on_device_equals_cpu(device, op):
    rng = np.random.default_rng(5)
    x = (3 * rng.standard_normal((2, 7, 6))).astype(np.float32)
    w, b = rng.standard_normal((5, 6)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    mask = rng.random((2, 7, 6)) >= 0.2
    fns = {"gelu": (F.gelu, [x]), "gelu_tanh": (lambda x: F.gelu(x, "tanh"), [x]), "linear": (F.linear, [x, w, b]),
           "dropout": (None, [x])}
    fn, arrays = fns[op]
    results = []
    for dev in ("cpu", device):
        ts = [tw.tensor(a, requires_grad=True, device=dev) for a in arrays]
        if op == "dropout":
            y = F.dropout(ts[0], 0.2, mask=backend.to_device(mask, dev))
        else:
            y = fn(*ts)
        up = np.random.default_rng(6).standard_normal(y.shape).astype(np.float32)
        y.backward(backend.to_device(up, dev))
        assert y.dtype == np.float32 and y.device.startswith(dev)
        results.append([backend.to_numpy(a) for a in (y.data, *(t.grad for t in ts))])
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-6)


# --- (d) op-specific ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reference", [False, True], ids=["tuned", "reference"])
def test_float32_gelu_and_its_derivative_are_accurate_to_1e_6(reference):
    """The fused float32 path against the exact erf form in float64, over the range that matters and beyond."""
    import scipy.special
    x = np.concatenate([np.linspace(-12, 12, 400_001), [0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, 1e4, -1e4]]).astype(np.float32)
    t = tw.tensor(x, requires_grad=True)
    with tw.reference_ops(reference):
        y = F.gelu(t)
        y.backward(np.ones_like(x))
    x64 = x.astype(np.float64)
    Phi = 0.5 * (1 + scipy.special.erf(x64 / np.sqrt(2)))
    assert y.dtype == np.float32 and t.grad.dtype == np.float32
    assert np.abs(y.data - x64 * Phi).max() < 1e-6
    assert np.abs(t.grad - (Phi + x64 * np.exp(-0.5 * x64 ** 2) / np.sqrt(2 * np.pi))).max() < 1e-6
    with tw.no_grad(), tw.reference_ops(reference):  # the no-grad forward runs the same kernel, no derivative
        np.testing.assert_array_equal(F.gelu(tw.tensor(x)).data, y.data)
    assert y.data[-1] == 0 and y.data[-2] == 1e4


def test_float32_gelu_is_within_torch_float32_noise():
    torch = torch_or_skip()
    x = (np.random.default_rng(8).standard_normal(200_003) * 4).astype(np.float32)  # odd size: a partial last block
    np.testing.assert_allclose(F.gelu(tw.tensor(x)).data, torch.nn.functional.gelu(torch.tensor(x)).numpy(),
                               atol=2e-6, rtol=0)


def test_gelu_tanh_derivative_has_no_overflow_for_large_inputs():
    x = t64(np.array([-1e3, -60.0, 60.0, 1e3]))
    with np.errstate(all="raise"):
        F.gelu(x, "tanh").backward(np.ones(4))
    np.testing.assert_allclose(x.grad, [0, 0, 1, 1])


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(tw.tensor([1.0]), "erf")


def test_linear_is_one_matmul_with_a_bias():
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((3, 2, 4)), rng.standard_normal((6, 4)), rng.standard_normal(6)
    np.testing.assert_allclose(F.linear(t64(x), t64(w), t64(b)).data, x @ w.T + b, rtol=1e-12)
    assert F.linear(t64(x[0, 0]), t64(w)).shape == (6,)


def test_dropout_identity_cases_return_the_input_itself():
    x = tw.tensor(np.ones((3, 4)), requires_grad=True)
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.5, training=False) is x
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError):
            F.dropout(x, p)


def test_dropout_mask_statistics_and_reproducibility(device):
    x = tw.tensor(np.ones((200, 500), np.float32), device=device)
    g1, g2 = backend.default_rng(11, device), backend.default_rng(11, device)
    m1 = F.dropout_mask(x.shape, 0.1, g1, like=x)
    m2 = F.dropout_mask(x.shape, 0.1, g2, like=x)
    assert m1.dtype == bool and backend.device_of(m1).startswith(device)
    np.testing.assert_array_equal(backend.to_numpy(m1), backend.to_numpy(m2))     # same seed, same mask
    keep = backend.to_numpy(m1).mean()
    assert abs(keep - 0.9) < 0.005                                                  # 100k draws: 5 sigma ~ 0.005
    y = F.dropout(x, 0.1, mask=m1)
    yh = backend.to_numpy(y.data)
    np.testing.assert_allclose(yh[backend.to_numpy(m1)], 1 / 0.9, rtol=1e-6)        # kept entries scaled up
    assert (yh[~backend.to_numpy(m1)] == 0).all()
    y2 = F.dropout(x, 0.1, generator=backend.default_rng(11, device))               # drawn inside: the same mask
    np.testing.assert_array_equal(backend.to_numpy(y2.data), yh)
    assert F.dropout(x, 0.1).device.startswith(device)                              # default generator per device


def test_dropout_gradient_is_the_scaled_mask_and_p1_drops_everything():
    x = t64(np.arange(6.0).reshape(2, 3))
    mask = np.array([[True, False, True], [False, True, True]])
    F.dropout(x, 0.25, mask=tw.Tensor(mask)).backward(np.ones((2, 3)))
    np.testing.assert_allclose(x.grad, mask / 0.75)
    x.zero_grad()
    y = F.dropout(x, 1.0, mask=np.zeros((2, 3), bool))
    y.backward(np.ones((2, 3)))
    assert (y.data == 0).all() and (x.grad == 0).all()


def test_float32_gelu_blocks_do_not_change_the_result():
    """The float32 kernel runs in cache-sized blocks; small blocks with a partial last one give the same values."""
    from tinyw2v2.ops import fast
    x = (np.random.default_rng(10).standard_normal((3, 5, 7)) * 3).astype(np.float32)
    results = []
    for chunk in (1 << 16, 8):
        with fast.tuning(gelu_block_elements=chunk):
            t = tw.tensor(x, requires_grad=True)
            y = F.gelu(t)
            y.backward(np.ones_like(x))
        results.append((y.data, t.grad))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
