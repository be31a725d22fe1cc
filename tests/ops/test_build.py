"""What was built, and the fallback to the reference when the extension is missing."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

import fsae.ops
from fsae.ops._extension import extension_devices

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT
    )


def load_setup_py():
    """``setup.py`` as a module (importing it does not run ``setup()``): the build's own toolkit detection."""
    spec = importlib.util.spec_from_file_location("fsae_setup_for_test_build", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETUP = load_setup_py()
TOOLKIT = SETUP.cuda_toolkit()  # where setup.py finds one: CUDA_HOME, CUDA_PATH, torch's guess, /usr/local/cuda
needs_cuda_build = pytest.mark.skipif(
    TOOLKIT is None or os.environ.get("FSAE_WITH_CUDA") == "0",
    reason="no CUDA toolkit (setup.py builds the CPU kernels only)"
    if TOOLKIT is None
    else "FSAE_WITH_CUDA=0 turned the CUDA build off",
)


def test_extension_is_built_when_required():
    info = fsae.ops.build_info()
    print("build_info:", info)
    if os.environ.get("FSAE_REQUIRE_EXTENSION") == "1":
        assert info["extension"], info
        assert info["openmp"], "CPU kernels were built without OpenMP"
    elif not info["extension"]:
        pytest.skip(f"extension not built: {info['status']}")


def loaded_build_info() -> dict:
    info = fsae.ops.build_info()
    if not info["extension"] and os.environ.get("FSAE_REQUIRE_EXTENSION") != "1":
        pytest.skip(f"extension not loaded: {info['status']}")
    assert info["extension"], info
    return info


def fsae_operators() -> list[str]:
    return sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("fsae::"))


@needs_cuda_build
def test_cuda_kernels_compiled_in_when_toolkit_present():
    info = loaded_build_info()
    assert info["cuda_compiled"], f"setup.py finds the CUDA toolkit {TOOLKIT} but fsae._C has no CUDA kernels: {info}"
    assert extension_devices() == {"cpu", "cuda"}  # what fsae.ops dispatches to the extension
    archs = info["cuda_archs"]
    assert archs and all(archs.replace(" ", ";").split(";")), f"no CUDA architectures recorded: {archs!r}"
    requested = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if requested is not None:  # the build's environment (make test, CI): what setup.py was asked to build for
        assert archs == requested, f"fsae._C was built for {archs!r}, TORCH_CUDA_ARCH_LIST={requested!r}: rebuild"
    operators = fsae_operators()
    assert len(operators) == 5, operators
    for name in operators:  # every operator has a CUDA kernel, not only the CPU one
        for key in ("CPU", "CUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, key), (name, key)
    print(f"fsae._C: CUDA kernels compiled in for {archs}")


def find_cuobjdump() -> str | None:
    """The toolkit's ``cuobjdump``, else one on PATH, else the one triton ships."""
    candidates = [Path(TOOLKIT or "/nonexistent") / "bin" / "cuobjdump", shutil.which("cuobjdump")]
    triton = importlib.util.find_spec("triton")
    if triton is not None and triton.origin:
        candidates.append(Path(triton.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    return next((str(c) for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


def expected_images(archs: str) -> tuple[set[str], set[str]]:
    """(SASS, PTX) architectures torch's nvcc flags (``-gencode=arch=compute_XX,code=sm_XX`` / ``code=compute_XX``)
    give for the arch list ``archs``, as ``cuobjdump`` names them (``sm_XX``)."""
    saved = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    try:
        flags = cpp_extension._get_cuda_arch_flags()
    finally:
        if saved is None:
            del os.environ["TORCH_CUDA_ARCH_LIST"]
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = saved
    codes = [re.fullmatch(r"-gencode=arch=compute_\w+,code=(sm|compute)_(\w+)", flag) for flag in flags]
    assert all(codes), flags
    return {f"sm_{c[2]}" for c in codes if c[1] == "sm"}, {f"sm_{c[2]}" for c in codes if c[1] == "compute"}


@needs_cuda_build
def test_the_binary_holds_the_kernels_of_every_recorded_arch():
    """``cuobjdump`` lists a cubin per source and SASS arch and a PTX per PTX arch, exactly those of the recorded
    arch list (``8.0;9.0+PTX``: sm_80 and sm_90 cubins, sm_90 PTX; ``8.6``: one sm_86 cubin, no PTX)."""
    archs = loaded_build_info()["cuda_archs"]
    tool = find_cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (the toolkit's, on PATH or triton's)")
    library = importlib.util.find_spec("fsae._C").origin
    sass, ptx = expected_images(archs)
    sources = {p.stem for p in (ROOT / "csrc" / "cuda").glob("*.cu")}
    assert sources and sass, (sources, archs)
    for option, kind, wanted in (("--list-elf", "cubin", sass), ("--list-ptx", "ptx", ptx)):
        listing = subprocess.run([tool, option, library], capture_output=True, text=True)
        if not wanted:  # cuobjdump fails when there is nothing of the kind to list
            assert not re.search(rf"\.{kind}\b", listing.stdout), listing.stdout
            continue
        assert listing.returncode == 0, listing.stderr
        found = set(re.findall(rf"(\w+)\.(sm_\w+)\.{kind}\b", listing.stdout))
        assert found == {(s, a) for s in sources for a in wanted}, (option, archs, listing.stdout)


@pytest.mark.parametrize("requested", [None, "8.6", "9.0", "7.5;8.0+PTX"])
def test_setup_py_records_the_arch_list_it_builds_for(requested, tmp_path, monkeypatch):
    """What ``cuda_archs()`` reports (the ``FSAE_CUDA_ARCHS`` macro) is the list torch's nvcc flags come from:
    ``TORCH_CUDA_ARCH_LIST``, or setup.py's default when it is unset (no toolkit needed: a fake one)."""
    toolkit = tmp_path / "cuda"
    for name in ("bin/nvcc", "lib64/libcudart.so"):
        (toolkit / name).parent.mkdir(parents=True, exist_ok=True)
        (toolkit / name).write_text("")
    for name in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST"):  # setup.py writes both: set, then unset, restores either
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("FSAE_WITH_CUDA", "1")
    if requested is not None:
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", requested)
    monkeypatch.setattr(SETUP, "cuda_toolkit", lambda: str(toolkit))
    monkeypatch.setattr(SETUP.cpp_extension, "CUDA_HOME", SETUP.cpp_extension.CUDA_HOME)
    ext = SETUP.extension()
    expected = SETUP.DEFAULT_ARCHS if requested is None else requested
    macros = dict(ext.define_macros)
    assert macros["FSAE_CUDA_ARCHS"] == f'"{expected}"' and "FSAE_WITH_CUDA" in macros
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == expected  # what BuildExtension turns into -gencode flags
    assert any(source.endswith(".cu") for source in ext.sources)
    assert SETUP.DEFAULT_ARCHS == "8.0;9.0+PTX"
    assert expected_images(SETUP.DEFAULT_ARCHS) == ({"sm_80", "sm_90"}, {"sm_90"})


CALL_ALL_OPS = """
import torch, fsae.ops
logits = torch.randn(2, 4, 6, 6) * 5
labels = torch.ones(2, 3)
loss, masks = fsae.ops.expansion_loss(logits.clone().requires_grad_(), logits, labels)
loss.backward()
fsae.ops.cams_to_labels(fsae.ops.cam_normalize(logits[:, 1:], labels), labels, bg_power=8)
print("extension", fsae.ops.has_extension(), fsae.ops.build_info()["status"])
"""


def test_disable_env_forces_the_reference_silently():
    result = run_python(CALL_ALL_OPS, FSAE_DISABLE_EXTENSION="1")
    assert result.returncode == 0, result.stderr
    assert "extension False disabled by FSAE_DISABLE_EXTENSION" in result.stdout
    assert "Warning" not in result.stderr


def test_missing_extension_warns_once_and_works():
    code = "import sys; sys.modules['fsae._C'] = None\n" + CALL_ALL_OPS + CALL_ALL_OPS.split("\n", 2)[2]
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "extension False import failed" in result.stdout
    assert result.stderr.count("RuntimeWarning") == 1, result.stderr
    assert "fsae._C not available" in result.stderr
