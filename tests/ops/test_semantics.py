"""Hand-checked behaviour of the ops (docs/method.md §2, §6), on both implementations.

`impl` runs each test against the public ops (fused kernels when built) and
against the reference, so the spec is pinned for both.
"""

from __future__ import annotations

import math

import pytest
import torch

import fsae.ops
from fsae.ops import reference


@pytest.fixture(params=["fused", "reference"])
def impl(request: pytest.FixtureRequest, device: str):
    if request.param == "reference":
        return reference
    from fsae.ops._extension import extension_devices

    if device not in extension_devices():
        pytest.skip(f"no fused kernels for {device}")
    return fsae.ops


def pixel(values: list[float], device: str) -> torch.Tensor:
    """(1, C+1, 1, 1) logits of one pixel."""
    return torch.tensor(values, device=device).view(1, -1, 1, 1)


def test_worked_example_is_not_confident(impl, device):
    # Present class logit 5, background -3, 18 absent classes at 0 (C = 19): p ~= 0.89 < 0.95.
    logits = pixel([-3.0, 5.0] + [7.0] * 18, device)  # absent logits are replaced by 0 in "zero" mode
    labels = torch.zeros(1, 19, device=device)
    labels[0, 0] = 1
    masks = impl.expansion_masks(logits, labels)
    expected = math.exp(5) / (math.exp(5) + math.exp(-3) + 18)
    assert expected == pytest.approx(0.8915, abs=1e-4)
    assert masks.confidence.item() == pytest.approx(expected, rel=1e-6)
    assert masks.pseudo_label.item() == 1
    assert not masks.conf_mask.item() and not masks.mask.item()
    # "exclude" drops the absent classes from the softmax: now it is confident.
    excluded = impl.expansion_masks(logits, labels, absent="exclude")
    assert excluded.confidence.item() == pytest.approx(1 / (1 + math.exp(-8)), rel=1e-6)
    assert excluded.conf_mask.item()


def test_all_labels_absent(impl, device):
    logits = torch.randn(2, 4, 5, 6, device=device) * 3
    labels = torch.zeros(2, 3, device=device)
    # exclude: only background is left, so every pixel is background with confidence 1 and no ring.
    masks = impl.expansion_masks(logits, labels, absent="exclude")
    assert (masks.pseudo_label == 0).all() and (masks.confidence == 1).all()
    assert masks.conf_mask.all() and not masks.ring_mask.any()
    student = torch.randn_like(logits).requires_grad_()
    loss, _ = impl.expansion_loss(student, logits, labels, absent="exclude")
    (grad,) = torch.autograd.grad(loss, student)
    assert loss.item() == 0 and not grad.any()  # a one-channel softmax has zero CE
    # zero: the absent classes sit at logit 0 and take part in the softmax.
    masks = impl.expansion_masks(logits, labels, absent="zero")
    zero_logits = torch.cat([logits[:, :1], torch.zeros_like(logits[:, 1:])], dim=1)
    expected = zero_logits.softmax(dim=1).amax(dim=1)
    torch.testing.assert_close(masks.confidence, expected)


def test_single_class_ring_geometry(impl, device):
    # One class; a confident foreground pixel in the middle of a 7x7 map whose other
    # pixels are confident (>= 0.8) but below 0.95 background.
    logits = torch.zeros(1, 2, 7, 7, device=device)
    logits[0, 0] = math.log(9.0)  # background p = 0.9
    logits[0, 1, 3, 3] = 10.0
    labels = torch.ones(1, 1, device=device)
    for kernel, ring_size in [(1, 0), (3, 8), (5, 24), (9, 48)]:
        masks = impl.expansion_masks(logits, labels, ring_kernel=kernel)
        assert masks.conf_mask.sum() == 1 and masks.conf_mask[0, 3, 3]
        assert masks.ring_mask.sum() == ring_size, kernel
        assert not masks.ring_mask[0, 3, 3]
        assert (masks.pseudo_label[masks.ring_mask] == 0).all()
    # The ring needs confidence >= ring_threshold: with 0.95 nothing qualifies.
    assert not impl.expansion_masks(logits, labels, ring_threshold=0.95).ring_mask.any()


def test_ring_at_the_border_uses_zero_padding(impl, device):
    logits = torch.zeros(1, 2, 4, 5, device=device)
    logits[0, 1, 0, 0] = 10.0  # confident corner pixel
    labels = torch.ones(1, 1, device=device)
    masks = impl.expansion_masks(logits, labels, ring_threshold=0.0)
    expected = torch.zeros(4, 5, dtype=torch.bool, device=device)
    expected[0, 1] = expected[1, 0] = expected[1, 1] = True
    assert torch.equal(masks.ring_mask[0], expected)


def test_one_by_one_map(impl, device):
    labels = torch.ones(1, 1, device=device)
    masks = impl.expansion_masks(pixel([0.0, 10.0], device), labels)
    assert masks.conf_mask.item() and not masks.ring_mask.item() and masks.pseudo_label.item() == 1


def test_ties_go_to_the_lowest_index(impl, device):
    logits = torch.full((1, 5, 2, 2), 1.5, device=device)
    masks = impl.expansion_masks(logits, torch.ones(1, 4, device=device))
    assert (masks.pseudo_label == 0).all()
    torch.testing.assert_close(masks.confidence, torch.full((1, 2, 2), 0.2, device=device))
    logits[:, 3] = 4.0
    logits[:, 2] = 4.0
    assert (impl.expansion_masks(logits, torch.ones(1, 4, device=device)).pseudo_label == 2).all()


def test_loss_is_a_mean_over_all_pixels(impl, device):
    # Exactly one confident pixel of 2 * 3 * 4 = 24: loss = its CE / 24.
    teacher = torch.zeros(2, 3, 3, 4, device=device)
    teacher[1, 2, 1, 2] = 20.0
    labels = torch.ones(2, 2, device=device)
    student = torch.randn(2, 3, 3, 4, device=device)
    loss, masks = impl.expansion_loss(student, teacher, labels, ring_threshold=1.0)
    assert masks.mask.sum() == 1
    ce = torch.logsumexp(student[1, :, 1, 2], 0) - student[1, 2, 1, 2]
    torch.testing.assert_close(loss, ce / 24)


def test_loss_is_zero_when_no_pixel_is_confident(impl, device):
    teacher = torch.randn(2, 6, 8, 8, device=device) * 0.1  # near-uniform: conf ~ 1/6
    student = torch.randn(2, 6, 8, 8, device=device, requires_grad=True)
    labels = torch.ones(2, 5, device=device)
    loss, masks = impl.expansion_loss(student, teacher, labels)
    (grad,) = torch.autograd.grad(loss, student)
    assert not masks.mask.any()
    assert loss.item() == 0.0 and not grad.any()


def test_boundary_weight_splits_conf_and_ring(impl, device):
    teacher = torch.zeros(1, 2, 5, 5, device=device)
    teacher[0, 0] = math.log(9.0)
    teacher[0, 1, 2, 2] = 10.0
    student = torch.randn(1, 2, 5, 5, device=device)
    labels = torch.ones(1, 1, device=device)
    union, masks = impl.expansion_loss(student, teacher, labels)
    ce = torch.logsumexp(student, 1) - student.gather(1, masks.pseudo_label[:, None])[:, 0]
    conf_part = (ce * masks.conf_mask).sum() / 25
    ring_part = (ce * masks.ring_mask).sum() / 25
    assert masks.ring_mask.sum() == 8
    torch.testing.assert_close(union, conf_part + ring_part)
    split, _ = impl.expansion_loss(student, teacher, labels, boundary_weight=0.25)
    torch.testing.assert_close(split, conf_part + 0.25 * ring_part)
    only_conf, _ = impl.expansion_loss(student, teacher, labels, boundary_weight=0.0)
    torch.testing.assert_close(only_conf, conf_part)


def test_teacher_gets_no_gradient(impl, device):
    teacher = (torch.randn(2, 3, 4, 4, device=device) * 5).requires_grad_()
    student = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    loss, _ = impl.expansion_loss(student, teacher, torch.ones(2, 2, device=device))
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_absent_classes_get_no_gradient(impl, device):
    teacher = torch.randn(2, 5, 6, 6, device=device) * 6
    student = torch.randn(2, 5, 6, 6, device=device, requires_grad=True)
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]], device=device)
    for absent in ("zero", "exclude"):
        loss, masks = impl.expansion_loss(student, teacher, labels, absent=absent, conf_threshold=0.5)
        assert masks.mask.any()
        (grad,) = torch.autograd.grad(loss, student)
        absent_channels = torch.cat([torch.ones(2, 1, device=device), labels], 1) == 0
        assert not grad[absent_channels].any()
        assert grad[~absent_channels].any()


def test_mixed_dtypes_promote(impl, device):
    teacher = torch.randn(1, 3, 4, 4, device=device) * 6
    student = (teacher + torch.randn_like(teacher)).bfloat16().requires_grad_()
    loss, _ = impl.expansion_loss(student, teacher, torch.ones(1, 2, device=device), conf_threshold=0.6)
    (grad,) = torch.autograd.grad(loss, student)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16


def test_cam_normalize_by_hand(impl, device):
    cams = torch.tensor([[[[-1.0, 0.0], [2.0, 4.0]], [[-3.0, -1.0], [-2.0, -5.0]], [[1.0, 2.0], [3.0, 5.0]]]])
    cams = cams.to(device)
    eps = 1e-5
    out = impl.cam_normalize(cams, mode="max", eps=eps)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.0], [2.0, 4.0]], device=device) / (4 + eps))
    assert not out[0, 1].any()  # all-negative map
    minmax = impl.cam_normalize(cams, mode="minmax", eps=eps)
    expected = (torch.tensor([[1.0, 2.0], [3.0, 5.0]], device=device) - 1 - eps).relu() / (5 - 1 + eps)
    torch.testing.assert_close(minmax[0, 2], expected)
    labelled = impl.cam_normalize(cams, torch.tensor([[1.0, 1.0, 0.0]], device=device))
    assert not labelled[0, 2].any() and torch.equal(labelled[0, 0], out[0, 0])


def test_cams_to_labels_by_hand(impl, device):
    cams = torch.tensor([[[[0.9, 0.2, 0.5]], [[0.1, 0.3, 0.5]]]], device=device)  # (1, 2, 1, 3)
    assert impl.cams_to_labels(cams, bg_threshold=0.25).tolist() == [[[1, 2, 1]]]
    # A tie between background and a class goes to background.
    assert impl.cams_to_labels(cams, bg_threshold=0.3).tolist() == [[[1, 0, 1]]]
    # Power background: (1 - max)^2 = 0.01, 0.49, 0.25.
    assert impl.cams_to_labels(cams, bg_power=2.0).tolist() == [[[1, 0, 1]]]
    # An absent class is never chosen.
    labels = torch.tensor([[0.0, 1.0]], device=device)
    assert impl.cams_to_labels(cams, labels, bg_threshold=0.0).tolist() == [[[2, 2, 2]]]
    assert impl.cams_to_labels(cams, torch.zeros(1, 2, device=device), bg_power=8.0).tolist() == [[[0, 0, 0]]]
