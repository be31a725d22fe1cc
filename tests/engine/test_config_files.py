"""Every shipped config file gives the effective config of the fixture, key for key.

``fixtures/effective_configs.json`` holds the defaults of both stages and the effective config of every
``recipes/configs/*.yaml`` (``load_seg_config`` for the ``*_seg*`` files, ``load_config`` for the others), as
:func:`effective_configs` computes them.  It was written before the configs were made typed and the files were
rewritten over shared ``_base_`` files, with the code of that time; from the repository root (``-m``, so that
``fsae`` is this checkout's, not an installed copy)::

    OMP_NUM_THREADS=1 python -m tests.engine.test_config_files   # rewrites the fixture

so this test proves the rewrite changed no value, no type (``1`` is not ``1.0``) and no key order.  The fixture
changes only with a deliberate change of a default or of a config file, in a commit of its own that says why
(the diff shows exactly which keys of which files moved).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fsae.engine.config import DEFAULTS, load_config
from fsae.engine.seg_config import SEG_DEFAULTS, load_seg_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "effective_configs.json"


def effective(path: Path) -> dict[str, Any]:
    """The effective config of one shipped file: the segmentation stage's for ``*_seg*``, else the CAM stage's."""
    return load_seg_config(path) if "_seg" in path.stem else load_config(path)


def effective_configs() -> dict[str, Any]:
    """``{"defaults": {"cam": ..., "seg": ...}, "files": {file name: effective config}}``: what the fixture holds."""
    files = {path.name: effective(path) for path in sorted(CONFIG_DIR.glob("*.yaml"))}
    return {"defaults": {"cam": DEFAULTS, "seg": SEG_DEFAULTS}, "files": files}


def _dump(value: Any) -> str:
    """The fixture's JSON text: insertion order kept, so a moved key or ``1`` for ``1.0`` is a difference."""
    return json.dumps(value, indent=1) + "\n"


EXPECTED = json.loads(FIXTURE.read_text())


def _same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual == expected  # pytest shows the differing keys
    assert _dump(actual) == _dump(expected)  # the types (int / float) and the key order too


def test_every_config_file_is_in_the_fixture() -> None:
    """A new (or renamed, or removed) config file needs its entry in the fixture."""
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(EXPECTED["files"])


@pytest.mark.parametrize("name", sorted(EXPECTED["files"]))
def test_effective_config_is_the_fixture(name: str) -> None:
    _same(effective(CONFIG_DIR / name), EXPECTED["files"][name])


def _bases(path: Path) -> set[Path]:
    """The ``_base_`` files ``path`` starts from, directly or through other bases."""
    named = yaml.safe_load(path.read_text()).get("_base_", [])
    direct = {(path.parent / name).resolve() for name in ([named] if isinstance(named, str) else named)}
    return direct.union(*(_bases(base) for base in direct))


def test_every_base_file_is_used() -> None:
    """A file of ``_base/`` that no config starts from is dead (and untested by the fixture)."""
    used = set().union(*(_bases(p) for p in CONFIG_DIR.glob("*.yaml")))
    assert {p.resolve() for p in (CONFIG_DIR / "_base").glob("*.yaml")} <= used


@pytest.mark.parametrize("method", ["", "sipe_", "mctformer_"])
def test_the_toy_pairs_differ_only_in_fsae(method: str) -> None:
    """benchmarks/toy_quality.py compares them as "the same run with and without FSAE"."""
    baseline, fsae = (effective(CONFIG_DIR / f"toy_{method}{kind}.yaml") for kind in ("baseline", "fsae"))
    assert {k: v for k, v in baseline.items() if k != "fsae"} == {k: v for k, v in fsae.items() if k != "fsae"}
    assert not baseline["fsae"]["enabled"] and fsae["fsae"]["enabled"]


def test_defaults_are_the_fixture() -> None:
    _same(DEFAULTS, EXPECTED["defaults"]["cam"])
    _same(SEG_DEFAULTS, EXPECTED["defaults"]["seg"])


if __name__ == "__main__":
    FIXTURE.write_text(_dump(effective_configs()))
