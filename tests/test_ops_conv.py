"""conv1d and weight_norm: equal to torch in float64, planted bugs caught, devices agree, model-specific shapes."""
import numpy as np
import pytest

import tinyw2v2 as tw
from tinyw2v2 import backend
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops import fast
from tinyw2v2.ops.conv import Conv1d, WeightNorm, conv1d, conv_output_length, weight_norm
from tinyw2v2.ops.fast import conv as fast_conv

from conftest import torch_or_skip

# (x shape, w shape, bias?, kwargs, transposed x?)
CONV_CASES = [
    ((2, 4, 11), (6, 2, 3), True, dict(stride=2, padding=1, dilation=2, groups=2), False),
    ((1, 1, 53), (8, 1, 10), False, dict(stride=5), False),                    # feature encoder layer 0
    ((3, 6, 17), (5, 6, 3), False, dict(stride=2), False),                     # layers 1-4
    ((2, 6, 12), (4, 6, 2), False, dict(stride=2), True),                      # layers 5-6, transposed input
    ((2, 8, 9), (8, 2, 4), True, dict(padding=2, groups=4), False),            # positional conv, even K
    ((2, 6, 7), (6, 3, 8), True, dict(padding=4, groups=2), True),             # K > T, transposed
    ((2, 3, 10), (4, 3, 4), True, dict(padding="same", dilation=2), False),
    ((1, 2, 9), (3, 2, 3), False, dict(padding=(1,), stride=(2,)), False),     # 1-tuples, as torch allows
    ((2, 3, 9), (3, 3, 3), True, dict(padding="valid", dilation=3), False),
    ((2, 3, 5), (4, 3, 2), True, dict(padding=3), False),                      # padding > kernel span: crop gy
    ((1, 4, 6), (2, 4, 1), False, dict(padding=1), True),                      # K = 1
]


def _ours(x, w, b, kw, transposed, dtype=tw.float64, device="cpu"):
    X = tw.Tensor(np.ascontiguousarray(x.swapaxes(1, 2)) if transposed else x, requires_grad=True, dtype=dtype,
                  device=device)
    W = tw.Tensor(w, requires_grad=True, dtype=dtype, device=device)
    Bb = tw.Tensor(b, requires_grad=True, dtype=dtype, device=device) if b is not None else None
    y = conv1d(X.swapaxes(1, 2) if transposed else X, W, Bb, **kw)
    return X, W, Bb, y


def _run_ours(x, w, b, kw, transposed, g, dtype=tw.float64, device="cpu"):
    X, W, Bb, y = _ours(x, w, b, kw, transposed, dtype, device)
    y.backward(backend.to_device(g.astype(dtype), device))
    gx = X.grad.swapaxes(1, 2) if transposed else X.grad
    out = [y.numpy(), backend.to_numpy(gx), backend.to_numpy(W.grad)]
    return out + ([backend.to_numpy(Bb.grad)] if Bb is not None else [])


def _draw(xs, ws, bias, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal(xs), r.standard_normal(ws), (r.standard_normal(ws[0]) if bias else None)


# the code paths large sizes take, forced on at small sizes (knobs of the tuned Conv1d): the GEMM layout, and
# the taps in chunks of ceil(conv_min_reduction / Cg) taps
CHUNKED = dict(conv_chunk_elements=1, conv_min_reduction=1)
PATHS = {"folded": dict(conv_layout="folded"), "batch-major": dict(conv_layout="batch_major"),
         "chunked": dict(conv_layout="folded", **CHUNKED),
         "batch-major+chunked": dict(conv_layout="batch_major", conv_chunk_elements=1, conv_min_reduction=5)}


@pytest.mark.torchref
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("xs,ws,bias,kw,transposed", CONV_CASES, ids=[f"{c[0]}*{c[1]} {c[3]}" for c in CONV_CASES])
def test_conv1d_matches_torch(xs, ws, bias, kw, transposed, path):
    torch = torch_or_skip()
    x, w, b = _draw(xs, ws, bias)
    tx, tw_ = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    ty = torch.nn.functional.conv1d(tx, tw_, tb, **kw)
    g = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    with fast.tuning(**PATHS[path]):
        ours = _run_ours(x, w, b, kw, transposed, g)
    theirs = [ty.detach().numpy(), tx.grad.numpy(), tw_.grad.numpy()] + ([tb.grad.numpy()] if bias else [])
    for name, a, t in zip(["y", "dx", "dw", "db"], ours, theirs):
        assert a.shape == t.shape, name
        np.testing.assert_allclose(a, t, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.torchref
@pytest.mark.parametrize("dim,vs,gs", [(0, (6, 3, 5), (6, 1, 1)), (2, (6, 3, 5), (1, 1, 5)), (-1, (6, 3, 5), ()),
                                       (1, (4, 7), (1, 7)), (0, (4, 7), (4, 1))])
def test_weight_norm_matches_torch(dim, vs, gs):
    torch = torch_or_skip()
    r = np.random.default_rng(0)
    v, g, up = r.standard_normal(vs), r.standard_normal(gs), r.standard_normal(vs)
    V, G = tw.Tensor(v, requires_grad=True, dtype=tw.float64), tw.Tensor(g, requires_grad=True, dtype=tw.float64)
    w = weight_norm(V, G, dim)
    w.backward(up)
    tv, tg = torch.tensor(v, requires_grad=True), torch.tensor(g, requires_grad=True)
    tw_ = torch._weight_norm(tv, tg, dim)
    tw_.backward(torch.tensor(up))
    np.testing.assert_allclose(w.data, tw_.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(V.grad, tv.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(G.grad, tg.grad.numpy(), rtol=1e-10, atol=1e-13)
    assert G.grad.shape == g.shape


@pytest.mark.torchref
def test_positional_conv_matches_torch_weight_norm_module():
    """The wav2vec 2.0 positional convolution: Conv1d + weight_norm(dim=2) + SamePad (drop the last frame)."""
    torch = torch_or_skip()
    C, K, G, B, T = 8, 4, 2, 2, 9
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(C, C, K, padding=K // 2, groups=G).double()
    conv = torch.nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
    g_t = conv.parametrizations.weight.original0
    v_t = conv.parametrizations.weight.original1
    assert tuple(g_t.shape) == (1, 1, K)
    x = np.random.default_rng(0).standard_normal((B, C, T))
    tx = torch.tensor(x, requires_grad=True)
    ty = conv(tx)[:, :, :-1]
    up = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(up))

    X = tw.Tensor(x, requires_grad=True, dtype=tw.float64)
    V = tw.Tensor(v_t.detach().numpy(), requires_grad=True, dtype=tw.float64)
    Gn = tw.Tensor(g_t.detach().numpy(), requires_grad=True, dtype=tw.float64)
    Bb = tw.Tensor(conv.bias.detach().numpy(), requires_grad=True, dtype=tw.float64)
    y = conv1d(X, weight_norm(V, Gn, 2), Bb, padding=K // 2, groups=G)[:, :, :-1]
    assert y.shape == (B, C, T)
    y.backward(up)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in [(X.grad, tx.grad), (V.grad, v_t.grad), (Gn.grad, g_t.grad), (Bb.grad, conv.bias.grad)]:
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


# --- planted bugs -----------------------------------------------------------------------------------


def _col2im(self, dcols, taps, accumulate=True):
    """The reference Conv1d's col2im over the given taps only, adding or (a bug) assigning."""
    B, C, T, K, left, right, stride, dilation = self.sizes
    T_out = dcols.shape[2] // B
    dcols = dcols.reshape(C, K, B, T_out).transpose(1, 2, 0, 3)  # (K, B, C, T')
    dxpad = np.zeros((B, C, left + T + right))
    for k in taps:
        at = (slice(None), slice(None), slice(k * dilation, k * dilation + stride * (T_out - 1) + 1, stride))
        if accumulate:
            dxpad[at] += dcols[k]
        else:
            dxpad[at] = dcols[k]
    return dxpad[:, :, left:left + T]


class AssignCol2im(Conv1d):
    """col2im that assigns instead of accumulating: overlapping taps (K > stride) lose contributions."""

    def _col2im(self, dcols):
        return _col2im(self, dcols, range(self.sizes[3]), accumulate=False)


class SwappedGroupsDw(Conv1d):
    """dW of each group computed against the other group's columns."""

    def backward(self, gy):
        dx, dw, db = Conv1d.backward(self, gy)
        O = dw.shape[0]
        return dx, np.concatenate([dw[O // 2:], dw[:O // 2]]), db


class MissingTap(Conv1d):
    """col2im whose loop stops one tap early."""

    def _col2im(self, dcols):
        return _col2im(self, dcols, range(self.sizes[3] - 1))


class NoProjection(WeightNorm):
    """dv = (g / n) gw: forgets that scaling v does not change w (the projection term)."""

    def backward(self, gw):
        v, n, scale = self.saved_tensors
        return gw * scale, WeightNorm.backward(self, gw)[1]


class NormNotDivided(WeightNorm):
    """dg = sum(gw * v), missing the division by n."""

    def backward(self, gw):
        v, n, scale = self.saved_tensors
        dv, dg = WeightNorm.backward(self, gw)
        return dv, dg * n.reshape(dg.shape)


def _conv(cls, **kw):
    from tinyw2v2.ops.conv import padding_sides
    pads = padding_sides(kw.pop("padding", 0), 1, 1)
    return lambda x, w: cls.apply(x, w, None, padding=pads, **kw)


class UnflippedKernel(fast_conv.Conv1d):
    """(tuned Conv1d) Stride-1 dx as a convolution of gy with the transposed kernel, but not flipped in time."""

    def _grad_input_stride1(self, gy):
        w = self.w
        self.w = w[:, :, ::-1]  # the flip in fast_conv.Conv1d._grad_input_stride1 then cancels out
        try:
            return fast_conv.Conv1d._grad_input_stride1(self, gy)
        finally:
            self.w = w


BUGS = {  # buggy class, its parameters, shapes of x and w
    "conv1d col2im assigns (K=3 > stride=2)": (AssignCol2im, dict(stride=2), ((2, 3, 11), (4, 3, 3))),
    "conv1d dW groups swapped": (SwappedGroupsDw, dict(groups=2, padding=1), ((2, 4, 7), (4, 2, 3))),
    "conv1d col2im misses the last tap": (MissingTap, dict(stride=5), ((1, 1, 23), (3, 1, 10))),
    "conv1d stride-1 dx kernel not flipped": (UnflippedKernel, dict(padding=2, groups=2), ((2, 4, 7), (4, 2, 4))),
}


@pytest.mark.parametrize("name", list(BUGS))
def test_conv1d_planted_bug_is_caught(name):
    bug, kw, shapes = BUGS[name]
    r = np.random.default_rng(0)
    arrays = [r.standard_normal(s) for s in shapes]
    assert tw.gradcheck(_conv(bug.__mro__[1], **kw), *arrays)  # the real backward passes on the same inputs
    with pytest.raises(GradcheckError):
        tw.gradcheck(_conv(bug, **kw), *arrays)


@pytest.mark.parametrize("bug", [NoProjection, NormNotDivided], ids=lambda c: c.__name__)
@pytest.mark.parametrize("dim,gs", [(0, (4, 1, 1)), (2, (1, 1, 5))])
def test_weight_norm_planted_bug_is_caught(bug, dim, gs):
    r = np.random.default_rng(0)
    v, g = r.standard_normal((4, 3, 5)), r.uniform(0.5, 2.0, gs)
    assert tw.gradcheck(lambda a, b: weight_norm(a, b, dim), v, g)
    with pytest.raises(GradcheckError):
        tw.gradcheck(lambda a, b: bug.apply(a, b, dim=dim), v, g)


# --- devices ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["folded", "batch-major+chunked"])
@pytest.mark.parametrize("case", [0, 1, 4, 5], ids=lambda i: f"{CONV_CASES[i][0]}*{CONV_CASES[i][1]}")
def test_conv1d_float32_on_device_equals_cpu(case, path, device):
    xs, ws, bias, kw, transposed = CONV_CASES[case]
    x, w, b = _draw(xs, ws, bias)
    y_shape = _ours(x, w, b, kw, transposed)[3].shape
    g = np.random.default_rng(1).standard_normal(y_shape)
    with fast.tuning(**PATHS[path]):
        cpu = _run_ours(x, w, b, kw, transposed, g, tw.float32, "cpu")
        dev = _run_ours(x, w, b, kw, transposed, g, tw.float32, device)
    for a, d in zip(cpu, dev):
        assert d.dtype == np.float32
        np.testing.assert_allclose(d, a, rtol=1e-4, atol=1e-5)


def test_weight_norm_float32_on_device_equals_cpu(device):
    r = np.random.default_rng(0)
    v, g, up = r.standard_normal((6, 3, 8)), r.standard_normal((1, 1, 8)), r.standard_normal((6, 3, 8))
    results = []
    for dev in ("cpu", device):
        V, G = tw.Tensor(v, requires_grad=True, device=dev), tw.Tensor(g, requires_grad=True, device=dev)
        w = weight_norm(V, G, 2)
        w.backward(backend.to_device(up.astype(np.float32), dev))
        results.append([w.numpy(), backend.to_numpy(V.grad), backend.to_numpy(G.grad)])
    for a, d in zip(*results):
        assert d.dtype == np.float32
        np.testing.assert_allclose(d, a, rtol=1e-5, atol=1e-6)


# --- op-specific -------------------------------------------------------------------------------------


def test_wav2vec2_feature_encoder_lengths():
    """One second of audio through the 7 BASE layers: 16000 -> 3199 -> 1599 -> 799 -> 399 -> 199 -> 99 -> 49."""
    layers = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
    r = np.random.default_rng(0)
    x = tw.Tensor(r.standard_normal((1, 1, 16000)))
    lengths = []
    with tw.no_grad():
        for i, (K, s) in enumerate(layers):
            w = tw.Tensor(r.standard_normal((4, x.shape[1], K)) * 0.3)
            x = conv1d(x, w, stride=s)
            lengths.append(x.shape[2])
            assert x.shape[2] == conv_output_length(16000 if i == 0 else lengths[-2], K, s)
    assert lengths == [3199, 1599, 799, 399, 199, 99, 49]


def test_positional_conv_same_pad_keeps_length():
    r = np.random.default_rng(0)
    for K, G in [(128, 16), (4, 2), (32, 4)]:
        x = tw.Tensor(r.standard_normal((2, 2 * G, 49)))
        y = conv1d(x, tw.Tensor(r.standard_normal((2 * G, 2, K))), padding=K // 2, groups=G)
        assert y.shape == (2, 2 * G, 50)  # even K: one frame too many, SamePad drops it
        assert y[:, :, :-1].shape == (2, 2 * G, 49)


def test_batch_major_and_folded_paths_agree_at_model_length():
    """T' = 599 >= conv_long_output takes the batch-major path on NumPy; forcing the folded path gives the same
    numbers."""
    assert fast.TUNING.conv_layout == "auto" and fast.TUNING.conv_long_output <= 599
    assert fast_conv._batch_major(np.zeros(1), 3, 599) and not fast_conv._batch_major(np.zeros(1), 1, 599)
    r = np.random.default_rng(0)
    x, w, g = r.standard_normal((3, 4, 1200)), r.standard_normal((5, 4, 3)), r.standard_normal((3, 5, 599))
    results = []
    for layout in ("auto", "folded"):
        with fast.tuning(conv_layout=layout):
            X, W = tw.Tensor(x, requires_grad=True), tw.Tensor(w, requires_grad=True)
            y = conv1d(X, W, stride=2)
            y.backward(g.astype(np.float32))
        results.append([y.data, X.grad, W.grad])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# (x shape, w shape, kwargs): outputs as long as the model's (T' >= conv_long_output takes the batch-major layout
# under "auto"), which the small catalogue cases of tests/test_fast_ops.py do not reach
MODEL_LIKE = [
    ((3, 8, 700), (8, 8, 3), dict(stride=2)),                       # feature encoder layers 1-4
    ((3, 8, 700), (8, 2, 3), dict(padding=1, groups=4)),            # stride 1: dx as a flipped-kernel convolution
    ((3, 8, 700), (8, 4, 4), dict(padding=2, groups=2, dilation=2)),  # even K, dilation
]


@pytest.mark.parametrize("chunked", [False, True], ids=["one chunk", "a chunk per tap"])
@pytest.mark.parametrize("layout", ["auto", "batch_major", "folded"])
@pytest.mark.parametrize("xs,ws,kw", MODEL_LIKE, ids=[f"{c[0]}*{c[1]} {c[2]}" for c in MODEL_LIKE])
def test_reference_conv1d_equals_the_tuned_one_at_model_like_shapes(xs, ws, kw, layout, chunked):
    x, w, b = _draw(xs, ws, True)
    g = np.random.default_rng(1).standard_normal(_ours(x, w, b, kw, False)[3].shape)
    with tw.reference_ops():
        reference = _run_ours(x, w, b, kw, False, g)
    with fast.tuning(conv_layout=layout, **(CHUNKED if chunked else {})):
        tuned = _run_ours(x, w, b, kw, False, g)
    for name, a, r in zip(["y", "dx", "dw", "db"], tuned, reference):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-12, err_msg=name)


def test_conv_layout_knob_forces_the_layout():
    x = np.zeros(1)
    assert fast_conv._batch_major(x, 3, 599) and not fast_conv._batch_major(x, 3, 511)  # "auto": long and batched
    with fast.tuning(conv_layout="batch_major"):
        assert fast_conv._batch_major(x, 1, 5)
    with fast.tuning(conv_layout="folded"):
        assert not fast_conv._batch_major(x, 3, 599)
    with fast.tuning(conv_layout="rows"), pytest.raises(ValueError, match="conv_layout"):
        fast_conv._batch_major(x, 3, 599)


def test_dispatch_runs_the_reference_or_the_tuned_conv1d():
    x, w = tw.Tensor(np.ones((1, 2, 5)), requires_grad=True), tw.Tensor(np.ones((3, 2, 2)))
    assert type(conv1d(x, w)._ctx) is fast_conv.Conv1d
    with tw.reference_ops():
        y = conv1d(x, w)
    assert type(y._ctx) is Conv1d
    y.sum().backward()  # no bias: the reference's backward returns None for it
    np.testing.assert_array_equal(x.grad[0, 0], [3, 6, 6, 6, 3])


def test_tap_chunks():
    assert fast.TUNING.conv_chunk_elements == 1 << 24 and fast.TUNING.conv_min_reduction == 512
    chunks = fast_conv._tap_chunks
    assert chunks(3, 512, 512 * 1599) == [(0, 3)]  # BASE layer 1, batch 1: one chunk
    assert chunks(3, 512, 512 * 8 * 1599) == [(0, 2), (2, 3)]  # batch 8: 13M + 6.5M elements
    assert chunks(128, 48, 768 * 8 * 50) == [(0, 54), (54, 108), (108, 128)]  # BASE pos conv
    assert chunks(128, 48, 768 * 8 * 500)[0] == (0, 11)  # long input: >= 512 (c, k) pairs per GEMM


def test_input_without_grad_skips_dx_and_no_grad_saves_nothing():
    r = np.random.default_rng(0)
    x = tw.Tensor(r.standard_normal((2, 1, 40)))  # raw audio: no gradient wanted
    W = tw.Tensor(r.standard_normal((3, 1, 10)), requires_grad=True)
    y = conv1d(x, W, stride=5)
    assert y._ctx.w is None and y._ctx.xpad is not None  # dx is never computed, so w is not kept
    y.sum().backward()
    assert x.grad is None and W.grad.shape == (3, 1, 10)
    with tw.no_grad():
        y = conv1d(x, W, stride=5)
    assert y._ctx is None and not y.requires_grad


def test_conv1d_errors():
    x = tw.Tensor(np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match="channels"):
        conv1d(x, tw.Tensor(np.zeros((2, 3, 3))))
    with pytest.raises(ValueError, match="shorter than the kernel"):
        conv1d(x, tw.Tensor(np.zeros((2, 4, 7))))
    with pytest.raises(ValueError, match="same"):
        conv1d(x, tw.Tensor(np.zeros((2, 4, 3))), padding="same", stride=2)
    with pytest.raises(ValueError, match="stride"):
        conv1d(x, tw.Tensor(np.zeros((2, 4, 3))), stride=0)
