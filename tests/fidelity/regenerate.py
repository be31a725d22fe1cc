"""Regenerate the fidelity fixtures from a checkout of the authors' code.

Usage (from the repository root, in the project's virtual environment)::

    pip install opencv-python-headless natsort        # the authors' code imports them
    git clone https://github.com/obeychoi0120/PixMatch /tmp/PixMatch
    python tests/fidelity/regenerate.py --upstream /tmp/PixMatch            # every fixture
    python tests/fidelity/regenerate.py --upstream /tmp/PixMatch --only step views
    git clone https://github.com/chenqi1126/SIPE /tmp/SIPE
    python tests/fidelity/regenerate.py --sipe /tmp/SIPE                   # the sipe_* fixtures
    git clone https://github.com/xulianuwa/MCTformer /tmp/MCTformer && git -C /tmp/MCTformer checkout 96065977
    python tests/fidelity/regenerate.py --mctformer /tmp/MCTformer         # the mctformer_* fixtures

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
SIPE_GENERATORS = ("sipe",)  # from --sipe DIR (github chenqi1126/SIPE)
MCTFORMER_GENERATORS = ("mctformer",)  # from --mctformer DIR (github xulianuwa/MCTformer at 96065977)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, help="checkout of obeychoi0120/PixMatch")
    parser.add_argument("--sipe", type=Path, help="checkout of chenqi1126/SIPE (the sipe_* fixtures)")
    parser.add_argument("--mctformer", type=Path, help="checkout of xulianuwa/MCTformer (the mctformer_* fixtures)")
    parser.add_argument("--only", nargs="+", choices=GENERATORS + SIPE_GENERATORS + MCTFORMER_GENERATORS)
    parser.add_argument("--out", type=Path, default=HERE / "fixtures")
    args = parser.parse_args(argv)
    checkouts = {
        "--upstream": (args.upstream, GENERATORS),
        "--sipe": (args.sipe, SIPE_GENERATORS),
        "--mctformer": (args.mctformer, MCTFORMER_GENERATORS),
    }
    if all(folder is None for folder, _ in checkouts.values()):
        parser.error("give --upstream DIR, --sipe DIR and / or --mctformer DIR")
    for flag, (folder, _) in checkouts.items():
        if folder is not None and not folder.is_dir():
            print(f"error: {flag} {folder} is not a folder", file=sys.stderr)
            return 2
    sys.path.insert(0, str(HERE))
    args.out.mkdir(parents=True, exist_ok=True)
    # network first: the others read its layout
    runs = [(g, folder) for folder, names in checkouts.values() if folder is not None for g in names]
    for name, folder in runs:
        if args.only is not None and name not in args.only:
            continue
        started = time.perf_counter()
        written = importlib.import_module(f"gen_{name}").generate(folder, args.out)
        names = ", ".join(p.name for p in written)
        print(f"{name}: wrote {names} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
