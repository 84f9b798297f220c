"""The machinery behind ``check``: run an exercise's cases, compare with tinyw2v2's op, gradcheck, explain.

An exercise is a subclass of ``Exercise`` (one module per exercise in this folder). ``FunctionExercise`` runs a
student's ``Function`` on each case in float64 and stops at the first failure, in this order:

1. forward: the output against the library op's (shape, then every value);
2. backward: the gradients of sum(v * output), v a seeded random upstream, against the library's;
3. ``tinyw2v2.gradcheck`` of the student's Function alone (finite differences, zero upstream, a second backward).

A failure becomes a ``Report``: the stage, the case (its label names the shapes), the worst index with both values,
and a hint. Hints come, first match wins, from the exercise's list of common mistakes (each mistake is a wrong
formula computed here; if yours equals it, its hint is printed), then from generic patterns (zero, wrong sign, off
by a constant factor, transposed), then from the case itself, and the docs section is always named.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyw2v2 import Tensor, no_grad
from tinyw2v2.gradcheck import GradcheckError, gradcheck
from tinyw2v2.tensor import unbroadcast

ROOT = Path(__file__).resolve().parents[2]
RTOL, ATOL = 1e-6, 1e-9   # yours against the library's, both float64: correct code agrees to ~1e-14


@dataclass
class Case:
    """One set of inputs: ``make(rng)`` returns a dict of named inputs; ``label`` is printed (name the shapes);
    ``hint`` is printed when this case fails and no sharper hint applies."""

    label: str
    make: object
    hint: str = ""


@dataclass
class Report:
    """What ``check`` found. True when every case passed; ``str(report)`` is the message it printed."""

    name: str
    passed: bool
    message: str
    stage: str | None = None      # "import", "forward" or "backward" when it failed
    case: str | None = None       # the failing case's label
    not_written: bool = False     # the stub's NotImplementedError was reached

    def __bool__(self):
        return self.passed

    def __str__(self):
        return self.message


class Failure(Exception):
    """Raised inside a run: stage, case label, the lines saying what differs, and a hint."""

    def __init__(self, stage, case, what, hint="", not_written=False):
        super().__init__(what)
        self.stage, self.case, self.what, self.hint, self.not_written = stage, case, what, hint, not_written


# ----------------------------------------------------------------------------------------------
# comparing arrays


def _tolerance(r):
    finite = np.abs(r[np.isfinite(r)])
    return ATOL * max(1.0, float(finite.max(initial=0.0))) + RTOL * np.abs(r)


def worst(a, r):
    """None when a and r agree; else (index, yours, expected, how many differ, how many in all)."""
    a, r = np.asarray(a, dtype=np.float64), np.asarray(r, dtype=np.float64)
    err = np.abs(a - r)
    with np.errstate(invalid="ignore"):
        bad = ~((a == r) | (err <= _tolerance(r)))      # a == r: equal infinities; NaN is always bad
    if not bad.any():
        return None
    score = np.where(bad, np.where(np.isnan(err), np.inf, np.nan_to_num(err, posinf=1e300)), -np.inf)
    j = int(np.argmax(score))
    index = tuple(int(i) for i in np.unravel_index(j, a.shape)) if a.ndim else ()
    return index, float(a.reshape(-1)[j]), float(r.reshape(-1)[j]), int(bad.sum()), int(a.size)


def close(a, r) -> bool:
    a, r = np.asarray(a), np.asarray(r)
    return a.shape == r.shape and worst(a, r) is None


def describe(what, a, r) -> str:
    """'dx differs at index (1, 2): yours 0.5, expected 0.25 (3 of 10 entries differ)'."""
    index, mine, theirs, n_bad, n = worst(a, r)
    at = f" at index {index}" if index else ""
    return f"{what} differs{at}: yours {mine:.8g}, expected {theirs:.8g} ({n_bad} of {n} entries differ)"


def generic_hint(a, r, factors=None) -> str:
    """Cheap patterns of a wrong array against the right one."""
    a, r = np.asarray(a, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(r)):
        return "yours has NaN or inf entries where the expected values are finite"
    scale = float(np.abs(r).max(initial=0.0))
    if scale == 0:
        return "the expected values are all zero here"
    if float(np.abs(a).max(initial=0.0)) <= 1e-12 * scale:
        return "yours is zero everywhere"
    if close(a, -r):
        return "yours has the opposite sign everywhere"
    c = float((a * r).sum() / (r * r).sum())
    if close(a, c * r):
        for name, value in (factors or {}).items():
            if value and np.isclose(c, value, rtol=1e-6):
                return f"yours is {name} = {value:.6g} times the expected one: a factor {name} too many (or 1/{name} missing)"
            if value and np.isclose(c, 1 / value, rtol=1e-6):
                return f"yours is 1/{name} = {1 / value:.6g} times the expected one: a factor {name} missing (or 1/{name} too many)"
        return f"yours is {c:.6g} times the expected one: a constant factor is off"
    if a.ndim >= 2 and a.shape[-1] == a.shape[-2] and close(a, np.swapaxes(r, -1, -2)):
        return "yours is the expected one transposed (last two axes swapped)"
    return ""


def reduce_to(a, shape):
    """A gradient computed in a broadcast shape, summed down to ``shape`` as the engine does (None if it cannot)."""
    try:
        a = unbroadcast(np.asarray(a), tuple(shape))
    except (IndexError, ValueError):
        return None
    return a if a.shape == tuple(shape) else None


def with_case(hint, case) -> str:
    """A generic hint, and the case's own hint where the generic one says little on its own."""
    if not hint:
        return case.hint
    if case.hint and hint.startswith(("yours has NaN", "the expected values are all zero")):
        return f"{hint}; {case.hint}"
    return hint


def first_mistake(a, r, mistakes) -> str:
    """The hint of the first (wrong array, hint) that equals a (and differs from the right answer r)."""
    for wrong, hint in mistakes:
        if wrong is None:
            continue
        wrong = np.asarray(wrong)
        if wrong.shape == np.shape(a) and close(a, wrong) and not close(wrong, r):
            return hint
    return ""


# ----------------------------------------------------------------------------------------------
# exercises


def _relative(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except (TypeError, ValueError):
        return str(path)


class Exercise:
    """Base: a name, the docs section to read, the cases, and ``run(module) -> None or raise Failure``."""

    name = ""
    title = ""
    needs = ()           # attributes the student's module must have
    docs = ""            # where the derivation is, e.g. 'docs/norm.md, section "Backward"'
    library = ""         # the op compared against, for the success message
    cases: list = []

    def run(self, module):
        raise NotImplementedError

    def explain_error(self, error, inputs) -> str:
        """A hint for an exception raised while running the student's code ('' if none)."""
        return ""

    def call(self, stage, case, inputs, f):
        """f() with the student's exceptions turned into Failures."""
        try:
            return f()
        except Failure:
            raise
        except NotImplementedError as e:
            raise Failure(stage, case.label, str(e).strip(), not_written=True) from None
        except Exception as e:  # noqa: BLE001 - the student's code raised: say what and where
            hint = self.explain_error(e, inputs) or case.hint
            raise Failure(stage, case.label, f"{stage} raised {type(e).__name__}: {e}", hint) from None


class FunctionExercise(Exercise):
    """A ``Function`` exercise: forward and gradients against the library's op, then ``gradcheck``."""

    grads = ()           # names of the differentiated inputs, in the order forward takes them
    returns = ""         # what backward returns, e.g. "(dx, dweight, dbias)"
    shape_hints: dict = {}

    # --- what each exercise provides ---------------------------------------------------------------------
    def student(self, module, t):
        """The student's op on the inputs ``t`` (Tensors for the names in ``grads``, constants as they are)."""
        raise NotImplementedError

    def reference(self, t):
        """The library's op on the same inputs."""
        raise NotImplementedError

    def gradcheck_target(self, module, t):
        """What gradcheck differentiates (default: the student's op)."""
        return self.student(module, t)

    def factors(self, inputs) -> dict:
        """Named constants of a case (tau, scale): a gradient off by one of them gets a sharper hint."""
        return {}

    def forward_mistakes(self, inputs) -> list:
        """[(wrong output, hint), ...] for common forward mistakes."""
        return []

    def backward_mistakes(self, inputs, v) -> dict:
        """{grad name: [(wrong gradient, hint), ...]} for common backward mistakes, with upstream v."""
        return {}

    # --- running ----------------------------------------------------------------------------------------
    def tensors(self, inputs, grad=True):
        """Fresh copies (your code may change its arrays in place): Tensors for ``grads``, the rest as it is."""
        return {k: Tensor(v.copy(), requires_grad=grad, _copy=False) if k in self.grads and v is not None
                else v.copy() if isinstance(v, np.ndarray) else v for k, v in inputs.items()}

    def explain_error(self, error, inputs):
        text = str(error)
        m = re.search(r"returned (\d+) gradients for (\d+) inputs", text)
        if m and m.group(1) == "1":
            return (f"backward returned one value (or None: did you forget `return`?); it returns one gradient per "
                    f"input of forward: {self.returns}")
        if m:
            return (f"backward returns one gradient per input of forward, in order: {self.returns} "
                    "(None for an input that gets none, such as a constant or an absent bias)")
        if "'NoneType' object" in text:
            return "a None where an array was expected: did forward or backward forget `return`?"
        m = re.search(r"returned a gradient of shape (\(.*?\)) for an input of shape (\(.*?\))", text)
        if m:
            names = [k for k in self.grads if inputs.get(k) is not None and str(tuple(np.shape(inputs[k]))) == m.group(2)]
            if len(names) == 1:
                k = names[0]
                return self.shape_hints.get(k, f"d{k} must have the shape of {k}, {m.group(2)}")
            return "each gradient must have the shape of its input"
        return ""

    def run(self, module):
        for i, case in enumerate(self.cases):
            self.run_case(module, case, np.random.default_rng(i))

    def run_case(self, module, case, rng):
        inputs = case.make(rng)
        label = case.label

        # 1. forward against the library
        t = self.tensors(inputs)
        out = self.call("forward", case, inputs, lambda: self.student(module, t))
        if not isinstance(out, Tensor) or not isinstance(out.data, np.ndarray):
            raise Failure("forward", label, f"forward returned {type(getattr(out, 'data', out)).__name__}, "
                          "not an array", "forward must return the output array (did you forget `return`?)")
        with no_grad():
            expected = self.reference(self.tensors(inputs, grad=False)).data
        if out.shape != expected.shape:
            raise Failure("forward", label, f"the output has shape {out.shape}, expected {expected.shape}",
                          self.forward_shape_hint(inputs, out.shape, expected.shape) or case.hint)
        if not close(out.data, expected):
            hint = (first_mistake(out.data, expected, self.forward_mistakes(inputs))
                    or with_case(generic_hint(out.data, expected, self.factors(inputs)), case))
            raise Failure("forward", label, describe("the output", out.data, expected), hint)

        # 2. gradients against the library's, for a random upstream v
        v = rng.standard_normal(out.shape)
        self.call("backward", case, inputs, lambda: out.backward(v.copy()))
        rt = self.tensors(inputs)
        self.reference(rt).backward(v)
        mistakes = None
        for k in self.grads:
            if inputs.get(k) is None:
                continue
            mine, right = t[k].grad, rt[k].grad
            if mine is None:
                raise Failure("backward", label, f"backward gave no gradient for {k}",
                              f"backward returns {self.returns}; it returned None for {k} (did you forget `return`?)")
            if not close(mine, right):
                mistakes = self.backward_mistakes(inputs, v) if mistakes is None else mistakes
                hint = (first_mistake(mine, right, mistakes.get(k, ()))
                        or with_case(generic_hint(mine, right, self.factors(inputs)), case))
                raise Failure("backward", label, describe(f"d{k}", mine, right), hint)

        # 3. the student's backward against finite differences (and zero upstream, second backward)
        names = [k for k in self.grads if inputs.get(k) is not None]

        def fn(*arrays):
            return self.gradcheck_target(module, {**inputs, **dict(zip(names, arrays))})

        try:
            gradcheck(fn, *[inputs[k] for k in names])
        except GradcheckError as e:
            text = re.sub(r"input (\d+)", lambda m: f"d{names[int(m.group(1))]}", str(e))
            hint = ("backward must be linear in the upstream gradient: every term needs its factor g"
                    if "zero upstream" in text else case.hint)
            raise Failure("backward", label, text, hint) from None
        except NotImplementedError as e:
            raise Failure("backward", label, str(e).strip(), not_written=True) from None
        except Exception as e:  # noqa: BLE001 - your code raised on the perturbed inputs
            raise Failure("backward", label, f"during the gradient check, your code raised {type(e).__name__}: {e}",
                          self.explain_error(e, inputs) or case.hint) from None

    def forward_shape_hint(self, inputs, got, expected) -> str:
        return ""


def report(exercise, module_file, error: Failure | None) -> Report:
    """The message of a run: a pass line, or what failed, where, and a hint."""
    name = exercise.name
    if error is None:
        return Report(name, True, f"{name}: all {len(exercise.cases)} cases pass ({exercise.library})")
    where = _relative(module_file) if module_file else "your module"
    if error.not_written:
        todo = error.what or "the code marked TODO"
        todo = todo if todo.startswith("fill in") else f"fill in {todo}"
        lines = [f"{name}: not written yet: {todo} in {where} (reached in the {error.stage} of case \"{error.case}\")",
                 f"  derivation: {exercise.docs}"]
        return Report(name, False, "\n".join(lines), error.stage, error.case, not_written=True)
    if error.stage == "import":
        lines = [f"{name}: {error.what} in {where}", f"  hint: {error.hint}"]
        return Report(name, False, "\n".join(lines), error.stage)
    head = f"{name}: {error.stage} fails" + (f" on case \"{error.case}\"" if error.case else "") + f" ({where})"
    lines = [head] + [f"  {line}" for line in error.what.splitlines()]
    if error.hint:
        lines.append(f"  hint: {error.hint}")
    lines.append(f"  derivation: {exercise.docs}")
    return Report(name, False, "\n".join(lines), error.stage, error.case)
