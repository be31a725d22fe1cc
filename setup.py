"""Build of the fused CAM ops extension ``fsae._C``.

The C++ CPU kernels are always built.  The CUDA kernels are built whenever a
CUDA toolkit is found: the first of ``CUDA_HOME``, ``CUDA_PATH``, torch's own
guess and ``/usr/local/cuda`` that has both ``bin/nvcc`` and the runtime library
(``lib64/libcudart.so`` or ``targets/*/lib/libcudart.so``); otherwise one line
says that only the CPU kernels are built.  ``FSAE_WITH_CUDA=0`` / ``1`` forces
the choice.  The CUDA
architectures come from ``TORCH_CUDA_ARCH_LIST`` (default ``8.0;9.0+PTX``:
A100, H100, and PTX that newer cards compile at load time).

Install (torch must be installed first, so build isolation is off):

    pip install --no-build-isolation -e .
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from setuptools import setup
from torch.utils import cpp_extension

ROOT = Path(__file__).parent
DEFAULT_ARCHS = "8.0;9.0+PTX"
DEFAULT_TOOLKIT = "/usr/local/cuda"


def is_cuda_toolkit(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a CUDA toolkit: its compiler and its runtime library (to link against).

    ``bin/nvcc`` alone is not enough: torch guesses ``/usr/local`` from a ``/usr/local/bin/nvcc`` wrapper,
    and the link then fails with ``cannot find -lcudart``.
    """
    root = Path(path)
    if not (root / "bin" / "nvcc").is_file():
        return False
    return (root / "lib64" / "libcudart.so").exists() or any(root.glob("targets/*/lib/libcudart.so"))


def cuda_candidates(env: Mapping[str, str], torch_guess: str | None) -> list[str]:
    """Where to look, in order: ``CUDA_HOME``, ``CUDA_PATH``, torch's guess, ``/usr/local/cuda``."""
    found = [env.get("CUDA_HOME"), env.get("CUDA_PATH"), torch_guess, DEFAULT_TOOLKIT]
    return [c for i, c in enumerate(found) if c and c not in found[:i]]


def find_cuda_toolkit(candidates: Iterable[str | os.PathLike[str]]) -> str | None:
    """The first of ``candidates`` that :func:`is_cuda_toolkit`, or None."""
    for candidate in candidates:
        if candidate and is_cuda_toolkit(candidate):
            return str(candidate)
    return None


def cuda_toolkit() -> str | None:
    """Path of a usable CUDA toolkit, or None."""
    return find_cuda_toolkit(cuda_candidates(os.environ, cpp_extension.CUDA_HOME))


def want_cuda() -> bool:
    forced = os.environ.get("FSAE_WITH_CUDA", "").strip()
    toolkit = cuda_toolkit()
    if forced in ("0", "1"):
        if forced == "1" and toolkit is None:
            raise RuntimeError(
                "FSAE_WITH_CUDA=1 but no CUDA toolkit (bin/nvcc and lib64/libcudart.so) was found; set CUDA_HOME"
            )
        return forced == "1"
    if toolkit is None:
        looked = ", ".join(cuda_candidates(os.environ, cpp_extension.CUDA_HOME))
        print(
            f"fsae: no CUDA toolkit (bin/nvcc and lib64/libcudart.so) in {looked}: building the CPU kernels only "
            "(set CUDA_HOME for the CUDA kernels)",
            file=sys.stderr,
        )
    return toolkit is not None


def extension() -> cpp_extension.CppExtension:
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    cxx = ["-O3", "-fno-trapping-math", "-fopenmp"]
    macros = []
    if not want_cuda():
        return cpp_extension.CppExtension(
            "fsae._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"], define_macros=macros
        )
    toolkit = cuda_toolkit()
    os.environ["CUDA_HOME"] = toolkit  # read by torch when it builds the nvcc command line
    cpp_extension.CUDA_HOME = toolkit
    archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
    macros += [("FSAE_WITH_CUDA", None), ("FSAE_CUDA_ARCHS", f'"{archs}"')]
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    return cpp_extension.CUDAExtension(
        "fsae._C",
        sources,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
        define_macros=macros,
    )


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import the functions above
    setup(
        ext_modules=[extension()],
        cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    )
