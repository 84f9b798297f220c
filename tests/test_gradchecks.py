"""Every op in the catalogue (tinyw2v2/checks) passes a float64 gradcheck on every device, and with the reference
ops on the CPU."""
import pytest

import tinyw2v2 as tw
from tinyw2v2.checks import all_cases

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gradcheck(case, device):
    assert case.run(device)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gradcheck_with_the_reference_ops(case):
    with tw.reference_ops():
        assert case.run("cpu")


def test_every_core_op_has_three_shape_sets():
    counts = {}
    for c in all_cases(["engine"]):
        counts[c.op] = counts.get(c.op, 0) + 1
    assert min(counts.values()) >= 3, counts
