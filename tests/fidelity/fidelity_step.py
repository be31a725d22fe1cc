"""What the training-step fixture holds, shared by its generator (``gen_step.py``) and its test (``test_step.py``).

Two optimizer steps of PPC + EPS + FSAE (the authors' ``--iter_size 2``: two batches, two steps) on fixed inputs:
two 96x96 crops per batch cut from the committed photos, a pixel-aligned strong view of each, a synthetic saliency
map, image labels.  Every tensor of the network is summarised, not stored: its norm and four projections onto fixed
random directions (:func:`summarise`), in the authors' layout (their names, background last in ``fc8``).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from fidelity_weights import FIXTURES
from PIL import Image

__all__ = ["CROP", "LABELS", "MEAN", "STD", "inputs", "normalise", "summarise"]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP = 96
# VOC classes 1..20 as 0-based indices of the (B, 20) label vector: cat; bottle + diningtable; cat + dog; bottle
LABELS = (((7,), (4, 10)), ((7, 11), (4,)))
_BOXES = (((120, 40), (200, 120)), ((180, 70), (260, 150)))  # (left, top) per batch, per image
_PHOTOS = ("chelsea.jpg", "coffee.jpg")


def normalise(crops: np.ndarray) -> torch.Tensor:
    """``uint8 (B, H, W, 3)`` -> float32 ``(B, 3, H, W)``: ``(x / 255 - mean) / std``, as the authors' loader."""
    x = crops.astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _saliency(size: int, cy: float, cx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    blob = np.exp(-(((yy - cy) / (0.3 * size)) ** 2 + ((xx - cx) / (0.25 * size)) ** 2))
    return np.round(255 * blob).astype(np.uint8)


def inputs() -> list[dict[str, np.ndarray]]:
    """The two batches: ``weak`` / ``strong`` uint8 ``(2, 96, 96, 3)``, ``saliency`` uint8 ``(2, 96, 96)``,
    ``labels`` float32 ``(2, 20)``.  The strong view is a fixed per-channel gain and offset of the weak one
    (pixel aligned, different statistics) with the right half solarised."""
    photos = [np.asarray(Image.open(FIXTURES / name).convert("RGB")) for name in _PHOTOS]
    batches = []
    for step, boxes in enumerate(_BOXES):
        weak = np.stack([photos[i][y : y + CROP, x : x + CROP] for i, (x, y) in enumerate(boxes)])
        if step == 1:
            weak = weak[:, :, ::-1].copy()  # the second batch flipped
        strong = np.clip(weak.astype(np.float32) * np.array([0.8, 1.1, 0.9]) + np.array([20, -10, 5]), 0, 255)
        strong = strong.astype(np.uint8)
        strong[:, :, CROP // 2 :] = np.where(strong[:, :, CROP // 2 :] >= 128, 255 - strong[:, :, CROP // 2 :],
                                             strong[:, :, CROP // 2 :])  # fmt: skip
        saliency = np.stack([_saliency(CROP, 48 + 8 * step, 40 + 10 * i) for i in range(2)])
        labels = np.zeros((2, 20), np.float32)
        for i, present in enumerate(LABELS[step]):
            labels[i, list(present)] = 1.0
        batches.append({"weak": weak, "strong": strong, "saliency": saliency, "labels": labels})
    return batches


def summarise(name: str, tensor: torch.Tensor) -> np.ndarray:
    """``float64 (5,)``: the L2 norm of ``tensor`` and its dot products with 4 fixed N(0, 1) directions
    (seeded by ``name``): equal summaries mean equal tensors to float tolerance, in a few bytes."""
    flat = tensor.detach().double().reshape(-1)
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    directions = torch.randn(4, flat.numel(), generator=generator, dtype=torch.float64)
    return torch.cat([flat.norm().view(1), directions @ flat]).numpy()
