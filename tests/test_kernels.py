"""The fused kernels of the GPU path (tinyw2v2/ops/fast/kernels.py): every NumPy twin against the reference op it
replaces, the fused ops on the emulated device against the CPU, their launch counts, and the fused AdamW step (one
flat buffer) against the per-tensor one, bit for bit, through missing gradients, reloads and resume."""
import numpy as np
import pytest

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend, nn, optim
from tinyw2v2.ops import activation as ref_activation
from tinyw2v2.ops.fast import kernels as K
from tinyw2v2.ops.fast.tuning import tuning

RNG = np.random.default_rng(0)
TOL = {np.float32: 1e-5, np.float64: 1e-13}


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Every test draws the same numbers however the tests are selected."""
    global RNG
    RNG = np.random.default_rng(0)


def _close(a, b, dtype):
    a, b = backend.to_numpy(a), backend.to_numpy(b)
    scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype] * scale)


# --- the twins against the reference formulas (host NumPy) ---------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_twin_equals_the_reference_op(dtype, approximate):
    x = (3 * RNG.standard_normal((5, 33))).astype(dtype)
    ref = ref_activation.Gelu()
    ref.needs_input_grad, ref.recording = (True,), True
    y_ref = ref.forward(x, approximate)
    (d_ref,) = ref.saved_tensors
    y, d = np.empty_like(x), np.empty_like(x)
    K.gelu_kernel(approximate, True)(x, y, d)
    _close(y, y_ref, dtype)
    _close(d, d_ref, dtype)
    y2 = np.empty_like(x)
    K.gelu_kernel(approximate, False)(x, y2)
    np.testing.assert_array_equal(y2, y)


def _norm_reference(x, w, b, axis, eps):
    mu = x.mean(axis=axis, keepdims=True)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(axis=axis, keepdims=True) + eps)
    xhat = (x - mu) * rstd
    return mu, rstd, xhat, xhat * w + b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["layer", "group"])
def test_norm_twins_equal_the_reference_formulas(dtype, layout):
    """rstd, the normalisation, the two row sums, dx and the two column sums, on a LayerNorm (M, N) view and a
    GroupNorm (B, G, Cg, S) view."""
    if layout == "layer":
        x = RNG.standard_normal((6, 9)).astype(dtype)
        w, b = (RNG.standard_normal(9).astype(dtype) for _ in range(2))
        axis, column_axis = (1,), (0,)
    else:
        x = RNG.standard_normal((2, 3, 2, 5)).astype(dtype)
        w, b = (RNG.standard_normal((1, 3, 2, 1)).astype(dtype) for _ in range(2))
        axis, column_axis = (2, 3), (0, 3)
    n = int(np.prod([x.shape[a] for a in axis]))
    eps = 1e-5
    g = RNG.standard_normal(x.shape).astype(dtype)
    mu, rstd_ref, xhat, y_ref = _norm_reference(x, w, b, axis, eps)
    rstd = np.empty_like(mu)
    K.rstd_kernel(n, eps)(x, mu, axis=axis, out=rstd)
    _close(rstd, rstd_ref, dtype)
    y = np.empty_like(x)
    K.normalize_kernel(True)(x, mu, rstd, w, b, y)
    _close(y, y_ref, dtype)
    # backward: dxhat = g w; dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)); dw = sum g xhat; db = sum g
    dxhat = g * w
    pair = np.empty(mu.shape, dtype=K.complex_dtype(dtype))
    K.row_sums_kernel(dtype, True)(g, x, mu, rstd, w, axis=axis, out=pair)
    _close(pair.real, dxhat.sum(axis=axis, keepdims=True), dtype)
    _close(pair.imag, (dxhat * xhat).sum(axis=axis, keepdims=True), dtype)
    dx = np.empty_like(x)
    K.norm_dx_kernel(n, True)(g, x, mu, rstd, w, pair.real, pair.imag, dx)
    dx_ref = rstd * (dxhat - dxhat.mean(axis=axis, keepdims=True)
                     - xhat * (dxhat * xhat).mean(axis=axis, keepdims=True))
    _close(dx, dx_ref, dtype)
    cols = np.empty(w.shape if layout == "group" else (1, 9), dtype=K.complex_dtype(dtype))
    K.column_sums_kernel(dtype)(g, x, mu, rstd, axis=column_axis, out=cols)
    _close(cols.real, (g * xhat).sum(axis=column_axis, keepdims=True), dtype)
    _close(cols.imag, g.sum(axis=column_axis, keepdims=True), dtype)


def test_norm_kernel_twin():
    g = RNG.standard_normal(1001).astype(np.float32)
    out = np.empty(1, dtype=np.float32)
    K.norm_kernel()(g, axis=0, out=out)
    _close(out, np.sqrt(np.sum(g.astype(np.float64) ** 2))[None], np.float32)


# --- the fused ops on the emulated device: same values and gradients as the CPU, and their launches -------------


CASES = {
    "gelu": (lambda x: F.gelu(x), [(4, 5, 7)], 1, 1),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [(4, 5, 7)], 1, 1),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (7,), w, b), [(4, 5, 7), (7,), (7,)], 3, 3),
    "layer_norm over 2 axes": (lambda x, w, b: F.layer_norm(x, (5, 7), w, b), [(4, 5, 7), (5, 7), (5, 7)], 3, 3),
    "layer_norm without affine": (lambda x: F.layer_norm(x, (7,)), [(4, 5, 7)], 3, 2),
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b), [(3, 6, 11), (6,), (6,)], 3, 3),
    "group_norm G = C (wav2vec 2.0's)": (lambda x, w, b: F.group_norm(x, 6, w, b), [(3, 6, 11), (6,), (6,)], 3, 3),
    "group_norm (B, C)": (lambda x, w, b: F.group_norm(x, 3, w, b), [(4, 6), (6,), (6,)], 3, 3),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_fused_ops_on_the_emulated_device_match_the_cpu_in_few_launches(name, dtype):
    fn, shapes, fwd_launches, bwd_launches = CASES[name]
    arrays = [RNG.standard_normal(s).astype(dtype) for s in shapes]
    g = RNG.standard_normal(shapes[0]).astype(dtype)
    results = {}
    for device in ("cpu", "emulated"):
        xs = [tw.tensor(a.copy(), requires_grad=True, device=device, dtype=dtype) for a in arrays]
        upstream = tw.tensor(g.copy(), device=device, dtype=dtype)
        with backend.count_device_work() as forward:
            y = fn(*xs)
        with backend.count_device_work() as backward:
            y.backward(upstream)
        results[device] = [y.data] + [x.grad for x in xs]
        if device == "emulated":
            assert forward.launches == fwd_launches, forward.table(10)
            assert backward.launches == bwd_launches, backward.table(10)
            assert forward.syncs == backward.syncs == 0
    for a, b in zip(results["emulated"], results["cpu"]):
        _close(a, b, dtype)


def test_fused_kernels_can_be_turned_off():
    x = tw.tensor(RNG.standard_normal((4, 8)), requires_grad=True, device="emulated")
    with backend.count_device_work() as fused:
        y1 = F.layer_norm(F.gelu(x), (8,))
    with tuning(fused_kernels=False), backend.count_device_work() as unfused:
        y2 = F.layer_norm(F.gelu(x), (8,))
    assert fused.launches == 4 and unfused.launches > 20
    _close(y1.data, y2.data, np.float32)


def test_gradchecks_of_the_fused_ops_in_float64():
    x = RNG.standard_normal((3, 4, 5))
    w, b = RNG.standard_normal(5), RNG.standard_normal(5)
    dev = lambda a: backend.to_device(a, "emulated")
    assert tw.gradcheck(lambda x, w, b: F.layer_norm(x, (5,), w, b), dev(x), dev(w), dev(b))
    assert tw.gradcheck(lambda x, w, b: F.group_norm(x, 2, w[:4], b[:4]), dev(x), dev(w), dev(b))
    assert tw.gradcheck(F.gelu, dev(x))


# --- AdamW over one flat buffer --------------------------------------------------------------------------------


SHAPES = [(3, 4), (5,), (2, 3, 2), (7,)]


def _run(fused, device, max_norm, missing=(), cls=optim.AdamW, eps_mode="torch", steps=6):
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(steps)]
    params = [nn.Parameter(a, device=device) for a in init]
    opt = cls(params, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1, eps_mode=eps_mode, fused=fused)
    norms = []
    for k, step_grads in enumerate(grads):
        opt.zero_grad()
        for i, (p, g) in enumerate(zip(params, step_grads)):
            p.grad = None if (k, i) in missing else backend.to_device(g, device)
        norms.append(float(opt.clip_grad_norm_(max_norm)))
        opt.step()
    return [p.numpy() for p in params], norms, opt


@pytest.mark.parametrize("cls", [optim.AdamW, optim.Adam])
@pytest.mark.parametrize("eps_mode", ["torch", "fairseq"])
@pytest.mark.parametrize("missing", [(), ((1, 2), (2, 2), (3, 0))], ids=["all gradients", "some missing"])
def test_fused_adam_equals_the_per_tensor_step_bit_for_bit(cls, eps_mode, missing):
    """Without clipping the fused step (forced on the CPU, and the default on the emulated device) is the per-tensor
    step exactly; parameters without a gradient keep their values, moments and step counts."""
    ref, ref_norms, ref_opt = _run(False, "cpu", 1e9, missing, cls, eps_mode)
    for fused, device in ((True, "cpu"), (None, "emulated")):
        got, norms, opt = _run(fused, device, 1e9, missing, cls, eps_mode)
        assert opt.fused_step.flat is not None
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(norms, ref_norms, rtol=1e-6)
        assert [s["step"] for s in opt.state.values()] == [s["step"] for s in ref_opt.state.values()]


def test_fused_clipping_scales_inside_the_step():
    ref, ref_norms, _ = _run(False, "cpu", 1.0)
    got, norms, _ = _run(True, "cpu", 1.0)
    assert min(ref_norms) > 1.0                                   # clipping is active at every step
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-6)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_fused_step_launches_a_handful_for_all_parameters():
    params = [nn.Parameter(RNG.standard_normal(s).astype(np.float32), device="emulated") for s in SHAPES * 20]
    opt = optim.AdamW(params, lr=1e-3)
    for _ in range(2):
        for p in params:
            p.grad = backend.to_device(np.ones(p.shape, np.float32), "emulated")
        with backend.count_device_work() as clip:
            norm = opt.clip_grad_norm_(1.0)
        with backend.count_device_work() as step:
            opt.step()
    assert clip.launches <= 3 and step.launches <= 2 and clip.syncs == step.syncs == 0, (clip.table(), step.table())
    assert norm.shape == ()


def test_fused_step_follows_parameters_whose_data_was_replaced_and_resumes_exactly(tmp_path):
    """A model.load_state_dict (which replaces p.data) between steps is copied back into the flat buffer; an
    optimiser state saved and loaded continues exactly."""
    ref, _, _ = _run(False, "cpu", 1e9, steps=6)
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(6)]
    params = [nn.Parameter(a, device="emulated") for a in init]
    opt = optim.AdamW(params, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    for k in range(3):
        for p, g in zip(params, grads[k]):
            p.grad = backend.to_device(g, "emulated")
        opt.step()
    opt.save(tmp_path / "opt.npz")
    snapshot = [p.numpy() for p in params]
    # a fresh optimiser on fresh parameters, loaded from the file
    params2 = [nn.Parameter(v, device="emulated") for v in snapshot]
    opt2 = optim.AdamW(params2, lr=5.0)
    opt2.load(tmp_path / "opt.npz")
    for k in range(3, 6):
        if k == 4:                                                 # replace the data as load_state_dict does
            for p in params2:
                p.data = backend.to_device(p.numpy(), "emulated")
        for p, g in zip(params2, grads[k]):
            p.grad = backend.to_device(g, "emulated")
        opt2.step()
    for a, b in zip(params2, ref):
        np.testing.assert_array_equal(a.numpy(), b)


# --- CTC: the recursion over time in one launch ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ctc_recursion_is_one_launch_whatever_the_length(dtype):
    rng = np.random.default_rng(2)
    launches = {}
    for T in (12, 48):
        N, C, S = 3, 6, 5
        lp = rng.standard_normal((T, N, C)).astype(dtype)
        targets, lengths = rng.integers(1, C, (N, S)), np.array([5, 3, 0])
        frames = np.array([T, T - 2, 7])
        results = {}
        for device in ("cpu", "emulated"):
            x = tw.tensor(lp.copy(), requires_grad=True, device=device, dtype=dtype)
            log_probs = F.log_softmax(x, -1)
            args = [backend.to_device(a, device) for a in (targets, frames, lengths)]
            with backend.count_device_work() as work:
                loss = F.ctc_loss(log_probs, *args)
            loss.backward()
            results[device] = (loss.data, x.grad)
            if device == "emulated":
                launches[T] = work.launches
                assert work.by_name["tinyw2v2_ctc_recursion"] == 1 and work.syncs == 0
        for a, b in zip(results["emulated"], results["cpu"]):
            _close(a, b, dtype)
    assert launches[12] == launches[48]                   # no launches per frame


# --- the counter-based random stream of the model's device generator --------------------------------------------


def test_counter_random_is_reproducible_uniform_and_costs_no_launch_to_reseed():
    rng = backend.CounterRandom(7, "emulated")
    with backend.count_device_work() as draw:
        a = backend.to_numpy(rng.random((1000, 3)))
    assert draw.launches == 1 and a.dtype == np.float32 and a.shape == (1000, 3)
    b = backend.to_numpy(rng.random((1000, 3)))
    assert not np.array_equal(a, b)                          # the counter moved on
    with backend.count_device_work() as reseed:
        rng.reseed(7)
    assert reseed.launches == 0
    np.testing.assert_array_equal(backend.to_numpy(rng.random((1000, 3))), a)
    assert 0.0 <= a.min() and a.max() < 1.0 and abs(a.mean() - 0.5) < 0.02 and abs(a.var() - 1 / 12) < 0.005
    # not NumPy's stream (CuPy's is not either), and the float64 draws use 53 bits
    assert not np.allclose(a.ravel()[:8], np.random.default_rng(7).random(8, dtype=np.float32))
    d = backend.to_numpy(backend.CounterRandom(7, "emulated").random(10000, dtype=np.float64))
    assert d.dtype == np.float64 and len(np.unique(d)) == 10000 and np.any(d * 2 ** 24 % 1 != 0)
    assert abs(np.corrcoef(d[:-1], d[1:])[0, 1]) < 0.05     # neighbouring counters are not correlated


def test_the_model_reseeds_its_device_stream_every_step_without_device_work():
    from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining

    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(), seed=0).to("emulated")
    with backend.count_device_work() as work:
        model.manual_seed([0, 5, 1])
    first = backend.to_numpy(model.generators.device.random(4))
    model.manual_seed([0, 5, 1])
    assert work.launches == 0 and isinstance(model.generators.device, backend.CounterRandom)
    np.testing.assert_array_equal(backend.to_numpy(model.generators.device.random(4)), first)
