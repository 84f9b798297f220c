"""The engine: graph bookkeeping, accumulation, no_grad, freeing, broadcasting, devices."""
import gc
import weakref

import numpy as np
import pytest

import tinyw2v2 as tw
from tinyw2v2 import backend, ops
from tinyw2v2.tensor import Function, unbroadcast


def test_chain_of_10000_ops_backward_is_iterative():
    x = tw.tensor(np.ones(3), requires_grad=True, dtype=tw.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 1.0001 ** 10_000), rtol=1e-10)


def test_leaves_accumulate_over_two_backwards():
    x = tw.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    first = x.grad.copy()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * first)


def test_reused_node_accumulates_within_one_backward():
    x = tw.tensor([1.5, -2.0], requires_grad=True, dtype=tw.float64)
    y = x * 3.0
    z = (y * y + y).sum()  # dz/dx = (2y + 1) * 3
    z.backward()
    np.testing.assert_allclose(x.grad, (2 * 3 * x.data + 1) * 3)


def test_no_grad_records_and_saves_nothing():
    x = tw.tensor(np.random.randn(3, 4), requires_grad=True)
    with tw.no_grad():
        y = (x.exp() * x).softmax(-1)
    assert not y.requires_grad and y._ctx is None
    assert tw.is_grad_enabled()
    # a function run without a needed gradient saves nothing either
    saved = []

    class Spy(Function):
        def forward(self, a):
            self.save_for_backward(a)
            saved.append(self.saved_tensors)
            return a * 2

    with tw.no_grad():
        Spy.apply(x)
    Spy.apply(tw.tensor([1.0]))  # no input requires grad
    assert saved == [(), ()]


def test_graph_is_freed_after_backward():
    x = tw.tensor(np.random.randn(4, 5), requires_grad=True)
    h = (x * 2.0).tanh()
    fn_ref = weakref.ref(h._ctx)
    saved_ref = weakref.ref(h._ctx.saved_tensors[0]) if hasattr(h._ctx.saved_tensors[0], "__weakref__") else None
    loss = h.softmax(-1).sum()
    loss.backward()
    assert h._ctx.inputs is None and h._ctx.saved_tensors == ()
    del loss, h
    gc.collect()
    assert fn_ref() is None, "the graph is still referenced after backward"
    if saved_ref is not None:
        assert saved_ref() is None


def test_second_backward_without_retain_graph_raises_and_retain_graph_works():
    x = tw.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * 2 * x.data)
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_intermediate_grads_are_not_kept_unless_asked():
    x = tw.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3.0
    k = (x * 2.0).retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    np.testing.assert_allclose(k.grad, h.data)


def test_unbroadcast_reduces_to_input_shape():
    g = np.ones((2, 3, 4))
    assert unbroadcast(g, (4,)).shape == (4,)
    assert unbroadcast(g, (3, 1)).shape == (3, 1)
    assert unbroadcast(g, ()).shape == ()
    np.testing.assert_allclose(unbroadcast(g, (1, 3, 1)), np.full((1, 3, 1), 8.0))


def test_broadcast_gradients_reduced_centrally():
    a = tw.tensor(np.random.randn(2, 3, 4), requires_grad=True)
    b = tw.tensor(np.random.randn(3, 1), requires_grad=True)
    c = tw.tensor(2.0, requires_grad=True)
    ((a * b + c) ** 2).sum().backward()
    assert a.grad.shape == (2, 3, 4) and b.grad.shape == (3, 1) and c.grad.shape == ()


def test_wrong_gradient_shape_from_a_function_is_reported():
    class Bad(Function):
        def forward(self, a):
            return a * 2

        def backward(self, g):
            return g[..., :1] * 0 + np.ones((5,))

    x = tw.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match="shape"):
        Bad.apply(x).sum().backward()


def test_default_dtypes():
    assert tw.tensor([1.0, 2.0]).dtype == np.float32
    assert tw.tensor(np.zeros(3)).dtype == np.float32
    assert tw.tensor(np.zeros(3), dtype=tw.float64).dtype == np.float64
    assert tw.tensor([1, 2]).dtype.kind == "i"
    x = tw.tensor([1.0], requires_grad=True, dtype=tw.float64)
    assert (x * 2.5).dtype == np.float64  # Python scalars do not change the dtype
    assert (tw.tensor([1.0]) * 2.5).dtype == np.float32


def test_tensor_api():
    x = tw.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert x.shape == (2, 2) and x.ndim == 2 and x.size == 4 and x.device == "cpu"
    assert isinstance(x.numpy(), np.ndarray) and x.sum().item() == 10.0
    d = x.detach()
    assert not d.requires_grad and d.data is x.data
    y = x.double()
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, 2 * x.data)
    for expr in [x + 1, 1 + x, x - 1, 1 - x, x * 2, 2 * x, x / 2, 2 / x, -x, x ** 2, x @ x, x[0], x.T,
                 x.reshape(4), x.reshape(1, 4), x.transpose(1, 0), x.mean(), x.max(axis=0), x.var(),
                 x.exp(), x.log(), x.sqrt(), x.tanh(), x.sigmoid(), x.abs(), x.clip(1.5, 3.0), x.softmax(),
                 x.log_softmax(0), x.logsumexp(), x.masked_fill(x.data > 2, 0.0), np.ones(2) + x]:
        assert isinstance(expr, tw.Tensor) and expr.requires_grad
    assert (x > 2).data.dtype == bool


def test_non_float_tensor_cannot_require_grad():
    with pytest.raises(TypeError):
        tw.tensor([1, 2], requires_grad=True)


# --- devices ---------------------------------------------------------------------------------------


def test_to_device_and_back(device):
    x = tw.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x.to(device)
    assert y.device.startswith(device) and y.requires_grad and y.is_leaf
    (y * y).sum().backward()
    assert backend.device_of(y.grad) == y.device
    np.testing.assert_allclose(tw.Tensor(y.grad, _copy=False).numpy(), 2 * x.data)
    assert isinstance(y.numpy(), np.ndarray)


def test_mixing_host_and_device_inputs_raises():
    a = tw.tensor(np.ones(3), device="emulated")
    b = tw.tensor(np.ones(3))
    with pytest.raises(TypeError, match="different devices"):
        a + b
    with pytest.raises(TypeError, match="different devices"):
        ops.where(np.ones(3, bool), a, 0.0)  # a host mask with a device tensor


def test_emulated_device_refuses_implicit_host_copies():
    a = backend.to_device(np.ones((2, 2)), "emulated")
    with pytest.raises(TypeError):
        np.asarray(a)
    with pytest.raises(TypeError):
        a + np.ones((2, 2))
    with pytest.raises(TypeError):
        a[np.array([0, 1])]  # host index arrays must be moved too
    import scipy.special
    with pytest.raises(TypeError):
        scipy.special.erf(a)  # CuPy needs cupyx.scipy.special: use backend.erf
    assert float(a.sum()) == 4.0  # explicit sync points are allowed, as on CuPy
    assert backend.device_of(backend.erf(a)) == "emulated"


def test_scatter_add_accumulates_repeated_indices(device):
    xp_target = backend.to_device(np.zeros(4), device)
    idx = backend.to_device(np.array([0, 2, 2, 3, 2]), device)
    backend.scatter_add(xp_target, idx, backend.to_device(np.ones(5), device))
    np.testing.assert_allclose(backend.to_numpy(xp_target), [1, 0, 3, 1])


def test_random_generator_draws_on_the_device(device):
    g = backend.default_rng(0, device)
    u = g.random((3,))
    assert backend.device_of(u).startswith(device)


def test_erf_fast_float32_and_exact_float64():
    import scipy.special
    x = np.linspace(-6, 6, 100001)
    exact = scipy.special.erf(x)
    np.testing.assert_array_equal(backend.erf(x), exact)
    approx = backend.erf(x.astype(np.float32))
    assert approx.dtype == np.float32
    assert np.max(np.abs(approx - exact)) < 1e-6  # absolute: what GELU's 1 + erf needs


def test_every_leaf_gets_its_own_writable_gradient():
    """add hands the same upstream array to both inputs and sum a read-only broadcast view: the leaves must not
    share them (zeroing one would zero the other, or the caller's upstream)."""
    a, b = tw.tensor(np.ones(3), requires_grad=True), tw.tensor(np.ones(3), requires_grad=True)
    upstream = np.full(3, 2.0, dtype=np.float32)
    (a + b).backward(upstream)
    assert a.grad is not b.grad and a.grad is not upstream
    a.grad[...] = 0
    np.testing.assert_array_equal(b.grad, 2.0)
    np.testing.assert_array_equal(upstream, 2.0)
    w = tw.tensor(np.ones((2, 3)), requires_grad=True)
    w.sum().backward()
    w.grad[...] = 0                                          # writable (it was a read-only broadcast view)
