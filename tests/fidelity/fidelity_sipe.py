"""What the SIPE fixtures hold, shared by their generator (``gen_sipe.py``) and their test (``test_sipe_authors.py``).

Weights: the authors' ``network.resnet50_SIPE.Net(21)`` has ~24M parameters, so the fixtures store none. Its
``state_dict()`` names every tensor up to three times (``resnet50.*`` and the aliases ``stage0..4.*``,
``backbone.*``, ``newly_added.*`` of the same modules); ``fixtures/sipe_layout.json`` lists the canonical names
(``resnet50.*``, ``side1..4``, ``classifier``) with their shapes, ``fixtures/sipe_aliases.json`` maps each alias to
its canonical name. Values: :func:`fidelity_weights.authors_state_dict` over that layout (seed 0), the same rule as
PPC's fixtures, with one change: the bias of the last BatchNorm (``resnet50.layer4.2.bn3.bias``) lowered by
:data:`BIAS_SHIFT`, which makes the last features sparse (95 % zeros): with the plain rule every pixel's features
are nearly parallel and one class wins SIPE's seed argmax everywhere, which would leave the seeds untested.
:func:`checkpoint` builds the file their training loop saves (``{'net': state_dict}``, aliases
included) from those, so that the tests convert exactly what a user would.

Inputs: :func:`step_inputs` (two 128x128 training crops, one padded: the valid mask) and :data:`PHOTOS` (two small
photos with labels for the pseudo-label CAMs).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from fidelity_weights import FIXTURES, authors_state_dict
from PIL import Image

__all__ = [
    "ALIASES",
    "BIAS_SHIFT",
    "CROP",
    "LAYOUT",
    "PHOTOS",
    "STEP_LABELS",
    "checkpoint",
    "labels_of",
    "photo",
    "sipe_state_dict",
    "step_inputs",
]

BIAS_SHIFT = 4.0

LAYOUT = FIXTURES / "sipe_layout.json"
ALIASES = FIXTURES / "sipe_aliases.json"
CROP = 128
# 0-based foreground classes of the two training crops (a random network: the names mean nothing; classes that
# win the seed argmax somewhere, so that the seeds have two or three classes)
STEP_LABELS = ((9, 12), (9, 10))
# the first crop: an 96x112 (h x w) image region at (16, 8) of the 128 container (zero padding around it)
PADDED = (96, 112, 16, 8)
# photo -> (file, (width, height) after a Lanczos downscale, 0-based classes): odd sides meet round() halves
PHOTOS = {
    "chelsea": ("chelsea.jpg", (97, 64), [9, 15]),
    "coffee": ("coffee.jpg", (96, 71), [9, 14, 15]),
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sipe_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The canonical tensors of their network (``sipe_layout.json`` order), deterministic (module docstring)."""
    state = authors_state_dict(seed, path=LAYOUT)
    state["resnet50.layer4.2.bn3.bias"] = state["resnet50.layer4.2.bn3.bias"] - BIAS_SHIFT
    return state


def checkpoint(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``{'net': state_dict}`` as their ``train_resnet50_SIPE.py`` saves it: canonical names and aliases."""
    state = sipe_state_dict(seed)
    for alias, canonical in json.loads(ALIASES.read_text()).items():
        state[alias] = state[canonical]
    return {"net": state}


def _normalise(array: np.ndarray) -> np.ndarray:
    """``uint8 (H, W, 3)`` -> float32 ``(H, W, 3)`` as their ``TorchvisionNormalize`` (float64, stored float32)."""
    out = np.empty(array.shape, np.float32)
    for c in range(3):
        out[..., c] = (array[..., c] / 255.0 - MEAN[c]) / STD[c]
    return out


def step_inputs() -> dict[str, np.ndarray]:
    """The training batch: ``img`` float32 ``(2, 3, 128, 128)`` (normalised, 0 on the padding, as their
    ``random_crop(img, 512, 0)`` of the normalised image), ``valid`` float32 ``(2, 1, 128, 128)`` (1 on the image),
    ``labels`` float32 ``(2, 20)``, and ``geometry`` int64 ``(2, 4)`` rows ``(resized_h, resized_w, crop_y,
    crop_x)``: the same crops in the loader's terms (``crop_y < 0``: padding above)."""
    photos = [np.asarray(Image.open(FIXTURES / name).convert("RGB")) for name in ("chelsea.jpg", "coffee.jpg")]
    h, w, top, left = PADDED
    img = np.zeros((2, CROP, CROP, 3), np.float32)
    valid = np.zeros((2, 1, CROP, CROP), np.float32)
    img[0, top : top + h, left : left + w] = _normalise(photos[0][50 : 50 + h, 150 : 150 + w])
    valid[0, 0, top : top + h, left : left + w] = 1
    img[1] = _normalise(photos[1][60 : 60 + CROP, 170 : 170 + CROP])
    valid[1] = 1
    labels = np.zeros((2, 20), np.float32)
    for i, present in enumerate(STEP_LABELS):
        labels[i, list(present)] = 1.0
    geometry = np.array([[h, w, -top, -left], [CROP, CROP, 0, 0]], np.int64)
    return {"img": np.ascontiguousarray(img.transpose(0, 3, 1, 2)), "valid": valid, "labels": labels,
            "geometry": geometry}  # fmt: skip


def photo(name: str) -> np.ndarray:
    """``uint8 (H, W, 3)``: the committed photo ``name`` of :data:`PHOTOS`, Lanczos-downscaled."""
    file, size, _ = PHOTOS[name]
    with Image.open(FIXTURES / file) as image:
        return np.asarray(image.convert("RGB").resize(size, resample=Image.LANCZOS), dtype=np.uint8)


def labels_of(name: str) -> np.ndarray:
    """float32 ``(20,)`` multi-hot labels of photo ``name``."""
    labels = np.zeros(20, np.float32)
    labels[PHOTOS[name][2]] = 1.0
    return labels
