"""Every tutorial notebook runs top to bottom on the CPU, and its committed copy matches its source."""
import json
import time
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")

import sys  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
import build  # noqa: E402

SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))
# seconds on a 2-core CPU at one BLAS thread; notebook 1 runs the README's main job (900 steps: about 2.6 minutes of
# training at the default two threads, 3 at one) with the rest of the quick start around it
LIMITS = {"01_quick_start": 240}


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebook_runs_top_to_bottom(src, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # one BLAS thread in the kernel: with two, OpenBLAS stalls badly whenever another process holds a core
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    nb = build.parse(src.read_text())
    t0 = time.perf_counter()
    build.execute(nb, ROOT / "notebooks", timeout=300)
    elapsed = time.perf_counter() - t0
    limit = LIMITS.get(src.stem, 180)
    assert elapsed < limit, f"{src.stem} took {elapsed:.0f} s (limit: {limit} s on a 2-core CPU at one thread)"


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_committed_notebook_matches_source(src):
    built = ROOT / "notebooks" / f"{src.stem}.ipynb"
    assert built.exists(), f"run: python notebooks/build.py {src.stem}"
    committed = ["".join(c["source"]) for c in json.loads(built.read_text())["cells"]]
    fresh = [c["source"] for c in build.parse(src.read_text()).cells]
    assert committed == fresh, f"{built.name} is stale: run python notebooks/build.py {src.stem}"
    outputs = [c.get("outputs") for c in json.loads(built.read_text())["cells"] if c["cell_type"] == "code"]
    assert all(o is not None for o in outputs) and any(outputs), f"{built.name} has no outputs: rebuild it"
