"""The docstring examples of every module of the ``fsae`` package run and print what they say.

A module is collected when its source holds a ``>>>`` example; a module whose optional dependencies are missing
(:class:`fsae._optional.MissingExtraError`) is skipped with the extra to install.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

from fsae._optional import MissingExtraError

PACKAGE = Path(__file__).resolve().parents[1] / "fsae"

#: module -> why its examples fail, for the modules whose docstrings are being edited elsewhere (marked xfail,
#: strict: an entry whose examples pass again fails the run, so that it is removed from here).
EXPECTED_FAILURES: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if ">>>" in p.read_text(encoding="utf-8"))


def test_the_examples_are_found():
    # the package's own examples (a change of the finder above that drops them would otherwise pass silently)
    assert {"fsae.augment", "fsae.augment.perturbation", "fsae.losses.ema", "fsae.ops"} <= set(MODULES), MODULES
    assert set(EXPECTED_FAILURES) <= set(MODULES), "an expected failure names no module with examples"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=EXPECTED_FAILURES[n], strict=True))
        if n in EXPECTED_FAILURES
        else n
        for n in MODULES
    ],
)
def test_docstring_examples(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except MissingExtraError as err:
        pytest.skip(f"{name}: {err}")
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{name}: its source has '>>>' but doctest found no example"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed\n{out.getvalue()}"
