"""fsae.losses.seam against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from fsae.losses.seam import (
    background_suppression,
    equivariant_cross_regularization,
    equivariant_regularization,
    labels_with_background,
    max_onehot,
    multilabel_soft_margin,
    seam_normalized_cams,
)

EPS = 1e-5


def _cams(*foreground: list[list[float]], background: float = 0.0) -> torch.Tensor:
    """``(1, 1 + len(foreground), h, w)`` CAMs from nested lists, channel 0 = ``background``."""
    fg = torch.tensor(foreground, dtype=torch.float32)
    return torch.cat([torch.full_like(fg[:1], background), fg])[None]


def test_multilabel_soft_margin_hand():
    logits = torch.tensor([[0.0, 2.0]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    loss = multilabel_soft_margin(logits, torch.tensor([[1.0, 0.0]]))
    assert loss.shape == () and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert multilabel_soft_margin(logits, torch.tensor([[True, False]])).item() == pytest.approx(expected, abs=1e-6)
    assert multilabel_soft_margin(logits.double(), torch.tensor([[1.0, 0.0]])).dtype == torch.float64
    assert multilabel_soft_margin(logits.bfloat16(), torch.tensor([[1.0, 0.0]])).dtype == torch.float32
    with pytest.raises(ValueError, match="labels must have shape"):
        multilabel_soft_margin(logits, torch.ones(1, 3))


def test_background_suppression_hand():
    # C = 2; class 2 absent (its constant 10 is masked to 0); the background channel is never used.
    cams = torch.zeros(2, 3, 2, 4)
    cams[:, 0] = 100.0
    cams[0, 1] = torch.tensor([[-1.0, 2.0, 0.5, 3.0], [4.0, 1.0, 6.0, 7.0]])
    cams[1, 1] = -5.0
    cams[:, 2] = 10.0
    cams.requires_grad_()
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # image 0: per-pixel max [0, 2, .5, 3, 4, 1, 6, 7]; k = 8 // 4 = 2 smallest -> relu(0), relu(.5) -> mean .25
    # image 1: per-pixel max max(-5, 0) = 0 everywhere -> 0;  batch mean = .125
    loss = background_suppression(cams, labels)
    assert loss.shape == () and loss.item() == pytest.approx(0.125)
    loss.backward()
    expected_grad = torch.zeros_like(cams)
    expected_grad[0, 1, 0, 2] = 0.5 / 2  # d mean / d selected value; relu'(0) = 0 elsewhere
    torch.testing.assert_close(cams.grad, expected_grad)
    # with class 2 present its 10 dominates every pixel
    assert background_suppression(cams, torch.ones(2, 2)).item() == pytest.approx(10.0)


def test_seam_normalized_cams_background_is_one_minus_max():
    cams = _cams([[1.0, 3.0], [5.0, 9.0]], [[9.0, 9.0], [9.0, 0.0]], background=7.0)
    out = seam_normalized_cams(cams, torch.tensor([[1.0, 0.0]]))
    fg = torch.tensor([[0.0, 2 - EPS], [4 - EPS, 8 - EPS]]) / (8 + EPS)
    torch.testing.assert_close(out[0, 1], fg)
    torch.testing.assert_close(out[0, 2], torch.zeros(2, 2))  # absent class zeroed
    torch.testing.assert_close(out[0, 0], 1 - fg)


def test_equivariant_regularization_hand():
    # large 4x4 -> small 2x2 with align_corners=True samples exactly the four corners
    large = torch.full((1, 3, 4, 4), 1.5)
    large[0, 1, 0, 0], large[0, 1, 0, 3], large[0, 1, 3, 0], large[0, 1, 3, 3] = 0.0, 2.0, 1.0, 4.0
    large[0, 0] = torch.randn(4, 4)  # background: ignored
    large[0, 2] = torch.randn(4, 4)  # absent class: ignored
    small = _cams([[1.0, 3.0], [5.0, 9.0]], torch.randn(2, 2).tolist(), background=3.0)
    large.requires_grad_()
    small.requires_grad_()
    labels = torch.tensor([[1.0, 0.0]])
    a = torch.tensor([0.0, 2 - EPS, 1 - EPS, 4 - EPS]) / (4 + EPS)  # large, max-normed (min 0, max 4)
    b = torch.tensor([0.0, 2 - EPS, 4 - EPS, 8 - EPS]) / (8 + EPS)  # small, max-normed (min 1, max 9)
    expected = (a - b).abs().sum() / 8  # mean over C = 2 channels x 4 pixels, the absent one is 0 - 0
    loss = equivariant_regularization(large, small, labels)
    assert loss.shape == () and loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert expected.item() == pytest.approx(0.0625, abs=1e-5)
    loss.backward()
    for cams in (large, small):
        assert cams.grad[0, 1].abs().sum() > 0  # both views are trained
        assert cams.grad[0, 0].abs().sum() == 0 and cams.grad[0, 2].abs().sum() == 0


def test_equivariant_regularization_zero_for_identical_views():
    cams = torch.randn(2, 4, 5, 5)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert equivariant_regularization(cams, cams.clone(), labels).item() == 0.0


def test_max_onehot_hand():
    x = torch.tensor([[[0.3, 0.3]], [[0.2, 0.9]], [[0.7, 0.1]], [[0.7, 0.0]]])[None]  # (1, 4, 1, 2)
    before = x.clone()
    out = max_onehot(x)
    expected = torch.tensor([[[0.3, 0.3]], [[0.0, 0.9]], [[0.7, 0.0]], [[0.7, 0.0]]])[None]
    torch.testing.assert_close(out, expected)  # ties keep every max; the max keeps its value
    torch.testing.assert_close(x, before)  # input untouched
    # PPC's slip: competing set {background, classes 2..C}; class 1 passes through
    quirk = max_onehot(x, ppc_channel_quirk=True)
    expected_quirk = torch.tensor([[[0.0, 0.3]], [[0.2, 0.9]], [[0.7, 0.0]], [[0.7, 0.0]]])[None]
    torch.testing.assert_close(quirk, expected_quirk)


def _ecr_inputs():
    cam_small = _cams([[1.0, 3.0], [5.0, 9.0]], background=-2.0)  # fg [0, .25, .5, 1], bg 1 - fg
    cam_large = _cams([[9.0, 5.0], [3.0, 1.0]], background=6.0)  # fg [1, .5, .25, 0], bg 1 - fg
    refined_large = torch.tensor([[[[0.0, 4.0], [4.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]]]])  # -> [0,1,1,1], [0,0,0,1]
    refined_small = torch.tensor([[[[0.0, 2.0], [3.0, 4.0]], [[4.0, 2.0], [1.0, 0.0]]]])  # -> the large targets
    return cam_large, cam_small, refined_large, refined_small


def test_equivariant_cross_regularization_hand():
    cam_large, cam_small, refined_large, refined_small = (t.clone().requires_grad_() for t in _ecr_inputs())
    labels = torch.ones(1, 1)
    # d1 = |onehot(small) - refined_large|: bg |[1,.75,.5,0] - [0,1,1,1]| = [1,.25,.5,1]; fg [0,.25,.5,0]
    # d2 = |onehot(large) - refined_small| ~ 0
    # k = int(2 * 4 * 0.2) = 1 -> 1 + 0;  k = 4 (top_ratio .5) -> mean(1, 1, .5, .5) = .75
    loss = equivariant_cross_regularization(cam_large, cam_small, refined_large, refined_small, labels)
    assert loss.shape == () and loss.item() == pytest.approx(1.0, abs=1e-4)
    loss_half = equivariant_cross_regularization(
        cam_large, cam_small, refined_large, refined_small, labels, top_ratio=0.5
    )
    assert loss_half.item() == pytest.approx(0.75, abs=1e-4)
    # pairing: the small view's target goes with the large view's refined CAM (swapped: 2)
    swapped = equivariant_cross_regularization(cam_large, cam_small, refined_small, refined_large, labels)
    assert swapped.item() == pytest.approx(2.0, abs=1e-4)
    (loss + loss_half + swapped).backward()
    assert cam_large.grad is None and cam_small.grad is None  # targets are the other view, detached
    assert refined_large.grad.abs().sum() > 0 and refined_small.grad.abs().sum() > 0


def test_equivariant_cross_regularization_resizes_large_view():
    # 3x3 -> 2x2 with align_corners=True samples the corners; fill the rest between min and max so the
    # max-norm of the large view equals that of its corners: the loss equals the same-size one.
    def grow(t: torch.Tensor) -> torch.Tensor:
        big = t.mean(dim=(2, 3), keepdim=True).expand(-1, -1, 3, 3).clone()
        big[..., ::2, ::2] = t
        return big

    cam_large, cam_small, refined_large, refined_small = _ecr_inputs()
    labels = torch.ones(1, 1)
    same_size = equivariant_cross_regularization(cam_large, cam_small, refined_large, refined_small, labels)
    resized = equivariant_cross_regularization(grow(cam_large), cam_small, grow(refined_large), refined_small, labels)
    assert resized.item() == pytest.approx(same_size.item(), abs=1e-6)
    assert equivariant_regularization(grow(cam_small), cam_small, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_equivariant_cross_regularization_masks_absent_classes():
    cam_large, cam_small, refined_large, refined_small = _ecr_inputs()

    def add_garbage(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, torch.rand(1, 1, 2, 2) * 50], dim=1)

    with_absent = equivariant_cross_regularization(
        *(add_garbage(t) for t in (cam_large, cam_small, refined_large, refined_small)),
        torch.tensor([[1.0, 0.0]]),
        top_ratio=1 / 12,  # k = int(3 * 4 / 12) = 1, as in the single-class case
    )
    assert with_absent.item() == pytest.approx(1.0, abs=1e-4)


def test_labels_with_background_and_validation():
    out = labels_with_background(torch.tensor([[True, False]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="C\\+1 >= 2"):
        background_suppression(torch.zeros(1, 1, 2, 2), torch.zeros(1, 0))
    with pytest.raises(ValueError, match="top_ratio"):
        equivariant_cross_regularization(*_ecr_inputs(), torch.ones(1, 1), top_ratio=0.0)
