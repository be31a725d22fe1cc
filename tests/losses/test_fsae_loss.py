"""FSAELoss against a direct, loop-by-loop computation of docs/method.md §2."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from fsae.losses import FSAELoss, expansion_stats, fsae_loss


def direct_fsae(student, teacher, labels, tau_conf=0.95, tau_ring=0.8, absent="zero", mask_student=True):
    """docs/method.md §2 written out pixel by pixel in float64 (independent of fsae.ops.reference).

    ``mask_student=False``: the student's CE over its raw logits (the teacher's side unchanged)."""
    batch, channels, height, width = teacher.shape
    total = 0.0
    conf_count = ring_count = 0
    for b in range(batch):
        present = [True] + [bool(v) for v in labels[b]]

        def masked(z, present=present):
            fill = -math.inf if absent == "exclude" else 0.0
            return [float(z[c]) if present[c] else fill for c in range(channels)]

        conf, fg, yhat = {}, {}, {}
        for h in range(height):
            for w in range(width):
                lt = masked(teacher[b, :, h, w])
                m = max(lt)
                e = [math.exp(v - m) for v in lt]
                p = [v / sum(e) for v in e]
                conf[h, w] = max(p)
                fg[h, w] = max(p[1:]) >= tau_conf
                yhat[h, w] = lt.index(m)
        for h in range(height):
            for w in range(width):
                near = any(
                    fg.get((h + dh, w + dw), False) for dh in (-1, 0, 1) for dw in (-1, 0, 1)
                )  # outside the map: missing = 0
                in_conf = conf[h, w] >= tau_conf
                in_ring = near and not fg[h, w] and conf[h, w] >= tau_ring
                conf_count += in_conf
                ring_count += in_ring
                if in_conf or in_ring:
                    raw = [float(v) for v in student[b, :, h, w]]
                    ls = masked(raw) if mask_student else raw
                    m = max(ls)
                    lse = m + math.log(sum(math.exp(v - m) for v in ls))
                    total += lse - ls[yhat[h, w]]
    return total / (batch * height * width), conf_count, ring_count


@pytest.mark.parametrize("mask_student", [True, False])
@pytest.mark.parametrize("absent", ["zero", "exclude"])
def test_value_and_gradient_match_a_direct_computation(device, absent, mask_student):
    g = torch.Generator().manual_seed(0)
    teacher = (torch.randn(2, 4, 6, 7, generator=g, dtype=torch.float64) * 4).to(device)
    teacher[:, 1, 1:4, 2:5] += 9
    student = (teacher + torch.randn(teacher.shape, generator=g, dtype=torch.float64).to(device)).requires_grad_()
    labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], device=device)

    criterion = FSAELoss(absent=absent, mask_student=mask_student)
    loss = criterion(student, teacher, labels)
    direct = functools.partial(direct_fsae, absent=absent, mask_student=mask_student)
    expected, conf_count, ring_count = direct(student.detach().cpu(), teacher.cpu(), labels.cpu())
    assert conf_count > 0 and ring_count > 0
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert int(criterion.last_masks.conf_mask.sum()) == conf_count
    assert int(criterion.last_masks.ring_mask.sum()) == ring_count

    # Gradient: central differences of the direct computation on a few student entries.
    (grad,) = torch.autograd.grad(loss, student)
    for index in [(0, 1, 2, 3), (1, 0, 0, 0), (1, 2, 4, 6), (0, 3, 3, 3)]:
        bumped = student.detach().cpu().clone()
        bumped[index] += 1e-6
        plus = direct(bumped, teacher.cpu(), labels.cpu())[0]
        bumped[index] -= 2e-6
        minus = direct(bumped, teacher.cpu(), labels.cpu())[0]
        assert grad[index].item() == pytest.approx((plus - minus) / 2e-6, abs=1e-7)


def test_unmasked_student_lowers_absent_classes_on_supervised_pixels(device):
    # One confident pixel of class 1 in an image whose class 2 is absent: only the unmasked form pushes the
    # student's class-2 logit down there (its gradient is p_2 > 0); the masked form leaves it alone.
    teacher = torch.full((1, 3, 3, 3), -5.0, device=device)
    teacher[0, 1, 1, 1] = 10.0
    labels = torch.tensor([[1.0, 0.0]], device=device)
    grads = {}
    for mask_student in (True, False):
        student = torch.zeros(1, 3, 3, 3, device=device, requires_grad=True)
        FSAELoss(mask_student=mask_student)(student, teacher, labels).backward()
        grads[mask_student] = student.grad[0, :, 1, 1].cpu()
    assert grads[True][2].item() == 0.0
    assert grads[False][2].item() == pytest.approx(1 / 3 / 9)  # p_2 = 1/3 at zero logits, mean over 9 pixels
    assert grads[False][1].item() == pytest.approx(-2 / 3 / 9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_unmasked_student_in_half_precision(device, dtype):
    g = torch.Generator().manual_seed(1)
    teacher = (torch.randn(2, 5, 4, 4, generator=g) * 6).to(device)
    student = torch.randn(2, 5, 4, 4, generator=g).to(device)
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]], device=device)
    expected = fsae_loss(student, teacher, labels, mask_student=False)
    assert expected.item() > 0
    loss = fsae_loss(student.to(dtype), teacher.to(dtype), labels, mask_student=False)
    assert loss.dtype == torch.float32
    # the teacher's masks may flip on a pixel or two after rounding; compare against the rounded inputs
    rounded = fsae_loss(student.to(dtype).float(), teacher.to(dtype).float(), labels, mask_student=False)
    torch.testing.assert_close(loss, rounded)


def test_zero_when_no_pixel_is_confident(device):
    teacher = torch.zeros(3, 21, 8, 8, device=device)  # uniform: confidence 1/21
    student = torch.randn(3, 21, 8, 8, device=device, requires_grad=True)
    criterion = FSAELoss()
    loss = criterion(student, teacher, torch.ones(3, 20, device=device))
    loss.backward()
    assert loss.item() == 0.0 and not student.grad.any()
    assert criterion.last_stats["mask_fraction"].item() == 0.0
    assert criterion.last_stats["mean_confidence"].item() == pytest.approx(1 / 21)


def test_stats_and_functional_form(device):
    teacher = torch.zeros(1, 2, 5, 5, device=device)
    teacher[0, 0] = math.log(9.0)  # background 0.9 everywhere...
    teacher[0, 1, 2, 2] = 10.0  # ...but one confident foreground pixel
    student = torch.randn(1, 2, 5, 5, device=device)
    labels = torch.ones(1, 1, device=device)
    criterion = FSAELoss()
    loss = criterion(student, teacher, labels)
    stats = {k: v.item() for k, v in criterion.last_stats.items()}
    assert stats["conf_fraction"] == pytest.approx(1 / 25)
    assert stats["ring_fraction"] == pytest.approx(8 / 25)
    assert stats["mask_fraction"] == pytest.approx(9 / 25)
    assert all(not v.requires_grad for v in criterion.last_stats.values())
    assert expansion_stats(criterion.last_masks).keys() == criterion.last_stats.keys()
    torch.testing.assert_close(fsae_loss(student, teacher, labels), loss)
    split = FSAELoss(boundary_weight=0.0)(student, teacher, labels)
    assert split.item() < loss.item()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"conf_threshold": 1.2}, "conf_threshold"),
        ({"ring_threshold": -0.5}, "ring_threshold"),
        ({"ring_kernel": 4}, "ring_kernel"),
        ({"absent": "ignore"}, "absent"),
        ({"boundary_weight": -1}, "boundary_weight"),
        ({"mask_student": "no"}, "mask_student"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FSAELoss(**kwargs)
