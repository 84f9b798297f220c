"""``check(name, module=None)``: run one exercise's checks and print what is wrong, with a hint.

    from exercises import check
    check("layer_norm")                      # your exercises/layer_norm.py (reloaded, so edits count)
    check("layer_norm", module="solution")   # exercises/solutions/layer_norm.py
    check("layer_norm", module=my_module)    # any module or object with the stub's names (LayerNorm here)

``python -m exercises.check NAME... [--solution]`` does the same from a shell (NAME ``all``: every exercise).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .attention import Attention
from .common import Failure, Report, report
from .contrastive import Contrastive
from .conv1d import Conv1dExercise
from .ctc import CTC
from .gelu import GeluExercise
from .gumbel_softmax import GumbelSoftmaxExercise
from .layer_norm import LayerNormExercise

# in the order of exercises/README.md
EXERCISES = {e.name: e for e in (GeluExercise(), LayerNormExercise(), Attention(), GumbelSoftmaxExercise(),
                                 Contrastive(), Conv1dExercise(), CTC())}


def _load(name, module):
    """(module, its file) from None (the student's file), 'solution', a dotted name, or a module/object."""
    if module is None or module in ("solution", "solutions"):
        path = f"exercises.{name}" if module is None else f"exercises.solutions.{name}"
        if path in sys.modules:
            loaded = importlib.reload(sys.modules[path])   # a notebook or REPL sees the file as it is now
        else:
            loaded = importlib.import_module(path)
        return loaded, getattr(loaded, "__file__", None)
    if isinstance(module, str):
        loaded = importlib.import_module(module)
        return loaded, getattr(loaded, "__file__", None)
    return module, getattr(module, "__file__", None)


def check(name: str, module=None, *, quiet: bool = False, stream=None) -> Report:
    """Check exercise ``name`` on ``module`` (default: your ``exercises/<name>.py``); print and return a Report.

    The Report is true when every case passes; ``.stage`` ('import', 'forward', 'backward'), ``.case`` and
    ``.message`` say what failed. ``quiet=True`` prints nothing.
    """
    if name not in EXERCISES:
        raise ValueError(f"no exercise {name!r}: choose from {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    where = None
    try:
        loaded, where = _load(name, module)
    except SyntaxError as e:
        result = Report(name, False, f"{name}: {e.filename}, line {e.lineno}: {e.msg}", "import")
    except Exception as e:  # noqa: BLE001 - whatever the file raised while being imported
        result = Report(name, False, f"{name}: could not import it: {type(e).__name__}: {e}", "import")
    else:
        try:
            missing = [a for a in exercise.needs if not hasattr(loaded, a)]
            if missing:
                raise Failure("import", None, f"{' and '.join(missing)} not found",
                              f"keep the stub's name{'s' if len(missing) > 1 else ''}: {', '.join(exercise.needs)}")
            exercise.run(loaded)
            result = report(exercise, where, None)
        except Failure as e:
            result = report(exercise, where, e)
    if not quiet:
        print(result.message, file=stream or sys.stdout)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exercises.check",
                                     description="Check your solutions of the exercises in exercises/.")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"{', '.join(EXERCISES)}, or all")
    parser.add_argument("--solution", action="store_true", help="check exercises/solutions/NAME.py instead")
    args = parser.parse_args(argv)
    if not args.names:
        parser.print_usage()
        for e in EXERCISES.values():
            print(f"  {e.name:<15}{e.title}")
        return 0
    names = list(EXERCISES) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in EXERCISES]
    if unknown:
        parser.error(f"no exercise {', '.join(unknown)}: choose from {', '.join(EXERCISES)}, or all")
    results = [check(n, "solution" if args.solution else None) for n in names]
    if len(results) > 1:
        print(f"{sum(map(bool, results))} of {len(results)} exercises pass")
    return 0 if all(results) else 1


__all__ = ["EXERCISES", "Report", "check", "main"]
