"""fsae.losses.attach_background against a direct per-pixel computation, and the two faults it exists to avoid."""

from __future__ import annotations

import math

import pytest
import torch

from fsae.losses import FSAELoss, attach_background


def direct(maps, labels=None, gate=None, bg_power=1.0, floor=1e-4):
    """Pixel by pixel in float64: the formula of fsae/losses/attach.py written out."""
    b, c, h, w = maps.shape
    out = torch.empty(b, c + 1, h, w, dtype=torch.float64)
    for i in range(b):
        peaks = [max(float(maps[i, k].max()), 0.0) for k in range(c)]
        for y in range(h):
            for x in range(w):
                n = []
                for k in range(c):
                    v = max(float(maps[i, k, y, x]), 0.0) / (peaks[k] + 1e-5)
                    if gate is not None:
                        v *= 1.0 / (1.0 + math.exp(-float(gate[i, k])))
                    if labels is not None and not labels[i, k]:
                        v = 0.0
                    n.append(v)
                bg = max(1.0 - max(n), 0.0)
                if bg_power != 1.0:
                    bg = max(bg, floor) ** bg_power
                for k, v in enumerate([bg, *n]):
                    out[i, k, y, x] = math.log(max(v, floor)) - math.log(floor)
    return out


@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("with_gate", [False, True])
@pytest.mark.parametrize("bg_power", [1.0, 8.0])
def test_matches_the_direct_computation(with_labels, with_gate, bg_power):
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    maps[1, 2] = -1.0  # a silent map: zero everywhere after the ReLU
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]], dtype=torch.float64) if with_labels else None
    gate = torch.randn(2, 4, generator=g, dtype=torch.float64) if with_gate else None
    out = attach_background(maps, labels, gate_logits=gate, bg_power=bg_power)
    assert out.shape == (2, 5, 5, 6) and out.dtype == torch.float64
    torch.testing.assert_close(out, direct(maps, labels, gate, bg_power), atol=1e-10, rtol=0)
    assert out.min() >= 0 and out.max() <= -math.log(1e-4) + 1e-9


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_and_non_contiguous_input_give_float32(dtype):
    maps = torch.rand(2, 6, 3, 4).transpose(2, 3)  # (2, 6, 4, 3), not contiguous
    labels = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    out = attach_background(maps.to(dtype), labels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, attach_background(maps.to(dtype).float().contiguous(), labels))


def test_edge_cases_one_pixel_one_class_and_no_label():
    one = attach_background(torch.tensor([[[[2.0]]]]), torch.ones(1, 1))  # 1x1 map, one class
    # n = 2 / (2 + 1e-5), background 1 - n ~ 5e-6 at the floor
    torch.testing.assert_close(one[0, :, 0, 0], torch.tensor([0.0, math.log(2 / (2 + 1e-5) / 1e-4)]))
    none = attach_background(torch.rand(1, 3, 4, 4), torch.zeros(1, 3))  # no class present: all background
    assert torch.all(none[:, 0] == -math.log(1e-4)) and torch.all(none[:, 1:] == 0)


def test_an_absent_class_does_not_make_a_present_one_confident():
    """Label-free, an absent class that dominates a pixel suppresses the background there, and a weak present class
    becomes the teacher's confident label; with the labels the pixel is background."""
    maps = torch.zeros(1, 2, 1, 2)
    maps[0, 0, 0, 0] = 1.0  # present class 1: strong at pixel 0 (its peak), weak at pixel 1
    maps[0, 0, 0, 1] = 0.02
    maps[0, 1, 0, 1] = 5.0  # absent class 2 peaks at pixel 1
    labels = torch.tensor([[1.0, 0.0]])
    probs_free = attach_background(maps).softmax(1)
    probs_labelled = attach_background(maps, labels).softmax(1)
    # FSAE's masking (absent="zero") sets class 2's logit to 0 = the floor: what the teacher sees at pixel 1
    masked_free = attach_background(maps).clone()
    masked_free[:, 2] = 0
    assert masked_free.softmax(1)[0, 1, 0, 1] > 0.95  # label-free: class 1 "confident" at 0.02 of its peak
    assert probs_labelled[0, 0, 0, 1] > 0.95  # with labels: background
    assert probs_free[0, 2, 0, 1] > 0.95 and probs_labelled[0, 2, 0, 1] < 1e-3


def test_the_gradient_cannot_expand_a_map_by_lowering_its_peak():
    """FSAE pushes a ring pixel towards class 1; with the peak detached the peak pixel gets no gradient."""
    for detach_peak, peak_grad_sign in ((True, 0.0), (False, 1.0)):
        maps = torch.tensor([[[[4.0, 1.0, 0.5]]]], requires_grad=True)  # peak at pixel 0
        logits = attach_background(maps, torch.ones(1, 1), detach_peak=detach_peak)
        loss = -logits.log_softmax(1)[0, 1, 0, 2]  # raise class 1 at pixel 2
        loss.backward()
        assert maps.grad[0, 0, 0, 2] < 0  # the ring pixel's own activation goes up
        assert torch.sign(maps.grad[0, 0, 0, 0]) == peak_grad_sign  # without the detach: descent lowers the peak


def test_fsae_loss_on_attached_logits_is_finite_and_masks_confident_pixels():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 3, 8, 8, generator=g).mul(3).requires_grad_()
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    criterion = FSAELoss()
    loss = criterion(attach_background(maps, labels), attach_background(maps.detach(), labels), labels)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(maps.grad).all()
    assert criterion.last_stats["conf_fraction"] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maps": torch.rand(3, 4, 4)}, "maps must be"),
        ({"labels": torch.ones(2, 3)}, "labels must have shape"),
        ({"gate_logits": torch.ones(1, 3)}, "gate_logits must have shape"),
        ({"bg_power": 0}, "bg_power"),
        ({"floor": 1.0}, "floor"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"maps": torch.rand(1, 2, 4, 4), **kwargs}
    with pytest.raises(ValueError, match=message):
        attach_background(**args)
