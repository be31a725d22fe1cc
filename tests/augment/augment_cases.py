"""Shared inputs and references for the fsae.augment tests: PIL oracles, a per-sample loop, test images."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from fsae.augment import functional as AF


def pil_ops(solarize_scale: float = 255.0) -> dict[str, Callable[[Image.Image, float], Image.Image]]:
    """PIL implementations of the RandAugment ops, as the original research code called them on uint8 images
    (and PIL's Gaussian blur); solarize's threshold is ``solarize_scale * v`` (255: a fraction of full scale, as
    the float ops take it; 1: a level, as the uint8 ops take it)."""
    return {
        "autocontrast": lambda img, v: ImageOps.autocontrast(img),
        "brightness": lambda img, v: ImageEnhance.Brightness(img).enhance(v),
        "color": lambda img, v: ImageEnhance.Color(img).enhance(v),
        "contrast": lambda img, v: ImageEnhance.Contrast(img).enhance(v),
        "sharpness": lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
        "equalize": lambda img, v: ImageOps.equalize(img),
        "identity": lambda img, v: img,
        "posterize": lambda img, v: ImageOps.posterize(img, int(v)),
        "solarize": lambda img, v: ImageOps.solarize(img, solarize_scale * v),
        "blur": lambda img, v: img.filter(ImageFilter.GaussianBlur(radius=v)),
    }


#: :func:`pil_ops` with thresholds as fractions of full scale (the float ops' magnitudes).
PIL_OPS = pil_ops()

#: The batched in-place ops under test, by the same names.
OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "autocontrast": AF.autocontrast_,
    "brightness": AF.brightness_,
    "color": AF.color_,
    "contrast": AF.contrast_,
    "sharpness": AF.sharpness_,
    "equalize": AF.equalize_,
    "identity": AF.identity_,
    "posterize": AF.posterize_,
    "solarize": AF.solarize_,
    "hue": AF.hue_,
    "blur": functools.partial(AF.gaussian_blur_, kernel_size=13),  # the window StrongPerturbation uses
}

#: Ops whose output pixel depends only on the input pixel (and per-image statistics).
POINTWISE = ("autocontrast", "brightness", "color", "contrast", "equalize", "identity", "posterize", "solarize", "hue")
#: Ops that look at neighbours, with symmetric kernels.
LOCAL = ("sharpness", "blur")


def magnitudes(name: str, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample magnitudes in the range the perturbations draw for op ``name`` (CPU, float32)."""
    u = torch.rand(batch, generator=generator)
    if name == "posterize":
        return torch.floor(4.0 + 4.0 * u)
    if name == "solarize":
        return u
    if name == "hue":
        return 0.5 * (2.0 * u - 1.0)
    if name == "blur":
        return 0.1 + 1.9 * u
    return 0.05 + 0.9 * u


def random_uint8(batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 3, H, W) uint8 images: smooth colour fields plus noise, each image with its own value range.

    A restricted range per image makes AutoContrast and Equalize non-trivial.
    """
    low = torch.rand(batch, 3, max(2, height // 6), max(2, width // 6), generator=generator)
    smooth = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.rand(batch, 3, height, width, generator=generator)
    x = 0.8 * smooth + 0.2 * noise
    lo = 0.3 * torch.rand(batch, 3, 1, 1, generator=generator)
    hi = 1.0 - 0.3 * torch.rand(batch, 3, 1, 1, generator=generator)
    return (255.0 * (lo + (hi - lo) * x)).round().clamp(0, 255).to(torch.uint8)


def pil_map(name: str, images: torch.Tensor, mags: torch.Tensor) -> torch.Tensor:
    """Apply the PIL op ``name`` image by image to a (B, 3, H, W) uint8 batch; returns uint8."""
    out = []
    for image, magnitude in zip(images, mags.tolist(), strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        out.append(torch.from_numpy(np.array(PIL_OPS[name](pil, magnitude))).permute(2, 0, 1))
    return torch.stack(out)


def step_image(batch: int, height: int, width: int, left=(0.1, 0.2, 0.3), right=(0.8, 0.6, 0.9)) -> torch.Tensor:
    """(B, 3, H, W): colour ``left`` in columns ``< width // 2``, ``right`` from there on."""
    x = torch.empty(batch, 3, height, width)
    x[..., : width // 2] = torch.tensor(left).view(1, 3, 1, 1)
    x[..., width // 2 :] = torch.tensor(right).view(1, 3, 1, 1)
    return x


def per_sample_loop(
    images: torch.Tensor, choices: torch.Tensor, mags: torch.Tensor, table, clone: bool = True
) -> torch.Tensor:
    """Oracle for the grouped application: every sample through its own ops, one at a time."""
    out = []
    for i in range(images.shape[0]):
        x = images[i : i + 1].clone() if clone else images[i : i + 1]
        for slot in range(choices.shape[1]):
            op = table[int(choices[i, slot])]
            if op is not None:
                x = op(x, mags[i, slot : slot + 1].to(x.device))
        out.append(x)
    return torch.cat(out)


def mostly_equal(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, fraction: float = 1e-3) -> bool:
    """All but a ``fraction`` of the elements within ``atol``.

    Quantising and thresholding ops (equalize, posterize, solarize) turn a last-bit difference of
    their input (a different summation order, a different convolution algorithm) into a full level
    or an inversion on the rare pixel that sits on a boundary; everything else must agree.
    """
    far = (a.float().cpu() - b.float().cpu()).abs() > atol
    return bool(far.float().mean() <= fraction)
