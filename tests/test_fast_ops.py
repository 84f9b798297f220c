"""The tuned ops (tinyw2v2/ops/fast/) equal the reference Functions of the teaching files: for every case of the
gradient-check catalogue, the same forward and the same gradients for a random upstream, in float64."""
import numpy as np
import pytest

import tinyw2v2 as tw
from tinyw2v2.checks import all_cases
from tinyw2v2.ops import fast
from tinyw2v2.ops.dispatch import pick, reference_ops, reference_ops_enabled

CASES = all_cases()


def _outputs(out):
    return [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, tw.Tensor)]


def _run(case, reference: bool):
    """Forward values and input gradients of ``case`` with the reference or the tuned ops."""
    inputs = [tw.Tensor(x, requires_grad=True, dtype=np.float64) if isinstance(x, np.ndarray) and x.dtype.kind == "f"
              else x for x in case.inputs("cpu", seed=0)]
    rng = np.random.default_rng(1)
    with reference_ops(reference):
        outs = _outputs(case.fn(*inputs))
        for o in outs:              # a random upstream per output (zero where the output is not finite)
            v = np.where(np.isfinite(o.data), rng.standard_normal(o.shape), 0.0)
            if o.requires_grad:
                o.backward(v, retain_graph=True)
    values = [o.data for o in outs]
    grads = [x.grad for x in inputs if isinstance(x, tw.Tensor) and x.requires_grad]
    return values, grads


@pytest.mark.parametrize("case", CASES, ids=[f"{c.family}:{c.id}" for c in CASES])
def test_tuned_op_equals_the_reference(case):
    ref_values, ref_grads = _run(case, reference=True)
    values, grads = _run(case, reference=False)
    for a, b in zip(values, ref_values):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{case.id}: forward")
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        if a is None or b is None:
            assert a is None and b is None, f"{case.id}: gradient {i} exists in only one of the two"
            continue
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{case.id}: gradient {i}")


def test_the_switch_is_scoped_and_public():
    assert not reference_ops_enabled()
    with tw.reference_ops():
        assert reference_ops_enabled()
        with tw.reference_ops(False):
            assert not reference_ops_enabled()
        assert reference_ops_enabled()
    assert not reference_ops_enabled()
    from tinyw2v2.ops import activation, contrastive

    assert pick(activation.Gelu) is fast.activation.Gelu and pick(contrastive.ContrastiveLoss) is contrastive.ContrastiveLoss
    with tw.reference_ops():
        assert pick(activation.Gelu) is activation.Gelu


def test_tuning_knobs_are_scoped_and_checked():
    before = fast.TUNING.gelu_block_elements
    with fast.tuning(gelu_block_elements=8):
        assert fast.TUNING.gelu_block_elements == 8
    assert fast.TUNING.gelu_block_elements == before
    with pytest.raises(TypeError, match="unknown tuning knobs"):
        with fast.tuning(no_such_knob=1):
            pass


@pytest.mark.parametrize("device", ["cpu", "emulated"])
def test_tuned_ops_take_empty_inputs(device):
    """The device paths work on a whole array as one block: an empty one must not make a zero-sized step."""
    import tinyw2v2.functional as F

    x = tw.tensor(np.zeros((0, 4, 6), np.float32), device=device, requires_grad=True)
    for y in (F.gelu(x), F.layer_norm(x, 6), F.group_norm(x, 2)):
        assert y.shape == (0, 4, 6)
        y.backward(tw.tensor(np.zeros((0, 4, 6), np.float32), device=device).data)


@pytest.mark.parametrize("device", ["cpu", "emulated"])
@pytest.mark.parametrize("reference", [True, False], ids=["reference", "tuned"])
@pytest.mark.parametrize("layout", ["folded", "batch_major"])
@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
def test_conv1d_takes_an_empty_batch(device, reference, layout, stride, padding):
    """A batch of 0 gives a (0, O, T') output, a (0, C, T) dx and zero weight and bias gradients."""
    import tinyw2v2.functional as F

    x = tw.tensor(np.zeros((0, 4, 9), np.float32), device=device, requires_grad=True)
    w = tw.tensor(np.ones((6, 2, 3), np.float32), device=device, requires_grad=True)
    b = tw.tensor(np.ones(6, np.float32), device=device, requires_grad=True)
    with tw.reference_ops(reference), fast.tuning(conv_layout=layout):
        y = F.conv1d(x, w, b, stride=stride, padding=padding, groups=2)
        y.backward(tw.tensor(np.zeros(y.shape, np.float32), device=device).data)
    assert y.shape == (0, 6, (9 + 2 * padding - 3) // stride + 1) and x.grad.shape == (0, 4, 9)
    for grad, shape in ((w.grad, (6, 2, 3)), (b.grad, (6,))):
        np.testing.assert_array_equal(tw.backend.to_numpy(grad), np.zeros(shape, np.float32))


@pytest.mark.parametrize("device", ["cpu", "emulated"])
def test_tuned_duplicate_test_equals_the_reference(device):
    """The contrastive loss's neg_is_pos: the tuned host version compares in full only where the first feature
    matches; it must agree with the reference's full comparison, near misses included."""
    from tinyw2v2 import backend
    from tinyw2v2.ops import contrastive

    rng = np.random.default_rng(4)
    targets, negatives = rng.standard_normal((3, 6, 5)), rng.standard_normal((4, 3, 6, 5))
    negatives[1, 2, 3] = targets[2, 3]            # a duplicate
    negatives[0, 0, 1, 0] = targets[0, 1, 0]      # the first feature only
    negatives[3, 1, 5, :4] = targets[1, 5, :4]    # all but the last feature
    t, n = backend.to_device(targets, device), backend.to_device(negatives, device)
    tuned = fast.contrastive.duplicates_of_positive(t, n)
    np.testing.assert_array_equal(backend.to_numpy(tuned), backend.to_numpy(contrastive.duplicates_of_positive(t, n)))
    assert backend.to_numpy(tuned).sum() == 1
    assert pick(contrastive.duplicates_of_positive) is fast.contrastive.duplicates_of_positive
