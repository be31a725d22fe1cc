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
