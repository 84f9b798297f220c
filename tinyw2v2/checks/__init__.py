"""A catalogue of gradient checks: every differentiable op on several awkward shape sets.

Each ``Case`` names an op, a function of Tensors, and a builder that draws float64 inputs with a seeded
NumPy generator. ``tinyw2v2 check`` runs them all and prints a table; ``tests/test_gradchecks.py``
runs them on every device. Add the cases of a new op family in its own module here.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import backend
from ..gradcheck import gradcheck
from ..tensor import Tensor

# one module per op family, named like its file in tinyw2v2/ops/ ("engine": the core ops of elementwise, reduce,
# shape, matmul and softmax), its docs page and its tests
FAMILIES = ["engine", "conv", "norm", "activation", "attention", "quantize", "contrastive", "cross_entropy", "ctc"]


@dataclass
class Case:
    """One gradient check: ``fn(*inputs)`` with inputs from ``make(rng)``.

    ``make`` returns a tuple; float arrays in it are differentiated, everything else (int/bool arrays,
    numbers, or arrays wrapped in ``Const``) is passed as a constant.
    """

    op: str
    shapes: str
    fn: Callable
    make: Callable
    family: str = "engine"
    options: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.op}[{self.shapes}]"

    def inputs(self, device="cpu", seed=0):
        rng = np.random.default_rng(seed)
        out = []
        for x in self.make(rng):
            if isinstance(x, Const):
                out.append(Tensor(backend.to_device(np.asarray(x.value), device), _copy=False))
            elif isinstance(x, np.ndarray):
                out.append(backend.to_device(x, device))
            else:
                out.append(x)
        return out

    def run(self, device="cpu", seed=0) -> bool:
        return gradcheck(self.fn, *self.inputs(device, seed), **self.options)


@dataclass
class Const:
    """A float array that is an input to the op but is not differentiated (e.g. a fixed noise draw)."""

    value: np.ndarray


def all_cases(families=None) -> list:
    """Every registered Case of the given families (default: all), in ``FAMILIES`` order."""
    unknown = set(families or ()) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown op families {sorted(unknown)}: choose from {FAMILIES}")
    cases = []
    for name in families or FAMILIES:
        cases.extend(importlib.import_module(f"{__name__}.{name}").CASES)
    return cases


def run_all(device="cpu", families=None, stream=None) -> bool:
    """Run every case and print a table: op, shapes, result, seconds. True when all pass."""
    import sys

    stream = stream or sys.stdout
    backend.check_device(device)                   # an unknown or unusable device fails before the table starts
    cases = all_cases(families)
    width = max(len(c.op) for c in cases)
    swidth = min(48, max(len(c.shapes) for c in cases))
    print(f"{'family':<11}{'op':<{width + 2}}{'shapes':<{swidth + 2}}{'result':<8}seconds", file=stream)
    ok = True
    for c in cases:
        t0 = time.perf_counter()
        try:
            c.run(device)
            result = "pass"
        except AssertionError as e:
            result, ok = "FAIL", False
            print(f"  {c.id}: {e}", file=stream)
        print(f"{c.family:<11}{c.op:<{width + 2}}{c.shapes[:swidth]:<{swidth + 2}}{result:<8}"
              f"{time.perf_counter() - t0:.2f}", file=stream)
    print(f"{len(cases)} gradient checks on device '{device}': {'all passed' if ok else 'SOME FAILED'}", file=stream)
    return ok
