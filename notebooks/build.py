"""Build the tutorial notebooks from their sources and execute them, saving the outputs.

    python notebooks/build.py            # every notebook
    python notebooks/build.py 02         # those whose name contains "02"

Sources live in ``notebooks/src/*.py`` in the "percent" format: ``# %%`` starts a code cell and
``# %% [markdown]`` a Markdown cell whose lines are comments (``# `` is stripped). Keeping the sources as
plain Python makes them easy to review; the built ``.ipynb`` files carry the outputs for browsing.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def parse(source: str) -> nbformat.NotebookNode:
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in text.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif text.strip():
            cells.append(nbformat.v4.new_code_cell(text))

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def execute(nb, cwd: Path, timeout: int = 600):
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    return nb


def coalesce_streams(outputs: list) -> list:
    """Join consecutive stream outputs of the same stream: the kernel flushes stdout on a timer, which can cut one
    printed line into two outputs."""
    merged = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] = "".join(merged[-1]["text"]) + "".join(out["text"])
        else:
            merged.append(out)
    return merged


def build(src: Path, out_dir: Path = HERE, run: bool = True) -> Path:
    nb = parse(src.read_text())
    if run:
        t0 = time.perf_counter()
        execute(nb, out_dir)
        print(f"{src.stem}: executed in {time.perf_counter() - t0:.1f} s")
    out = out_dir / f"{src.stem}.ipynb"
    nbformat.write(nb, out)
    return out


def main(argv):
    # the inline backend puts each figure into the notebook (Agg would show nothing)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    for src in sorted((HERE / "src").glob("*.py")):
        if not argv or any(a in src.stem for a in argv):
            build(src)


if __name__ == "__main__":
    main(sys.argv[1:])
