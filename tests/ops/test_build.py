"""What was built, and the fallback to the reference when the extension is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fsae.ops

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT
    )


def toolkit_present() -> bool:
    home = os.environ.get("CUDA_HOME")
    return bool(home) and (Path(home) / "bin" / "nvcc").exists()


def test_extension_is_built_when_required():
    info = fsae.ops.build_info()
    print("build_info:", info)
    if os.environ.get("FSAE_REQUIRE_EXTENSION") == "1":
        assert info["extension"], info
        assert info["openmp"], "CPU kernels were built without OpenMP"
    elif not info["extension"]:
        pytest.skip(f"extension not built: {info['status']}")


@pytest.mark.skipif(not toolkit_present(), reason="CUDA_HOME does not point at a CUDA toolkit")
def test_cuda_kernels_compiled_in_when_toolkit_present():
    if os.environ.get("FSAE_WITH_CUDA") == "0":
        pytest.skip("FSAE_WITH_CUDA=0 turned the CUDA build off")
    info = fsae.ops.build_info()
    assert info["extension"], info
    assert info["cuda_compiled"], f"CUDA_HOME={os.environ['CUDA_HOME']} but fsae._C has no CUDA kernels: {info}"
    assert "8.0" in info["cuda_archs"] and "9.0" in info["cuda_archs"], info["cuda_archs"]
    print(f"fsae._C: CUDA kernels compiled in for {info['cuda_archs']}")


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
