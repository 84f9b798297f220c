"""Shared fixtures: the devices every op test runs on.

``device`` is parametrised over 'cpu' (NumPy), 'emulated' (a CPU array type that refuses implicit host
conversion and host/device mixing, as CuPy does) and 'cuda' (CuPy on a GPU; skipped where there is none).
"""
import numpy as np
import pytest

from tinyw2v2 import backend

DEVICES = ["cpu", "emulated", "cuda"]


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param == "cuda" and not backend.cuda_available():
        pytest.skip("no usable GPU / CuPy here")
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def torch_or_skip():
    """Import torch for a comparison test, or skip it cleanly."""
    return pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
