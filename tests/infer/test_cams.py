"""multiscale_cams against models whose CAMs are known, computed by hand with the METHOD.md §6 recipe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsae.infer import multiscale_cams


class ColourModel(nn.Module):
    """Flip-equivariant CAM model: a fixed 1x1 conv on pixel colours, ``(N, 3, h, w) -> (N, C+1, h, w)``.

    Background logit 0; class k's logit is ``gain_k * (red - 0.5 * green) + bias_k``, so where the image
    is red the foreground classes win.  Records every input shape and whether it ran in training mode.
    """

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes + 1, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for k in range(1, num_classes + 1):
                self.conv.weight[k, 0] = 1.5 * k
                self.conv.weight[k, 1] = -0.75 * k
                self.conv.bias[k] = 0.2 * k - 0.5
        self.dropout = nn.Dropout(0.5)  # would randomise the output if the model stayed in training mode
        self.shapes: list[tuple[int, ...]] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.modes.append(self.training)
        return self.dropout(self.conv(x))


class SkewedModel(ColourModel):
    """Not flip-equivariant: an asymmetric 3x3 conv at stride 2 plus a left-to-right ramp on class 1."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__(num_classes)
        self.conv = nn.Conv2d(3, num_classes + 1, 3, stride=2, padding=1)
        with torch.no_grad():
            self.conv.weight.normal_(0, 0.7, generator=torch.Generator().manual_seed(0))
            self.conv.weight[:, :, :, 0] += 0.8  # weight on the left neighbour only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        ramp = torch.zeros(logits.shape[1], 1, logits.shape[-1])  # (C+1, 1, w): class 1 only
        ramp[1, 0] = torch.linspace(-2, 2, logits.shape[-1])
        return logits + ramp


def by_hand(model, image, labels, sizes, flip: bool) -> torch.Tensor:
    """The recipe one pass at a time: for each input size and (flip) mirror image, softmax over C+1,
    upsample bilinearly to the image size, keep the foreground, un-flip; sum; zero absent classes;
    divide each map by its max + 1e-5."""
    height, width = image.shape[-2:]
    total = torch.zeros(image.shape[0], labels.shape[1], height, width, dtype=torch.float64)
    for size in sizes:
        x = image if size == (height, width) else F.interpolate(image, size, mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            logits = model(x.flip(-1) if mirrored else x)
            probs = F.interpolate(logits.softmax(1), (height, width), mode="bilinear", align_corners=False)[:, 1:]
            total += (probs.flip(-1) if mirrored else probs).double()
    total = total * labels[:, :, None, None]
    return (total / (total.amax((2, 3), keepdim=True) + 1e-5)).float()


def test_single_scale_colour_model_gives_the_closed_form():
    # One scale, no resizing, a pointwise model: the CAM of class k is p_k / max p_k with
    # p = softmax([0, gain_1 r' + b_1, ..., gain_C r' + b_C]) and r' = red - 0.5 green, whatever the flip.
    image = torch.rand(2, 3, 10, 14)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    model = ColourModel().eval()
    out = multiscale_cams(model, image, labels, scales=(1.0,))
    r = image[:, 0] - 0.5 * image[:, 1]
    logits = torch.stack([torch.zeros_like(r)] + [1.5 * k * r + 0.2 * k - 0.5 for k in (1, 2, 3)], 1)
    p = logits.softmax(1)[:, 1:] * labels[:, :, None, None]
    expected = 2 * p / (2 * p.amax((2, 3), keepdim=True) + 1e-5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert model.shapes == [(4, 3, 10, 14)]  # image and mirror image in one batch


@pytest.mark.parametrize("model_cls", [ColourModel, SkewedModel])
def test_multiscale_matches_the_recipe_pass_by_pass(model_cls):
    image = torch.randn(2, 3, 24, 32)
    labels = torch.tensor([[1, 1, 0], [0, 0, 1]])
    model = model_cls().eval()
    out = multiscale_cams(model, image, labels)  # default scales (0.5, 1, 1.5, 2), flip
    sizes = [shape[-2:] for shape in model.shapes]
    assert sizes == [(12, 16), (24, 32), (36, 48), (48, 64)]
    assert all(shape[0] == 4 for shape in model.shapes)
    expected = by_hand(model, image, labels, sizes, flip=True)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert out.shape == (2, 3, 24, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    present = labels.bool()
    torch.testing.assert_close(out.amax((2, 3))[present], torch.ones(int(present.sum())), rtol=0, atol=1e-4)
    assert not out[~present].any()  # absent classes exactly zero


def test_flip_branch_is_unflipped():
    image = torch.randn(1, 3, 20, 30)
    labels = torch.ones(1, 3, dtype=torch.long)
    # A flip-equivariant model: the mirror pass, un-flipped, repeats the plain pass (any input).
    equivariant = ColourModel().eval()
    symmetric = image + image.flip(-1)
    for x in (symmetric, image):
        torch.testing.assert_close(
            multiscale_cams(equivariant, x, labels),
            multiscale_cams(equivariant, x, labels, flip=False),
            atol=1e-4,
            rtol=0,
        )
    # A model that is not: the flipped branch changes the result, and equals the mirror pass un-flipped.
    skewed = SkewedModel().eval()
    with_flip = multiscale_cams(skewed, image, labels, scales=(1.0,))
    without = multiscale_cams(skewed, image, labels, scales=(1.0,), flip=False)
    assert (with_flip - without).abs().max() > 0.05
    torch.testing.assert_close(with_flip, by_hand(skewed, image, labels, [(20, 30)], flip=True), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(without, by_hand(skewed, image, labels, [(20, 30)], flip=False), rtol=1e-4, atol=1e-5)
    # Not un-flipping the mirror pass would be a different answer: the test above can tell.
    mirror = F.interpolate(skewed(image.flip(-1)).softmax(1), (20, 30), mode="bilinear", align_corners=False)[:, 1:]
    plain = F.interpolate(skewed(image).softmax(1), (20, 30), mode="bilinear", align_corners=False)[:, 1:]
    wrong = plain + mirror
    wrong = wrong / (wrong.amax((2, 3), keepdim=True) + 1e-5)
    assert (wrong - with_flip).abs().max() > 0.05


def test_training_mode_is_restored_and_eval_mode_is_used():
    image, labels = torch.rand(1, 3, 16, 16), torch.tensor([[1, 0, 0]])
    model = ColourModel()
    assert model.training
    first = multiscale_cams(model, image, labels, scales=(1.0, 0.5))
    assert model.training and model.modes == [False, False]
    torch.testing.assert_close(multiscale_cams(model, image, labels, scales=(1.0, 0.5)), first)  # no dropout
    model.eval()
    multiscale_cams(model, image, labels, scales=(1.0,))
    assert not model.training
    # restored even when the call fails
    model.train()
    with pytest.raises(ValueError, match="model returned"):
        multiscale_cams(model, image, torch.tensor([[1, 0]]))  # C=2 labels for a C=3 model
    assert model.training


def test_odd_sizes_and_fractional_scales():
    image = torch.randn(1, 3, 37, 51)
    labels = torch.tensor([[0, 1, 1]])
    model = SkewedModel().eval()
    out = multiscale_cams(model, image, labels, scales=(0.5, 1.5))
    assert out.shape == (1, 3, 37, 51)
    sizes = [shape[-2:] for shape in model.shapes]
    for (h, w), scale in zip(sizes, (0.5, 1.5), strict=True):
        assert abs(h - 37 * scale) <= 0.5 and abs(w - 51 * scale) <= 0.5
    torch.testing.assert_close(out, by_hand(model, image, labels, sizes, flip=True), rtol=1e-4, atol=1e-5)
    assert out.amax((2, 3))[0, 1:].min() > 1 - 1e-4 and not out[0, 0].any()


def test_plain_callable_and_bad_shapes():
    image, labels = torch.rand(2, 3, 12, 12), torch.tensor([[1, 0, 0], [0, 0, 1]])
    model = ColourModel().eval()
    out = multiscale_cams(lambda x: model(x), image, labels, scales=(1.0,))  # any callable, no `training`
    assert out.shape == (2, 3, 12, 12)
    with pytest.raises(ValueError, match=r"image must be \(B, 3, H, W\)"):
        multiscale_cams(model, image[0], labels)
    with pytest.raises(ValueError, match=r"image must be \(B, 3, H, W\)"):
        multiscale_cams(model, image[:, :1], labels)
    with pytest.raises(ValueError, match=r"labels must be \(B, C\) with B=2"):
        multiscale_cams(model, image, labels[:1])
    with pytest.raises(ValueError, match="labels must be"):
        multiscale_cams(model, image, labels[0])
    with pytest.raises(ValueError, match="scales"):
        multiscale_cams(model, image, labels, scales=())
    with pytest.raises(ValueError, match=r"expected \(N, C\+1, h, w\) with C=3"):
        multiscale_cams(lambda x: model(x).mean((2, 3)), image, labels)


def test_with_a_real_method():
    from fsae.methods import build_method

    method = build_method("ppc", num_classes=20, backbone="resnet10t", pretrained=False, small_size=64)
    labels = torch.zeros(1, 20, dtype=torch.long)
    labels[0, [3, 14]] = 1
    out = multiscale_cams(method, torch.randn(1, 3, 64, 80), labels)
    assert method.training  # restored
    assert out.shape == (1, 20, 64, 80) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out.amax((2, 3))[0, [3, 14]], torch.ones(2), rtol=0, atol=1e-4)
    assert not out[0, labels[0] == 0].any()
