"""tinyw2v2.nn: Module bookkeeping (names as torch), state dicts, devices, checkpoints, and the layers."""
import os

import numpy as np
import pytest

import tinyw2v2 as tw
from tinyw2v2 import backend, nn, ops

from conftest import torch_or_skip


# ----------------------------------------------------------------------------------------------
# A toy model built from core ops only (independent of the op families), with torch-style names


class Proj(nn.Module):
    def __init__(self, n_in, n_out, rng, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(rng.standard_normal((n_out, n_in)) / np.sqrt(n_in), dtype=dtype)
        self.bias = nn.Parameter(rng.standard_normal(n_out) * 0.1, dtype=dtype)

    def forward(self, x):
        return ops.add(ops.matmul(x, ops.transpose(self.weight, None)), self.bias)


class Attention(nn.Module):
    def __init__(self, d, rng, dtype=None):
        super().__init__()
        self.q_proj = Proj(d, d, rng, dtype)
        self.out_proj = Proj(d, d, rng, dtype)

    def forward(self, x):
        return self.out_proj(ops.tanh(self.q_proj(x)))


class Layer(nn.Module):
    def __init__(self, d, rng, dtype=None):
        super().__init__()
        self.attention = Attention(d, rng, dtype)

    def forward(self, x):
        return ops.add(x, ops.mul(self.attention(x), 0.5))


class Toy(nn.Module):
    def __init__(self, d=4, n_layers=2, seed=0, dtype=None):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList([Layer(d, rng, dtype) for _ in range(n_layers)])
        self.head = Proj(d, 2, rng, dtype)
        self.mask_emb = nn.Parameter(rng.uniform(size=d), dtype=dtype)

    def forward(self, x):
        for layer in self.encoder.layers:
            x = layer(x)
        return self.head(x)


TOY_PARAMS = [
    ("mask_emb", (4,)),
    ("encoder.layers.0.attention.q_proj.weight", (4, 4)), ("encoder.layers.0.attention.q_proj.bias", (4,)),
    ("encoder.layers.0.attention.out_proj.weight", (4, 4)), ("encoder.layers.0.attention.out_proj.bias", (4,)),
    ("encoder.layers.1.attention.q_proj.weight", (4, 4)), ("encoder.layers.1.attention.q_proj.bias", (4,)),
    ("encoder.layers.1.attention.out_proj.weight", (4, 4)), ("encoder.layers.1.attention.out_proj.bias", (4,)),
    ("head.weight", (2, 4)), ("head.bias", (2,)),
]


def _torch_toy(torch):
    """The same structure in torch, to compare names and order with torch's own."""
    tnn = torch.nn

    class TProj(tnn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.weight = tnn.Parameter(torch.zeros(n_out, n_in))
            self.bias = tnn.Parameter(torch.zeros(n_out))

    class TAttention(tnn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.out_proj = TProj(4, 4), TProj(4, 4)

    class TLayer(tnn.Module):
        def __init__(self):
            super().__init__()
            self.attention = TAttention()

    class TToy(tnn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = tnn.Module()
            self.encoder.layers = tnn.ModuleList([TLayer(), TLayer()])
            self.head = TProj(4, 2)
            self.mask_emb = tnn.Parameter(torch.zeros(4))

    return TToy()


def test_parameter_defaults():
    p = nn.Parameter(np.ones((2, 3)))
    assert p.requires_grad and p.dtype == np.float32 and p.is_leaf and isinstance(p, tw.Tensor)
    assert nn.Parameter(np.ones(2), dtype=tw.float64).dtype == np.float64
    assert not nn.Parameter(np.ones(2), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter(shape=(2, 3)")
    assert nn.Parameter(tw.tensor([1.0, 2.0])).shape == (2,)
    a = np.zeros(3, dtype=np.float32)
    nn.Parameter(a).data += 1                      # a copy: in-place updates never reach the caller's array
    np.testing.assert_array_equal(a, 0)
    assert nn.Parameter(a, copy=False).data is a


def test_names_and_order_match_torch():
    torch = torch_or_skip()
    m, t = Toy(), _torch_toy(torch)
    assert [(n, p.shape) for n, p in m.named_parameters()] == TOY_PARAMS
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in t.named_parameters()]
    assert list(m.state_dict()) == list(t.state_dict())
    assert [n for n, _ in m.named_modules()] == [n for n, _ in t.named_modules()]
    assert m.num_parameters() == sum(p.numel() for p in t.parameters()) == 4 + 2 * 2 * 20 + 10


def test_registration_rules():
    m = Toy()
    assert isinstance(m.encoder.layers[1].attention.q_proj.weight, nn.Parameter)
    with pytest.raises(TypeError, match="head"):
        m.head = np.zeros(3)                               # a submodule slot takes a Module only
    with pytest.raises(TypeError, match="nn.Parameter"):
        m.mask_emb = tw.tensor(np.zeros(4))                # a parameter slot takes a Parameter (or None)
    m.mask_emb = None
    assert "mask_emb" not in dict(m.named_parameters())
    del m.head
    assert not hasattr(m, "head") and "head.weight" not in m.state_dict()

    class NoInit(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError, match="super"):
        NoInit()


def test_shared_parameters_are_counted_once():
    m = Toy()
    m.tied = m.head                                        # the same module twice
    m.extra = nn.Parameter(np.zeros(1))
    m.extra_alias = m.extra
    names = [n for n, _ in m.named_parameters()]
    assert "tied.weight" not in names and names.count("extra") == 1 and "extra_alias" not in names
    assert m.num_parameters() == 4 + 80 + 10 + 1


def test_train_eval_requires_grad_zero_grad():
    m = Toy()
    assert m.training and m.encoder.layers[1].attention.training
    assert m.eval() is m and not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    m.encoder.requires_grad_(False)
    assert m.num_parameters(only_trainable=True) == 4 + 10
    m.requires_grad_(True)
    x = tw.tensor(np.ones((3, 4)))
    m(x).sum().backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == ["mask_emb"]   # unused in forward
    m.zero_grad(set_to_none=False)
    assert all(np.all(p.grad == 0) for p in m.parameters() if p.grad is not None)
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    assert "(q_proj): Proj()" in repr(m)


def test_module_list():
    rng = np.random.default_rng(0)
    ml = nn.ModuleList([Proj(3, 3, rng) for _ in range(3)])
    assert len(ml) == 3 and ml[-1] is ml[2] and len(ml[1:]) == 2
    ml.append(Proj(3, 1, rng))
    assert [n for n, _ in ml.named_parameters()][-2:] == ["3.weight", "3.bias"]
    with pytest.raises(IndexError):
        ml[4]


def test_state_dict_round_trip_and_copies():
    a, b = Toy(seed=1), Toy(seed=2)
    sd = a.state_dict()
    assert sd["head.weight"] is a.head.weight.data          # live arrays, like torch
    ref = {k: v.copy() for k, v in sd.items()}
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, ref[k])
    b.head.weight.data += 1                                # b does not alias a's arrays
    np.testing.assert_array_equal(a.head.weight.data, ref["head.weight"])


def test_load_state_dict_errors_name_the_parameter_and_shapes():
    m = Toy()
    sd = dict(m.state_dict())
    bad = dict(sd, **{"head.weight": np.zeros((3, 4))})
    with pytest.raises(RuntimeError, match=r"head\.weight.*\(3, 4\).*\(2, 4\)"):
        m.load_state_dict(bad)
    with pytest.raises(RuntimeError, match=r"head\.weight.*\(3, 4\)"):
        m.load_state_dict(bad, strict=False)              # shape mismatches raise even when not strict
    missing = {k: v for k, v in sd.items() if k != "encoder.layers.1.attention.q_proj.bias"}
    with pytest.raises(RuntimeError, match=r"missing keys: encoder\.layers\.1\.attention\.q_proj\.bias"):
        m.load_state_dict(missing)
    with pytest.raises(RuntimeError, match=r"unexpected keys: quantizer\.codevectors"):
        m.load_state_dict(dict(sd, **{"quantizer.codevectors": np.zeros(2)}))
    r = m.load_state_dict(dict(missing, extra=np.zeros(1)), strict=False)
    assert r.missing_keys == ["encoder.layers.1.attention.q_proj.bias"] and r.unexpected_keys == ["extra"]
    # nothing is written when an error is raised
    before = m.head.bias.data.copy()
    with pytest.raises(RuntimeError):
        m.load_state_dict(dict(bad, **{"head.bias": np.full(2, 7.0)}))
    np.testing.assert_array_equal(m.head.bias.data, before)


def test_load_torch_state_dict_directly():
    torch = torch_or_skip()
    t = _torch_toy(torch)
    with torch.no_grad():
        for p in t.parameters():
            p.normal_()
    m = Toy(dtype=tw.float64).double()
    m.load_state_dict(t.state_dict())
    for name, value in t.state_dict().items():
        np.testing.assert_array_equal(m.state_dict()[name], value.double().numpy())
    assert m.head.weight.dtype == np.float64


def test_to_device_and_dtype_in_place(device):
    m = Toy()
    params_before = list(m.parameters())
    host = {k: v.copy() for k, v in m.state_dict().items()}
    assert m.to(device) is m
    assert list(m.parameters()) == params_before              # same Parameter objects
    assert all(p.device == backend.normalize_device(device) for p in m.parameters())
    x = tw.tensor(np.ones((2, 4)), device=device)
    m(x).sum().backward()
    with_grad = [p for p in m.parameters() if p.grad is not None]
    assert len(with_grad) == len(TOY_PARAMS) - 1                      # mask_emb is unused in forward
    assert all(backend.device_of(p.grad) == backend.normalize_device(device) for p in with_grad)
    m.to(np.float64)
    assert all(p.dtype == np.float64 for p in m.parameters()) and all(p.grad.dtype == np.float64 for p in with_grad)
    m.to("cpu").float()
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, host[k])


def test_load_state_dict_moves_values_to_the_parameters_device(device):
    src = Toy(seed=3)
    m = Toy(seed=4, dtype=tw.float64).to(device)
    m.load_state_dict(src.state_dict())                       # host float32 arrays into device float64 params
    for k, v in m.state_dict().items():
        assert backend.device_of(v) == backend.normalize_device(device)
        np.testing.assert_array_equal(backend.to_numpy(v), src.state_dict()[k].astype(v.dtype))
    assert m.head.weight.dtype == np.float64


def test_save_load_checkpoint(tmp_path, device):
    m = Toy(seed=5).to(device)
    path = tmp_path / "ckpt.npz"
    meta = {"hidden_size": 4, "name": "toy"}
    m.save(path, metadata=meta)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]      # no temporary left behind
    state, loaded_meta = nn.Module.load_state(path)
    assert loaded_meta == meta and list(state) == list(m.state_dict())
    other = Toy(seed=6).to(device)
    assert other.load(path) == meta
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(v), backend.to_numpy(m.state_dict()[k]))
    m.save(path, metadata='{"a": [1, 2]}')                   # a JSON string works too, and overwrites
    assert nn.Module.load_state(path)[1] == {"a": [1, 2]}
    m.save(path)
    assert nn.Module.load_state(path)[1] is None


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    m = Toy(seed=7)
    path = tmp_path / "ckpt.npz"
    m.save(path)
    good = open(path, "rb").read()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        Toy(seed=8).save(path)
    assert open(path, "rb").read() == good                    # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]      # and the temporary is cleaned up


def test_checkpoint_errors_name_the_file(tmp_path):
    m = Toy()
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        m.load(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip file")
    with pytest.raises(nn.CheckpointError, match="corrupt.npz"):
        m.load(corrupt)
    m.save(tmp_path / "ok.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((tmp_path / "ok.npz").read_bytes()[:200])
    with pytest.raises(nn.CheckpointError, match="truncated.npz"):
        nn.Module.load_state(truncated)
    Toy(n_layers=1).save(tmp_path / "small.npz")
    with pytest.raises(RuntimeError, match=r"(?s)small\.npz.*missing keys"):
        m.load(tmp_path / "small.npz")


# ----------------------------------------------------------------------------------------------
# Layers


def test_layer_parameters_match_torch_names_and_shapes():
    torch = torch_or_skip()
    tnn = torch.nn
    pairs = [
        (nn.Linear(5, 3), tnn.Linear(5, 3)),
        (nn.Linear(5, 3, bias=False), tnn.Linear(5, 3, bias=False)),
        (nn.LayerNorm(6), tnn.LayerNorm(6)),
        (nn.LayerNorm((2, 3), elementwise_affine=False), tnn.LayerNorm((2, 3), elementwise_affine=False)),
        (nn.GroupNorm(4, 8), tnn.GroupNorm(4, 8)),
        (nn.Conv1d(4, 6, 3, stride=2, groups=2), tnn.Conv1d(4, 6, 3, stride=2, groups=2)),
        (nn.Conv1d(1, 8, 10, stride=5, bias=False), tnn.Conv1d(1, 8, 10, stride=5, bias=False)),
    ]
    for ours, theirs in pairs:
        assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()], type(ours).__name__
        ours.load_state_dict(theirs.state_dict())


def test_default_initialisation():
    lin = nn.Linear(400, 300, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(400)
    for p in (lin.weight.data, lin.bias.data):
        assert p.dtype == np.float32 and np.abs(p).max() <= bound and np.abs(p).max() > 0.95 * bound
    assert abs(lin.weight.data.std() - bound / np.sqrt(3)) < 0.01 * bound   # std of U(-b, b) is b / sqrt(3)
    conv = nn.Conv1d(8, 16, 3, groups=2, rng=np.random.default_rng(1), dtype=tw.float64)
    assert conv.weight.dtype == np.float64 and np.abs(conv.weight.data).max() <= 1 / np.sqrt(4 * 3)
    same = nn.Conv1d(8, 16, 3, groups=2, rng=np.random.default_rng(1), dtype=tw.float64)
    np.testing.assert_array_equal(conv.weight.data, same.weight.data)      # reproducible from the rng
    ln, gn = nn.LayerNorm(5), nn.GroupNorm(1, 5)
    for p in (ln.weight, gn.weight):
        np.testing.assert_array_equal(p.data, np.ones(5))
    for p in (ln.bias, gn.bias):
        np.testing.assert_array_equal(p.data, np.zeros(5))
    with pytest.raises(ValueError):
        nn.GroupNorm(3, 5)
    with pytest.raises(ValueError):
        nn.Conv1d(3, 4, 2, groups=2)


def test_layers_on_device_keep_parameters_there(device):
    lin = nn.Linear(3, 2, device=device)
    conv = nn.Conv1d(2, 4, 3, rng=backend.default_rng(0, device) if device != "cuda" else None, device=device)
    for p in list(lin.parameters()) + list(conv.parameters()):
        assert p.device == backend.normalize_device(device)


def _compare_forward(ours, theirs, x_np, torch, rtol=1e-10, atol=1e-12):
    ours.double()
    ours.load_state_dict(theirs.double().state_dict())
    x = tw.tensor(x_np, requires_grad=True, dtype=tw.float64)
    xt = torch.tensor(x_np, requires_grad=True)
    y, yt = ours(x), theirs(xt)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=rtol, atol=atol)
    g = np.random.default_rng(1).standard_normal(yt.shape)
    y.backward(g)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    for (name, p), (_, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad, pt.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


def test_linear_forward_matches_torch(rng):
    torch = torch_or_skip()
    _compare_forward(nn.Linear(5, 3), torch.nn.Linear(5, 3), rng.standard_normal((2, 7, 5)), torch)
    _compare_forward(nn.Linear(5, 3, bias=False), torch.nn.Linear(5, 3, bias=False), rng.standard_normal((4, 5)),
                     torch)


def test_layer_norm_forward_matches_torch(rng):
    torch = torch_or_skip()
    _compare_forward(nn.LayerNorm(6), torch.nn.LayerNorm(6), rng.standard_normal((2, 3, 6)), torch)


def test_group_norm_forward_matches_torch(rng):
    torch = torch_or_skip()
    _compare_forward(nn.GroupNorm(8, 8), torch.nn.GroupNorm(8, 8), rng.standard_normal((2, 8, 11)), torch)


def test_conv1d_forward_matches_torch(rng):
    torch = torch_or_skip()
    _compare_forward(nn.Conv1d(4, 6, 3, stride=2, groups=2), torch.nn.Conv1d(4, 6, 3, stride=2, groups=2),
                     rng.standard_normal((2, 4, 13)), torch)
    _compare_forward(nn.Conv1d(4, 4, 5, padding=2, groups=4), torch.nn.Conv1d(4, 4, 5, padding=2, groups=4),
                     rng.standard_normal((1, 4, 9)), torch)


def test_dropout_modes(rng, device):
    x = tw.tensor(rng.standard_normal((3, 5)), device=device)
    drop = nn.Dropout(0.3)
    drop.eval()
    assert drop(x) is x                                         # eval: identity, no randomness
    assert nn.Dropout(0.0)(x) is x
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    drop.train()
    keep = rng.uniform(size=(3, 5)) > 0.3
    mask = backend.to_device(keep, device)
    y = drop(x, mask=mask)
    np.testing.assert_allclose(backend.to_numpy(y.data), np.where(keep, x.numpy() / 0.7, 0), rtol=1e-6)
    drop.generator = backend.default_rng(0, device)
    y1 = drop(x)
    drop.generator = backend.default_rng(0, device)
    np.testing.assert_array_equal(backend.to_numpy(drop(x).data), backend.to_numpy(y1.data))
