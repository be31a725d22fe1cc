"""Layers point down: no fsae module imports a package above its own, and none imports another package's private
names (every import statement of fsae/ is read, those inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fsae"
# Lower numbers are lower layers; a module may import its own layer's and lower ones. The modules at the top of
# the package (errors, constants, paths, _optional) are the floor every layer may use. engine uses infer (the
# segmentation stage evaluates with fsae.infer.segment); infer never uses engine.
LAYERS = {
    "ops": 0,
    "losses": 1,
    "augment": 1,
    "data": 2,
    "models": 2,
    "eval": 2,
    "methods": 3,
    "infer": 4,
    "refine": 4,
    "engine": 5,
}
FLOOR = {"errors", "constants", "paths", "_optional", "_C", "__init__"}


def package_of(module: str) -> str | None:
    """``fsae.engine.loop`` -> ``engine``; None outside fsae."""
    parts = module.split(".")
    return parts[1] if parts[0] == "fsae" and len(parts) > 1 else None


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import in ``path``, skipping a ``if __name__ == "__main__":`` block (a
    command line is a top-layer entry point)."""
    tree = ast.parse(path.read_text())
    main_blocks = [
        node for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    ]  # fmt: skip
    skipped = {id(n) for block in main_blocks for n in ast.walk(block)}
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    here = ".".join(rel.parts[:-1]) if rel.name != "__init__" else ".".join(rel.parts[:-1])
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .views import y
                parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            found.append((node.lineno, base, [alias.name for alias in node.names]))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_and_stay_public(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    problems = []
    for line, module, names in imports(path):
        target = package_of(module)
        if target is None or target == own:
            continue
        if own in LAYERS and target in LAYERS and LAYERS[target] > LAYERS[own]:
            problems.append(f"line {line}: {own} (layer {LAYERS[own]}) imports {module} (layer {LAYERS[target]})")
        if target not in LAYERS and target not in FLOOR:
            problems.append(f"line {line}: {module} is in no layer (add it to LAYERS or FLOOR)")
        private = [p for p in module.split(".")[2:] if p.startswith("_") and p != "__init__"]
        private += [n for n in names if n.startswith("_")]
        if private and target not in FLOOR:
            problems.append(f"line {line}: imports private {', '.join(private)} of fsae.{target}")
    assert not problems, "\n".join(problems)


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))
