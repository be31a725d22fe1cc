"""A procedural toy dataset in the exact PASCAL VOC 2012 layout, built so that CAM completeness matters.

``make_toy_dataset(root)`` (or ``python -m fsae.data.toy --root DIR``) writes a few hundred small
images with palette-PNG masks into ``root``, which becomes the ``VOC2012`` folder itself::

    root/Annotations/                       (empty, as the layout has it)
    root/ImageSets/Segmentation/{train,val,trainval}.txt
    root/JPEGImages/{id}.jpg                (RGB, JPEG quality 90)
    root/SegmentationClass/{id}.png         (ids of train.txt and val.txt only)
    root/SegmentationClassAug/{id}.png      (every id, like the SBD-augmented set)
    root/SegmentationObject/                (empty)
    root/SALImages/{id}.png                 (every id: simulated off-the-shelf saliency maps, 8-bit grayscale
                                             0..255, as EPS / PPC users have them; see "Saliency" below)
    root/.fsae_toy.json                     (marker: parameters; lets re-runs overwrite it safely)

Ids look like VOC's (``2007_000032``). ``num_val`` ids form ``val.txt``; of the ``num_train`` training
ids, ``TRAIN_LIST_FRACTION`` (40 %) are listed in ``train.txt`` (and get a ``SegmentationClass`` mask)
and the rest exist only in ``SegmentationClassAug``, as the SBD-augmented ids do, so ``train_aug``
(every id with an aug mask minus the val ids) has ``num_train`` ids and ``train`` a subset of them.
Mask values: 0 background, 1..20 the VOC class ids, 255 (ignore) on a band about 2 px wide along every
boundary between two different instances or an instance and the background (VOC's 5 px band at
500 px, scaled to the 192 px default), so also between overlapping objects of different classes.

Design
------
Images are ``image_size`` px on the long side with VOC-like aspect ratios (landscape 4:3 half of the
time, portrait 3:4 a quarter, square a quarter). The **background** is a smooth noise field (a random
grid upsampled bicubically, a colour one mixed with a grey one) with 4-9 clutter items drawn on it:
flat colour ellipses (a quarter of them in one of the part colours, so colour alone is not a class
cue) and rotated rectangles of high-contrast stripes or checkerboard in random colours. With
probability 0.3 the background also holds a *decoy*: a disc with one of the part glyphs in a colour
that no class uses (magenta, cyan, orange), so a detector of "a glyph disc" is not enough; only the
glyph + colour pair names a class. Nothing in the background depends on the classes present.

Each image holds 1-3 **objects** (probabilities 0.40 / 0.35 / 0.25) of distinct classes, drawn
uniformly from the 20. An object of class ``c`` is

* a **body**: a large shape of the class's body family (``BODY_FAMILIES``; each family is shared by
  5 classes, so the body narrows the class down to 5 but never decides it), in a muted colour drawn
  at random for every object (HSV saturation 0.25-0.55: not class information), with the family's
  low-contrast texture (shading, soft stripes, spots or grain). Its size is 0.22-0.40 of the short
  side (times 0.9 / 0.8 in images with 2 / 3 objects), at a random position and angle;
* a **discriminative part**: a small disc inside the body, away from its border, showing the class's
  glyph (``PART_PATTERNS``: rings, checker, cross, spokes, stripes) in the class's saturated colour
  (``PART_COLOURS``: red, green, blue, yellow) on white; the (glyph, colour) pair is unique to the
  class (``CLASS_DESIGN``). Its area is 7-13 % of the body's pixels (never above 15 %; radius at
  least 3 % of ``image_size``, so the glyph stays legible), so a classifier can name the class from
  the part alone (its CAM is meant to peak there), while the mask covers the whole body.

Objects are painted in order; later ones occlude earlier ones and the masks follow the occlusion.
A placement is rejected (and redrawn, or the object dropped) when it would cover any pixel of an
earlier object's part or come within 2 px of it, leave less than 65 % of an earlier object visible,
or put less than 70 % of the new body inside the image. So every object's part is fully visible,
and in every object the part covers at most 0.15 / 0.65 < 25 % of the object's visible pixels
(``ToySample.instances``, before the ignore band), about 10 % on average (7-19 % over the default
dataset). A mild brightness jitter per object and Gaussian pixel noise (sigma 3) are
added before JPEG encoding.

Saliency
--------
``SALImages`` holds what an imperfect class-agnostic saliency detector (PoolNet on VOC, as EPS and PPC
use it) could output; PPC's EPS term (``data.saliency_dir: SALImages``) trains on it. Painted in the
image's drawing order, so the visible surface decides:

* every object (its visible body, part included) is salient at a level drawn per object from
  U[0.6, 1.0]; with probability 0.15 the detector half-misses it: its body gets only U[0.2, 0.5],
  except within 1.5 part radii of its part's centre, which keeps the object's level;
* false positives: the decoy disc (when the image has one) is salient at U[0.5, 0.9], and each
  background clutter item with probability 0.25 at U[0.3, 0.8] (the others are not salient);
* the rest of the background is 0; the map is then blurred (Gaussian, sigma 1.5 px at the 192 px
  default, scaled with ``image_size``: soft edges) and written as ``round(255 * s)``.

Over the default dataset (360 images, 192 px) the mean saliency is 0.75 inside objects and 0.04 on
the background (the ignore band excluded from both); 90 % of the object pixels and 3 % of the
background pixels are salient (> 0.5), which is what EPS's rounding sees.

Every random draw comes from a ``numpy.random.Generator`` seeded by ``SeedSequence(seed)`` with a
spawn key per use (the id list; one per image index; one per image index for its saliency, so the
saliency never shifts the images' draws), so the output depends only on the arguments, never on the
process count or on the order images are written. ``render_toy_sample(seed, index, image_size)``
returns image ``index`` with its instance, part and saliency maps (what the written files were made
from), and ``load_toy_sample(root, image_id)`` does the same for an id of a written dataset.

Per-class design (``CLASS_DESIGN``; ``design_table_markdown()`` formats it)::

    id  name         part glyph  part colour  body family
     1  aeroplane    rings       red          ellipse / shaded
     2  bicycle      checker     red          rounded box / soft stripes
     3  bird         cross       red          wobbly blob / spots
     4  boat         spokes      red          polygon / grain
     5  bottle       stripes     red          ellipse / shaded
     6  bus          rings       green        rounded box / soft stripes
     7  car          checker     green        wobbly blob / spots
     8  cat          cross       green        polygon / grain
     9  chair        spokes      green        ellipse / shaded
    10  cow          stripes     green        rounded box / soft stripes
    11  diningtable  rings       blue         wobbly blob / spots
    12  dog          checker     blue         polygon / grain
    13  horse        cross       blue         ellipse / shaded
    14  motorbike    spokes      blue         rounded box / soft stripes
    15  person       stripes     blue         wobbly blob / spots
    16  pottedplant  rings       yellow       polygon / grain
    17  sheep        checker     yellow       ellipse / shaded
    18  sofa         cross       yellow       rounded box / soft stripes
    19  train        spokes      yellow       wobbly blob / spots
    20  tvmonitor    stripes     yellow       polygon / grain

>>> sample = render_toy_sample(seed=0, index=0)
>>> sample.image.shape[2], sample.label.dtype.name, 1 <= len(sample.classes) <= 3
(3, 'uint8', True)
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from fsae.data.palette import IGNORE_INDEX, VOC_CLASSES, write_label_png

__all__ = [
    "BODY_FAMILIES",
    "CLASS_DESIGN",
    "PART_COLOURS",
    "PART_PATTERNS",
    "SAME_BODY_CLASSES",
    "ClassDesign",
    "ToySample",
    "design_table_markdown",
    "load_toy_sample",
    "main",
    "make_toy_dataset",
    "render_toy_sample",
]

NUM_CLASSES = 20
TRAIN_LIST_FRACTION = 0.4
JPEG_QUALITY = 90
MARKER = ".fsae_toy.json"
MAX_IMAGES = 20000
GENERATOR_VERSION = 2  # bump when the drawing changes, so that earlier toy datasets are rewritten (2: SALImages)

PART_PATTERNS = ("rings", "checker", "cross", "spokes", "stripes")
PART_COLOURS = {"red": (215, 30, 35), "green": (25, 160, 60), "blue": (30, 80, 215), "yellow": (240, 195, 20)}
DECOY_COLOURS = {"magenta": (215, 45, 190), "cyan": (25, 190, 205), "orange": (245, 125, 20)}
BODY_FAMILIES = ("ellipse / shaded", "rounded box / soft stripes", "wobbly blob / spots", "polygon / grain")

_WHITE = np.array([245.0, 245.0, 245.0], dtype=np.float32)
_VOC_DIRS = (
    "Annotations",
    "ImageSets",
    "JPEGImages",
    "SegmentationClass",
    "SegmentationClassAug",
    "SegmentationObject",
    "SALImages",  # not VOC's own: the saliency maps EPS / PPC read, in the folder their users keep them in
)
_OBJECT_COUNT_P = (0.40, 0.35, 0.25)
_OBJECT_SCALE = (1.0, 0.9, 0.8)
_PART_FRACTION = (0.07, 0.13)
_PART_FRACTION_MAX = 0.15
_MIN_VISIBLE = 0.65
_MIN_IN_IMAGE = 0.70
_PART_CLEARANCE = 2.0
_DECOY_P = 0.3
# Simulated saliency (module docstring, "Saliency")
_SAL_SIGMA = 1.5  # Gaussian blur sigma in px at the 192 px default, scaled with image_size
_SAL_OBJECT = (0.6, 1.0)
_SAL_MISS_P = 0.15
_SAL_MISS = (0.2, 0.5)
_SAL_NEAR_PART = 1.5  # a half-missed object stays salient within this many part radii of its part's centre
_SAL_DECOY = (0.5, 0.9)
_SAL_CLUTTER_P = 0.25
_SAL_CLUTTER = (0.3, 0.8)
# Five classes with one body family (ellipse / shaded) and five different parts: only the part tells them
# apart, the body is shared. The small-pool toy set of the demo (a task learnt from scratch in minutes).
SAME_BODY_CLASSES = (1, 5, 9, 13, 17)


class ClassDesign(NamedTuple):
    """How objects of one class are drawn."""

    class_id: int
    name: str
    part_pattern: str
    part_colour: str
    body_family: str


CLASS_DESIGN: tuple[ClassDesign, ...] = tuple(
    ClassDesign(
        class_id=c,
        name=VOC_CLASSES[c],
        part_pattern=PART_PATTERNS[(c - 1) % len(PART_PATTERNS)],
        part_colour=list(PART_COLOURS)[(c - 1) // len(PART_PATTERNS)],
        body_family=BODY_FAMILIES[(c - 1) % len(BODY_FAMILIES)],
    )
    for c in range(1, NUM_CLASSES + 1)
)


def design_table_markdown() -> str:
    """``CLASS_DESIGN`` as a Markdown table (for reports)."""
    lines = ["| id | class | part glyph | part colour | body family |", "|---:|---|---|---|---|"]
    lines += [
        f"| {d.class_id} | {d.name} | {d.part_pattern} | {d.part_colour} | {d.body_family} |" for d in CLASS_DESIGN
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class ToySample:
    """One generated image with its ground truth.

    Attributes:
        image: ``uint8 (H, W, 3)`` RGB image (before JPEG encoding).
        label: ``uint8 (H, W)`` class ids, 0 background, 255 on the boundary band (the mask written).
        instances: ``uint8 (H, W)``: ``k`` where object ``k`` (1-based, drawing order) is visible, else 0.
        parts: ``uint8 (H, W)``: ``k`` on the discriminative part of object ``k`` (always fully visible).
        classes: class id of each object, in drawing order.
        saliency: ``uint8 (H, W)`` simulated off-the-shelf saliency, 0..255 (the ``SALImages`` map written;
            module docstring, "Saliency").
    """

    image: np.ndarray
    label: np.ndarray
    instances: np.ndarray
    parts: np.ndarray
    classes: tuple[int, ...]
    saliency: np.ndarray


# ----------------------------------------------------------------------------------------------
# Drawing primitives (all on full-frame pixel-centre grids; images are small)


class _Grid(NamedTuple):
    xx: np.ndarray
    yy: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.xx.shape


def _make_grid(height: int, width: int) -> _Grid:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return _Grid(xx + 0.5, yy + 0.5)


def _local(grid: _Grid, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in a frame centred on (cx, cy) and rotated by ``angle``."""
    dx, dy = grid.xx - cx, grid.yy - cy
    c, s = math.cos(angle), math.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int], channels: int
) -> np.ndarray:
    """A smooth random field in [0, 1], ``(H, W, channels)``: a random grid upsampled bicubically."""
    height, width = shape
    low = (rng.random((cells[0], cells[1], channels)) * 255).astype(np.uint8)
    planes = [
        np.asarray(Image.fromarray(low[..., k], mode="L").resize((width, height), Image.BICUBIC), dtype=np.float32)
        for k in range(channels)
    ]
    return np.stack(planes, axis=-1) / 255.0


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32) * 255.0


def _glyph(pattern: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Boolean map of where a part glyph shows its colour (elsewhere white), in part-local coordinates."""
    if pattern == "rings":
        return (np.floor(np.hypot(u, v) / (radius / 3.0)).astype(np.int32) % 2) == 0
    if pattern == "checker":
        cell = radius * 0.55
        return ((np.floor(u / cell) + np.floor(v / cell)).astype(np.int32) % 2) == 0
    if pattern == "cross":
        return (np.abs(u) < radius * 0.24) | (np.abs(v) < radius * 0.24)
    if pattern == "spokes":
        return (np.floor((np.arctan2(v, u) + math.pi) / (math.pi / 4.0)).astype(np.int32) % 2) == 0
    if pattern == "stripes":
        return (np.floor(u / (radius * 0.45)).astype(np.int32) % 2) == 0
    raise ValueError(f"unknown part pattern {pattern!r}")


def _paint_glyph_disc(
    image: np.ndarray,
    grid: _Grid,
    rng: np.random.Generator,
    pattern: str,
    colour: np.ndarray,
    cx: float,
    cy: float,
    radius: float,
    brightness: float = 1.0,
) -> np.ndarray:
    """Paint a glyph disc (``colour`` on white times ``brightness``); returns its boolean mask."""
    u, v = _local(grid, cx, cy, rng.uniform(0.0, 2.0 * math.pi))
    disc = u * u + v * v <= radius * radius
    on = _glyph(pattern, u, v, radius)
    image[disc & on] = colour
    image[disc & ~on] = np.minimum(_WHITE * brightness, 255.0)
    return disc


# ----------------------------------------------------------------------------------------------
# Background


def _background(rng: np.random.Generator, grid: _Grid) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """The background image ``float32 (H, W, 3)`` and its painted items in painting order: ``("clutter", mask)``
    per clutter item and ``("decoy", mask)`` for the decoy disc, each mask ``bool (H, W)`` (for the saliency)."""
    height, width = grid.shape
    layers: list[tuple[str, np.ndarray]] = []
    short = min(height, width)
    cells = (int(rng.integers(2, 6)), int(rng.integers(2, 6)))
    noise = _smooth_noise(rng, grid.shape, cells, 4)  # three colour planes and a grey one, mixed
    image = 40.0 + 180.0 * (0.45 * noise[..., :3] + 0.55 * noise[..., 3:])
    part_colours = list(PART_COLOURS.values())
    for _ in range(int(rng.integers(4, 10))):
        kind = rng.choice(3, p=(0.5, 0.25, 0.25))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        u, v = _local(grid, cx, cy, rng.uniform(0.0, math.pi))
        a, b = short * rng.uniform(0.06, 0.22), short * rng.uniform(0.05, 0.18)
        if kind == 0:  # flat colour ellipse, sometimes in a part colour
            if rng.random() < 0.25:
                colour = np.array(part_colours[int(rng.integers(len(part_colours)))], dtype=np.float32)
            else:
                colour = _random_colour(rng, (0.0, 1.0), (0.2, 1.0))
            mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
            image[mask] = colour
        else:  # rotated rectangle of stripes (kind 1) or checkerboard (kind 2)
            period = rng.uniform(3.0, 9.0)
            mask = (np.abs(u) <= a) & (np.abs(v) <= b)
            on = np.floor(u / period).astype(np.int32) % 2 == 0
            if kind == 2:
                on ^= np.floor(v / period).astype(np.int32) % 2 == 0
            image[mask & on] = _random_colour(rng, (0.0, 1.0), (0.5, 1.0))
            image[mask & ~on] = _random_colour(rng, (0.0, 1.0), (0.1, 0.6))
        layers.append(("clutter", mask))
    if rng.random() < _DECOY_P:
        radius = max(0.03 * max(height, width), short * rng.uniform(0.05, 0.08))
        colour = np.array(list(DECOY_COLOURS.values())[int(rng.integers(len(DECOY_COLOURS)))], dtype=np.float32)
        pattern = PART_PATTERNS[int(rng.integers(len(PART_PATTERNS)))]
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        layers.append(("decoy", _paint_glyph_disc(image, grid, rng, pattern, colour, cx, cy, radius)))
    return image, layers


# ----------------------------------------------------------------------------------------------
# Objects


@dataclass
class _Object:
    class_id: int
    body: np.ndarray  # bool (H, W), in-image pixels of the whole body
    area: int  # body.sum()
    part_cx: float
    part_cy: float
    part_radius: float


def _body_shape(
    rng: np.random.Generator, family: int, u: np.ndarray, v: np.ndarray, size: float
) -> tuple[np.ndarray, float]:
    """Boolean body mask and its analytic (unclipped) area, in body-local coordinates."""
    if family == 0:  # ellipse
        a, b = size, size * rng.uniform(0.6, 0.95)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0, math.pi * a * b
    if family == 1:  # rounded box (superellipse, exponent 4)
        a, b = size * rng.uniform(0.8, 1.0), size * rng.uniform(0.55, 0.85)
        area = 4.0 * a * b * math.gamma(1.25) ** 2 / math.gamma(1.5)
        return (u / a) ** 4 + (v / b) ** 4 <= 1.0, area
    if family == 2:  # wobbly blob: r(phi) = R (0.85 + 0.12 sin(k1 phi + p1) + 0.06 sin(k2 phi + p2))
        k1, k2 = int(rng.integers(3, 6)), int(rng.integers(6, 9))
        p1, p2 = rng.uniform(0, 2 * math.pi, size=2)
        phi = np.arctan2(v, u)
        limit = size * (0.85 + 0.12 * np.sin(k1 * phi + p1) + 0.06 * np.sin(k2 * phi + p2))
        area = math.pi * size * size * (0.85**2 + 0.12**2 / 2 + 0.06**2 / 2)
        return np.hypot(u, v) <= limit, area
    # regular polygon with 4-6 sides, circumradius 1.1 * size
    sides = int(rng.integers(4, 7))
    circum = 1.1 * size
    sector = 2.0 * math.pi / sides
    phi = np.mod(np.arctan2(v, u), sector) - sector / 2.0
    area = 0.5 * sides * circum * circum * math.sin(sector)
    return np.hypot(u, v) * np.cos(phi) <= circum * math.cos(sector / 2.0), area


def _body_texture(
    rng: np.random.Generator, family: int, grid: _Grid, u: np.ndarray, v: np.ndarray, size: float
) -> np.ndarray:
    """``(H, W, 3)`` colours of a body of ``family`` in a random muted colour."""
    colour = _random_colour(rng, (0.25, 0.55), (0.45, 0.85))
    if family == 0:  # shading along a random direction
        direction = rng.uniform(0, 2 * math.pi)
        factor = 1.0 + 0.22 * np.clip((u * math.cos(direction) + v * math.sin(direction)) / size, -1, 1)
    elif family == 1:  # soft stripes
        period = rng.uniform(5.0, 9.0)
        direction = rng.uniform(0, math.pi)
        phase = (u * math.cos(direction) + v * math.sin(direction)) / period
        factor = 1.0 + 0.12 * np.where(np.floor(phase).astype(np.int32) % 2 == 0, 1.0, -1.0)
    elif family == 2:  # spots
        height, width = grid.shape
        noise = _smooth_noise(rng, grid.shape, (max(2, height // 7), max(2, width // 7)), 1)[..., 0]
        factor = np.where(noise > 0.62, 0.72, 1.0) * np.where(noise < 0.3, 1.12, 1.0)
    else:  # grain
        factor = 1.0 + rng.normal(0.0, 0.1, size=grid.shape)
    return colour[None, None, :] * factor[..., None].astype(np.float32)


def _sample_object(
    rng: np.random.Generator, class_id: int, grid: _Grid, scale: float, image_size: int
) -> tuple[_Object, np.ndarray] | None:
    """Draw an object's geometry and its full-frame colours; None when the draw is unusable."""
    height, width = grid.shape
    short = min(height, width)
    family = (class_id - 1) % len(BODY_FAMILIES)
    size = short * rng.uniform(0.22, 0.40) * scale
    cx, cy = rng.uniform(0.1 * width, 0.9 * width), rng.uniform(0.1 * height, 0.9 * height)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    u, v = _local(grid, cx, cy, angle)
    body, full_area = _body_shape(rng, family, u, v, size)
    area = int(body.sum())
    if area < _MIN_IN_IMAGE * full_area:
        return None
    fraction = rng.uniform(*_PART_FRACTION)
    radius = max(math.sqrt(fraction * area / math.pi), 0.03 * image_size)
    if math.pi * radius * radius > _PART_FRACTION_MAX * area:
        return None
    colours = _body_texture(rng, family, grid, u, v, size)
    tries = 12
    for attempt in range(tries):
        rho = rng.uniform(0.0, 0.6) * size * (1.0 - attempt / tries)
        theta = rng.uniform(0.0, 2.0 * math.pi)
        px, py = cx + rho * math.cos(theta), cy + rho * math.sin(theta)
        if px - radius < 0 or py - radius < 0 or px + radius > width or py + radius > height:
            continue
        # the disc plus a 1.5 px margin must lie inside the body: the part never touches its border
        dist2 = (grid.xx - px) ** 2 + (grid.yy - py) ** 2
        if np.all(body[dist2 <= (radius + 1.5) ** 2]):
            obj = _Object(class_id, body, area, px, py, radius)
            return obj, colours
    return None


def _occlusion_ok(new: _Object, placed: list[_Object], instances: np.ndarray, grid: _Grid) -> bool:
    """Whether ``new`` drawn on top keeps every earlier part clear and every earlier object mostly visible."""
    for k, old in enumerate(placed, start=1):
        near_part = (grid.xx - old.part_cx) ** 2 + (grid.yy - old.part_cy) ** 2 <= (
            old.part_radius + _PART_CLEARANCE + 0.5
        ) ** 2
        if np.any(new.body & near_part):
            return False
        if np.count_nonzero((instances == k) & ~new.body) < _MIN_VISIBLE * old.area:
            return False
    return True


def _boundary_band(instances: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds another instance id (or background): a ~2 px band."""
    height, width = instances.shape
    padded = np.pad(instances, 1, mode="edge")
    band = np.zeros(instances.shape, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                band |= padded[dy : dy + height, dx : dx + width] != instances
    return band


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))


# ----------------------------------------------------------------------------------------------
# Simulated off-the-shelf saliency


def _saliency_rng(seed: int, index: int) -> np.random.Generator:
    """The saliency's own stream (spawn key 2): the image's draws (spawn key 1) stay as they were."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))


def _gaussian_blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """``float32 (H, W)`` separable Gaussian blur of ``field`` (edges replicated, kernel cut at 3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma))
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    height, width = field.shape
    padded = np.pad(field.astype(np.float64), radius, mode="edge")
    rows = sum(w * padded[:, k : k + width] for k, w in enumerate(kernel))
    return sum(w * rows[k : k + height] for k, w in enumerate(kernel)).astype(np.float32)


def _simulated_saliency(
    seed: int,
    index: int,
    image_size: int,
    grid: _Grid,
    layers: Sequence[tuple[str, np.ndarray]],
    instances: np.ndarray,
    placed: Sequence[_Object],
) -> np.ndarray:
    """``uint8 (H, W)`` saliency of image ``index`` (module docstring, "Saliency").

    ``layers``: the background's ``(kind, bool (H, W) mask)`` items in painting order (``_background``);
    ``instances``: ``uint8 (H, W)`` visible object ids; ``placed``: the objects in drawing order.
    """
    rng = _saliency_rng(seed, index)
    value = np.zeros(grid.shape, dtype=np.float32)
    for kind, mask in layers:  # a later item covers an earlier one, as in the image
        if kind == "decoy":
            value[mask] = rng.uniform(*_SAL_DECOY)
        else:
            salient = rng.random() < _SAL_CLUTTER_P
            level = rng.uniform(*_SAL_CLUTTER)
            value[mask] = level if salient else 0.0
    for k, obj in enumerate(placed, start=1):
        visible = instances == k
        level = rng.uniform(*_SAL_OBJECT)
        missed = rng.random() < _SAL_MISS_P
        missed_level = rng.uniform(*_SAL_MISS)
        if missed:
            near = np.hypot(grid.xx - obj.part_cx, grid.yy - obj.part_cy) <= _SAL_NEAR_PART * obj.part_radius
            value[visible] = missed_level
            value[visible & near] = level
        else:
            value[visible] = level
    blurred = _gaussian_blur(value, _SAL_SIGMA * image_size / 192.0)
    return np.clip(np.rint(blurred * 255.0), 0, 255).astype(np.uint8)


def render_toy_sample(seed: int, index: int, image_size: int = 192, classes: Sequence[int] | None = None) -> ToySample:
    """Render image ``index`` of the toy dataset for ``seed`` (deterministic; see the module docstring).

    ``classes``: the class ids objects are drawn from (default all 20; see :func:`make_toy_dataset`).
    """
    _check_int("seed", seed, 0)
    _check_int("index", index, 0)
    _check_int("image_size", image_size, 64, 1024)
    pool = _check_classes(classes)
    rng = _image_rng(seed, index)
    short = int(round(image_size * 0.75))
    height, width = [(short, image_size), (image_size, short), (image_size, image_size)][
        int(rng.choice(3, p=(0.5, 0.25, 0.25)))
    ]
    grid = _make_grid(height, width)
    image, layers = _background(rng, grid)

    count = int(rng.choice(3, p=_OBJECT_COUNT_P)) + 1
    classes = [pool[int(c)] for c in rng.choice(len(pool), size=count, replace=False)]
    instances = np.zeros((height, width), dtype=np.uint8)
    parts = np.zeros((height, width), dtype=np.uint8)
    placed: list[_Object] = []
    for class_id in classes:
        attempts = 1000 if not placed else 40
        for _ in range(attempts):
            drawn = _sample_object(rng, class_id, grid, _OBJECT_SCALE[count - 1], image_size)
            if drawn is not None and _occlusion_ok(drawn[0], placed, instances, grid):
                break
        else:
            if not placed:  # pragma: no cover - the first object always fits in practice
                raise RuntimeError(f"could not place an object in toy image {index} (seed {seed})")
            continue  # drop this object
        obj, colours = drawn
        brightness = rng.uniform(0.85, 1.1)
        image[obj.body] = colours[obj.body] * brightness
        part_colour = np.array(PART_COLOURS[CLASS_DESIGN[class_id - 1].part_colour], dtype=np.float32) * brightness
        pattern = CLASS_DESIGN[class_id - 1].part_pattern
        disc = _paint_glyph_disc(
            image, grid, rng, pattern, part_colour, obj.part_cx, obj.part_cy, obj.part_radius, brightness
        )
        placed.append(obj)
        k = len(placed)
        instances[obj.body] = k
        parts[disc] = k

    image += rng.normal(0.0, 3.0, size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[1 : len(placed) + 1] = [obj.class_id for obj in placed]
    label = lookup[instances]
    label[_boundary_band(instances)] = IGNORE_INDEX
    saliency = _simulated_saliency(seed, index, image_size, grid, layers, instances, placed)
    return ToySample(image, label, instances, parts, tuple(obj.class_id for obj in placed), saliency)


# ----------------------------------------------------------------------------------------------
# Dataset on disk


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _check_classes(classes: Sequence[int] | None) -> tuple[int, ...]:
    """The class pool as a sorted tuple (all 20 when None); at least 3 distinct ids in 1..20."""
    if classes is None:
        return tuple(range(1, NUM_CLASSES + 1))
    pool = tuple(sorted({int(c) for c in classes}))
    if len(pool) < 3 or pool[0] < 1 or pool[-1] > NUM_CLASSES:
        raise ValueError(f"classes must hold at least 3 distinct ids in 1..{NUM_CLASSES}, got {list(classes)}")
    return pool


def _split_ids(num_train: int, num_val: int, seed: int) -> tuple[list[str], dict[str, list[str]]]:
    """All ids in image-index order (sorted), and the sorted ``train``, ``val`` and ``aug_only`` id lists."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    total = num_train + num_val
    codes = np.sort(rng.choice(5 * 9999, size=total, replace=False))
    ids = [f"{2007 + int(code) // 9999}_{int(code) % 9999 + 1:06d}" for code in codes]
    order = rng.permutation(total)
    num_listed = min(num_train - 1, max(1, round(TRAIN_LIST_FRACTION * num_train)))
    val = sorted(ids[i] for i in order[:num_val])
    train = sorted(ids[i] for i in order[num_val : num_val + num_listed])
    aug_only = sorted(ids[i] for i in order[num_val + num_listed :])
    return ids, {"train": train, "val": val, "aug_only": aug_only}


def _read_marker(root: Path) -> dict | None:
    """The marker of a toy dataset at ``root``, or None when ``root`` holds none (or a foreign one)."""
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == "fsae.data.toy" else None


def _is_complete(root: Path, marker: dict | None, params: dict) -> bool:
    if marker is None or not marker.get("complete") or marker.get("params") != params:
        return False
    if marker.get("version") != GENERATOR_VERSION:
        return False
    ids, splits = _split_ids(params["num_train"], params["num_val"], params["seed"])
    listed = splits["train"] + splits["val"]
    files = [root / "JPEGImages" / f"{i}.jpg" for i in ids] + [root / "SegmentationClassAug" / f"{i}.png" for i in ids]
    files += [root / "SegmentationClass" / f"{i}.png" for i in listed]
    files += [root / "SALImages" / f"{i}.png" for i in ids]
    files += [root / "ImageSets" / "Segmentation" / f"{name}.txt" for name in ("train", "val", "trainval")]
    return all(path.is_file() for path in files)


def _write_dataset(
    root: Path, num_train: int, num_val: int, seed: int, image_size: int, classes: Sequence[int] | None = None
) -> bool:
    """Write (or keep) the toy dataset; True when files were written, False when it was already there."""
    _check_int("num_train", num_train, 2)
    _check_int("num_val", num_val, 1)
    _check_int("seed", seed, 0, 2**63 - 1)
    _check_int("image_size", image_size, 64, 1024)
    if num_train + num_val > MAX_IMAGES:
        raise ValueError(f"num_train + num_val must be at most {MAX_IMAGES}, got {num_train + num_val}")
    pool = _check_classes(classes)
    params = {"num_train": int(num_train), "num_val": int(num_val), "seed": int(seed), "image_size": int(image_size)}
    if classes is not None and len(pool) < NUM_CLASSES:
        params["classes"] = list(pool)  # only recorded when not the default, so earlier markers stay valid

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder")
    marker = _read_marker(root) if root.is_dir() else None
    if root.is_dir() and marker is None and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and is not a toy dataset written by fsae.data.toy; refusing to overwrite it"
        )
    if _is_complete(root, marker, params):
        return False
    if marker is not None:  # a previous toy dataset (other parameters or unfinished): replace what it wrote
        for name in _VOC_DIRS:
            shutil.rmtree(root / name, ignore_errors=True)

    root.mkdir(parents=True, exist_ok=True)
    record = {"generator": "fsae.data.toy", "version": GENERATOR_VERSION, "params": params, "complete": False}
    (root / MARKER).write_text(json.dumps(record, indent=1) + "\n")
    for name in _VOC_DIRS:
        (root / name).mkdir()
    (root / "ImageSets" / "Segmentation").mkdir()

    ids, splits = _split_ids(num_train, num_val, seed)
    listed = set(splits["train"]) | set(splits["val"])
    for index, image_id in enumerate(ids):
        sample = render_toy_sample(seed, index, image_size, pool)
        Image.fromarray(sample.image, mode="RGB").save(root / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
        write_label_png(root / "SegmentationClassAug" / f"{image_id}.png", sample.label)
        if image_id in listed:
            write_label_png(root / "SegmentationClass" / f"{image_id}.png", sample.label)
        Image.fromarray(sample.saliency, mode="L").save(root / "SALImages" / f"{image_id}.png")
    lists = {"train": splits["train"], "val": splits["val"], "trainval": sorted(listed)}
    for name, names in lists.items():
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in names))

    record["complete"] = True
    (root / MARKER).write_text(json.dumps(record, indent=1) + "\n")
    return True


def make_toy_dataset(
    root: str | Path,
    num_train: int = 300,
    num_val: int = 60,
    seed: int = 0,
    image_size: int = 192,
    classes: Sequence[int] | None = None,
) -> Path:
    """Write the toy dataset (module docstring) into ``root``, which becomes the VOC2012 folder.

    Args:
        root: target folder; created if missing. It must be missing, empty, or a toy dataset written
            earlier (recognised by its ``.fsae_toy.json`` marker), which is then replaced, or kept as it
            is when it was written, completely, with the same arguments (by this version of the generator).
        num_train: training ids (``train_aug``), >= 2; 40 % of them are listed in ``train.txt``.
        num_val: ``val`` ids, >= 1.
        seed: non-negative integer; the output is a function of the arguments only.
        image_size: long side of every image in pixels, 64..1024.
        classes: the class ids objects are drawn from (default: all 20). A smaller pool makes a task a
            network trained from scratch on a CPU learns in minutes; :data:`SAME_BODY_CLASSES` (five
            classes sharing one body family, so only the part names the class) is the demo's choice.

    Returns:
        ``Path(root)``.

    Raises:
        ValueError: an argument out of range.
        FileExistsError: ``root`` is a file, or a non-empty folder that is not a toy dataset.
    """
    _write_dataset(Path(root), num_train, num_val, seed, image_size, classes)
    return Path(root)


def load_toy_sample(root: str | Path, image_id: str) -> ToySample:
    """Re-render image ``image_id`` of the toy dataset at ``root`` (with its instance, part and saliency maps)."""
    root = Path(root)
    marker = _read_marker(root)
    if marker is None:
        raise FileNotFoundError(f"{root / MARKER}: missing or not a toy dataset marker")
    params = marker["params"]
    ids, _ = _split_ids(params["num_train"], params["num_val"], params["seed"])
    try:
        index = ids.index(image_id)
    except ValueError:
        raise KeyError(f"{image_id!r} is not an id of the toy dataset at {root}") from None
    return render_toy_sample(params["seed"], index, params["image_size"], params.get("classes"))


# ----------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m fsae.data.toy --root DIR [--num-train N --num-val N --seed S --image-size S]``."""
    parser = _Parser(
        prog="python -m fsae.data.toy",
        description="Write the procedural toy dataset in the PASCAL VOC 2012 layout (ROOT becomes the VOC2012 folder).",
    )
    parser.add_argument("--root", required=True, type=Path, help="target folder (missing, empty or an earlier toy)")
    parser.add_argument("--num-train", type=int, default=300, help="training ids (train_aug), default 300")
    parser.add_argument("--num-val", type=int, default=60, help="val ids, default 60")
    parser.add_argument("--seed", type=int, default=0, help="random seed, default 0")
    parser.add_argument("--image-size", type=int, default=192, help="long side in pixels, default 192")
    parser.add_argument(
        "--classes",
        type=lambda text: [int(c) for c in text.split(",")],
        help="comma-separated class ids objects are drawn from (default all 20; the demo uses 1,5,9,13,17)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        wrote = _write_dataset(args.root, args.num_train, args.num_val, args.seed, args.image_size, args.classes)
    except (ValueError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    _, splits = _split_ids(args.num_train, args.num_val, args.seed)
    what = "wrote" if wrote else "already up to date:"
    print(
        f"{what} toy VOC2012 dataset at {args.root}: {args.num_train} train_aug ids "
        f"({len(splits['train'])} in train.txt, {len(splits['aug_only'])} aug-only), {args.num_val} val ids, "
        f"{args.image_size} px ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
