"""Deterministic network weights in the authors' checkpoint layout, shared by the fixtures and the tests.

The authors' ResNet-38 PPC network has ~100M parameters: its weights cannot be committed, so every fixture that
needs a network builds them from ``fixtures/ppc_layout.json`` (the authors' ``Net(21).state_dict()`` key names and
shapes, in order, written by ``regenerate.py``) and a seed, the same way on both sides: the generator loads them
into the authors' network, the tests convert them with ``fsae.models.import_checkpoint`` into ours.

Values (one CPU ``torch.Generator`` seeded with ``seed``, keys in layout order): convolution weights
``N(0, 1 / fan_in)`` (activations keep their scale through the 38 residual layers with BatchNorm in eval mode),
BatchNorm ``weight`` ``1 + N(0, 0.1^2)``, ``bias`` and ``running_mean`` ``N(0, 0.1^2)``, ``running_var``
``U[0.5, 1.5)``, ``num_batches_tracked`` 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LAYOUT = FIXTURES / "ppc_layout.json"

__all__ = ["FIXTURES", "LAYOUT", "authors_state_dict", "read_layout", "write_layout"]


def write_layout(state: dict[str, torch.Tensor], path: Path = LAYOUT) -> None:
    """Write ``[[key, shape], ...]`` of ``state`` (the authors' network's ``state_dict()``) to ``path``."""
    path.write_text(json.dumps([[k, list(v.shape)] for k, v in state.items()]) + "\n")


def read_layout(path: Path = LAYOUT) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(shape)) for key, shape in json.loads(path.read_text())]


def authors_state_dict(seed: int = 0, path: Path = LAYOUT) -> dict[str, torch.Tensor]:
    """The authors' state dict (their key names, background last) with deterministic values (module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in read_layout(path):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("running_mean") or (len(shape) == 1 and key.endswith(".bias")):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # BatchNorm scale
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = 1
            for side in shape[1:]:
                fan_in *= side
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
    return state
