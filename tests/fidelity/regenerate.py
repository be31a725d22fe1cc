"""Regenerate the fidelity fixtures from a checkout of the authors' code.

Usage (from the repository root, in the project's virtual environment)::

    pip install opencv-python-headless natsort        # the authors' code imports them
    git clone https://github.com/obeychoi0120/PixMatch /tmp/PixMatch
    python tests/fidelity/regenerate.py --upstream /tmp/PixMatch            # every fixture
    python tests/fidelity/regenerate.py --upstream /tmp/PixMatch --only step views
    git clone https://github.com/xulianuwa/MCTformer /tmp/MCTformer                # MCTformer-V2 fixtures only
    python tests/fidelity/regenerate.py --mctformer /tmp/MCTformer

Each generator (``gen_<name>.py`` beside this file) imports the authors' code from ``--upstream`` at run time
(:mod:`upstream`), runs it on the CPU on fixed inputs and writes what it computed under ``fixtures/`` as ``.npz``
/ ``.json`` figures.  None of the authors' code is copied into this repository; the tests in this folder compare
fsae against those figures.  Fixtures are deterministic: a second run writes the same numbers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATORS = ("network", "step", "views", "infer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, help="checkout of obeychoi0120/PixMatch")
    parser.add_argument("--mctformer", type=Path, help="checkout of xulianuwa/MCTformer (the mctformer fixtures)")
    parser.add_argument("--only", nargs="+", choices=GENERATORS, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "fixtures")
    args = parser.parse_args(argv)
    for flag, folder in (("--upstream", args.upstream), ("--mctformer", args.mctformer)):
        if folder is not None and not folder.is_dir():
            print(f"error: {flag} {folder} is not a folder", file=sys.stderr)
            return 2
    if args.upstream is None and args.mctformer is None:
        parser.error("give --upstream DIR, --mctformer DIR or both")
    sys.path.insert(0, str(HERE))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mctformer is not None:
        started = time.perf_counter()
        written = importlib.import_module("gen_mctformer").generate(args.mctformer, args.out)
        print(f"mctformer: wrote {', '.join(p.name for p in written)} ({time.perf_counter() - started:.0f} s)")
    if args.upstream is None:
        return 0
    only = args.only or list(GENERATORS)
    for name in [g for g in GENERATORS if g in only]:  # network first: the others read its layout
        started = time.perf_counter()
        written = importlib.import_module(f"gen_{name}").generate(args.upstream, args.out)
        names = ", ".join(p.name for p in written)
        print(f"{name}: wrote {names} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
