import numpy as np
import pytest

from tinyw2v2.analysis import code_phone_scores, cooccurrence, purity_and_pnmi


def test_perfect_codes_give_pnmi_one():
    phones = np.repeat(np.arange(5), 20)
    s = purity_and_pnmi(cooccurrence(phones, phones + 10))
    assert s["pnmi"] == pytest.approx(1.0) and s["phone_purity"] == 1.0 and s["cluster_purity"] == 1.0
    assert s["codes_used"] == 5


def test_independent_codes_give_pnmi_near_zero_and_chance_is_reported():
    rng = np.random.default_rng(0)
    phones, codes = rng.integers(0, 6, 20000), rng.integers(0, 30, 20000)
    s = code_phone_scores(phones, codes)
    assert s["pnmi"] < 0.01 and s["chance_pnmi"] < 0.01


def test_hand_computed_example():
    # 2 phones, 2 codes: joint [[0.4, 0.1], [0.1, 0.4]]
    counts = np.array([[4, 1], [1, 4]])
    s = purity_and_pnmi(counts)
    assert s["phone_purity"] == pytest.approx(0.8) and s["cluster_purity"] == pytest.approx(0.8)
    j = counts / 10
    mi = sum(j[a, b] * np.log(j[a, b] / 0.25) for a in range(2) for b in range(2))
    assert s["pnmi"] == pytest.approx(mi / np.log(2))


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same frames"):
        cooccurrence(np.zeros(3, int), np.zeros(4, int))
