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


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def pytest_collection_modifyitems(config, items):
    """A test marked ``torchref`` compares against PyTorch / transformers: it skips, with the install line, where
    either is missing (so the README's test command passes on a fresh machine without them)."""
    missing = [name for name in ("torch", "transformers") if not _importable(name)]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"{' and '.join(missing)} not installed (pip install torch==2.13.0 && "
                                   "pip install -e '.[ref]')")
    for item in items:
        if "torchref" in item.keywords:
            item.add_marker(skip)
