"""Argument checks shared by the public ops: one clear ``ValueError`` each."""

from __future__ import annotations

import math

import torch

ABSENT_MODES = ("zero", "exclude")
NORMALIZE_MODES = ("max", "minmax")


def check_floating(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_rank4(name: str, t: torch.Tensor, layout: str) -> None:
    check_floating(name, t)
    if t.dim() != 4:
        raise ValueError(f"{name} must be 4-D {layout}, got shape {tuple(t.shape)}")


def check_labels(labels: torch.Tensor, batch: int, classes: int, against: str) -> None:
    """``labels`` must be ``(batch, classes)`` multi-hot, float or bool."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 2 or tuple(labels.shape) != (batch, classes):
        raise ValueError(
            f"labels must have shape (B, C) = ({batch}, {classes}) to match {against}, got {tuple(labels.shape)}"
        )


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all inputs must be on one device, got {listing}")


def check_unit_interval(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_ring_kernel(ring_kernel: int) -> None:
    if isinstance(ring_kernel, bool) or not isinstance(ring_kernel, int) or ring_kernel < 1 or ring_kernel % 2 == 0:
        raise ValueError(f"ring_kernel must be an odd integer >= 1, got {ring_kernel!r}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_bool(name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_nonnegative(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_logits(name: str, logits: torch.Tensor) -> None:
    """CAM logits ``(B, C+1, H, W)`` with at least one foreground class."""
    check_rank4(name, logits, "(B, C+1, H, W)")
    if logits.shape[1] < 2:
        raise ValueError(f"{name} must have C+1 >= 2 channels (background + at least one class), got {logits.shape[1]}")
