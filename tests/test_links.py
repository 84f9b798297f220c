"""Every relative link and file reference in README.md, docs/ and the notebooks' markdown resolves inside the
repository (outputs of a run, under runs/ or data/, are not checked: they exist only after it)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FILE = re.compile(r"`((?:\.\./)*(?:[\w.-]+/)+[\w.-]+\.(?:py|md|ipynb|json|toml|sh|png|safetensors|yaml))`")
NOT_IN_REPO = ("runs/", "data/", "plots/", "/", "~", "$", "out/", "some/", "ckpt", "path/",
               "fairseq/", "transformers/")           # a run's outputs; files of the reference implementations


def _documents():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "notebooks").rglob("*.md"))]
    out = [(d, d.read_text()) for d in docs]
    for src in sorted((ROOT / "notebooks" / "src").glob("*.py")):   # the markdown cells of the notebook sources
        text = "\n".join(l[2:] for l in src.read_text().splitlines() if l.startswith("# "))
        out.append((ROOT / "notebooks" / src.name, text))                # resolved from notebooks/, like the .ipynb
    return out


def _references(path: Path, text: str):
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            yield target.split("#")[0]
    for target in FILE.findall(text):
        yield target


def _resolves(path: Path, target: str) -> bool:
    """Relative to the document, to the repository, or to the package (``ops/fast/norm.py`` in prose)."""
    if "NN_" in target:                                   # a pattern, like notebooks/src/NN_name.py
        return True
    return any((base / target).exists() for base in (path.parent, ROOT, ROOT / "tinyw2v2"))


CASES = [(d, t) for d, text in _documents() for t in sorted(set(_references(d, text)))
         if t and not t.startswith(NOT_IN_REPO)]


@pytest.mark.parametrize("document, target", CASES, ids=[f"{d.relative_to(ROOT)}:{t}" for d, t in CASES])
def test_reference_resolves(document, target):
    assert _resolves(document, target), f"{document.relative_to(ROOT)} refers to {target}, which is not in the repository"


def test_the_check_sees_links_and_file_names():
    refs = set(_references(ROOT / "README.md", "[a](docs/x.md) [b](https://e.org) `tinyw2v2/cli.py` (#frag)"))
    assert refs == {"docs/x.md", "tinyw2v2/cli.py"}
    assert len(CASES) > 100
