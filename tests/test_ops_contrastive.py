"""The pretraining losses: cosine_similarity, contrastive_loss, diversity_loss / codevector_perplexity,
grad_scale, feature_penalty.

The references are torch's ``cosine_similarity`` and transformers' own code (``compute_contrastive_logits``,
the -inf masking of duplicates, ``cross_entropy(..., reduction="sum")`` with target -100 at unmasked frames,
``_compute_perplexity``) run in float64.
"""
import numpy as np
import pytest

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend, ops
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops.contrastive import ContrastiveLoss, CosineSimilarity, FeaturePenalty, GradScale, Perplexity

from conftest import torch_or_skip


def t64(x, grad=True):
    return tw.tensor(x, requires_grad=grad, dtype=tw.float64)


# --- (a) against torch / transformers ------------------------------------------------------------------

@pytest.mark.torchref
@pytest.mark.parametrize("sa,sb,axis", [((3, 5), (3, 5), -1), ((2, 1, 4), (3, 4), -1), ((2, 3, 4), (3, 2, 3, 4), -1),
                                        ((4, 3), (4, 3), 0), ((3, 1), (3, 4), -1), ((1, 7), (5, 1, 7), 2)])
def test_cosine_similarity_matches_torch(sa, sb, axis):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ref = torch.nn.functional.cosine_similarity(at, bt, dim=axis)
    up = rng.standard_normal(ref.shape)
    ref.backward(torch.tensor(up))
    ao, bo = t64(a), t64(b)
    out = F.cosine_similarity(ao, bo, axis=axis)
    out.backward(up)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ao.grad, at.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bo.grad, bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.torchref
def test_cosine_similarity_near_zero_vectors_follow_torch():
    """Below eps the norm is clamped; torch still passes the norm's derivative a/|a| (and 0 at a = 0)."""
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    a = np.concatenate([1e-10 * rng.standard_normal((1, 4)), np.zeros((1, 4)), rng.standard_normal((1, 4))])
    b = rng.standard_normal((3, 4))
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ref = torch.nn.functional.cosine_similarity(at, bt, dim=-1, eps=1e-8)
    ref.backward(torch.ones(3, dtype=torch.float64))
    ao, bo = t64(a), t64(b)
    out = F.cosine_similarity(ao, bo, eps=1e-8)
    out.backward(np.ones(3))
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(ao.grad, at.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(bo.grad, bt.grad.numpy(), rtol=1e-10, atol=1e-300)


def transformers_contrastive(torch, pred, tgt, neg, mask, tau, reduction="sum"):
    """transformers' Wav2Vec2ForPreTraining steps 4-6 copied in float64 (its ``compute_contrastive_logits``
    casts to float32 with ``.float()``; see the test below); returns loss, logits and leaf tensors."""
    pt, tt, nt = (torch.tensor(a, requires_grad=True) for a in (pred, tgt, neg))
    candidates = torch.cat([tt[None, :], nt], dim=0)
    logits = torch.cosine_similarity(pt, candidates, dim=-1) / tau
    neg_is_pos = (tt == nt).all(-1)
    if neg_is_pos.any():
        logits[1:][neg_is_pos] = float("-inf")
    full = logits
    logits = logits.transpose(0, 2).reshape(-1, logits.size(0))
    mask_t = torch.tensor(mask)
    target = ((1 - mask_t.long()) * -100).transpose(0, 1).flatten()
    loss = torch.nn.functional.cross_entropy(logits, target, reduction=reduction)
    if reduction == "none":
        loss = loss.view(mask.shape[1], mask.shape[0]).transpose(0, 1)
    return loss, full, (pt, tt, nt)


def contrastive_data(rng, B, T, D, K, p_mask=0.5, duplicates=()):
    pred, tgt, neg = rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D)), rng.standard_normal((K, B, T, D))
    for k, b, t in duplicates:
        neg[k, b, t] = tgt[b, t]
    mask = rng.random((B, T)) < p_mask
    mask[0, T // 2] = True
    return pred, tgt, neg, mask


CONTRASTIVE = {
    "B2 T7 K5 tau0.1 duplicates": dict(B=2, T=7, D=6, K=5, tau=0.1, duplicates=[(0, 0, 3), (4, 1, 2), (1, 1, 2)]),
    "B1 T5 K3 tau5": dict(B=1, T=5, D=4, K=3, tau=5.0),
    "B3 T4 K2 single masked frame": dict(B=3, T=4, D=5, K=2, tau=0.1, p_mask=0.0),
    "B2 T3 K2 a frame with only duplicates": dict(B=2, T=3, D=3, K=2, tau=0.5, duplicates=[(0, 0, 1), (1, 0, 1)]),
    "B2 T5 K20 all masked": dict(B=2, T=5, D=8, K=20, tau=0.1, p_mask=1.0),
}


@pytest.mark.torchref
@pytest.mark.parametrize("name", list(CONTRASTIVE))
def test_contrastive_loss_matches_transformers(name):
    torch = torch_or_skip()
    pytest.importorskip("transformers")
    cfg = dict(CONTRASTIVE[name])
    tau = cfg.pop("tau")
    pred, tgt, neg, mask = contrastive_data(np.random.default_rng(2), **cfg)
    loss_t, logits_t, leaves = transformers_contrastive(torch, pred, tgt, neg, mask, tau)
    loss_t.backward()
    ins = [t64(a) for a in (pred, tgt, neg)]
    loss, acc, identical = F.contrastive_loss(*ins, tau, mask_time_indices=mask, return_metrics=True)
    loss.backward()
    np.testing.assert_allclose(float(loss.data), loss_t.item(), rtol=1e-12)
    for ours, theirs in zip(ins, leaves):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)
    # accuracy: fairseq's rule (argmax = 0, excluding rows where argmax = argmin = 0), over masked frames
    lg = logits_t.detach()
    mx, mn = lg.argmax(0) == 0, lg.argmin(0) == 0
    m = torch.tensor(mask)
    expected = ((mx & ~(mx & mn)) & m).sum().item() / m.sum().item()
    np.testing.assert_allclose(float(acc.data), expected, rtol=1e-12)
    assert not acc.requires_grad
    # the composed logits agree with the reference's (including the -inf entries), and with transformers'
    # own compute_contrastive_logits to float32 precision (it computes the cosines in float32)
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2ForPreTraining

    logits = F.contrastive_logits(*(t64(a, grad=False) for a in (pred, tgt, neg)), tau)
    np.testing.assert_allclose(logits.data, lg.numpy(), rtol=1e-12, atol=1e-13)
    hf = Wav2Vec2ForPreTraining.compute_contrastive_logits(*(torch.tensor(a) for a in (tgt[None], neg, pred)), tau)
    finite = np.isfinite(logits.data)
    np.testing.assert_allclose(logits.data[finite], hf.numpy()[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.torchref
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_contrastive_loss_reductions_match_torch(reduction):
    torch = torch_or_skip()
    pytest.importorskip("transformers")
    pred, tgt, neg, mask = contrastive_data(np.random.default_rng(3), 2, 5, 4, 3, duplicates=[(2, 0, 2)])
    loss_t, _, leaves = transformers_contrastive(torch, pred, tgt, neg, mask, 0.2, reduction)
    up = np.random.default_rng(4).standard_normal(loss_t.shape)
    loss_t.backward(torch.tensor(up))
    ins = [t64(a) for a in (pred, tgt, neg)]
    loss = F.contrastive_loss(*ins, 0.2, mask, reduction=reduction)
    loss.backward(up)
    np.testing.assert_allclose(loss.data, loss_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    for ours, theirs in zip(ins, leaves):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.torchref
@pytest.mark.parametrize("G,V,masked,eps", [(2, 5, True, 0.0), (1, 7, False, 0.0), (2, 3, True, 1e-7),
                                            (3, 4, False, 1e-7)])
def test_perplexity_and_diversity_match_transformers(G, V, masked, eps):
    torch = torch_or_skip()
    pytest.importorskip("transformers")
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

    rng = np.random.default_rng(5)
    B, T = 2, 5
    logits = rng.standard_normal((B * T, G, V))
    mask = rng.random((B, T)) < 0.5 if masked else None
    lt = torch.tensor(logits, requires_grad=True)
    probs_t = torch.softmax(lt, dim=-1)
    if eps == 0:  # transformers 5: xlogy
        ppl_t = Wav2Vec2GumbelVectorQuantizer._compute_perplexity(probs_t, None if mask is None else torch.tensor(mask))
    else:  # fairseq's prob_perplexity (and transformers 4.x): log(p + 1e-7)
        marginal = probs_t.mean(0) if mask is None else probs_t[torch.tensor(mask).flatten()].mean(0)
        ppl_t = torch.exp(-torch.sum(marginal * torch.log(marginal + eps), dim=-1)).sum()
    div_t = (G * V - ppl_t) / (G * V)
    (ppl_t * 0.3 + div_t * 1.7).backward()

    lo = t64(logits)
    probs = ops.softmax(lo, -1)
    ppl = F.codevector_perplexity(probs, G, V, mask, eps=eps)
    div = F.diversity_loss(probs, G, V, mask, eps=eps)
    (ppl * 0.3 + div * 1.7).backward()
    np.testing.assert_allclose(float(ppl.data), ppl_t.item(), rtol=1e-12)
    np.testing.assert_allclose(float(div.data), div_t.item(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(lo.grad, lt.grad.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.torchref
def test_feature_penalty_and_grad_scale_match_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 7))
    xt = torch.tensor(x, requires_grad=True)
    (xt.pow(2).mean() * 10).backward()
    xo = t64(x)
    (F.feature_penalty(xo) * 10).backward()
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-12)
    xo = t64(x)
    y = F.grad_scale(xo, 0.1)
    np.testing.assert_array_equal(y.data, x)
    y.backward(np.ones_like(x))
    np.testing.assert_allclose(xo.grad, 0.1)


# --- (b) planted bugs ---------------------------------------------------------------------------------------

def _bug(base, backward):
    return type(f"Buggy{base.__name__}", (base,), {"backward": backward})


def _cos_no_norm_term(self, ds):  # drops the -s a / (na |a|) term
    a, b, na, nb, na_t, nb_t, s = self.saved_tensors
    c = backend.get_array_module(ds).expand_dims(ds, self.axis) / (na * nb)
    return b * c, a * c


def _contrastive_no_tau(self, g):  # forgets to divide by the temperature
    dx, dy0, dyk = ContrastiveLoss.backward(self, g)
    return tuple(None if d is None else d * self.tau for d in (dx, dy0, dyk))


def _perplexity_wrong_count(self, g):  # averages over all N frames instead of the M masked ones
    dppl_dm, w, count = self.saved_tensors
    return Perplexity.backward(self, g) * (count / w.size)


def _penalty_no_factor_two(self, g):  # d(x^2)/dx = x: forgot the 2
    (x,) = self.saved_tensors
    return x * (g / x.size)


BUGS = {
    "cosine": (lambda a, b: _bug(CosineSimilarity, _cos_no_norm_term).apply(a, b, axis=-1, eps=1e-8),
               lambda r: (r.standard_normal((3, 4)), r.standard_normal((3, 4)))),
    "contrastive": (lambda x, y, n, d: _bug(ContrastiveLoss, _contrastive_no_tau).apply(
        x, y, n, temperature=0.5, mask=None, neg_is_pos=d.data, eps=1e-8, reduction="sum"),
        lambda r: (r.standard_normal((1, 3, 4)), r.standard_normal((1, 3, 4)), r.standard_normal((2, 1, 3, 4)),
                   tw.Tensor(np.zeros((2, 1, 3), bool)))),
    "perplexity": (lambda p, m: _bug(Perplexity, _perplexity_wrong_count).apply(p, mask=m, num_groups=2, num_vars=3),
                   lambda r: (r.uniform(0.1, 1, (4, 6)), np.array([True, False, True, True]))),
    "grad_scale": (lambda x: _bug(GradScale, lambda self, g: g).apply(x, alpha=0.1) - 0.9 * x.detach(),
                   lambda r: (r.standard_normal((3, 2)),)),
    "feature_penalty": (lambda x: _bug(FeaturePenalty, _penalty_no_factor_two).apply(x),
                        lambda r: (r.standard_normal((2, 5)),)),
}


@pytest.mark.parametrize("name", list(BUGS))
def test_planted_bug_is_caught(name):
    fn, make = BUGS[name]
    with pytest.raises(GradcheckError):
        tw.gradcheck(fn, *make(np.random.default_rng(0)))


# --- (c) float32 on every device ----------------------------------------------------------------------------

def test_float32_on_device_equals_cpu(device):
    rng = np.random.default_rng(7)
    B, T, D, K, G, V = 2, 5, 8, 4, 2, 3
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(B, T, D), (B, T, D), (K, B, T, D), (B * T, G * V)]]
    arrays[2][1, 0, 3] = arrays[1][0, 3]  # a duplicate negative
    mask = rng.random((B, T)) < 0.6
    results = []
    for dev in ("cpu", device):
        x, y, n, lg = (tw.tensor(a, requires_grad=True, device=dev) for a in arrays)
        loss, acc, same = F.contrastive_loss(x, y, n, 0.1, mask, return_metrics=True)  # host mask: moved by the op
        cos = F.cosine_similarity(x, n)
        probs = ops.softmax(lg.reshape(B * T, G, V), -1)
        div = F.diversity_loss(probs, G, V, mask)
        pen = F.feature_penalty(F.grad_scale(x, 0.1))
        total = loss + (cos * cos).sum() + div + pen
        assert total.device == backend.normalize_device(dev) and total.dtype == np.float32
        total.backward()
        results.append([loss.numpy(), acc.numpy(), same.numpy(), cos.numpy(), div.numpy(), pen.numpy()] +
                       [backend.to_numpy(t.grad) for t in (x, y, n, lg)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)


# --- (d) op-specific -----------------------------------------------------------------------------------------

def test_duplicate_negatives_get_no_gradient_and_only_duplicates_give_zero_loss():
    rng = np.random.default_rng(8)
    pred, tgt, neg, _ = contrastive_data(rng, 1, 2, 3, 2, duplicates=[(0, 0, 0), (1, 0, 0), (1, 0, 1)])
    ins = [t64(a) for a in (pred, tgt, neg)]
    per_frame = F.contrastive_loss(*ins, 0.1, reduction="none")
    assert per_frame.data[0, 0] == 0  # only the positive is left in frame 0
    per_frame.sum().backward()
    np.testing.assert_array_equal(ins[2].grad[0, 0, 0], 0)
    np.testing.assert_array_equal(ins[2].grad[1, 0, 1], 0)
    assert np.all(ins[2].grad[0, 0, 1] != 0)


def test_equal_logits_give_log_of_candidate_count_and_zero_accuracy():
    K = 100
    v = np.ones((1, 3, 4))
    negs = np.broadcast_to(2 * v, (K, 1, 3, 4)).copy()  # same direction: every cosine is 1
    loss, acc, _ = F.contrastive_loss(t64(v, False), t64(v, False), t64(negs, False), 0.1,
                                      neg_is_pos=np.zeros((K, 1, 3), bool), reduction="mean", return_metrics=True)
    np.testing.assert_allclose(float(loss.data), np.log(K + 1), rtol=1e-12)  # log2(101) = 6.658 bits: "stuck"
    assert float(acc.data) == 0.0


def test_the_loss_counts_the_masked_frames_negatives_that_equal_their_positive():
    rng = np.random.default_rng(9)
    pred, tgt, neg, _ = contrastive_data(rng, 1, 3, 4, 3, duplicates=[(0, 0, 0), (2, 0, 0), (1, 0, 2)])
    mask = np.array([[True, True, False]])
    _, _, identical = F.contrastive_loss(*(t64(a) for a in (pred, tgt, neg)), 0.1, mask, return_metrics=True)
    assert int(identical.data) == 2 and not identical.requires_grad   # frame 2's duplicate is not masked


def test_diversity_loss_extremes():
    G, V = 2, 4
    uniform = np.full((6, G * V), 1 / V)
    np.testing.assert_allclose(float(F.diversity_loss(t64(uniform, False), G, V).data), 0.0, atol=1e-12)
    collapsed = np.tile(np.eye(V)[[0, 0]].reshape(1, G * V), (6, 1))
    np.testing.assert_allclose(float(F.codevector_perplexity(t64(collapsed, False), G, V).data), G)
    np.testing.assert_allclose(float(F.diversity_loss(t64(collapsed, False), G, V).data), (G * V - G) / (G * V))


@pytest.mark.parametrize("reference", [True, False], ids=["reference", "tuned"])
def test_duplicates_of_positive_equals_the_full_comparison(device, reference):
    from tinyw2v2.ops.contrastive import duplicates_of_positive
    from tinyw2v2.ops.dispatch import pick, reference_ops

    rng = np.random.default_rng(9)
    tgt, neg = rng.standard_normal((2, 5, 4)), rng.standard_normal((3, 2, 5, 4))
    neg[0, 1, 2] = tgt[1, 2]                   # a duplicate
    neg[2, 0, 4] = tgt[0, 4]
    neg[1, 0, 0, 0] = tgt[0, 0, 0]             # same first feature only
    neg[2, 1, 3, :3] = tgt[1, 3, :3]           # all but the last feature
    neg[1, 1, 1] = tgt[1, 1]
    neg[1, 1, 1, 2] = -0.0 if tgt[1, 1, 2] == 0 else tgt[1, 1, 2] * (1 + 1e-15)
    with reference_ops(reference):
        out = pick(duplicates_of_positive)(backend.to_device(tgt, device), backend.to_device(neg, device))
    np.testing.assert_array_equal(backend.to_numpy(out), (tgt[None] == neg).all(-1))
    assert backend.to_numpy(out).sum() == 2
