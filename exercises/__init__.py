"""Exercises: write seven of tinyw2v2's derivations yourself (six backwards and the CTC recursion), then check them.

    python -m exercises.check layer_norm              # checks your exercises/layer_norm.py
    python -m exercises.check layer_norm --solution   # checks exercises/solutions/layer_norm.py
    from exercises import check; check("layer_norm")  # the same from Python; check(name, module=...) for any module

See exercises/README.md for the order and what to read first.
"""
from .checking import EXERCISES, Report, check

__all__ = ["EXERCISES", "Report", "check"]
