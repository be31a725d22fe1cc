"""Bad arguments raise ValueError with a message that names the problem."""

from __future__ import annotations

import pytest
import torch

import fsae.ops

LOGITS = torch.zeros(2, 4, 5, 5)
LABELS = torch.ones(2, 3)


def masks(**overrides):
    args = {"teacher_logits": LOGITS, "labels": LABELS} | overrides
    return fsae.ops.expansion_masks(**args)


def loss(**overrides):
    args = {"student_logits": LOGITS, "teacher_logits": LOGITS, "labels": LABELS} | overrides
    return fsae.ops.expansion_loss(**args)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: masks(teacher_logits=torch.zeros(4, 5, 5)), r"teacher_logits must be 4-D \(B, C\+1, H, W\)"),
        (lambda: masks(teacher_logits=torch.zeros(2, 1, 5, 5), labels=torch.ones(2, 0)), r"C\+1 >= 2"),
        (lambda: masks(teacher_logits=torch.zeros(2, 4, 5, 5, dtype=torch.long)), "floating-point"),
        (lambda: masks(labels=torch.ones(2, 4)), r"labels must have shape \(B, C\) = \(2, 3\)"),
        (lambda: masks(labels=torch.ones(3, 3)), r"labels must have shape"),
        (lambda: masks(labels=torch.ones(6)), r"labels must have shape"),
        (lambda: masks(ring_kernel=2), "ring_kernel must be an odd integer >= 1"),
        (lambda: masks(ring_kernel=0), "ring_kernel must be an odd integer >= 1"),
        (lambda: masks(ring_kernel=3.0), "ring_kernel must be an odd integer"),
        (lambda: masks(conf_threshold=1.5), r"conf_threshold must be a number in \[0, 1\]"),
        (lambda: masks(conf_threshold=-0.1), r"conf_threshold must be a number in \[0, 1\]"),
        (lambda: masks(ring_threshold=2), r"ring_threshold must be a number in \[0, 1\]"),
        (lambda: masks(absent="drop"), "absent must be one of"),
        (lambda: loss(student_logits=torch.zeros(2, 4, 5, 6)), "student_logits and teacher_logits must have the same"),
        (lambda: loss(student_logits=torch.zeros(2, 4, 5)), "student_logits must be 4-D"),
        (lambda: loss(boundary_weight=-1.0), "boundary_weight must be a finite number >= 0"),
        (lambda: loss(boundary_weight=float("nan")), "boundary_weight must be a finite number >= 0"),
        (
            lambda: loss(
                student_logits=torch.zeros(0, 4, 5, 5), teacher_logits=torch.zeros(0, 4, 5, 5), labels=torch.ones(0, 3)
            ),
            "at least one pixel",
        ),
        (lambda: fsae.ops.cam_normalize(torch.zeros(3, 5, 5)), r"cams must be 4-D \(B, C, H, W\)"),
        (lambda: fsae.ops.cam_normalize(LOGITS, mode="sum"), "mode must be one of"),
        (lambda: fsae.ops.cam_normalize(LOGITS, torch.ones(2, 3)), r"labels must have shape \(B, C\) = \(2, 4\)"),
        (lambda: fsae.ops.cam_normalize(LOGITS, eps=-1), "eps must be a finite number >= 0"),
        (lambda: fsae.ops.cams_to_labels(LOGITS), "exactly one of bg_threshold or bg_power"),
        (lambda: fsae.ops.cams_to_labels(LOGITS, bg_threshold=0.1, bg_power=2), "exactly one of"),
        (lambda: fsae.ops.cams_to_labels(LOGITS, bg_threshold=1.2), r"bg_threshold must be a number in \[0, 1\]"),
        (lambda: fsae.ops.cams_to_labels(LOGITS, bg_power=-2), "bg_power must be a finite number >= 0"),
        (lambda: fsae.ops.cams_to_labels(torch.zeros(5, 5), bg_power=2), "norm_cams must be 4-D"),
        (lambda: fsae.ops.cams_to_labels(LOGITS, [1, 0, 1, 0], bg_power=2), "labels must be a torch.Tensor"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_inputs_on_different_devices_are_rejected():
    with pytest.raises(ValueError, match="one device"):
        masks(labels=LABELS.to("meta"))


def test_direct_op_calls_are_checked_too():
    """torch.ops.fsae.* (no Python front) reject bad shapes with a RuntimeError, never read out of bounds."""
    if not fsae.ops.has_extension():
        pytest.skip("no extension")
    present = torch.ones(2, 2, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="present must be"):
        torch.ops.fsae.expansion_masks(LOGITS, present, 0.95, 0.8, 3, False)
    with pytest.raises(RuntimeError, match="ring_kernel must be odd"):
        torch.ops.fsae.expansion_masks(LOGITS, LABELS.bool(), 0.95, 0.8, 4, False)
    with pytest.raises(RuntimeError, match="differ in shape"):
        torch.ops.fsae.expansion_loss_forward(LOGITS, LOGITS[:, :, :4], LABELS.bool(), 0.95, 0.8, 3, False, None)
