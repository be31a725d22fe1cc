"""Build of the fused CAM ops extension ``fsae._C``.

The C++ CPU kernels are always built.  The CUDA kernels are built whenever a
CUDA toolkit is found (``CUDA_HOME``/``CUDA_PATH`` or torch's own search, with
``nvcc`` present); ``FSAE_WITH_CUDA=0`` / ``1`` forces the choice.  The CUDA
architectures come from ``TORCH_CUDA_ARCH_LIST`` (default ``8.0;9.0+PTX``:
A100, H100, and PTX that newer cards compile at load time).

Install (torch must be installed first, so build isolation is off):

    pip install --no-build-isolation -e .
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup
from torch.utils import cpp_extension

ROOT = Path(__file__).parent
DEFAULT_ARCHS = "8.0;9.0+PTX"


def cuda_toolkit() -> str | None:
    """Path of a usable CUDA toolkit, or None."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME):
        if candidate and (Path(candidate) / "bin" / "nvcc").exists():
            return candidate
    return None


def want_cuda() -> bool:
    forced = os.environ.get("FSAE_WITH_CUDA", "").strip()
    if forced in ("0", "1"):
        if forced == "1" and cuda_toolkit() is None:
            raise RuntimeError("FSAE_WITH_CUDA=1 but no CUDA toolkit (nvcc) was found; set CUDA_HOME")
        return forced == "1"
    return cuda_toolkit() is not None


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


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
