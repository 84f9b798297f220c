"""The Gumbel quantiser ops: gumbel_softmax (soft and straight-through hard) and codevector_lookup.

Compared with torch in float64 (torch's own ``gumbel_softmax`` with its noise reproduced from the seed, and
transformers' quantiser module end to end), planted backward bugs, float32 on every device, noise statistics.
"""
import numpy as np
import pytest

import tinyw2v2 as tw
import tinyw2v2.functional as F
from tinyw2v2 import backend, ops
from tinyw2v2.gradcheck import GradcheckError
from tinyw2v2.ops.quantize import CodevectorLookup, GumbelSoftmax, gumbel_noise

from conftest import torch_or_skip


def t64(x, grad=True):
    return tw.tensor(x, requires_grad=grad, dtype=tw.float64)


def torch_gumbel_draw(torch, shape, seed):
    """The noise torch's gumbel_softmax draws after ``torch.manual_seed(seed)``: g = -log(Exp(1))."""
    torch.manual_seed(seed)
    return -torch.empty(shape, dtype=torch.float64).exponential_().log()


# --- (a) against torch --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,tau,hard", [
    ((7, 5), -1, 0.5, False), ((2, 9, 3), 1, 5.0, False), ((1, 4), -1, 0.1, False),
    ((6, 7), -1, 2.0, True), ((3, 5, 4), 1, 0.5, True), ((1, 320), -1, 1.0, True),
])
@pytest.mark.torchref
def test_gumbel_softmax_matches_torch_gumbel_softmax(shape, axis, tau, hard):
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    g = torch_gumbel_draw(torch, shape, seed=3)
    xt = torch.tensor(x, requires_grad=True)
    torch.manual_seed(3)
    yt = torch.nn.functional.gumbel_softmax(xt, tau=tau, hard=hard, dim=axis)
    up = rng.standard_normal(shape)
    yt.backward(torch.tensor(up))

    xo = t64(x)
    y = F.gumbel_softmax(xo, tau=tau, hard=hard, axis=axis, noise=g.numpy())
    y.backward(up)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    if hard:  # exactly one-hot (torch's y_hard - y_soft + y_soft may be off by an ulp)
        assert set(np.unique(y.data)) <= {0.0, 1.0}
        np.testing.assert_array_equal(y.data.sum(axis=axis), 1.0)
        np.testing.assert_array_equal(y.data.argmax(axis=axis), (x + g.numpy()).argmax(axis=axis))


@pytest.mark.torchref
@pytest.mark.parametrize("N,G,V,d,lead", [(6, 2, 5, 3, None), (4, 1, 7, 4, None), (5, 3, 3, 2, None),
                                          (6, 2, 4, 2, (2, 3))])
@pytest.mark.parametrize("one_hot", [False, True])
def test_codevector_lookup_matches_transformers_formula(N, G, V, d, lead, one_hot):
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    p = np.eye(V)[rng.integers(0, V, (N, G))].reshape(N, G * V) if one_hot else rng.random((N, G * V))
    cv = rng.random((1, G * V, d))
    pt, cvt = torch.tensor(p, requires_grad=True), torch.tensor(cv, requires_grad=True)
    ref = (pt.view(N, G * V, 1) * cvt).view(N, G, V, -1).sum(-2).view(N, -1)   # transformers' quantiser
    up = rng.standard_normal((N, G * d))
    ref.backward(torch.tensor(up))

    shape = lead + (G * V,) if lead else (N, G * V)
    po, cvo = t64(p.reshape(shape)), t64(cv)
    out = F.codevector_lookup(po, cvo, G)
    assert out.shape == (lead or (N,)) + (G * d,)
    out.backward(up.reshape(out.shape))
    np.testing.assert_allclose(out.data.reshape(N, -1), ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(po.grad.reshape(N, -1), pt.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cvo.grad, cvt.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.torchref
def test_quantizer_end_to_end_matches_transformers_module():
    """transformers' Wav2Vec2GumbelVectorQuantizer (training mode) on (B, T, C) features, with torch's
    Gumbel draw reproduced from the seed: codevectors, perplexity and every gradient agree."""
    torch = torch_or_skip()
    pytest.importorskip("transformers")
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

    B, T, C, G, V, dim = 2, 7, 12, 2, 5, 8
    cfg = Wav2Vec2Config(conv_dim=(C,), conv_stride=(1,), conv_kernel=(1,), num_codevector_groups=G,
                         num_codevectors_per_group=V, codevector_dim=dim)
    q = Wav2Vec2GumbelVectorQuantizer(cfg).double().train()
    q.temperature = 1.7
    rng = np.random.default_rng(3)
    with torch.no_grad():
        q.codevectors.copy_(torch.tensor(rng.random((1, G * V, dim // G))))
        q.weight_proj.weight.copy_(torch.tensor(rng.standard_normal((G * V, C))))
        q.weight_proj.bias.copy_(torch.tensor(0.1 * rng.standard_normal(G * V)))
    feats = rng.standard_normal((B, T, C))
    mask = rng.random((B, T)) > 0.5
    mask[0, :2] = True
    ft = torch.tensor(feats, requires_grad=True)
    g = torch_gumbel_draw(torch, (B * T * G, V), seed=5)
    torch.manual_seed(5)
    out_t, ppl_t = q(ft, mask_time_indices=torch.tensor(mask))
    up = rng.standard_normal(out_t.shape)
    (out_t * torch.tensor(up)).sum().add(0.37 * ppl_t).backward()

    f = t64(feats)
    W, b = t64(q.weight_proj.weight.detach().numpy()), t64(q.weight_proj.bias.detach().numpy())
    cv = t64(q.codevectors.detach().numpy())
    logits = ops.matmul(f, W.T) + b                                   # (B, T, G*V)
    onehot = F.gumbel_softmax(logits.reshape(B * T * G, V), q.temperature, hard=True, noise=g.numpy())
    out = F.codevector_lookup(onehot.reshape(B * T, G * V), cv, G).reshape(B, T, dim)
    ppl = F.codevector_perplexity(ops.softmax(logits.reshape(B * T, G, V), -1), G, V, mask)
    ((out * up).sum() + 0.37 * ppl).backward()

    # transformers casts the logits to float32 (``.float()``) for the Gumbel softmax and the perplexity,
    # even in a float64 model: those parts agree to float32 precision only
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-12, atol=1e-14)  # exact one-hots
    np.testing.assert_allclose(float(ppl.data), ppl_t.item(), rtol=1e-6)
    np.testing.assert_allclose(cv.grad, q.codevectors.grad.numpy(), rtol=1e-12, atol=1e-13)
    for ours, theirs in ((f.grad, ft.grad), (W.grad, q.weight_proj.weight.grad), (b.grad, q.weight_proj.bias.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-5 * np.abs(ours).max())


# --- (b) planted bugs ------------------------------------------------------------------------------------

class GumbelNoTau(GumbelSoftmax):
    def backward(self, dy):  # forgets the 1 / tau of z = (x + g) / tau
        dx, _ = GumbelSoftmax.backward(self, dy)
        return dx * self.tau, None


class LookupWrongGroup(CodevectorLookup):
    def backward(self, dout):  # pairs each group's gradient with the codebook of the other group
        P, C = self.saved_tensors
        dP, dC = CodevectorLookup.backward(self, dout)
        return dP, dC.reshape(C.shape)[::-1].reshape(dC.shape)


def test_planted_gumbel_bug_is_caught():
    rng = np.random.default_rng(0)
    g = tw.Tensor(-np.log(-np.log(rng.uniform(0.01, 0.99, (4, 5)))), dtype=tw.float64)
    with pytest.raises(GradcheckError):
        tw.gradcheck(lambda x: GumbelNoTau.apply(x, g, tau=0.5, hard=False, axis=-1), rng.standard_normal((4, 5)))
    assert tw.gradcheck(lambda x: GumbelSoftmax.apply(x, g, tau=0.5, hard=False, axis=-1), rng.standard_normal((4, 5)))


def test_planted_lookup_bug_is_caught():
    rng = np.random.default_rng(0)
    with pytest.raises(GradcheckError):
        tw.gradcheck(lambda p, c: LookupWrongGroup.apply(p, c, num_groups=2), rng.random((3, 6)),
                     rng.standard_normal((1, 6, 2)))


# --- (c) float32 on every device ----------------------------------------------------------------------------

def test_float32_on_device_equals_cpu(device):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 2 * 5)).astype(np.float32)
    g = gumbel_noise((12, 5), np.float32, "cpu", np.random.default_rng(0))
    cv = rng.random((1, 10, 3)).astype(np.float32)
    up = rng.standard_normal((6, 6)).astype(np.float32)
    results = []
    for dev in ("cpu", device):
        xt = tw.tensor(x, requires_grad=True, device=dev)
        cvt = tw.tensor(cv, requires_grad=True, device=dev)
        p = F.gumbel_softmax(xt.reshape(12, 5), 0.7, hard=True, noise=backend.to_device(g, dev)).reshape(6, 10)
        soft = F.gumbel_softmax(xt.reshape(12, 5), 0.7, noise=backend.to_device(g, dev))
        out = F.codevector_lookup(p, cvt, 2)
        assert out.device == backend.normalize_device(dev) and out.dtype == np.float32
        (out * tw.tensor(up, device=dev)).sum().backward()
        results.append([out.numpy(), soft.numpy(), backend.to_numpy(xt.grad), backend.to_numpy(cvt.grad)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_noise_is_drawn_on_the_logits_device(device):
    x = tw.tensor(np.zeros((50, 7), np.float32), device=device)
    y = F.gumbel_softmax(x, 1.0, hard=True, generator=backend.default_rng(0, device))
    assert y.device == backend.normalize_device(device)
    np.testing.assert_array_equal(y.numpy().sum(-1), 1.0)
    y2 = F.gumbel_softmax(x, 1.0, hard=True)  # the per-device default generator
    assert y2.device == backend.normalize_device(device)


# --- (d) op-specific ----------------------------------------------------------------------------------------

def test_gumbel_noise_statistics_and_reproducibility():
    g = gumbel_noise((200_000,), np.float64, "cpu", np.random.default_rng(0))
    assert abs(g.mean() - np.euler_gamma) < 0.01 and abs(g.var() - np.pi ** 2 / 6) < 0.03
    a = gumbel_noise((3, 4), np.float32, "cpu", np.random.default_rng(7))
    b = gumbel_noise((3, 4), np.float32, "cpu", np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32


def test_gumbel_noise_is_finite_at_the_ends_of_the_uniform_range():
    class Ends:  # a generator whose "uniform" draws hit exactly 0 and 1
        def random(self, shape, dtype):
            return np.array([0.0, 1.0, 0.5], dtype=dtype).reshape(shape)

    for dtype in (np.float32, np.float64):
        g = gumbel_noise((3,), dtype, "cpu", Ends())
        assert np.isfinite(g).all() and g[0] < g[2] < g[1]


def test_hard_sample_frequencies_follow_softmax_of_logits():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    x = tw.tensor(np.tile(logits, (40_000, 1)))
    y = F.gumbel_softmax(x, 1.0, hard=True, generator=np.random.default_rng(1))
    np.testing.assert_allclose(y.numpy().mean(0), [0.5, 0.3, 0.15, 0.05], atol=0.01)


def test_soft_gumbel_handles_minus_inf_and_all_minus_inf_rows():
    x = t64(np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]]))
    y = F.gumbel_softmax(x, 0.5, noise=np.zeros((2, 3)))
    assert np.isfinite(y.data).all() and y.data[0, 1] == 0 and np.all(y.data[1] == 0)
    y.backward(np.ones((2, 3)))
    assert np.isfinite(x.grad).all()


def test_lookup_of_one_hot_picks_the_codewords():
    cv = np.arange(2 * 3 * 2, dtype=np.float64).reshape(1, 6, 2)
    p = np.zeros((2, 6))
    p[0, [1, 3 + 2]] = 1
    p[1, [0, 3 + 0]] = 1
    out = F.codevector_lookup(t64(p, grad=False), t64(cv, grad=False), 2)
    np.testing.assert_array_equal(out.data, [[2, 3, 10, 11], [0, 1, 6, 7]])
