"""The registered operators are well-formed and torch.compile traces through them."""

from __future__ import annotations

import pytest
import torch
from ops_cases import random_case

import fsae.ops
from fsae.ops import reference

pytestmark = pytest.mark.usefixtures("extension")


def op_samples(device: str):
    case = random_case((2, 5, 7, 6), device=device, seed=4)
    present = (case.labels != 0).contiguous()
    cams = case.teacher[:, 1:].contiguous()
    yield torch.ops.fsae.cam_normalize.default, (cams, present, False, 1e-5)
    yield torch.ops.fsae.cam_normalize.default, (cams, None, True, 1e-5)
    yield torch.ops.fsae.cams_to_labels.default, (cams.sigmoid(), present, None, 8.0)
    yield torch.ops.fsae.cams_to_labels.default, (cams.sigmoid(), None, 0.3, None)
    yield torch.ops.fsae.expansion_masks.default, (case.teacher, present, 0.95, 0.8, 3, False)
    forward = (case.student, case.teacher, present, 0.95, 0.8, 3, True, 0.5)
    yield torch.ops.fsae.expansion_loss_forward.default, forward
    loss, lse, label, _, conf, ring, _ = torch.ops.fsae.expansion_loss_forward(*forward)
    yield (
        torch.ops.fsae.expansion_loss_backward.default,
        (torch.ones_like(loss), case.student, lse, label, conf, ring, present, True, 0.5),
    )


def test_opcheck(device):
    """Schema, fake (meta) kernels and dispatch of every torch.ops.fsae operator."""
    for op, args in op_samples(device):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


def test_compiled_loss_matches_eager(device):
    case = random_case((2, 6, 9, 8), device=device, seed=5)

    def step(student, teacher, labels):
        loss, masks = fsae.ops.expansion_loss(student, teacher, labels, boundary_weight=0.5)
        return loss, masks.mask

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (compiled, step):
        student = case.student.clone().requires_grad_()
        loss, mask = fn(student, case.teacher, case.labels)
        loss.backward()
        results.append((loss, mask, student.grad))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want)
    ref_loss, _ = reference.expansion_loss(case.student, case.teacher, case.labels, boundary_weight=0.5)
    torch.testing.assert_close(results[0][0], ref_loss)
