"""scaled_dot_product_attention (and the softmax family it builds on): against torch in float64 on awkward
shapes, planted backward bugs, float32 on every device, fully masked rows, dropout masks, and multi-head
attention composed the way the model does it (projections reshaped and transposed, non-contiguous), and the
tuned Functions (tinyw2v2/ops/fast/) against the reference ones."""
import warnings

import numpy as np
import pytest

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend, ops
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops import attention as reference_attention
from tinyw2v2.ops import fast
from tinyw2v2.ops.fast import attention as fast_attention
from tinyw2v2.ops.fast import softmax as fast_softmax
from tinyw2v2.ops.fast.attention import ScaledDotProductAttention  # the tuned one: the planted bugs below use its
                                                                   # saved arrays (E, 1/r, keep, O)

from conftest import torch_or_skip


def t64(x):
    return tw.tensor(x, requires_grad=True, dtype=tw.float64)


def draw(rng, *shapes):
    return [rng.standard_normal(s) for s in shapes]


def ours_and_torch(torch, q, k, v, ours_kw=None, torch_fn=None, up_seed=5):
    """Output and q/k/v gradients of ours and of ``torch_fn`` (default: torch's SDPA) for one random upstream."""
    mine = [t64(a) for a in (q, k, v)]
    tt = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    y = F.scaled_dot_product_attention(*mine, **(ours_kw or {}))
    yt = (torch_fn or torch.nn.functional.scaled_dot_product_attention)(*tt)
    up = np.random.default_rng(up_seed).standard_normal(tuple(yt.shape))
    y.backward(up)
    yt.backward(torch.tensor(up))
    return (y.data, [t.grad for t in mine]), (yt.detach().numpy(), [t.grad.numpy() for t in tt])


def assert_same(a, b, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(a[0], b[0], rtol=rtol, atol=atol)
    for ga, gb in zip(a[1], b[1]):
        np.testing.assert_allclose(ga, gb, rtol=rtol, atol=atol)


# --- (a) against torch in float64 -------------------------------------------------------------------------

@pytest.mark.parametrize("q_shape,k_shape,v_shape,scale", [
    ((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4), None),
    ((1, 1, 1, 3), (1, 1, 1, 3), (1, 1, 1, 2), None),     # one query, one key
    ((2, 2, 3, 4), (2, 2, 7, 4), (2, 2, 7, 6), None),     # Tq != Tk, Dv != D
    ((3, 5, 8), (3, 6, 8), (3, 6, 8), 0.3),               # one batch axis, explicit scale
    ((2, 4, 3, 2), (2, 1, 5, 2), (2, 1, 5, 2), 4.0),      # k, v broadcast over heads; scores far from 1
])
def test_matches_torch(q_shape, k_shape, v_shape, scale):
    torch = torch_or_skip()
    q, k, v = draw(np.random.default_rng(0), q_shape, k_shape, v_shape)
    kw = {} if scale is None else {"scale": scale}
    ours, ref = ours_and_torch(torch, q, k, v, kw,
                               lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, **kw))
    assert_same(ours, ref)


@pytest.mark.parametrize("mask_shape", [(2, 1, 1, 6), (6,), (1, 1, 4, 6), (2, 3, 4, 6), (4, 6)])
def test_boolean_mask_matches_torch(mask_shape):
    """True = attend, as torch's boolean attn_mask; every query row keeps a key (torch gives NaN otherwise)."""
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    q, k, v = draw(rng, (2, 3, 4, 5), (2, 3, 6, 5), (2, 3, 6, 5))
    mask = rng.random(mask_shape) < 0.6
    mask[..., 0] = True
    ours, ref = ours_and_torch(
        torch, q, k, v, {"attn_mask": mask},
        lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=torch.tensor(np.broadcast_to(mask, (4, 6)) if mask.ndim == 1 else mask)))
    assert_same(ours, ref)


def test_key_padding_mask_equals_attention_over_the_unpadded_keys():
    rng = np.random.default_rng(2)
    q, k, v = draw(rng, (2, 2, 5, 4), (2, 2, 7, 4), (2, 2, 7, 3))
    lengths = [7, 4]
    mask = (np.arange(7)[None, :] < np.array(lengths)[:, None])[:, None, None, :]  # (B, 1, 1, Tk)
    y = F.scaled_dot_product_attention(*(tw.tensor(a, dtype=tw.float64) for a in (q, k, v)), attn_mask=mask)
    for b, n in enumerate(lengths):
        ref = F.scaled_dot_product_attention(*(tw.tensor(a[b:b + 1, :, :n] if i else a[b:b + 1], dtype=tw.float64)
                                               for i, a in enumerate((q, k, v))))
        np.testing.assert_allclose(y.data[b:b + 1], ref.data, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_dropout_mask_matches_torch_composed(kind):
    """P' = P * keep / (1 - p): a boolean keep-mask with its rate, or the float multiplier already scaled."""
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    q, k, v = draw(rng, (2, 2, 4, 3), (2, 2, 5, 3), (2, 2, 5, 3))
    p = 0.3
    keep = rng.random((2, 2, 4, 5)) >= p
    mask = np.ones((2, 1, 1, 5), bool)
    mask[1, ..., 3:] = False
    kw = {"dropout_mask": keep, "dropout_p": p} if kind == "bool" else {"dropout_mask": keep / (1 - p)}

    def composed(q, k, v):
        s = (q @ k.transpose(-1, -2)) / np.sqrt(3)
        s = s.masked_fill(~torch.tensor(mask), -torch.inf)
        return (s.softmax(-1) * torch.tensor(keep / (1 - p))) @ v

    ours, ref = ours_and_torch(torch, q, k, v, dict(kw, attn_mask=mask), composed)
    assert_same(ours, ref)


def test_multi_head_attention_composed_like_the_model_matches_torch():
    """x (B, T, D) -> q, k, v = x W^T + b -> (B, T, H, Dh) -> transpose (B, H, T, Dh) (strided views) -> SDPA
    with a key-padding mask -> transpose back -> (B, T, D) -> out projection."""
    torch = torch_or_skip()
    rng = np.random.default_rng(4)
    B, T, H, Dh = 2, 6, 3, 4
    D = H * Dh
    x = rng.standard_normal((B, T, D))
    params = ([rng.standard_normal((D, D)) / np.sqrt(D) for _ in range(4)]
              + [0.1 * rng.standard_normal(D) for _ in range(4)])
    mask = np.ones((B, 1, 1, T), bool)
    mask[1, ..., 4:] = False
    up = rng.standard_normal((B, T, D))

    def mha(x, Wq, Wk, Wv, Wo, bq, bk, bv, bo, sdpa, lin, heads, merge, m):
        q, k, v = (heads(lin(x, W, b)) for W, b in ((Wq, bq), (Wk, bk), (Wv, bv)))
        return lin(merge(sdpa(q, k, v, m)), Wo, bo)

    mine = [t64(a) for a in [x] + params]
    y = mha(*mine, lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
            lambda x, W, b: ops.matmul(x, ops.transpose(W)) + b,
            lambda z: ops.swapaxes(ops.reshape(z, (B, T, H, Dh)), 1, 2),     # (B, T, D) -> (B, H, T, Dh) view
            lambda z: ops.reshape(ops.swapaxes(z, 1, 2), (B, T, D)), mask)    # (B, H, T, Dh) -> (B, T, D)
    y.backward(up)
    tt = [torch.tensor(a, requires_grad=True) for a in [x] + params]
    yt = mha(*tt, lambda q, k, v, m: torch.nn.functional.scaled_dot_product_attention(q, k, v,
                                                                                       attn_mask=torch.tensor(m)),
             torch.nn.functional.linear,
             lambda z: z.reshape(B, T, H, Dh).transpose(1, 2),
             lambda z: z.transpose(1, 2).reshape(B, T, D), mask)
    yt.backward(torch.tensor(up))
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(mine, tt):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", [((4, 7), -1), ((3, 5, 6), 1), ((6, 5), 0), ((2, 3, 4, 9), -1)])
@pytest.mark.parametrize("values", ["with -inf", "large", "small (no shift on NumPy)"])
def test_softmax_family_matches_torch(name, shape, axis, values):
    """The in-place softmax / log_softmax (tinyw2v2/ops/softmax.py) against torch, on both of its paths."""
    torch = torch_or_skip()
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape) * {"with -inf": 10, "large": 200, "small (no shift on NumPy)": 10}[values]
    if values == "with -inf":
        x[rng.random(shape) < 0.2] = -np.inf
    x[tuple(0 if i != axis % len(shape) else slice(None) for i in range(len(shape)))] = 3.0  # no all -inf row here
    up = rng.standard_normal(shape)
    xs = t64(x)
    y = getattr(ops, name)(xs, axis)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch, name)(xt, axis)
    atol = 1e-15 * np.abs(x[np.isfinite(x)]).max()  # log_softmax = x - lse: a few ulps of |x|
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=atol)
    finite = np.isfinite(x)
    up = np.where(finite, up, 0.0)  # torch's log_softmax backward passes g through at -inf; ours gives 0 there
    y.backward(up)
    yt.backward(torch.tensor(up))
    np.testing.assert_allclose(xs.grad, np.where(finite, xt.grad.numpy(), 0.0), rtol=1e-10, atol=1e-12)


# --- (b) planted backward bugs -------------------------------------------------------------------------------

def _forgot_row_term(self, g):
    """dS = P * dP: the softmax Jacobian without the - sum_j dP_j P_j term (here with dropout)."""
    q, k, v, e, inv, keep, o = self.saved_tensors
    gr = g * inv * self.keep_scale
    ds = (gr @ v.swapaxes(-1, -2)) * keep * e
    return ds @ k * self.scale, ds.swapaxes(-1, -2) @ q * self.scale, (e * keep).swapaxes(-1, -2) @ gr


def _unscaled(self, g):
    dq, dk, dv = ScaledDotProductAttention.backward(self, g)
    return dq / self.scale, dk, dv


def _dropout_not_applied_to_dp(self, g):
    """dS from dO V^T without the keep-mask."""
    q, k, v, e, inv, keep, o = self.saved_tensors
    self.saved_tensors = (q, k, v, e, inv, np.ones_like(keep), o)
    dq, dk, _ = ScaledDotProductAttention.backward(self, g)
    self.saved_tensors = (q, k, v, e, inv, keep, o)
    return dq, dk, ScaledDotProductAttention.backward(self, g)[2]


def _reference_forgot_row_term(self, g):
    """The same bug in the reference: dS = P * dP."""
    q, k, v, p, mult = self.saved_tensors
    ds = p * ((g @ v.swapaxes(-1, -2)) * mult)
    return ds @ k * self.scale, ds.swapaxes(-1, -2) @ q * self.scale, (p * mult).swapaxes(-1, -2) @ g


def _reference_unscaled(self, g):
    dq, dk, dv = reference_attention.ScaledDotProductAttention.backward(self, g)
    return dq / self.scale, dk, dv


def _reference_dropout_not_applied_to_dp(self, g):
    q, k, v, p, mult = self.saved_tensors
    self.saved_tensors = (q, k, v, p, None)
    dq, dk, _ = reference_attention.ScaledDotProductAttention.backward(self, g)
    self.saved_tensors = (q, k, v, p, mult)
    return dq, dk, reference_attention.ScaledDotProductAttention.backward(self, g)[2]


PLANTED = [(ScaledDotProductAttention, b) for b in (_forgot_row_term, _unscaled, _dropout_not_applied_to_dp)]
PLANTED += [(reference_attention.ScaledDotProductAttention, b)
            for b in (_reference_forgot_row_term, _reference_unscaled, _reference_dropout_not_applied_to_dp)]


@pytest.mark.parametrize("cls,bug", PLANTED, ids=[b.__name__.strip("_") for _, b in PLANTED])
def test_planted_bug_is_caught(cls, bug):
    buggy = type("BuggySDPA", (cls,), {"backward": bug})
    rng = np.random.default_rng(0)
    q, k, v = draw(rng, (1, 2, 3, 4), (1, 2, 4, 4), (1, 2, 4, 3))
    keep = rng.random((1, 2, 3, 4)) >= 0.3
    with pytest.raises(GradcheckError):
        tw.gradcheck(lambda q, k, v: buggy.apply(q, k, v, dropout_mask=keep, dropout_p=0.3, scale=0.6), q, k, v)


# --- (c) float32 on every device equals the CPU ---------------------------------------------------------------

def test_float32_on_device_matches_cpu(device):
    rng = np.random.default_rng(8)
    q, k, v = (a.astype(np.float32) for a in draw(rng, (2, 3, 6, 8), (2, 3, 9, 8), (2, 3, 9, 5)))
    mask = rng.random((2, 1, 1, 9)) < 0.7
    mask[..., 0] = True
    mask[1, 0, 0, :] = False  # batch 1: every key masked -> zero rows
    keep = rng.random((2, 3, 6, 9)) >= 0.1
    up = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    results = []
    for dev in ("cpu", device):
        ts = [tw.tensor(a, requires_grad=True, device=dev) for a in (q, k, v)]
        y = F.scaled_dot_product_attention(*ts, attn_mask=backend.to_device(mask, dev),
                                           dropout_mask=backend.to_device(keep, dev), dropout_p=0.1)
        y.backward(backend.to_device(up, dev))
        assert y.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in ts)
        results.append([y.numpy()] + [backend.to_numpy(t.grad) for t in ts])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- (d) op-specific -----------------------------------------------------------------------------------------

def test_fully_masked_query_rows_give_zero_output_and_zero_gradient_without_nan():
    rng = np.random.default_rng(9)
    q, k, v = draw(rng, (2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4))
    mask = np.ones((2, 1, 3, 5), bool)
    mask[0, 0, 1] = False          # query 1 of batch 0 sees no key
    mask[1] = False                # batch 1 sees nothing at all
    ts = [t64(a) for a in (q, k, v)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero / invalid-value warning either
        y = F.scaled_dot_product_attention(*ts, attn_mask=mask)
        y.backward(rng.standard_normal(y.shape))
    assert not any(np.isnan(a).any() for a in [y.data] + [t.grad for t in ts])
    assert np.all(y.data[0, :, 1] == 0) and np.all(y.data[1] == 0)
    assert np.all(ts[0].grad[0, :, 1] == 0) and np.all(ts[0].grad[1] == 0)
    assert np.all(ts[1].grad[1] == 0) and np.all(ts[2].grad[1] == 0)
    # the other query rows of batch 0 are what they would be without the fully masked one
    rows = [0, 2]
    ref = F.scaled_dot_product_attention(tw.tensor(q[:1][:, :, rows], dtype=tw.float64),
                                         *(tw.tensor(a[:1], dtype=tw.float64) for a in (k, v)),
                                         attn_mask=mask[:1][:, :, rows])
    np.testing.assert_allclose(y.data[:1][:, :, rows], ref.data, rtol=1e-12)


def test_dropout_p_one_drops_everything_and_zero_keeps_everything():
    rng = np.random.default_rng(10)
    q, k, v = (tw.tensor(a, dtype=tw.float64) for a in draw(rng, (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4)))
    dropped = F.scaled_dot_product_attention(q, k, v, dropout_mask=np.zeros((1, 1, 3, 3), bool), dropout_p=1.0)
    assert np.all(dropped.data == 0)
    np.testing.assert_allclose(F.scaled_dot_product_attention(q, k, v, dropout_mask=np.ones((3, 3), bool)).data,
                               F.scaled_dot_product_attention(q, k, v).data, rtol=1e-14)


def test_argument_errors():
    q = tw.tensor(np.zeros((1, 1, 2, 3)))
    with pytest.raises(TypeError, match="boolean"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="explicit dropout_mask"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="already"):
        F.scaled_dot_product_attention(q, q, q, dropout_mask=np.ones((2, 2), np.float32), dropout_p=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.scaled_dot_product_attention(q, q, q, dropout_mask=np.ones((2, 2), bool), dropout_p=1.5)
    with pytest.raises(TypeError, match="different devices"):
        F.scaled_dot_product_attention(*(q.to("emulated"),) * 3, attn_mask=np.ones((2, 2), bool))


def test_no_grad_saves_nothing_and_only_needed_gradients_are_computed():
    rng = np.random.default_rng(11)
    q, k, v = draw(rng, (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4))
    with tw.no_grad():
        y = F.scaled_dot_product_attention(*(t64(a) for a in (q, k, v)))
    assert y._ctx is None and not y.requires_grad
    qt, kt, vt = t64(q), tw.tensor(k, dtype=tw.float64), t64(v)
    F.scaled_dot_product_attention(qt, kt, vt).sum().backward()
    assert qt.grad is not None and vt.grad is not None and kt.grad is None


@pytest.mark.parametrize("masked", [False, True])
def test_shift_free_path_equals_the_shifted_one_and_large_scores_take_the_shift(masked):
    """On NumPy, when |scores| <= 60 is guaranteed, exp (exp2 on scores times log2 e when nothing is masked)
    runs without subtracting the row max; the result must be the shifted one (the knob
    ``skip_bounded_shift=False`` forces the shift). Scores of several hundred must still not overflow."""
    A = fast_attention

    rng = np.random.default_rng(12)
    q, k, v = (a.astype(np.float32) for a in draw(rng, (2, 3, 6, 8), (2, 3, 7, 8), (2, 3, 7, 4)))
    mask = rng.random((2, 1, 1, 7)) < 0.7
    mask[..., 0] = True
    mask = mask if masked else None
    assert A._scores_bounded(q, k, 8 ** -0.5)

    def run():
        ts = [tw.tensor(a, requires_grad=True) for a in (q, k, v)]
        y = F.scaled_dot_product_attention(*ts, attn_mask=mask)
        y.backward(np.ones(y.shape, np.float32))
        return [y.data] + [t.grad for t in ts]

    unshifted = run()
    with fast.tuning(skip_bounded_shift=False):
        assert not A._scores_bounded(q, k, 8 ** -0.5)
        shifted = run()
    for a, b in zip(unshifted, shifted):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    q, k = 30 * q, 30 * k  # scores up to several hundred: exp would overflow without the shift
    assert not A._scores_bounded(q, k, 8 ** -0.5)
    torch = torch_or_skip()
    ours, ref = ours_and_torch(torch, q.astype(np.float64), k.astype(np.float64), v.astype(np.float64),
                               {"attn_mask": mask},
                               lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
                                   q, k, v, attn_mask=None if mask is None else torch.tensor(mask)))
    assert_same(ours, ref, rtol=1e-9, atol=1e-9)


# --- (e) the tuned Functions (ops/fast/) equal the reference ones ---------------------------------------------

def _attention_with_grads(q, k, v, up, kw, reference):
    ts = [t64(a) for a in (q, k, v)]
    with tw.reference_ops(reference):
        y = F.scaled_dot_product_attention(*ts, **kw)
    assert type(y._ctx) is (reference_attention if reference else fast_attention).ScaledDotProductAttention
    y.backward(up)
    return [y.data] + [t.grad for t in ts]


@pytest.mark.parametrize("skip_shift", [True, False], ids=["shift skipped", "always shifted"])
@pytest.mark.parametrize("kv_heads", [3, 1], ids=["k,v per head", "k,v broadcast over heads"])
@pytest.mark.parametrize("dropout", ["none", "bool keep-mask", "float multiplier"])
@pytest.mark.parametrize("mask_kind", ["key padding, an empty utterance", "key padding and a fully masked query row"])
def test_tuned_attention_equals_the_reference_at_a_model_like_size(mask_kind, dropout, kv_heads, skip_shift):
    """B=2, H=3, T=40, Dh=8 in float64: the tuned Function (E and 1/r, appended columns, the shift skipped or not) gives
    the reference's output and gradients, fully masked rows included (0 in both, no NaN)."""
    rng = np.random.default_rng(13)
    B, H, T, Dh = 2, 3, 40, 8
    q, k, v = draw(rng, (B, H, T, Dh), (B, kv_heads, T, Dh), (B, kv_heads, T, Dh))
    pad = (np.arange(T)[None, :] < np.array([T, 23])[:, None])[:, None, None, :]      # (B, 1, 1, T)
    if mask_kind.startswith("key padding, an empty"):
        mask = pad.copy()
        mask[1] = False                                   # utterance 1: every key is padding
        dead = (1, slice(None), slice(None))
    else:
        mask = np.broadcast_to(pad, (B, 1, T, T)).copy()  # (B, 1, Tq, Tk): not constant over queries
        mask[0, 0, 7] = False                             # query 7 of utterance 0 sees no key
        dead = (0, slice(None), 7)
    p = 0.1
    keep = rng.random((B, H, T, T)) >= p
    kw = {"attn_mask": mask, **{"none": {}, "bool keep-mask": {"dropout_mask": keep, "dropout_p": p},
                                "float multiplier": {"dropout_mask": keep / (1 - p)}}[dropout]}
    up = rng.standard_normal((B, H, T, Dh))
    with fast.tuning(skip_bounded_shift=skip_shift):
        assert fast_attention._scores_bounded(q, k, Dh ** -0.5) == skip_shift
        tuned = _attention_with_grads(q, k, v, up, kw, reference=False)
    ref = _attention_with_grads(q, k, v, up, kw, reference=True)
    for name, a, b in zip(["output", "dq", "dk", "dv"], tuned, ref):
        assert a.shape == b.shape and not np.isnan(a).any() and not np.isnan(b).any(), name
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
    assert np.all(ref[0][dead] == 0) and np.all(ref[1][dead] == 0)   # O = 0 and dQ = 0 on fully masked rows


SOFTMAX_PAIRS = [("softmax", ops.Softmax, fast_softmax.Softmax, {}),   # ops.Softmax: the reference (ops/softmax.py)
                 ("log_softmax", ops.LogSoftmax, fast_softmax.LogSoftmax, {}),
                 ("logsumexp", ops.LogSumExp, fast_softmax.LogSumExp, {}),
                 ("logsumexp keepdims", ops.LogSumExp, fast_softmax.LogSumExp, {"keepdims": True})]


@pytest.mark.parametrize("skip_shift", [True, False], ids=["shift skipped if bounded", "always shifted"])
@pytest.mark.parametrize("values", ["|x| > 60", "-inf entries and an all -inf row", "|x| <= 60"])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("name,Ref,Tuned,kw", SOFTMAX_PAIRS, ids=[p[0] for p in SOFTMAX_PAIRS])
def test_tuned_softmax_family_equals_the_reference(name, Ref, Tuned, kw, axis, values, skip_shift):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((6, 9))
    if values == "|x| > 60":
        x = np.sign(x) * (61 + 200 * np.abs(x))           # every entry beyond the no-shift bound
    elif values.startswith("-inf"):
        x = 20 * x
        x[rng.random(x.shape) < 0.3] = -np.inf
        x[(2, slice(None)) if axis == -1 else (slice(None), 4)] = -np.inf   # a row of only -inf along the axis
    else:
        x = 20 * x.clip(-2.9, 2.9)                        # |x| <= 58: the shift may be skipped
    with fast.tuning(skip_bounded_shift=skip_shift):
        m, _, _ = fast_softmax.shifted_exp(x, axis)
        assert np.all(m == 0) == (skip_shift and values == "|x| <= 60")   # which path the tuned ops take
        results, up = [], None
        for cls in (Tuned, Ref):
            xt = t64(x)
            y = cls.apply(xt, axis=axis, **kw)
            if up is None:                                # one upstream for both (0 where y is not finite)
                up = np.where(np.isfinite(y.data), rng.standard_normal(y.shape), 0.0)
            y.backward(up)
            results.append((y.data, xt.grad))
    (y_fast, g_fast), (y_ref, g_ref) = results
    assert not np.isnan(y_fast).any() and not np.isnan(g_fast).any()
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(g_ref[np.isneginf(x)], 0)    # no gradient into -inf inputs, in both


def test_reference_attention_and_softmax_run_on_every_device(device):
    """The reference Functions are plain array code: on the emulated device (and CuPy) they give the CPU's
    tuned results, fully masked rows included."""
    rng = np.random.default_rng(15)
    q, k, v = (a.astype(np.float32) for a in draw(rng, (2, 3, 6, 8), (2, 3, 9, 8), (2, 3, 9, 5)))
    mask = rng.random((2, 1, 6, 9)) < 0.7
    mask[1, 0, 2] = False
    keep = rng.random((2, 3, 6, 9)) >= 0.1
    x = rng.standard_normal((4, 7)).astype(np.float32)
    x[1] = -np.inf
    x[2, :3] = -np.inf
    up = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    results = []
    for dev, reference in (("cpu", False), (device, True)):
        ts = [tw.tensor(a, requires_grad=True, device=dev) for a in (q, k, v)]
        xs = tw.tensor(x, requires_grad=True, device=dev)
        with tw.reference_ops(reference):
            y = F.scaled_dot_product_attention(*ts, attn_mask=backend.to_device(mask, dev),
                                               dropout_mask=backend.to_device(keep, dev), dropout_p=0.1)
            z = F.softmax(xs, -1).sum() + F.log_softmax(xs, -1)[0].sum() + F.logsumexp(xs, -1)[2:].sum()
        y.backward(backend.to_device(up, dev))
        z.backward()
        assert y.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in ts + [xs])
        results.append([y.numpy(), z.numpy()] + [backend.to_numpy(t.grad) for t in ts + [xs]])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
