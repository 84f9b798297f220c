"""tinyw2v2.optim: Adam/AdamW against torch, fairseq's eps placement, clipping, schedules, exact resume."""
import math

import numpy as np
import pytest

import tinyw2v2 as tw
from tinyw2v2 import backend, nn, ops, optim

from conftest import torch_or_skip

SHAPES = [(3, 4), (5,), (2, 1, 3)]


def _params_and_grads(seed=0, n_steps=5):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2) for s in SHAPES] for _ in range(n_steps)]
    return values, grads


def _run_ours(cls, values, grads, device, dtype=tw.float64, skip=(), **kw):
    params = [nn.Parameter(v.copy(), dtype=dtype, device=device) for v in values]
    opt = cls(params, **kw)
    for step_grads in grads:
        for i, (p, g) in enumerate(zip(params, step_grads)):
            p.grad = None if i in skip else backend.to_device(g.astype(p.dtype), device)
        opt.step()
    return [p.numpy() for p in params], opt


def _run_torch(torch, cls, values, grads, skip=(), **kw):
    params = [torch.tensor(v, requires_grad=True) for v in values]
    opt = cls(params, foreach=False, **kw)
    for step_grads in grads:
        for i, (p, g) in enumerate(zip(params, step_grads)):
            p.grad = None if i in skip else torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("kw", [
    dict(lr=1e-2),
    dict(lr=3e-3, betas=(0.8, 0.98), eps=1e-6, weight_decay=0.1),
])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_matches_torch(name, kw, device):
    torch = torch_or_skip()
    values, grads = _params_and_grads()
    ours, opt = _run_ours(getattr(optim, name), values, grads, device, **kw)
    theirs = _run_torch(torch, getattr(torch.optim, name), values, grads, **kw)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    for state in opt.state.values():                          # the moments live with the parameters
        assert backend.device_of(state["exp_avg"]) == backend.normalize_device(device)
        assert state["step"] == 5


def test_parameters_without_grad_are_skipped():
    torch = torch_or_skip()
    values, grads = _params_and_grads(1)
    ours, opt = _run_ours(optim.AdamW, values, grads, "cpu", skip=(1,), lr=1e-2, weight_decay=0.5)
    theirs = _run_torch(torch, torch.optim.AdamW, values, grads, skip=(1,), lr=1e-2, weight_decay=0.5)
    np.testing.assert_array_equal(ours[1], values[1])         # untouched, not even decayed
    assert len(opt.state) == 2 and opt.steps == 5
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def _fairseq_adam_reference(values, grads, lr, betas, eps, weight_decay):
    """fairseq's adam.py step written out with NumPy: decoupled decay, eps added to sqrt(v) before correction."""
    b1, b2 = betas
    ps = [v.copy() for v in values]
    ms = [np.zeros_like(v) for v in values]
    vs = [np.zeros_like(v) for v in values]
    for t, step_grads in enumerate(grads, start=1):
        for p, m, v, g in zip(ps, ms, vs, step_grads):
            m[...] = b1 * m + (1 - b1) * g
            v[...] = b2 * v + (1 - b2) * g * g
            denom = np.sqrt(v) + eps
            step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            p -= weight_decay * lr * p
            p -= step_size * m / denom
    return ps


def test_fairseq_eps_placement(device):
    values, grads = _params_and_grads(2)
    kw = dict(lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    ours, _ = _run_ours(optim.AdamW, values, grads, device, eps_mode="fairseq", **kw)
    for a, b in zip(ours, _fairseq_adam_reference(values, grads, **kw)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    # one step: fairseq's eps equals torch's with eps / sqrt(1 - beta2), and differs from torch's with eps
    tiny = [[g * 1e-6 for g in grads[0]]]                     # small gradients: eps matters
    f, _ = _run_ours(optim.AdamW, values, tiny, "cpu", eps_mode="fairseq", **kw)
    t, _ = _run_ours(optim.AdamW, values, tiny, "cpu", **dict(kw, eps=kw["eps"] / math.sqrt(1 - 0.98)))
    t_same_eps, _ = _run_ours(optim.AdamW, values, tiny, "cpu", **kw)
    np.testing.assert_allclose(f[0], t[0], rtol=1e-12)
    assert np.abs(f[0] - t_same_eps[0]).max() > 1e-7


def test_param_groups_and_set_lr():
    torch = torch_or_skip()
    values, grads = _params_and_grads(3)
    params = [nn.Parameter(v.copy(), dtype=tw.float64) for v in values]
    tparams = [torch.tensor(v, requires_grad=True) for v in values]
    opt = optim.AdamW([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}], lr=1e-2,
                      weight_decay=0.3)
    topt = torch.optim.AdamW([{"params": tparams[:2]}, {"params": tparams[2:], "weight_decay": 0.0}], lr=1e-2,
                             weight_decay=0.3, foreach=False)
    for k, step_grads in enumerate(grads):
        opt.set_lr(1e-2 / (k + 1))
        for g in topt.param_groups:
            g["lr"] = 1e-2 / (k + 1)
        for p, tp, g in zip(params, tparams, step_grads):
            p.grad, tp.grad = g, torch.tensor(g)
        opt.step()
        topt.step()
    assert opt.lr == opt.get_lr() == 1e-2 / 5
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError):
        optim.Adam([params[0], params[0]])
    with pytest.raises(ValueError):
        optim.Adam([])


def test_state_dict_round_trip_resumes_exactly(tmp_path, device):
    values, grads = _params_and_grads(4, n_steps=8)
    ref, _ = _run_ours(optim.AdamW, values, grads, device, dtype=tw.float32, lr=1e-2, weight_decay=0.1)

    params = [nn.Parameter(v, device=device) for v in values]
    opt = optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    for step_grads in grads[:5]:
        for p, g in zip(params, step_grads):
            p.grad = backend.to_device(g.astype(np.float32), device)
        opt.step()
    opt.save(tmp_path / "opt.npz")
    snapshot = [p.numpy() for p in params]
    moments = [backend.to_numpy(s["exp_avg"]) for s in opt.state.values()]
    for how in ("file", "memory"):
        params2 = [nn.Parameter(v.copy(), device=device) for v in snapshot]
        opt2 = optim.AdamW(params2, lr=123.0, weight_decay=0.0)          # hyper-parameters come back too
        if how == "file":
            opt2.load(tmp_path / "opt.npz")
        else:
            opt2.load_state_dict(opt.state_dict())
        assert opt2.lr == 1e-2 and opt2.param_groups[0]["weight_decay"] == 0.1 and opt2.steps == 5
        assert all(backend.device_of(s["exp_avg_sq"]) == backend.normalize_device(device)
                   for s in opt2.state.values())
        for step_grads in grads[5:]:
            for p, g in zip(params2, step_grads):
                p.grad = backend.to_device(g.astype(np.float32), device)
            opt2.step()
        for a, b in zip(params2, ref):
            np.testing.assert_array_equal(a.numpy(), b)                   # bit for bit
    # the loaded optimizer copied the state: opt's own moments and steps are unchanged
    for s, m in zip(opt.state.values(), moments):
        assert s["step"] == 5
        np.testing.assert_array_equal(backend.to_numpy(s["exp_avg"]), m)


def test_load_state_dict_rejects_mismatched_parameters():
    a = optim.Adam([nn.Parameter(np.zeros((2, 3)))])
    a.params[0].grad = np.ones((2, 3), dtype=np.float32)
    a.step()
    b = optim.Adam([nn.Parameter(np.zeros((3, 2)))])
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        b.load_state_dict(a.state_dict())
    c = optim.Adam([nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))])
    with pytest.raises(ValueError, match="number of parameters"):
        c.load_state_dict(a.state_dict())


# ----------------------------------------------------------------------------------------------
# Clipping


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.5])
@pytest.mark.parametrize("max_norm", [0.1, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, device):
    torch = torch_or_skip()
    _, grads = _params_and_grads(5, n_steps=1)
    params = [nn.Parameter(np.zeros(s), dtype=tw.float64, device=device) for s in SHAPES]
    for p, g in zip(params, grads[0]):
        p.grad = backend.to_device(g, device)
    no_grad = nn.Parameter(np.zeros(3), dtype=tw.float64, device=device)      # skipped
    total = optim.clip_grad_norm_(params + [no_grad], max_norm, norm_type=norm_type)
    tparams = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, g in zip(tparams, grads[0]):
        p.grad = torch.tensor(g)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type, foreach=False)
    assert backend.device_of(total) == backend.normalize_device(device) and total.shape == ()
    np.testing.assert_allclose(float(total), ttotal.item(), rtol=1e-13)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(backend.to_numpy(p.grad), tp.grad.numpy(), rtol=1e-13)
    assert no_grad.grad is None


def test_clip_grad_norm_measure_only_shared_grads_and_nonfinite():
    g = np.array([3.0, 4.0])
    a, b = nn.Parameter(np.zeros(2), dtype=tw.float64), nn.Parameter(np.zeros(2), dtype=tw.float64)
    a.grad = g
    b.grad = g.reshape(2)                      # the engine may give several leaves one gradient (or views of it)
    total = optim.clip_grad_norm_([a, b], None)
    assert float(total) == pytest.approx(math.sqrt(50)) and a.grad is g        # measure only: untouched
    optim.clip_grad_norm_([a, b], 1.0)
    np.testing.assert_allclose(a.grad, g / (math.sqrt(50) + 1e-6))            # scaled exactly once
    np.testing.assert_allclose(b.grad, g / (math.sqrt(50) + 1e-6))
    np.testing.assert_array_equal(g, [3.0, 4.0])
    a.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    assert float(optim.clip_grad_norm_([nn.Parameter(np.zeros(1))], 1.0)) == 0.0   # no gradients at all


# ----------------------------------------------------------------------------------------------
# Schedules (step = updates already done; the value is the lr of the next update)


def test_polynomial_decay_wav2vec2_base():
    s = optim.PolynomialDecay(peak_lr=5e-4, warmup_steps=32_000, total_steps=400_000)
    assert s(0) == 0.0                                      # fairseq's first update runs at lr 0
    assert s(1) == pytest.approx(5e-4 / 32_000)
    assert s(16_000) == pytest.approx(2.5e-4)
    assert s(32_000) == pytest.approx(5e-4)
    assert s(32_000 + 184_000) == pytest.approx(2.5e-4)     # halfway through the decay
    assert s(399_999) == pytest.approx(5e-4 / 368_000)
    assert s(400_000) == 0.0 and s(500_000) == 0.0


def test_polynomial_decay_power_and_end_lr():
    s = optim.PolynomialDecay(peak_lr=1.0, warmup_steps=10, total_steps=110, end_lr=0.1, power=2.0)
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.9 * 0.25 + 0.1)         # (1 - 50/100)^2
    assert s(110) == s(1000) == 0.1
    no_warmup = optim.PolynomialDecay(peak_lr=2.0, warmup_steps=0, total_steps=4)
    assert [no_warmup(k) for k in range(5)] == [2.0, 1.5, 1.0, 0.5, 0.0]
    with pytest.raises(ValueError):
        optim.PolynomialDecay(1.0, 10, 10)


def test_linear_warmup_decay_equals_transformers():
    torch = torch_or_skip()
    transformers = pytest.importorskip("transformers")
    W, T, peak = 4, 12, 0.1
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=peak)
    hf = transformers.get_linear_schedule_with_warmup(topt, W, T)
    ours = optim.LinearWarmupDecay(peak, W, T)
    for step in range(T + 3):
        assert topt.param_groups[0]["lr"] == pytest.approx(ours(step), abs=1e-15), step
        topt.step()
        hf.step()


def test_tri_stage():
    s = optim.TriStage(peak_lr=1.0, warmup_steps=10, hold_steps=20, decay_steps=30, init_lr_scale=0.01,
                       final_lr_scale=0.05)
    assert s(0) == pytest.approx(0.01)
    assert s(5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert s(9) == pytest.approx(0.01 + 0.99 * 0.9)
    assert s(10) == s(29) == 1.0
    assert s(30) == pytest.approx(1.0)
    assert s(45) == pytest.approx(math.sqrt(0.05))          # halfway through the exponential decay
    assert s(60) == pytest.approx(0.05)
    assert s(61) == s(10_000) == pytest.approx(0.05)
    # wav2vec 2.0 base_100h: phase ratios of max_update
    b = optim.TriStage(peak_lr=3e-5, phase_ratio=(0.1, 0.4, 0.5), max_update=80_000, final_lr_scale=0.05)
    assert (b.warmup_steps, b.hold_steps, b.decay_steps) == (8_000, 32_000, 40_000)
    assert b(0) == pytest.approx(3e-7) and b(8_000) == 3e-5 and b(80_000) == pytest.approx(1.5e-6)
    with pytest.raises(ValueError):
        optim.TriStage(1.0, phase_ratio=(0.5, 0.4, 0.5), max_update=10)


def test_schedule_sets_optimizer_lr():
    opt = optim.Adam([{"params": [nn.Parameter(np.zeros(1))]}, {"params": [nn.Parameter(np.zeros(1))]}])
    s = optim.Constant(0.25)
    assert s.set_lr(opt, 7) == 0.25 and [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    assert optim.LinearWarmupDecay(1.0, 4, 8).set_lr(opt, 2) == 0.5 and opt.lr == 0.5


# ----------------------------------------------------------------------------------------------
# End to end


def test_tiny_regression_converges(device):
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((64, 3)).astype(np.float32)
    true_w = np.array([[1.5, -2.0, 0.5]], dtype=np.float32)
    y_np = x_np @ true_w.T + 0.3
    x, y = tw.tensor(x_np, device=device), tw.tensor(y_np, device=device)
    w = nn.Parameter(np.zeros((1, 3)), device=device)
    b = nn.Parameter(np.zeros(1), device=device)
    opt = optim.AdamW([w, b], lr=0.1, weight_decay=0.0)
    sched = optim.LinearWarmupDecay(0.1, 10, 300)
    for step in range(300):
        sched.set_lr(opt, step)
        err = ops.sub(ops.add(ops.matmul(x, ops.transpose(w, None)), b), y)
        loss = ops.mean(ops.mul(err, err))
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_([w, b], 10.0)
        opt.step()
    assert float(loss) < 1e-4
    np.testing.assert_allclose(w.numpy(), true_w, atol=1e-2)
    np.testing.assert_allclose(b.numpy(), [0.3], atol=1e-2)
