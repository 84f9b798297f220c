"""CTC loss (tinyw2v2/ops/ctc.py, tuned: tinyw2v2/ops/fast/ctc.py): equal to torch.nn.functional.ctc_loss in value
and gradient (float64), equal to a brute-force sum over every alignment, planted bugs caught, the same on every
device; the tests that define the loss run on the reference and on the tuned Function (``impl``), and the two agree
on a model-sized batch. Gradient checks on awkward shapes live in tinyw2v2/checks/ctc.py (run by
tests/test_gradchecks.py and, reference against tuned, by tests/test_fast_ops.py)."""
import itertools

import numpy as np
import pytest

import tinyw2v2 as tw
from tinyw2v2 import backend, ops
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops import ctc as reference
from tinyw2v2.ops.ctc import CTCLoss, ctc_loss, ctc_posteriors
from tinyw2v2.ops.dispatch import pick
from tinyw2v2.ops.fast import ctc as tuned

from conftest import torch_or_skip


@pytest.fixture(params=["tuned", "reference"])
def impl(request):
    """Run the test with the tuned CTCLoss (the default) and with the reference one."""
    with tw.reference_ops(request.param == "reference"):
        yield request.param


def log_softmax(x):
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def ours(x, targets, il, tl, v=None, through_log_softmax=True, **kw):
    """Loss and the gradient of sum(v * loss) w.r.t. x (the logits, or the log-probs themselves)."""
    t = tw.tensor(x, requires_grad=True, dtype=tw.float64)
    loss = ctc_loss(ops.log_softmax(t, -1) if through_log_softmax else t, targets, il, tl, **kw)
    v = np.ones(loss.shape) if v is None else v
    (loss * tw.tensor(v, dtype=tw.float64)).sum().backward()
    return loss.numpy(), t.grad


def theirs(x, targets, il, tl, v=None, through_log_softmax=True, **kw):
    torch = torch_or_skip()
    t = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.ctc_loss(t.log_softmax(-1) if through_log_softmax else t, torch.tensor(targets),
                                        torch.tensor(il), torch.tensor(tl), **kw)
    v = np.ones(tuple(loss.shape)) if v is None else v
    (loss * torch.tensor(v)).sum().backward()
    return loss.detach().numpy(), t.grad.numpy()


# (T, N, C, targets, input_lengths, target_lengths): the situations CTC must get right
SITUATIONS = {
    "repeated labels": (7, 3, 5, [[1, 1, 2], [3, 3, 3], [2, 4, 4]], [7, 7, 6], [3, 3, 3]),
    "blank-only (empty) targets": (5, 2, 4, [[0, 0], [1, 0]], [5, 3], [0, 1]),
    "targets as long as the input allows": (4, 2, 5, [[1, 1, 2, 0], [1, 2, 3, 4]], [4, 4], [3, 4]),
    "impossible alignment": (5, 3, 4, [[1, 1, 1], [1, 2, 3], [2, 2, 0]], [4, 5, 2], [3, 3, 2]),
    "varying lengths, odd T, batch of 4": (9, 4, 6, [[5, 1, 5, 5], [2, 4, 0, 0], [1, 0, 0, 0], [3, 3, 1, 2]],
                                           [9, 4, 1, 7], [4, 2, 1, 4]),
    "zero-length input": (3, 2, 3, [[1], [1]], [0, 0], [0, 1]),
    "batch of 1": (6, 1, 3, [[2, 1, 2]], [6], [3]),
}


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("name", list(SITUATIONS))
def test_equals_torch_value_and_gradient(name, reduction, zero_infinity, impl):
    T, N, C, targets, il, tl = SITUATIONS[name]
    rng = np.random.default_rng(len(name))
    x = 2 * rng.standard_normal((T, N, C))
    targets = np.array(targets)
    v = rng.standard_normal(N) if reduction == "none" else None
    kw = dict(reduction=reduction, zero_infinity=zero_infinity)
    loss, grad = ours(x, targets, il, tl, v, **kw)
    t_loss, t_grad = theirs(x, targets, il, tl, v, **kw)
    np.testing.assert_allclose(loss, t_loss, rtol=1e-12, atol=1e-12)  # inf where torch gives inf
    # torch's gradient is NaN for an impossible sample without zero_infinity; ours is 0 there
    nan = np.isnan(t_grad)
    assert not np.isnan(grad).any()
    assert (grad[nan] == 0).all()
    np.testing.assert_allclose(grad[~nan], t_grad[~nan], rtol=1e-10, atol=1e-12)
    if "impossible" in name and not zero_infinity:
        assert nan.any() and np.isinf(t_loss).any()  # the documented difference is still torch's behaviour


def test_concatenated_targets_and_blank_not_zero(impl):
    rng = np.random.default_rng(1)
    T, N, C = 8, 3, 5
    x = rng.standard_normal((T, N, C))
    flat, il, tl = np.array([0, 0, 1, 3, 2, 2, 0]), [8, 6, 7], [3, 1, 3]  # blank = 4
    for reduction in ("none", "mean"):
        v = rng.standard_normal(N) if reduction == "none" else None
        loss, grad = ours(x, flat, il, tl, v, blank=4, reduction=reduction)
        t_loss, t_grad = theirs(x, flat, il, tl, v, blank=4, reduction=reduction)
        np.testing.assert_allclose(loss, t_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, t_grad, rtol=1e-10, atol=1e-12)


def test_unbatched_input(impl):
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    x = log_softmax(rng.standard_normal((6, 4)))
    loss = ctc_loss(tw.tensor(x, dtype=tw.float64), [1, 3, 3], 6, 3, reduction="none")
    t = torch.nn.functional.ctc_loss(torch.tensor(x), torch.tensor([1, 3, 3]), torch.tensor(6), torch.tensor(3),
                                     reduction="none")
    assert loss.shape == () and np.isclose(loss.item(), t.item(), rtol=1e-12)


def test_raw_log_probs_gradient_is_torch_minus_its_softmax_term(impl):
    """On free (unnormalised) log_probs, ours is d loss / d log_probs; torch's kernel adds exp(log_probs) * g[n]
    on each sample's real frames. Through log_softmax the two agree (tested above)."""
    rng = np.random.default_rng(3)
    T, N, C = 7, 3, 4
    x = rng.standard_normal((T, N, C))  # not normalised
    targets, il, tl = np.array([[1, 1, 2], [3, 2, 0], [1, 0, 0]]), [7, 5, 6], [3, 2, 1]
    v = rng.standard_normal(N)
    loss, grad = ours(x, targets, il, tl, v, through_log_softmax=False, reduction="none")
    t_loss, t_grad = theirs(x, targets, il, tl, v, through_log_softmax=False, reduction="none")
    np.testing.assert_allclose(loss, t_loss, rtol=1e-12)
    frame = np.arange(T)[:, None] < np.array(il)[None, :]  # (T, N)
    np.testing.assert_allclose(grad + np.exp(x) * (v * frame)[:, :, None], t_grad, rtol=1e-10, atol=1e-12)
    assert tw.gradcheck(lambda a: ctc_loss(a, targets, il, tl, reduction="none"), x)  # ours is the true derivative


def brute_force(log_probs, target, blank=0):
    """-log of the sum over every path in C^T that collapses (merge repeats, drop blanks) to ``target``."""
    T, C = log_probs.shape
    total = 0.0
    for path in itertools.product(range(C), repeat=T):
        collapsed = [c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]
        if collapsed == list(target):
            total += np.exp(sum(log_probs[t, c] for t, c in enumerate(path)))
    return -np.log(total) if total > 0 else np.inf


def test_equals_brute_force_sum_over_alignments(impl):
    """The definition itself, independent of torch: T=6, C=3 has 729 paths."""
    rng = np.random.default_rng(4)
    x = log_softmax(rng.standard_normal((6, 5, 3)))
    targets = np.array([[1, 1, 2], [2, 2, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]])
    tl, il = np.array([3, 2, 1, 0, 3]), np.array([6, 5, 6, 4, 4])
    loss = ctc_loss(tw.tensor(x, dtype=tw.float64), targets, il, tl, reduction="none").numpy()
    expected = [brute_force(x[:il[n], n], targets[n, :tl[n]]) for n in range(5)]
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    assert np.isinf(loss[4])  # [1, 1, 1] needs 5 frames: no alignment in 4


def test_posteriors_sum_to_one_per_frame(impl):
    """sum_c dloss/dlog_probs[t, n, c] = -g[n] on real frames (the state posteriors sum to 1), 0 after."""
    rng = np.random.default_rng(5)
    x = log_softmax(rng.standard_normal((10, 3, 6)))
    il = np.array([10, 7, 4])
    t = tw.tensor(x, requires_grad=True, dtype=tw.float64)
    ctc_loss(t, np.array([[1, 2, 2], [5, 5, 0], [3, 0, 0]]), il, [3, 2, 1], reduction="sum").backward()
    np.testing.assert_allclose(t.grad.sum(-1), -(np.arange(10)[:, None] < il[None, :]).astype(float), atol=1e-12)


def brute_force_posteriors(log_probs, target, blank=0):
    """gamma[t, s] by enumeration: every path in C^T that collapses to ``target``, weighted by its probability,
    votes for the lattice state it is in at each frame (2k - 1 inside the k-th label run, 2k on a blank after it)."""
    T, C = log_probs.shape
    gamma = np.zeros((T, 2 * len(target) + 1))
    for path in itertools.product(range(C), repeat=T):
        collapsed = [c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]
        if collapsed != list(target):
            continue
        weight, runs = np.exp(sum(log_probs[t, c] for t, c in enumerate(path))), 0
        for t, c in enumerate(path):
            runs += c != blank and (t == 0 or c != path[t - 1])
            gamma[t, 2 * runs - 1 if c != blank else 2 * runs] += weight
    return gamma / gamma[0].sum()


def test_posteriors_equal_brute_force_and_the_gradient(impl):
    """ctc_posteriors: the lattice occupancy of the definition (729 paths each), 1 per real frame, 0 on padding
    frames, padded states and impossible rows; summed per class it is minus the loss's gradient."""
    rng = np.random.default_rng(10)
    x = log_softmax(rng.standard_normal((6, 4, 3)))
    targets = np.array([[1, 1, 2], [2, 1, 0], [1, 0, 0], [1, 1, 1]])
    il, tl = np.array([6, 5, 6, 4]), np.array([3, 2, 1, 3])  # the last row cannot be aligned in 4 frames
    gamma = ctc_posteriors(tw.tensor(x, dtype=tw.float64), targets, il, tl)
    assert gamma.shape == (4, 6, 7)
    for n in range(3):
        np.testing.assert_allclose(gamma[n, :il[n], :2 * tl[n] + 1],
                                   brute_force_posteriors(x[:il[n], n], targets[n, :tl[n]]), atol=1e-12)
        np.testing.assert_allclose(gamma[n].sum(-1), (np.arange(6) < il[n]).astype(float), atol=1e-12)
        assert (gamma[n, :, 2 * tl[n] + 1:] == 0).all()
    assert (gamma[3] == 0).all()
    t = tw.tensor(x[:, :3], requires_grad=True, dtype=tw.float64)
    ctc_loss(t, targets[:3], il[:3], tl[:3], reduction="sum").backward()
    ext = np.zeros((3, 7), dtype=int)
    ext[:, 1::2] = np.where(np.arange(3) < tl[:3, None], targets[:3], 0)
    per_class = np.stack([np.stack([gamma[n, :, ext[n] == c].sum(0) for c in range(3)], -1) for n in range(3)], 1)
    np.testing.assert_allclose(-t.grad, per_class, atol=1e-12)
    one = ctc_posteriors(x[:, 0], targets[0], 6, 3)  # unbatched (T, C) -> (T, 2S + 1)
    np.testing.assert_allclose(one, gamma[0], atol=1e-15)


def test_no_grad_forward_meets_in_the_middle_and_equals_the_full_forward(impl):
    rng = np.random.default_rng(6)
    for T in (1, 2, 7, 8, 30):
        x = log_softmax(rng.standard_normal((T, 3, 5)))
        args = (np.array([[1, 2], [3, 3], [4, 0]]), [T, max(T - 3, 0), T // 2], [min(2, T), 2 if T >= 3 else 0, 1])
        full = ctc_loss(tw.tensor(x, requires_grad=True, dtype=tw.float64), *args, reduction="none").numpy()
        with tw.no_grad():
            half = ctc_loss(tw.tensor(x, dtype=tw.float64), *args, reduction="none").numpy()
        np.testing.assert_allclose(half, full, rtol=1e-12)


def test_float32_long_peaked_sequence_stays_accurate(impl):
    """Log space keeps float32 finite and accurate where probabilities underflow (loss in the thousands)."""
    rng = np.random.default_rng(7)
    T, N, C, S = 400, 2, 30, 60
    x = 8 * rng.standard_normal((T, N, C))  # peaked, and mostly disagreeing with the targets
    targets = rng.integers(1, C, (N, S))
    lp = log_softmax(x)
    l64, g64 = ours(x, targets, [400, 333], [60, 45], reduction="sum")
    t = tw.tensor(x.astype(np.float32), requires_grad=True)
    l32 = ctc_loss(ops.log_softmax(t, -1), targets, [400, 333], [60, 45], reduction="sum")
    l32.backward()
    assert l64 > 1000 and np.isfinite(lp).all()
    np.testing.assert_allclose(l32.item(), l64, rtol=1e-5)
    # gamma = exp(alpha + beta - E - log p) cancels numbers near the loss (~7800) in float32: torch's float32
    # gradient is off by 1.5e-3 here as well
    np.testing.assert_allclose(t.grad, g64, atol=3e-3)


def test_device_float32_equals_cpu(device, impl):
    rng = np.random.default_rng(8)
    x = log_softmax(rng.standard_normal((13, 4, 7))).astype(np.float32)
    targets = np.array([[1, 1, 2, 6], [3, 0, 0, 0], [5, 4, 5, 4], [2, 2, 2, 2]])
    il, tl = np.array([13, 9, 12, 6]), np.array([4, 1, 4, 4])  # the last sample is impossible
    results = {}
    for dev in ("cpu", device):
        t = tw.tensor(x, requires_grad=True, device=dev)
        loss = ctc_loss(t, backend.to_device(targets, dev), backend.to_device(il, dev), backend.to_device(tl, dev),
                        reduction="none")
        loss.backward(backend.to_device(np.array([0.3, -1.0, 2.0, 0.5], dtype=np.float32), dev))
        assert loss.device.startswith(dev.split(":")[0]) and t.grad is not None
        results[dev] = (loss.numpy(), backend.to_numpy(t.grad))
    np.testing.assert_allclose(results[device][0], results["cpu"][0], rtol=1e-5)
    np.testing.assert_allclose(results[device][1], results["cpu"][1], rtol=1e-4, atol=1e-6)
    assert np.isinf(results["cpu"][0][3]) and (results["cpu"][1][:, 3] == 0).all()


def forgets_the_double_emission(base):
    """alpha and beta both include y[t, s]: dropping the division by it is the classic CTC backward bug."""

    class ForgetsTheDoubleEmission(base):
        def backward(self, g):
            self.E = self.E * 0
            return base.backward(self, g)

    return ForgetsTheDoubleEmission


def forgets_the_target_length(base):
    """'mean' divides each loss by its target length before averaging: a backward that only divides by N."""

    class ForgetsTheTargetLength(base):
        def backward(self, g):
            if self.scale is not None:
                self.scale = self.scale * 0 + 1 / self.scale.shape[0]
            return base.backward(self, g)

    return ForgetsTheTargetLength


@pytest.mark.parametrize("base", [reference.CTCLoss, tuned.CTCLoss], ids=["reference", "tuned"])
@pytest.mark.parametrize("bug", [forgets_the_double_emission, forgets_the_target_length])
def test_planted_bug_is_caught(bug, base, monkeypatch):
    import tinyw2v2.ops.ctc as module

    monkeypatch.setattr(module, "CTCLoss", bug(base))  # pick() runs an unregistered class as it is
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 2, 4))
    with pytest.raises(GradcheckError):
        tw.gradcheck(lambda a: module.ctc_loss(a, np.array([[1, 1, 2], [3, 0, 0]]), [6, 5], [3, 1]), x)
    monkeypatch.undo()
    with tw.reference_ops(base is reference.CTCLoss):
        assert tw.gradcheck(lambda a: ctc_loss(a, np.array([[1, 1, 2], [3, 0, 0]]), [6, 5], [3, 1]), x)


def test_the_tuned_ctc_loss_is_the_default():
    assert pick(CTCLoss) is tuned.CTCLoss and issubclass(tuned.CTCLoss, CTCLoss)
    with tw.reference_ops():
        assert pick(CTCLoss) is CTCLoss


def _loss_and_grad(x, targets, il, tl, v, reference_ops, through_log_softmax, **kw):
    t = tw.tensor(x, requires_grad=True, dtype=x.dtype)
    with tw.reference_ops(reference_ops):
        loss = ctc_loss(ops.log_softmax(t, -1) if through_log_softmax else t, targets, il, tl, **kw)
        upstream = (v if loss.ndim else v[0]).astype(x.dtype)  # inf * upstream is inf: the backward still runs
        (loss * tw.tensor(upstream, dtype=x.dtype)).sum().backward()
    return loss.numpy(), t.grad


@pytest.mark.parametrize("through_log_softmax", [True, False], ids=["log_softmax", "free"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reference_and_tuned_agree_at_a_model_like_size(reduction, zero_infinity, through_log_softmax):
    """float64, T=60, N=4, C=12: targets of 0..15 labels with repeats, varied input lengths, one impossible row."""
    rng = np.random.default_rng(11)
    T, N, C, S = 60, 4, 12, 15
    x = 3 * rng.standard_normal((T, N, C))
    targets = rng.integers(1, C, (N, S))
    targets[1, 4:8] = targets[1, 3]                    # a run of five equal labels: a blank between each
    targets[2, :6] = [7, 7, 2, 2, 9, 9]
    targets[3, :10] = [4, 4, 4, 4, 4, 5, 5, 5, 5, 5]   # 10 labels and 8 repeats need 18 frames: 12 are too few
    tl = np.array([0, 15, 6, 10])
    il = np.array([60, 51, 37, 12])
    v = rng.standard_normal(N)
    kw = {"reduction": reduction, "zero_infinity": zero_infinity}
    ref_loss, ref_grad = _loss_and_grad(x, targets, il, tl, v, True, through_log_softmax, **kw)
    loss, grad = _loss_and_grad(x, targets, il, tl, v, False, through_log_softmax, **kw)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-12)  # inf in the same places
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert np.isfinite(grad).all() and (grad[:, 3] == 0).all()  # the impossible row has no gradient
    assert (grad[il[2]:, 2] == 0).all() and np.abs(grad[:il[2], 2]).sum() > 0  # padding frames: none either
    if reduction == "none":
        assert (loss[3] == 0) if zero_infinity else np.isinf(loss[3])
        assert np.isfinite(loss[:3]).all() and loss[0] > 0
    lp = log_softmax(x) if through_log_softmax else x
    with tw.reference_ops():
        ref_gamma = ctc_posteriors(lp, targets, il, tl)
    np.testing.assert_allclose(ctc_posteriors(lp, targets, il, tl), ref_gamma, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reference_and_tuned_agree_on_edge_cases(dtype):
    """Zero-length inputs (empty and non-empty targets), log(0) = -inf entries, a blank that is not 0, float32."""
    rng = np.random.default_rng(12)
    T, N, C = 8, 4, 5
    x = log_softmax(rng.standard_normal((T, N, C)))
    x[2:5, 1, 2] = -np.inf                             # class 2 impossible on three frames of row 1
    x = x.astype(dtype)
    targets = np.array([[1, 2], [2, 1], [0, 0], [3, 3]])
    il, tl = np.array([8, 8, 0, 0]), np.array([2, 2, 0, 1])  # row 2: no frames, no labels (loss 0); row 3: impossible
    v = rng.standard_normal(N)
    for reduction in ("none", "sum", "mean"):
        kw = {"reduction": reduction, "zero_infinity": True, "blank": 4}
        ref_loss, ref_grad = _loss_and_grad(x, targets, il, tl, v, True, False, **kw)
        loss, grad = _loss_and_grad(x, targets, il, tl, v, False, False, **kw)
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
        np.testing.assert_allclose(loss, ref_loss, **tol)
        np.testing.assert_allclose(grad, ref_grad, **tol)
        assert np.isfinite(grad).all() and (grad[:, 2:] == 0).all()
        if reduction == "none":
            assert loss[2] == 0 and loss[3] == 0 and np.isfinite(loss).all()
    with tw.reference_ops():
        ref_gamma = ctc_posteriors(x, targets, il, tl, blank=4)
    gamma = ctc_posteriors(x, targets, il, tl, blank=4)
    np.testing.assert_allclose(gamma, ref_gamma, rtol=1e-5 if dtype == np.float32 else 1e-10, atol=1e-6)
    assert (gamma[2:] == 0).all() and gamma.dtype == dtype


def test_bad_inputs_are_refused():
    x = tw.tensor(np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="input_lengths"):
        ctc_loss(x, np.array([[1], [2]]), [5, 4], [1, 1])
    with pytest.raises(ValueError, match="target_lengths"):
        ctc_loss(x, np.array([[1], [2]]), [4, 4], [2, 1])
    with pytest.raises(ValueError, match="blank"):
        ctc_loss(x, np.array([[0], [2]]), [4, 4], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        ctc_loss(x, np.array([[3], [2]]), [4, 4], [1, 1])
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(x, np.array([[1], [2]]), [4, 4], [1, 1], reduction="avg")
    with pytest.raises(ValueError, match="1-D targets"):
        ctc_loss(x, np.array([1, 2, 1]), [4, 4], [1, 1])
