"""Random inputs for the ops tests, kept away from decision boundaries.

The fused kernels and the reference compute softmax with different (both
accurate) exp implementations, so a pixel whose confidence lies within ~1e-7
of a threshold may land on either side.  `random_case` draws realistic logits
(confident blobs of the present classes on noise) and then moves every pixel
that is within `MARGIN` of a threshold to uniform logits, which are far from
any threshold used in the tests; comparisons can then be exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsae.ops import reference

MARGIN = 1e-3
THRESHOLDS = (0.95, 0.8)


@dataclass
class Case:
    student: torch.Tensor  # (B, C+1, H, W)
    teacher: torch.Tensor  # (B, C+1, H, W)
    labels: torch.Tensor  # (B, C) float multi-hot


def _ambiguous(logits: torch.Tensor, labels: torch.Tensor, absent: str, thresholds: tuple[float, ...]) -> torch.Tensor:
    """(B, H, W) bool: pixels whose confidence or fg confidence is near a threshold."""
    masked = reference.masked_logits(logits.double(), labels, absent=absent)
    prob = masked.softmax(dim=1)
    near = torch.zeros(prob.shape[0], *prob.shape[2:], dtype=torch.bool, device=prob.device)
    for value in (prob.amax(dim=1), prob[:, 1:].amax(dim=1)):
        for tau in thresholds:
            near |= (value - tau).abs() < MARGIN
    return near


def random_labels(batch: int, classes: int, generator: torch.Generator, device: str = "cpu") -> torch.Tensor:
    """(B, C) float multi-hot with 1-3 present classes per image (fewer if C is small)."""
    labels = torch.zeros(batch, classes)
    for b in range(batch):
        count = int(torch.randint(1, min(3, classes) + 1, (1,), generator=generator))
        labels[b, torch.randperm(classes, generator=generator)[:count]] = 1
    return labels.to(device)


def random_case(
    shape: tuple[int, int, int, int],
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    absent: str = "zero",
    seed: int = 0,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> Case:
    """Teacher logits with confident blobs, student = teacher + noise, labels multi-hot."""
    g = torch.Generator().manual_seed(seed)
    batch, channels, height, width = shape
    labels = random_labels(batch, channels - 1, g)
    teacher = 2.0 * torch.randn(shape, generator=g, dtype=torch.float64)
    # Blobs: each present class gets a large boost on a random rectangle.
    for b in range(batch):
        for k in labels[b].nonzero().flatten().tolist():
            h0, w0 = (int(torch.randint(0, s, (1,), generator=g)) for s in (height, width))
            h1, w1 = h0 + 1 + height // 2, w0 + 1 + width // 2
            teacher[b, k + 1, h0:h1, w0:w1] += 6.0 + 4.0 * torch.rand((), generator=g, dtype=torch.float64)
    teacher[:, 0] += 2.0  # some confident background too
    teacher = teacher.to(dtype)
    near = _ambiguous(teacher, labels, absent, thresholds)
    teacher = teacher.masked_fill(near[:, None], 0.0)
    student = (teacher.double() + torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    return Case(student.to(device), teacher.to(device), labels.to(device))


def unambiguous_cams(cams: torch.Tensor, labels: torch.Tensor | None, bg_threshold, bg_power) -> torch.Tensor:
    """Zero the pixels whose background score is within MARGIN of the best class score."""
    x = cams.double() if labels is None else cams.double() * (labels != 0)[:, :, None, None]
    best = x.amax(dim=1)
    background = torch.full_like(best, bg_threshold) if bg_power is None else (1 - best).clamp_min(0) ** bg_power
    near = (background - best).abs() < MARGIN
    return cams.masked_fill(near[:, None], 0.0)
