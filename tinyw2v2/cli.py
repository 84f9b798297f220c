"""The ``tinyw2v2`` command line.

    tinyw2v2 check [--device cpu|emulated|cuda] [--family conv ...]   gradient-check every op, print a table
"""
from __future__ import annotations

import argparse
import sys


def _check(args) -> int:
    from .checks import run_all

    return 0 if run_all(args.device, args.family or None) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyw2v2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="gradient-check every op against finite differences and print a table")
    check.add_argument("--device", default="cpu", help="cpu, emulated or cuda (default: cpu)")
    check.add_argument("--family", action="append", help="only this op family (repeatable)")
    check.set_defaults(run=_check)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
