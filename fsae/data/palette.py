"""VOC class names, the VOC colour palette, and palette-PNG label maps.

Label maps are ``uint8 (H, W)`` arrays with values 0..C (0 = background) and
255 = ignore (object boundaries in VOC); on disk they are palette ("P" mode)
PNGs whose pixel values are the class ids, as in ``SegmentationClass`` and
``SegmentationClassAug``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IGNORE_INDEX", "VOC_CLASSES", "read_label_png", "voc_palette", "write_label_png"]

IGNORE_INDEX = 255

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def voc_palette() -> list[int]:
    """The 256-entry VOC colour map as a flat ``[r, g, b, ...]`` list (768 ints).

    Entry ``i`` spreads the bits of ``i`` over the three channels, most
    significant first (the devkit's ``labelcolormap``); 255 is (224, 224, 192).
    """
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [r, g, b]
    return palette


def write_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write a ``uint8 (H, W)`` label map as a VOC palette PNG."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"label map must be uint8 (H, W), got {label.dtype} {label.shape}")
    image = Image.fromarray(label, mode="P")
    image.putpalette(voc_palette())
    image.save(path)


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label PNG as ``uint8 (H, W)`` class ids (palette indices, or gray values)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: label PNG must be palette (P) or grayscale (L), got mode {image.mode}")
        return np.array(image, dtype=np.uint8)
