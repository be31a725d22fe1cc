"""Loading of the compiled extension ``fsae._C``.

Importing ``fsae._C`` registers the ``torch.ops.fsae.*`` operators (CPU
kernels always, CUDA kernels when the build found a CUDA toolkit).  When the
module is missing or ``FSAE_DISABLE_EXTENSION=1`` is set, :mod:`fsae.ops`
falls back to :mod:`fsae.ops.reference`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType

import torch

_DISABLE_ENV = "FSAE_DISABLE_EXTENSION"


def _install_hint(package_dir: Path | None = None) -> str:
    """How to build the extension for the install at hand (a source checkout or an installed package)."""
    root = (package_dir or Path(__file__).resolve().parents[1]).parent
    if (root / "setup.py").is_file() and (root / "csrc").is_dir():  # editable install / checkout on sys.path
        return f"Build it in the checkout {root}: `make install` or `pip install --no-build-isolation -e .`"
    return (
        "Reinstall fsae against this torch with a C++ compiler (and CUDA_HOME set to a CUDA toolkit for the "
        "CUDA kernels): `pip install --no-build-isolation --force-reinstall --no-deps <fsae checkout or sdist>`"
    )


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get(_DISABLE_ENV, "0") not in ("", "0"):
        return None, f"disabled by {_DISABLE_ENV}"
    try:
        from fsae import _C
    except ImportError as err:
        warnings.warn(
            f"fsae: compiled extension fsae._C not available ({err}); using the pure PyTorch "
            f"reference ops (slower). {_install_hint()}.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None, f"import failed: {err}"
    return _C, "loaded"


_C, _STATUS = _load()
# Fixed at import (and a plain constant, so torch.compile traces the dispatch without calling into _C).
_DEVICES: frozenset[str] = (
    frozenset() if _C is None else frozenset({"cpu", "cuda"}) if _C.cuda_compiled() else frozenset({"cpu"})
)
if _C is not None:
    # shape functions and backward formulas of torch.ops.fsae.* (for torch.compile and autograd)
    from fsae.ops import _autograd, _fake  # noqa: F401


def has_extension() -> bool:
    """True when the fused C++/CUDA extension is loaded and in use."""
    return _C is not None


def extension_devices() -> frozenset[str]:
    """Device types the loaded extension has kernels for (empty without it)."""
    return _DEVICES


def build_info() -> dict[str, object]:
    """What was built: ``{"extension", "status", "cuda_compiled", "cuda_archs", "openmp"}``."""
    if _C is None:
        return {"extension": False, "status": _STATUS, "cuda_compiled": False, "cuda_archs": "", "openmp": False}
    return {
        "extension": True,
        "status": _STATUS,
        "cuda_compiled": bool(_C.cuda_compiled()),
        "cuda_archs": str(_C.cuda_archs()),
        "openmp": bool(_C.openmp()),
    }


def use_extension(*tensors: torch.Tensor) -> bool:
    """Whether the extension has kernels for the devices of all ``tensors``."""
    return bool(_DEVICES) and all(t.device.type in _DEVICES for t in tensors)
