"""Run the authors' code from a user-supplied checkout on the CPU: for the fixture generators only.

The tests never import this module; :mod:`tests.fidelity.regenerate` does, with ``--upstream DIR`` pointing at a
checkout of the authors' PPC + FSAE code (github ``obeychoi0120/PixMatch``).  Nothing of that code lives in this
repository: it is imported from ``DIR`` at run time, with three run-time patches that do not touch what it
computes:

* ``.cuda()`` on tensors and modules returns the object itself (their code places every tensor on a GPU);
* imports its computation never calls (``wandb``, ``chainercv``, ``torch.utils.tensorboard``, ``matplotlib``,
  ``imageio``, ``pandas``) are stub modules when they are not installed;
* ``opencv-python-headless`` and ``natsort`` must be installed (``cv2.dilate`` makes FSAE's ring there): the
  generators say so in one line if they are not.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["authors_code", "mctformer_code", "require"]

_STUBS = ("wandb", "chainercv", "chainercv.evaluations", "chainercv.datasets", "torch.utils.tensorboard",
          "matplotlib", "matplotlib.pyplot", "imageio", "pandas", "tensorboardX", "pydensecrf",
          "pydensecrf.densecrf", "pydensecrf.utils")  # fmt: skip
# the authors' top-level packages: dropped from sys.modules on exit so that two checkouts never mix
_THEIR_PACKAGES = ("network", "module", "data", "util", "tool", "voc12")


class _Anything(types.ModuleType):
    """A stub module: any attribute is another stub (a name imported but never used by the code we run)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec() accepts it

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(f"{self.__name__}.{name}")

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self


def require(*modules: str) -> None:
    """Exit with one line when a module the authors' computation uses is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"the authors' code needs {', '.join(missing)}: pip install opencv-python-headless natsort")


@contextlib.contextmanager
def authors_code(
    root: Path,
    marker: str = "network/resnet38_contrast.py",
    what: str = "PPC + FSAE",
    modules: tuple[str, ...] = ("cv2", "natsort"),
) -> Iterator[Path]:
    """Make the checkout at ``root`` importable (``import network.resnet38_contrast`` ...) on the CPU.

    ``marker``: a file the checkout must have (SIPE: ``network/resnet50_SIPE.py``); ``modules``: what must be
    installed (:func:`require`)."""
    root = Path(root).resolve()
    if not (root / marker).is_file():
        raise SystemExit(f"{root} is not a checkout of the authors' {what} code (no {marker})")
    require(*modules)
    import torchvision  # noqa: F401  (before any stub: torch's lazy imports probe for optional packages)

    saved_modules = dict(sys.modules)
    saved = (torch.Tensor.cuda, torch.nn.Module.cuda)
    tops = {name.split(".")[0] for name in _STUBS}
    installed = {top for top in tops if top in sys.modules or importlib.util.find_spec(top) is not None}
    for name in _STUBS:
        # tensorboard: torch's module imports the tensorboard package; wandb: would try to log in
        if name.split(".")[0] not in installed or name in ("wandb", "torch.utils.tensorboard"):
            sys.modules[name] = _Anything(name)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        torch.Tensor.cuda, torch.nn.Module.cuda = saved  # type: ignore[method-assign]
        for name in list(sys.modules):
            if name not in saved_modules and (name.split(".")[0] in _THEIR_PACKAGES or name in _STUBS):
                del sys.modules[name]
        for name in _STUBS:
            if name in saved_modules:
                sys.modules[name] = saved_modules[name]


# the MCTformer checkout's top-level modules, and what it imports that its CAM computation never calls
_MCT_MODULES = ("models", "vision_transformer", "engine", "datasets", "utils")
_MCT_STUBS = ("sklearn", "sklearn.metrics")


@contextlib.contextmanager
def mctformer_code(root: Path) -> Iterator[Path]:
    """Make the MCTformer checkout at ``root`` (github ``xulianuwa/MCTformer``) importable on the CPU.

    It runs with the installed timm (its ``register_model`` entries are removed from timm's registry on exit,
    where they shadow timm's own ``vit_*`` names); ``sklearn`` (mAP only) is a stub when not installed; Pillow 10
    dropped ``Image.CUBIC``, the old alias of ``Image.BICUBIC`` their ``datasets.py`` uses: it is set back.
    """
    root = Path(root).resolve()
    if not (root / "models.py").is_file() or "MCTformerV2" not in (root / "models.py").read_text():
        raise SystemExit(f"{root} is not a checkout of the authors' MCTformer code (no MCTformerV2 in models.py)")
    require("cv2")
    import timm.models._registry as registry

    saved_modules = dict(sys.modules)
    saved_registry = {name: dict(getattr(registry, name)) for name in vars(registry) if name.startswith("_model_")
                      and isinstance(getattr(registry, name), dict)}  # fmt: skip
    if importlib.util.find_spec("sklearn") is None:
        for name in _MCT_STUBS:
            sys.modules[name] = _Anything(name)
    from PIL import Image

    had_cubic = hasattr(Image, "CUBIC")
    Image.CUBIC = Image.BICUBIC  # type: ignore[attr-defined]
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        if not had_cubic:
            del Image.CUBIC
        for name in list(sys.modules):
            if name not in saved_modules and (name.split(".")[0] in _MCT_MODULES or name in _MCT_STUBS):
                del sys.modules[name]
        for name, value in saved_registry.items():
            getattr(registry, name).clear()
            getattr(registry, name).update(value)
