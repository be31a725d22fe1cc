"""The fused extension against the reference on fresh random inputs.

CPU always; CUDA when a GPU is present (marked `cuda`, skipped otherwise).
Masks and labels must match exactly (inputs are kept away from thresholds, see
ops_cases), float outputs to within float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
from ops_cases import random_case, random_labels, unambiguous_cams

import fsae.ops
from fsae.ops import reference

pytestmark = pytest.mark.usefixtures("extension")

SHAPES = [
    (1, 2, 1, 1),  # one class, 1x1 map
    (2, 2, 9, 7),  # one class
    (3, 5, 1, 17),  # one-pixel-high maps
    (2, 21, 56, 56),  # the training shape (B reduced)
    (2, 81, 13, 11),  # COCO classes
    (4, 9, 31, 33),  # odd sizes, several tiles per image
]
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def tolerances(dtype: torch.dtype) -> dict:
    return {"rtol": 1e-9, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}


def assert_masks_equal(got: fsae.ops.ExpansionMasks, want: fsae.ops.ExpansionMasks, dtype: torch.dtype) -> None:
    for name in ("pseudo_label", "conf_mask", "ring_mask", "mask"):
        g, w = getattr(got, name), getattr(want, name)
        assert g.dtype == w.dtype and g.shape == w.shape, name
        mismatches = int((g != w).sum())
        assert mismatches == 0, f"{name}: {mismatches} of {w.numel()} pixels differ"
    assert got.confidence.dtype == want.confidence.dtype
    torch.testing.assert_close(got.confidence, want.confidence, **tolerances(dtype))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("absent", ["zero", "exclude"])
def test_expansion_masks_match_reference(device, shape, dtype, absent):
    case = random_case(shape, dtype, device, absent, seed=hash((shape, str(dtype), absent)) % 2**31)
    got = fsae.ops.expansion_masks(case.teacher, case.labels, absent=absent)
    want = reference.expansion_masks(case.teacher, case.labels, absent=absent)
    assert_masks_equal(got, want, dtype)


@pytest.mark.parametrize("ring_kernel", [1, 3, 5, 7])
def test_ring_kernels_match_reference(device, ring_kernel):
    case = random_case((2, 6, 23, 19), device=device, seed=ring_kernel)
    got = fsae.ops.expansion_masks(case.teacher, case.labels, ring_kernel=ring_kernel)
    want = reference.expansion_masks(case.teacher, case.labels, ring_kernel=ring_kernel)
    assert_masks_equal(got, want, torch.float32)
    if ring_kernel == 1:
        assert not got.ring_mask.any()


@pytest.mark.parametrize("thresholds", [(0.6, 0.3), (0.99, 0.9), (1.0, 0.0), (0.0, 1.0)])
def test_thresholds_match_reference(device, thresholds):
    conf, ring = thresholds
    case = random_case((2, 4, 15, 16), device=device, seed=7, thresholds=(conf, ring))
    got = fsae.ops.expansion_masks(case.teacher, case.labels, conf_threshold=conf, ring_threshold=ring)
    want = reference.expansion_masks(case.teacher, case.labels, conf_threshold=conf, ring_threshold=ring)
    assert_masks_equal(got, want, torch.float32)


def _loss_and_grad(fn, case, dtype, **kwargs):
    student = case.student.detach().clone().requires_grad_()
    loss, masks = fn(student, case.teacher, case.labels, **kwargs)
    (grad,) = torch.autograd.grad(loss, student)
    return loss, masks, grad


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("absent", ["zero", "exclude"])
@pytest.mark.parametrize("boundary_weight", [None, 0.5])
@pytest.mark.parametrize("mask_student", [True, False])
def test_expansion_loss_and_grad_match_reference(device, shape, dtype, absent, boundary_weight, mask_student):
    case = random_case(shape, dtype, device, absent, seed=hash((shape, str(dtype), absent)) % 2**31)
    kwargs = {"absent": absent, "boundary_weight": boundary_weight, "mask_student": mask_student}
    loss, masks, grad = _loss_and_grad(fsae.ops.expansion_loss, case, dtype, **kwargs)
    ref_loss, ref_masks, ref_grad = _loss_and_grad(reference.expansion_loss, case, dtype, **kwargs)

    assert_masks_equal(masks, ref_masks, dtype)
    assert loss.dtype == ref_loss.dtype == reference.accumulate_dtype(dtype)
    assert loss.shape == ()
    torch.testing.assert_close(loss, ref_loss, **tolerances(dtype))
    assert grad.dtype == dtype and grad.shape == case.student.shape
    pixels = shape[0] * shape[2] * shape[3]
    if dtype in (torch.float16, torch.bfloat16):
        # Both round the same float32 gradient to half precision; allow one rounding step.
        torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1e-2, atol=1e-2 / pixels)
    else:
        torch.testing.assert_close(grad, ref_grad, **tolerances(dtype))


def test_non_contiguous_inputs(device):
    case = random_case((2, 7, 12, 10), device=device, seed=3)
    # Channels-last copies and transposed views: the same values, other strides.
    student = case.student.transpose(2, 3).contiguous().transpose(2, 3)
    teacher = case.teacher.to(memory_format=torch.channels_last)
    labels = torch.cat([case.labels, torch.zeros_like(case.labels)], dim=1)[:, : case.labels.shape[1]]
    labels = labels.t().contiguous().t()
    assert not (student.is_contiguous() or teacher.is_contiguous() or labels.is_contiguous())
    student.requires_grad_()
    loss, masks = fsae.ops.expansion_loss(student, teacher, labels)
    (grad,) = torch.autograd.grad(loss, student)
    ref_loss, ref_masks, ref_grad = _loss_and_grad(reference.expansion_loss, case, torch.float32)
    assert_masks_equal(masks, ref_masks, torch.float32)
    torch.testing.assert_close(loss, ref_loss, **tolerances(torch.float32))
    torch.testing.assert_close(grad, ref_grad, **tolerances(torch.float32))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 20, 9, 11), (3, 4, 1, 200), (2, 3, 70, 70)])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mode", ["max", "minmax"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_cam_normalize_matches_reference(device, shape, dtype, mode, with_labels):
    g = torch.Generator().manual_seed(11)
    cams = (3 * torch.randn(shape, generator=g)).to(dtype).to(device)
    labels = random_labels(shape[0], shape[1], g, device) if with_labels else None
    got = fsae.ops.cam_normalize(cams, labels, mode=mode)
    want = reference.cam_normalize(cams, labels, mode=mode)
    assert got.dtype == dtype and got.shape == cams.shape
    exact = {"rtol": 0.0, "atol": 0.0} if dtype in (torch.float16, torch.bfloat16) else tolerances(dtype)
    torch.testing.assert_close(got, want, **exact)
    if with_labels:
        assert not got[~(labels != 0)].any()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mode", ["max", "minmax"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_cam_normalize_gradient_matches_reference(device, dtype, mode, with_labels):
    """The backward registered on fsae::cam_normalize against autograd through the reference, with tied maxima
    and minima (the gradient is shared evenly), an all-negative map and a constant one."""
    g = torch.Generator().manual_seed(12)
    shape = (2, 5, 9, 7)
    cams = 3 * torch.randn(shape, generator=g)
    cams[0, 0, :2, :2] = cams[0, 0].max() + 1  # four tied maxima
    cams[0, 1] = cams[0, 1].abs() + 1
    cams[0, 1, 0, :3] = 0.5  # an all-positive map with three tied minima
    cams[1, 2] = -cams[1, 2].abs() - 0.1  # all negative: zero output
    cams[1, 3] = 2.0  # constant: max = min
    cams = cams.to(dtype).to(device)
    labels = random_labels(shape[0], shape[1], g, device) if with_labels else None
    upstream = torch.randn(shape, generator=g).to(device)
    grads = []
    for impl in (fsae.ops, reference):
        x = cams.clone().requires_grad_()
        out = impl.cam_normalize(x, labels, mode=mode)
        (grad,) = torch.autograd.grad((out.to(upstream.dtype) * upstream).sum(), x)
        grads.append(grad)
    got, want = grads
    assert got.dtype == dtype and want.abs().amax() > 0
    if dtype in (torch.float16, torch.bfloat16):
        # both round a float32 gradient to half precision; allow one rounding step
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-3)
    else:
        torch.testing.assert_close(got, want, **tolerances(dtype))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 20, 9, 11), (3, 4, 1, 200), (1, 80, 16, 16)])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "background",
    [{"bg_threshold": 0.0}, {"bg_threshold": 0.3}, {"bg_power": 8.0}, {"bg_power": 2.5}, {"bg_power": 0.0}],
)
@pytest.mark.parametrize("with_labels", [False, True])
def test_cams_to_labels_matches_reference(device, shape, dtype, background, with_labels):
    g = torch.Generator().manual_seed(5)
    labels = random_labels(shape[0], shape[1], g, device) if with_labels else None
    cams = reference.cam_normalize(torch.randn(shape, generator=g).to(device), None)
    cams = unambiguous_cams(cams, labels, background.get("bg_threshold"), background.get("bg_power")).to(dtype)
    got = fsae.ops.cams_to_labels(cams, labels, **background)
    want = reference.cams_to_labels(cams, labels, **background)
    assert got.dtype == torch.int64 and got.shape == (shape[0], *shape[2:])
    assert int((got != want).sum()) == 0
    if with_labels:
        chosen = torch.nn.functional.one_hot(got, shape[1] + 1)[..., 1:].amax(dim=(1, 2)).bool()
        assert not (chosen & (labels == 0)).any(), "an absent class was chosen"
