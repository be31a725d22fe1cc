"""multiscale_cams against models whose CAMs are known, computed by hand with the docs/method.md §6 recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fsae.augment import imagenet_normalize
from fsae.infer import multiscale_cams
from fsae.infer.cams import pil_bicubic_resize, scaled_size

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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


def pil_float(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 3, H, W)`` float -> ``size``, each channel resized by PIL bicubic in its float ("F") mode."""
    out = [[np.asarray(Image.fromarray(c.numpy()).resize(size[::-1], Image.BICUBIC)) for c in a] for a in image]
    return torch.from_numpy(np.array(out))


def authors_input(image_uint8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The authors' network input at ``size`` = (h, w): PIL bicubic on the uint8 RGB image, then
    ``(x / 255. - mean) / std`` in numpy float64 stored as float32, HWC -> CHW."""
    out = []
    for a in image_uint8:
        resized = np.asarray(Image.fromarray(a.permute(1, 2, 0).numpy()).resize(size[::-1], resample=Image.BICUBIC))
        normalised = np.empty(resized.shape, np.float32)
        for c in range(3):
            normalised[..., c] = (resized[..., c] / 255.0 - MEAN[c]) / STD[c]
        out.append(normalised.transpose(2, 0, 1))
    return torch.from_numpy(np.array(out))


def bilinear(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size, mode="bilinear", align_corners=False)


def by_hand(model, image, labels, sizes, flip: bool, resize=None) -> torch.Tensor:
    """The recipe one pass at a time: for each input size (``resize(image, size)``, by default bilinear and
    the image itself at its own size) and (flip) mirror image, softmax over C+1, upsample bilinearly to the
    image size, keep the foreground, un-flip; sum; zero absent classes; divide each map by its max + 1e-5."""
    height, width = image.shape[-2:]
    total = torch.zeros(image.shape[0], labels.shape[1], height, width, dtype=torch.float64)
    for size in sizes:
        x = resize(image, size) if resize is not None else image if size == (height, width) else bilinear(image, size)
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


@pytest.mark.parametrize("scale_resize", ["pil-bicubic", "tensor-bilinear"])
@pytest.mark.parametrize("model_cls", [ColourModel, SkewedModel])
def test_multiscale_matches_the_recipe_pass_by_pass(model_cls, scale_resize):
    image = torch.randn(2, 3, 24, 32)
    labels = torch.tensor([[1, 1, 0], [0, 0, 1]])
    model = model_cls().eval()
    out = multiscale_cams(model, image, labels, scale_resize=scale_resize)  # default scales (0.5, 1, 1.5, 2), flip
    sizes = [shape[-2:] for shape in model.shapes]
    assert sizes == [(12, 16), (24, 32), (36, 48), (48, 64)]
    assert all(shape[0] == 4 for shape in model.shapes)
    resize = pil_float if scale_resize == "pil-bicubic" else None
    expected = by_hand(model, image, labels, sizes, flip=True, resize=resize)
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
    out = multiscale_cams(model, image, labels, scales=(0.5, 1.5), scale_resize="tensor-bilinear")
    assert out.shape == (1, 3, 37, 51)
    sizes = [shape[-2:] for shape in model.shapes]
    assert sizes == [(18, 26), (56, 76)]  # Python's round: 18.5 -> 18, 25.5 -> 26, 55.5 -> 56, 76.5 -> 76
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


# ---------------------------------------------------------------------------------------------------------------
# The input resizing of each scale: the authors' PIL bicubic on the uint8 image (default) or the tensor bilinear.


class InputRecorder(nn.Module):
    """Records the network inputs; CAM logits from ColourModel."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ColourModel()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.inner(x)


def stripes(batch: int, height: int, width: int) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)``: random colours on 1-pixel vertical stripes (aliasing shows when shrinking them)."""
    image = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8)
    image[..., ::2] = (image[..., ::2].int() // 4).to(torch.uint8)
    return image


def test_pil_bicubic_resize_is_pil_resize():
    image = stripes(2, 15, 22)
    out = pil_bicubic_resize(image, (8, 11))
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 8, 11)
    for a, b in zip(image, out, strict=True):
        expected = Image.fromarray(a.permute(1, 2, 0).numpy()).resize((11, 8), resample=Image.BICUBIC)
        assert np.array_equal(b.permute(1, 2, 0).numpy(), np.asarray(expected))
    floats = torch.randn(2, 3, 15, 22)
    torch.testing.assert_close(pil_bicubic_resize(floats, (30, 44)), pil_float(floats, (30, 44)), rtol=0, atol=0)
    assert pil_bicubic_resize(image, (15, 22)) is image  # at its own size: untouched


def test_uint8_input_goes_through_pil_bicubic_then_the_normalisation():
    image, labels = stripes(2, 21, 31), torch.tensor([[1, 0, 1], [0, 1, 0]])
    model = InputRecorder().eval()
    out = multiscale_cams(model, image, labels, scales=(0.5, 1.0, 1.5))
    sizes = [tuple(x.shape[-2:]) for x in model.inputs]
    assert sizes == [(10, 16), (21, 31), (32, 46)]  # round(10.5) = 10, round(15.5) = 16, round(31.5) = 32, 46.5 -> 46
    for x, size in zip(model.inputs, sizes, strict=True):
        expected = authors_input(image, size)
        assert x.dtype == torch.float32 and x.shape[0] == 4  # the batch and its mirror in one pass
        torch.testing.assert_close(x[:2], expected, rtol=0, atol=0)  # bit for bit the authors' input
        torch.testing.assert_close(x[2:], expected.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(imagenet_normalize(image), authors_input(image, (21, 31)), rtol=0, atol=0)
    expected = by_hand(model.inner, image, labels, sizes, flip=True, resize=authors_input)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_tensor_bilinear_is_the_former_path_and_differs_from_pil():
    image, labels = stripes(1, 24, 36), torch.tensor([[1, 1, 1]])
    model = InputRecorder().eval()
    bilinear_out = multiscale_cams(model, image, labels, scales=(0.5,), scale_resize="tensor-bilinear")
    torch.testing.assert_close(model.inputs[0][:1], bilinear(imagenet_normalize(image), (12, 18)), rtol=0, atol=0)
    former = multiscale_cams(model, imagenet_normalize(image), labels, scales=(0.5,), scale_resize="tensor-bilinear")
    torch.testing.assert_close(bilinear_out, former, rtol=0, atol=0)
    pil_out = multiscale_cams(model, image, labels, scales=(0.5,))
    # PIL's bicubic spans 4 source pixels per output pixel when halving (bilinear: 2): other inputs, other CAMs
    assert (model.inputs[-1][:1] - model.inputs[0][:1]).abs().max() > 0.2
    assert (pil_out - bilinear_out).abs().max() > 0.1


def test_float_input_with_pil_is_the_uint8_path_up_to_rounding():
    # a smooth image (bicubic does not overshoot 0..255, so the uint8 path clips nothing)
    ramp = torch.linspace(0, 1, 26)[None, :] * torch.linspace(0.3, 1, 18)[:, None]
    image = (torch.stack([ramp, 1 - ramp, ramp.flip(-1)]) * 200 + 20).round().to(torch.uint8)[None].repeat(2, 1, 1, 1)
    labels = torch.tensor([[1, 0, 1], [1, 1, 0]])
    model = InputRecorder().eval()
    exact = multiscale_cams(model, image, labels)
    from_uint8 = [x.clone() for x in model.inputs]
    model.inputs.clear()
    from_float = multiscale_cams(model, imagenet_normalize(image), labels)
    assert from_float.dtype == torch.float32
    # the float path skips PIL's rounding to uint8 after each of its two 1-D passes (horizontal, then vertical):
    # about 1 grey level at most, in normalised units 1 / 255 / 0.224
    gaps = [float((a - b).abs().max()) for a, b in zip(from_uint8, model.inputs, strict=True)]
    assert gaps[1] == 0 and min(gaps[:1] + gaps[2:]) > 0 and max(gaps) <= 1.25 / 255 / 0.224  # scale 1: no resize
    torch.testing.assert_close(from_float, exact, rtol=0, atol=0.01)


def test_batched_images_equal_one_at_a_time():
    image, labels = stripes(3, 17, 23), torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1]])
    model = SkewedModel().eval()
    batched = multiscale_cams(model, image, labels)
    for b in range(3):
        single = multiscale_cams(model, image[b : b + 1], labels[b : b + 1])
        torch.testing.assert_close(batched[b : b + 1], single, rtol=1e-5, atol=1e-6)


def test_tiny_images_no_label_and_one_class():
    model = ColourModel().eval()
    labels = torch.tensor([[1, 0, 0]])
    # 1x1 at scale 0.5: round(0.5) = 0 pixels, which PIL (hence the authors' code) cannot resize to
    with pytest.raises(ValueError, match=r"a 1x1 image at scale 0.5 is 0x0 pixels"):
        multiscale_cams(model, stripes(1, 1, 1), labels)
    with pytest.raises(ValueError, match=r"a 1x3 image at scale 0.5 is 0x2 pixels"):
        scaled_size(1, 3, 0.5)
    assert not model.shapes  # raised before any forward pass
    out = multiscale_cams(model, stripes(1, 1, 1), labels, scales=(1.0, 2.0))
    assert out.shape == (1, 3, 1, 1) and float(out[0, 0]) == pytest.approx(1.0, abs=1e-4)
    assert scaled_size(3, 5, 0.5) == (2, 2)  # round(1.5) = 2, round(2.5) = 2
    model.shapes.clear()
    assert multiscale_cams(model, stripes(1, 3, 5), labels).shape == (1, 3, 3, 5) and model.shapes[0][-2:] == (2, 2)
    # the tensor resize keeps its former clamp to 1 pixel
    assert multiscale_cams(model, stripes(1, 1, 1), labels, scale_resize="tensor-bilinear").shape == (1, 3, 1, 1)
    # no label present: every map 0; one class: only its map, peaking at 1
    image = stripes(1, 12, 16)
    assert not multiscale_cams(model, image, torch.zeros(1, 3)).any()
    one = multiscale_cams(model, image, labels)
    assert float(one[0, 0].max()) == pytest.approx(1.0, abs=1e-4) and not one[0, 1:].any()


def test_bad_resize_and_dtype():
    model = ColourModel().eval()
    with pytest.raises(ValueError, match="scale_resize must be one of"):
        multiscale_cams(model, stripes(1, 8, 8), torch.tensor([[1, 0, 0]]), scale_resize="nearest")
    with pytest.raises(ValueError, match="uint8 .* or float"):
        multiscale_cams(model, stripes(1, 8, 8).long(), torch.tensor([[1, 0, 0]]))
