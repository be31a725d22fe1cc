"""torch.autograd.gradcheck of the fused FSAE loss in float64."""

from __future__ import annotations

import pytest
import torch
from ops_cases import random_case

import fsae.ops

pytestmark = pytest.mark.usefixtures("extension")


@pytest.mark.parametrize("absent", ["zero", "exclude"])
@pytest.mark.parametrize("boundary_weight", [None, 0.3])
def test_gradcheck_expansion_loss(device, absent, boundary_weight):
    case = random_case((2, 4, 5, 6), torch.float64, device, absent, seed=1)
    labels = case.labels

    def loss_of(student: torch.Tensor) -> torch.Tensor:
        loss, _ = fsae.ops.expansion_loss(
            student,
            case.teacher,
            labels,
            conf_threshold=0.9,
            ring_threshold=0.5,
            absent=absent,
            boundary_weight=boundary_weight,
        )
        return loss

    student = case.student.clone().requires_grad_()
    _, masks = fsae.ops.expansion_loss(student, case.teacher, labels, conf_threshold=0.9, ring_threshold=0.5)
    assert masks.conf_mask.any() and masks.ring_mask.any(), "the case must exercise both masks"
    assert torch.autograd.gradcheck(loss_of, (student,), eps=1e-6, atol=1e-8)


def test_gradcheck_through_upstream_scale(device):
    case = random_case((1, 3, 4, 4), torch.float64, device, seed=2)
    student = case.student.clone().requires_grad_()

    def scaled(s: torch.Tensor) -> torch.Tensor:
        loss, _ = fsae.ops.expansion_loss(s, case.teacher, case.labels, conf_threshold=0.6, ring_threshold=0.3)
        return 3.5 * loss**2

    assert torch.autograd.gradcheck(scaled, (student,), eps=1e-6, atol=1e-8)


def test_second_derivative_raises(device):
    case = random_case((1, 3, 4, 4), torch.float64, device, seed=3)
    student = case.student.clone().requires_grad_()
    loss, _ = fsae.ops.expansion_loss(student, case.teacher, case.labels, conf_threshold=0.6, ring_threshold=0.3)
    (grad,) = torch.autograd.grad(loss, student, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice|does not require grad"):
        grad.sum().backward()


@pytest.mark.parametrize("mode", ["max", "minmax"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_gradcheck_cam_normalize(device, mode, with_labels):
    """The backward registered on fsae::cam_normalize (gradient through the per-map max / min) in float64."""
    g = torch.Generator().manual_seed(3)
    cams = 3 * torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    cams = torch.where(cams.abs() < 0.01, cams + 0.02, cams).to(device)  # away from relu's kink at 0
    cams[1, 2] = cams[1, 2].abs() + 0.5  # an all-positive map: its min is a pixel, not relu's 0
    labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]], device=device) if with_labels else None

    def normalized(c: torch.Tensor) -> torch.Tensor:
        return fsae.ops.cam_normalize(c, labels, mode=mode, eps=1e-5)

    assert torch.autograd.gradcheck(normalized, (cams.requires_grad_(),), eps=1e-6, atol=1e-8)
