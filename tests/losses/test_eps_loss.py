"""fsae.losses.eps.saliency_loss against hand computations on a 1x3x2x2 CAM."""

from __future__ import annotations

import pytest
import torch

from fsae.losses.eps import saliency_loss

# per-pixel probabilities (background, class 1, class 2) of the 2x2 map, row-major
PROBS = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.6, 0.2], [0.7, 0.2, 0.1], [0.3, 0.1, 0.6]])


def _logits() -> torch.Tensor:
    """Logits whose softmax is PROBS: ``(1, 3, 2, 2)``."""
    return PROBS.log().t().reshape(1, 3, 2, 2).clone()


def _saliency() -> torch.Tensor:
    """4x4 saliency; nearest resizing to 2x2 reads [0,0], [0,2], [2,0], [2,2] = .9, .2, 0, .7."""
    sal = torch.full((1, 1, 4, 4), 0.45)
    sal[0, 0, 0, 0], sal[0, 0, 0, 2], sal[0, 0, 2, 0], sal[0, 0, 2, 2] = 0.9, 0.2, 0.0, 0.7
    return sal


TARGET = torch.tensor([0.9, 0.2, 0.0, 0.7])


@pytest.mark.parametrize(
    ("labels", "tau", "alpha", "fg", "expected"),
    [
        # overlap: class 1 round(p) = [1,1,0,0] vs round(s) = [1,0,0,1] -> 1 / (2 + 4e-4) = .4999;
        #          class 2 round(p) = [0,0,0,1] -> 1 / (1 + 4e-4) = .9996
        # tau .5: class 1 joins the background: fg = p2, bg = p0 + p1, pred = .5 fg + .5 (1 - bg) = p2
        ([1.0, 1.0], 0.5, 0.5, [0.1, 0.2, 0.1, 0.6], (0.64 + 0.0 + 0.01 + 0.01) / 4),
        # tau .4: both foreground: pred = .5 (p1 + p2) + .5 (1 - p0) = 1 - p0
        ([1.0, 1.0], 0.4, 0.5, [0.9, 0.8, 0.3, 0.7], (0.0 + 0.36 + 0.09 + 0.0) / 4),
        # class 2 absent: in neither map. pred = .5 p1 + .5 (1 - p0) = [.85, .7, .25, .4]
        ([1.0, 0.0], 0.4, 0.5, [0.8, 0.6, 0.2, 0.1], (0.0025 + 0.25 + 0.0625 + 0.09) / 4),
        # alpha .9 (COCO): pred = .9 p1 + .1 (1 - p0) = [.81, .62, .21, .16]
        ([1.0, 0.0], 0.4, 0.9, [0.8, 0.6, 0.2, 0.1], (0.0081 + 0.1764 + 0.0441 + 0.2916) / 4),
    ],
)
def test_saliency_loss_hand(labels, tau, alpha, fg, expected):
    logits = _logits().requires_grad_()
    saliency = _saliency().requires_grad_()
    loss, fg_map = saliency_loss(logits, saliency, torch.tensor([labels]), tau=tau, alpha=alpha)
    assert loss.shape == () and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert fg_map.shape == (1, 1, 2, 2)
    torch.testing.assert_close(fg_map.detach().reshape(-1), torch.tensor(fg), atol=1e-6, rtol=0)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    assert saliency.grad is None  # the saliency map is a target


def test_saliency_loss_overlap_denominator_counts_all_pixels():
    # class 2's single predicted pixel is salient: overlap 1 / (1 + 1e-4 * 4) = .9996 <= .9998 -> background
    logits = _logits()
    _, fg_map = saliency_loss(logits, _saliency(), torch.tensor([[0.0, 1.0]]), tau=0.9998)
    assert fg_map.abs().sum() == 0
    _, fg_map = saliency_loss(logits, _saliency(), torch.tensor([[0.0, 1.0]]), tau=0.9994)
    torch.testing.assert_close(fg_map.reshape(-1), PROBS[:, 2], atol=1e-6, rtol=0)


def test_saliency_loss_dtypes_and_validation():
    loss, fg_map = saliency_loss(_logits().double(), _saliency(), torch.ones(1, 2))
    assert loss.dtype == torch.float64 and fg_map.dtype == torch.float64
    with pytest.raises(ValueError, match="saliency must have shape"):
        saliency_loss(_logits(), torch.zeros(1, 3, 4, 4), torch.ones(1, 2))
    with pytest.raises(ValueError, match="labels must have shape"):
        saliency_loss(_logits(), _saliency(), torch.ones(1, 3))
