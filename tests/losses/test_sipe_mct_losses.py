"""fsae.losses.sipe and fsae.losses.mctformer against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from fsae.losses.mctformer import mctformer_loss
from fsae.losses.sipe import sipe_loss


def test_sipe_loss_hand():
    logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0]])
    norm_cam = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]], [[0.0, 0.0]]]], requires_grad=True)  # (1, 3, 1, 2)
    is_cam = torch.tensor([[[[1.0, 2.0]], [[0.0, 4.0]], [[0.0, 0.0]]]], requires_grad=True)
    out = sipe_loss(logits, labels, norm_cam, is_cam)
    assert set(out) == {"cls", "gsc"}
    assert out["cls"].shape == () and out["cls"].item() == pytest.approx(math.log(2), abs=1e-6)
    # is_cam / (max + 1e-5): bg [.5, 1], class 1 [0, 1], class 2 [0, 0] (0 / 1e-5);
    # |diff| = bg [0, 0], class 1 [.5, 1], class 2 [0, 0] -> 1.5 / 6 (background channel included)
    assert out["gsc"].dtype == torch.float32 and out["gsc"].item() == pytest.approx(1.5 / 6, abs=1e-5)
    (out["cls"] + out["gsc"]).backward()
    assert logits.grad.abs().sum() > 0
    assert norm_cam.grad[0, 1].abs().sum() > 0 and is_cam.grad[0, 1].abs().sum() > 0
    # the per-map max is differentiated too: class 1's maximum pixel gets gradient through the denominator
    # and the numerator; at the exact maximum they nearly cancel (d(x / x) = 0), so only the eps is left
    assert is_cam.grad[0, 1, 0, 1].abs() < 1e-4


def test_sipe_loss_validation():
    with pytest.raises(ValueError, match="is_cam must have the shape"):
        sipe_loss(torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 1))


def test_mctformer_loss_hand():
    tokens = torch.tensor([[1.0, -1.0]], requires_grad=True)
    patches = torch.tensor([[[[0.0, 2.0], [1.0, 1.0]], [[-2.0, 0.0], [-1.0, -1.0]]]], requires_grad=True)
    labels = torch.tensor([[True, False]])
    out = mctformer_loss(tokens, patches, labels)
    assert set(out) == {"cls_token", "cls_patch"}
    expected = math.log1p(math.exp(-1.0))  # both classes have margin 1 on the right side
    assert out["cls_token"].item() == pytest.approx(expected, abs=1e-6)
    assert out["cls_patch"].item() == pytest.approx(expected, abs=1e-6)  # GAP = [1, -1], not the max
    sum(out.values()).backward()
    for c in range(2):  # GAP: every pixel of a map gets the same gradient
        grad = patches.grad[0, c]
        assert grad.abs().min() > 0
        torch.testing.assert_close(grad, torch.full_like(grad, grad[0, 0].item()))
    assert out["cls_token"].dtype == torch.float32
    with pytest.raises(ValueError, match="must match token_logits"):
        mctformer_loss(tokens, patches[:, :1], labels)
