"""fsae.infer (inference) loads no fsae.engine module (training), whichever piece a caller imports; the static
rule for every package is tests/test_layers.py."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFER = ROOT / "fsae" / "infer"


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement of ``path`` names, the lazy ones inside functions included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from fsae import engine`
    return names


def infer_modules() -> list[str]:
    return ["fsae.infer", *sorted(f"fsae.infer.{p.stem}" for p in INFER.glob("*.py") if p.stem != "__init__")]


def test_importing_fsae_infer_and_each_submodule_loads_no_engine_module():
    # Each module in a fresh interpreter, then every fsae module the package imports lazily (inside functions):
    # what a caller of fsae.infer gets loaded, whichever piece it imports and calls.
    lazy = sorted({m for p in INFER.glob("*.py") for m in imported_modules(p) if m.startswith("fsae.")})
    lazy = [m for m in lazy if _is_module(m)]
    assert "fsae.models.deeplab" in lazy  # segment.load_segmenter's lazy import: the scan sees inside functions
    code = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('fsae'))))\n"
    )
    for names in [[m] for m in infer_modules()] + [["fsae.infer", *lazy]]:
        result = subprocess.run(
            [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        assert result.returncode == 0, result.stderr[-2000:]
        loaded = json.loads(result.stdout.strip().splitlines()[-1])
        assert names[0] in loaded and "fsae.infer" in loaded, loaded
        assert not [m for m in loaded if m == "fsae.engine" or m.startswith("fsae.engine.")], (names, loaded)


def test_fsae_paths_is_the_bottom_layer():
    assert {m for m in imported_modules(ROOT / "fsae" / "paths.py") if m.startswith("fsae")} <= {
        "fsae.errors",
        "fsae.errors.ConfigError",
    }
    from fsae.engine import rundir
    from fsae.paths import check_writable

    assert rundir.check_writable is check_writable  # the engine uses the one below it, no copy


def _is_module(name: str) -> bool:
    """``fsae.x.y`` names a module (a file or a package), not a function imported from one."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
