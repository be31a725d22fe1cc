"""Shared pytest configuration: devices to run on and the CUDA marker."""

from __future__ import annotations

import pytest
import torch

CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")],
)
DEVICES = ["cpu", CUDA]


def pytest_report_header(config: pytest.Config) -> list[str]:
    import fsae.ops

    info = fsae.ops.build_info()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return [f"torch {torch.__version__}; fsae build: {info}; GPU: {gpu}"]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Each test that takes `device` runs on the CPU and, when present, on CUDA."""
    return request.param


@pytest.fixture
def extension(device: str) -> None:
    """Tests of the fused kernels: they need fsae._C with kernels for `device`.

    Without it they are skipped, or fail when FSAE_REQUIRE_EXTENSION=1 (set by
    `make test`, so CI never passes on the reference alone).
    """
    import os

    from fsae.ops._extension import extension_devices

    if device not in extension_devices():
        message = f"fsae._C has no {device} kernels (build_info: {fsae_build_info()})"
        if os.environ.get("FSAE_REQUIRE_EXTENSION") == "1":
            pytest.fail(message)
        pytest.skip(message)


def fsae_build_info() -> dict:
    import fsae.ops

    return fsae.ops.build_info()


@pytest.fixture(autouse=True)
def _seed(request: pytest.FixtureRequest) -> None:
    """Every test starts from a seed derived from its name: reproducible, yet not all alike."""
    import zlib

    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
