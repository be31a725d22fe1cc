"""Constants shared by every layer (defined once; ``tests/test_constants.py`` checks them against timm's)."""

from __future__ import annotations

__all__ = ["IMAGENET_MEAN", "IMAGENET_MEAN_RGB", "IMAGENET_STD"]

# ImageNet RGB mean and std on [0, 1] values (timm.data.IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The mean as uint8 levels, round(255 * mean): padding an image with it gives ~0 after ImageNet normalisation, as
# the authors' code, which padded the normalised image with zeros.
IMAGENET_MEAN_RGB: tuple[int, int, int] = (124, 116, 104)
