"""Optional dependencies and the one-line message that names the extra to install.

The core install (``pip install fsae``) is the library: :mod:`fsae.ops`, :mod:`fsae.losses` and
:mod:`fsae.augment` need torch and numpy only.  The training and inference stack comes with extras:
``fsae[train]`` (accelerate, timm, pyyaml, tqdm, safetensors, pillow), ``fsae[crf]``
(pydensecrf2), ``fsae[tensorboard]`` and ``fsae[sbd]`` (scipy).  A part whose extra is missing
stops with ``fsae.engine needs accelerate: pip install 'fsae[train]'``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "check", "require"]

#: extra -> {top-level module: distribution that provides it}; keep in step with pyproject.toml.
EXTRAS: dict[str, dict[str, str]] = {
    "train": {
        "accelerate": "accelerate",
        "timm": "timm",
        "yaml": "pyyaml",
        "tqdm": "tqdm",
        "safetensors": "safetensors",
        "PIL": "pillow",
    },
    "crf": {"pydensecrf": "pydensecrf2"},
    "tensorboard": {"tensorboard": "tensorboard"},
    "sbd": {"scipy": "scipy"},
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency of a part of fsae is not installed; the message names the extra."""


def _top(module: str) -> str:
    return module.partition(".")[0]


def _error(module: str, extra: str, part: str) -> MissingExtraError:
    dist = EXTRAS.get(extra, {}).get(_top(module), _top(module))
    return MissingExtraError(f"{part} needs {dist}: pip install 'fsae[{extra}]'", name=_top(module))


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, part: str) -> ModuleType:
    """Import ``module`` and return it, or raise :class:`MissingExtraError` naming ``fsae[extra]``.

    ``part`` is what needs it, as the user would write it (``"fsae.engine"``).  An import error of
    another module (a broken install of the dependency itself) propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or _top(err.name) != _top(module):
            raise
        raise _error(module, extra, part) from None


def check(part: str, extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` for the first of ``modules`` (default: every module of ``extra``)
    that is not installed; imports nothing (a package's ``__init__`` calls it before its imports)."""
    for module in modules or tuple(EXTRAS[extra]):
        if not _installed(module):
            raise _error(module, extra, part)
