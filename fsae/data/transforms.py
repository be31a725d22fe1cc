"""Geometry transforms for training crops (CPU, in the data loader).

Photometric work is not done here: it runs batched on the training device
(:mod:`fsae.augment`).  Each transform is ``transform(sample, rng) -> sample``
on dicts holding ``image`` (``uint8 (H, W, 3)``) and optionally ``mask``
(``uint8 (H, W)``) and ``saliency`` (``uint8 (H, W)`` 0..255 or a float
``(H, W)`` map in [0, 1]), with ``rng`` a ``numpy.random.Generator``; ``mask``
and ``saliency`` get the image's geometry (resized nearest / bilinear, flipped,
cropped with fill 255 / 0; a ``uint8`` saliency stays ``uint8``, a float one
becomes ``float32`` where a transform touches it).  Each transform records
what it drew in ``sample["geometry"]`` (a flat dict of ints, which the default
collate turns into ``(B,)`` tensors), so views can be aligned and a crop can be
mapped back to its image:

* ``orig_h, orig_w``: size of the loaded image;
* ``resized_h, resized_w``: after :class:`RandomResizeLong` / :class:`RandomScale`;
* ``flip``: 1 when :class:`RandomHorizontalFlip` flipped;
* ``crop_y, crop_x``: top-left of the crop window in the resized (flipped)
  image; negative when the image was smaller than the crop and was padded.

docs/method.md §3 weak-view geometry: :func:`train_geometry` (long side
U{448..768}, flip 0.5, 448 crop); COCO: ``train_geometry(321, (256, 448))``.
``train_geometry(..., mode="authors")`` is the authors' layout: the image is not
cropped here but delivered, resized and flipped, top-left on a fixed
``(max_long, max_long)`` canvas (:class:`CanvasCrop`), with the crop box in
``geometry``, because the views are ColorJittered over the whole image before
the crop (on the training device, :class:`fsae.augment.views.TrainingViews`);
``mask`` and ``saliency`` are cropped here (fill 255 / 0), and the saliency is
resized bicubic as the authors' ``RandomResizeLong`` did.
``train_geometry(..., mode="timm")`` is MCTformer's (DeiT's) training view, made by timm's own transform factory
(:class:`TimmView`): the ``image`` is the finished ``(crop, crop, 3)`` uint8 view (random-resized crop, flip,
RandAugment) and ``geometry`` holds the random-erasing box that the trainer applies after the normalisation.
docs/method.md §6 second stage (DeepLab): :func:`seg_train_geometry` (scale U[0.5, 1.5],
flip 0.5, 448 crop padded with the mean image / 255 ignore).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from fsae.augment.views import CROP_FILLS
from fsae.constants import IMAGENET_MEAN_RGB
from fsae.data.palette import IGNORE_INDEX

__all__ = [
    "IMAGENET_MEAN_RGB",
    "CanvasCrop",
    "Compose",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizeLong",
    "RandomScale",
    "SecondView",
    "TimmView",
    "seg_train_geometry",
    "train_geometry",
]


Sample = dict[str, Any]


def _geometry(sample: Sample) -> dict[str, int]:
    image = sample["image"]
    return sample.setdefault(
        "geometry",
        {
            "orig_h": image.shape[0],
            "orig_w": image.shape[1],
            "resized_h": image.shape[0],
            "resized_w": image.shape[1],
            "flip": 0,
            "crop_y": 0,
            "crop_x": 0,
        },
    )


def _resize(array: np.ndarray, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


def _saliency(sample: Sample) -> np.ndarray:
    """``sample["saliency"]`` as ``uint8`` (kept) or ``float32`` (any other dtype: PIL's float mode "F")."""
    saliency = sample["saliency"]
    return saliency if saliency.dtype == np.uint8 else saliency.astype(np.float32, copy=False)


#: ``saliency_resize=``: PIL resampling of the saliency map with the image.
SALIENCY_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def _resize_aligned(sample: Sample, height: int, width: int, saliency_resize: str = "bilinear") -> None:
    """Resize the optional ``mask`` (nearest) and ``saliency`` (``saliency_resize``) of ``sample``."""
    if "mask" in sample:
        sample["mask"] = _resize(sample["mask"], height, width, Image.Resampling.NEAREST)
    if "saliency" in sample:
        sample["saliency"] = _resize(_saliency(sample), height, width, SALIENCY_RESAMPLING[saliency_resize])


class Compose:
    """Apply transforms in order with one generator."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class RandomResizeLong:
    """Resize so the long side is an integer drawn from U{min_long..max_long}: image bicubic, mask nearest,
    saliency ``saliency_resize`` (``"bilinear"``, or ``"bicubic"`` as the authors).  The short side is
    ``round(short * target / long)`` (at least 1), in the authors' order of operations (the same ties)."""

    def __init__(self, min_long: int, max_long: int, saliency_resize: str = "bilinear") -> None:
        if not 0 < min_long <= max_long:
            raise ValueError(f"need 0 < min_long <= max_long, got {min_long}, {max_long}")
        if saliency_resize not in SALIENCY_RESAMPLING:
            raise ValueError(f"saliency_resize must be one of {tuple(SALIENCY_RESAMPLING)}, got {saliency_resize!r}")
        self.min_long, self.max_long, self.saliency_resize = min_long, max_long, saliency_resize

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        geometry = _geometry(sample)
        height, width = sample["image"].shape[:2]
        target = int(rng.integers(self.min_long, self.max_long + 1))
        if width < height:
            new_h, new_w = target, max(1, round(width * target / height))
        else:
            new_h, new_w = max(1, round(height * target / width)), target
        sample["image"] = _resize(sample["image"], new_h, new_w, Image.Resampling.BICUBIC)
        _resize_aligned(sample, new_h, new_w, self.saliency_resize)
        geometry["resized_h"], geometry["resized_w"] = new_h, new_w
        return sample

    def __repr__(self) -> str:
        return f"RandomResizeLong({self.min_long}, {self.max_long}, saliency_resize={self.saliency_resize!r})"


class RandomScale:
    """Resize by a factor drawn from U[min_scale, max_scale] (continuous): image and saliency bilinear, mask nearest.

    DeepLab's training scale augmentation; sides are ``max(1, round(side * factor))``.
    """

    def __init__(self, min_scale: float, max_scale: float) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        geometry = _geometry(sample)
        height, width = sample["image"].shape[:2]
        factor = float(rng.uniform(self.min_scale, self.max_scale))
        new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
        if (new_h, new_w) != (height, width):
            sample["image"] = _resize(sample["image"], new_h, new_w, Image.Resampling.BILINEAR)
            _resize_aligned(sample, new_h, new_w)
        geometry["resized_h"], geometry["resized_w"] = new_h, new_w
        return sample

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomHorizontalFlip:
    """Flip image, mask and saliency left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        geometry = _geometry(sample)
        flip = bool(rng.random() < self.p)
        if flip:
            sample["image"] = sample["image"][:, ::-1]
            if "mask" in sample:
                sample["mask"] = sample["mask"][:, ::-1]
            if "saliency" in sample:
                sample["saliency"] = _saliency(sample)[:, ::-1]
        geometry["flip"] = int(flip)
        return sample

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop:
    """A ``size x size`` crop at a random position; a smaller image is placed at a random offset
    on a canvas filled with ``image_fill`` (ImageNet mean: 0 after normalisation), ``mask_fill`` (255)
    and, for the saliency, 0 (not salient)."""

    def __init__(self, size: int, image_fill: Sequence[int] = IMAGENET_MEAN_RGB, mask_fill: int = IGNORE_INDEX) -> None:
        if size < 1:
            raise ValueError(f"crop size must be >= 1, got {size}")
        self.size, self.image_fill, self.mask_fill = size, tuple(image_fill), mask_fill

    def _offsets(self, length: int, rng: np.random.Generator) -> int:
        """Crop start in image coordinates: >= 0 inside the image, < 0 when padding."""
        space = length - self.size
        return int(rng.integers(0, space + 1)) if space >= 0 else -int(rng.integers(0, -space + 1))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        geometry = _geometry(sample)
        height, width = sample["image"].shape[:2]
        y, x = self._offsets(height, rng), self._offsets(width, rng)
        sample["image"] = self._crop(sample["image"], y, x, np.array(self.image_fill, dtype=np.uint8))
        self._crop_aligned(sample, geometry, y, x)
        return sample

    def _crop_aligned(self, sample: Sample, geometry: dict[str, Any], y: int, x: int) -> None:
        """Crop the optional ``mask`` (fill ``mask_fill``) and ``saliency`` (fill 0) at ``(y, x)``; record it."""
        if "mask" in sample:
            sample["mask"] = self._crop(sample["mask"], y, x, np.uint8(self.mask_fill))
        if "saliency" in sample:
            saliency = _saliency(sample)
            sample["saliency"] = self._crop(saliency, y, x, np.zeros((), saliency.dtype))
        geometry["crop_y"], geometry["crop_x"] = y, x

    def _crop(self, array: np.ndarray, y: int, x: int, fill: np.ndarray) -> np.ndarray:
        canvas = np.empty((self.size, self.size, *array.shape[2:]), dtype=array.dtype)
        canvas[...] = fill
        src_y, src_x = max(y, 0), max(x, 0)
        dst_y, dst_x = max(-y, 0), max(-x, 0)
        h = min(array.shape[0] - src_y, self.size - dst_y)
        w = min(array.shape[1] - src_x, self.size - dst_x)
        canvas[dst_y : dst_y + h, dst_x : dst_x + w] = array[src_y : src_y + h, src_x : src_x + w]
        return canvas

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


class CanvasCrop(RandomCrop):
    """The authors' layout: draw a ``size x size`` crop box as :class:`RandomCrop` does, crop ``mask`` (fill
    ``mask_fill``) and ``saliency`` (fill 0) with it, but leave the image uncropped, top-left on a
    ``canvas x canvas`` array of zeros (``uint8 (canvas, canvas, 3)``, so batches stack), for the views to
    jitter the whole image and crop on the device (:func:`fsae.augment.views.crop_canvas`).

    ``geometry`` gets ``crop_y, crop_x`` as :class:`RandomCrop` records them; the image occupies
    ``[0, resized_h) x [0, resized_w)`` of the canvas.  ``canvas`` must be at least the image's sides
    (``max_long`` of :class:`RandomResizeLong`)."""

    def __init__(self, size: int, canvas: int, mask_fill: int = IGNORE_INDEX) -> None:
        super().__init__(size, image_fill=(0, 0, 0), mask_fill=mask_fill)
        if canvas < 1:
            raise ValueError(f"canvas size must be >= 1, got {canvas}")
        self.canvas = canvas

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        geometry = _geometry(sample)
        image = sample["image"]
        height, width = image.shape[:2]
        if height > self.canvas or width > self.canvas:
            raise ValueError(f"image {height}x{width} does not fit the {self.canvas}x{self.canvas} canvas")
        y, x = self._offsets(height, rng), self._offsets(width, rng)
        canvas = np.zeros((self.canvas, self.canvas, *image.shape[2:]), dtype=image.dtype)
        canvas[:height, :width] = image
        sample["image"] = canvas
        self._crop_aligned(sample, geometry, y, x)
        return sample

    def __repr__(self) -> str:
        return f"CanvasCrop({self.size}, canvas={self.canvas})"


class SecondView:
    """PPC's second view: the crop resized to ``size x size`` (bilinear) as ``image_small``.

    ``mask`` and ``saliency`` get no second view: a method that needs the saliency at the second view's size
    resizes the (aligned) full-crop map itself, as PPC does."""

    def __init__(self, size: int = 128) -> None:
        self.size = size

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample["image_small"] = _resize(sample["image"], self.size, self.size, Image.Resampling.BILINEAR)
        return sample

    def __repr__(self) -> str:
        return f"SecondView({self.size})"


class TimmView:
    """MCTformer's (DeiT's) training view, made by timm's ``create_transform`` as the authors' ``datasets.py``
    calls it: ``create_transform(size, is_training=True, color_jitter=0.4, auto_augment=auto_augment,
    interpolation=interpolation, re_prob=re_prob, re_mode="pixel", re_count=1)`` (timm's defaults for the rest:
    ``RandomResizedCropAndInterpolation`` at scale 0.08-1 and ratio 3/4-4/3, ``hflip=flip_p``). timm skips the
    colour jitter when RandAugment is on, as it did for the authors.

    The PIL stages (crop, flip, RandAugment) make ``image``, the ``uint8 (size, size, 3)`` view; the last stage
    (``ToTensor``, ``Normalize``, ``RandomErasing``) belongs after the normalisation on the training device: its
    erasing box is drawn here by timm's own ``RandomErasing`` (on a NaN tensor of the view's shape) and recorded in
    ``geometry`` (which keeps ``orig_h, orig_w``; the crop and flip stay inside timm) as ``erase_y, erase_x,
    erase_h, erase_w`` (``erase_h = 0``: not erased) with ``erase_seed``, the
    seed of the ``N(0, 1)`` pixel values (``torch.Generator().manual_seed(erase_seed)``, one ``normal_`` of shape
    ``(3, erase_h, erase_w)``, the values timm's ``pixel`` mode draws); :func:`fsae.augment.views.random_erase`
    applies it. ``mask`` and ``saliency`` cannot follow RandAugment's geometric ops: ``mask`` is dropped and a
    ``saliency`` map is an error.

    timm draws from Python's ``random``, NumPy's global generator and torch's: each sample seeds all three from
    ``rng`` inside this call and restores their states afterwards, so the view is a function of the sample's
    generator (the same on resume and in any worker) and the global streams are left as they were.
    """

    def __init__(
        self,
        size: int = 224,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        interpolation: str = "bicubic",
        flip_p: float = 0.5,
        re_prob: float = 0.25,
    ) -> None:
        from timm.data import create_transform

        primary, secondary, final = create_transform(
            size, is_training=True, color_jitter=0.4, auto_augment=auto_augment or None,
            interpolation=interpolation, hflip=flip_p, re_prob=re_prob, re_mode="pixel", re_count=1, separate=True,
        )  # fmt: skip
        self.size, self.re_prob = size, re_prob
        self.pil = [*primary.transforms, *secondary.transforms]
        erasing = [t for t in final.transforms if type(t).__name__ == "RandomErasing"]
        self.erasing = erasing[0] if erasing else None

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if "saliency" in sample:
            raise ValueError("the timm geometry cannot carry a saliency map (RandAugment moves pixels)")
        geometry = _geometry(sample)
        for key in ("resized_h", "resized_w", "flip", "crop_y", "crop_x"):  # drawn inside timm, not known here
            geometry.pop(key, None)
        seeds = [int(v) for v in rng.integers(0, 2**31, size=3)]
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            random.seed(seeds[0])
            np.random.seed(seeds[1])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds[1])
                image = Image.fromarray(sample["image"])
                for transform in self.pil:
                    image = transform(image)
                box = (0, 0, 0, 0)
                if self.erasing is not None:
                    torch.manual_seed(seeds[2])  # the erasing's values are the first draw after this seed
                    probe = self.erasing(torch.full((3, self.size, self.size), float("nan")))
                    rows = torch.isfinite(probe[0]).any(dim=1).nonzero().flatten()
                    cols = torch.isfinite(probe[0]).any(dim=0).nonzero().flatten()
                    if len(rows):
                        box = (int(rows[0]), int(cols[0]), len(rows), len(cols))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        sample["image"] = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        sample.pop("mask", None)
        geometry["erase_y"], geometry["erase_x"], geometry["erase_h"], geometry["erase_w"] = box
        geometry["erase_seed"] = seeds[2]
        return sample

    def __repr__(self) -> str:
        return f"TimmView({self.pil}, erasing={self.erasing})"


def train_geometry(
    crop_size: int = 448,
    long_side: tuple[int, int] = (448, 768),
    flip_p: float = 0.5,
    second_view: int | None = None,
    mode: str = "crop",
    crop_fill: str = "mean",
    saliency_resize: str = "bilinear",
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    re_prob: float = 0.25,
) -> Compose:
    """The training geometry of docs/method.md §3: resize long side, flip, crop (+ optional second view).

    Args:
        crop_size, long_side, flip_p: the crop side, the ``(min, max)`` long side, the flip probability.
        second_view: side of PPC's resized second view of the crop (``"crop"`` mode only).
        mode: ``"crop"`` (ours): ``image`` is the ``uint8 (crop, crop, 3)`` crop, padded with ``crop_fill``;
            ``"authors"`` (``data.geometry``): ``image`` is the resized, flipped image on a
            ``(max_long, max_long, 3)`` zero canvas (:class:`CanvasCrop`), cropped on the device.
        crop_fill: ``"mean"`` (ImageNet mean) or ``"black"``: the padding of ``"crop"`` mode (in
            ``"authors"`` mode the device pads, with ``data.crop_fill``).
        saliency_resize: ``"bilinear"`` or ``"bicubic"`` (the authors').
        auto_augment, re_prob: ``"timm"`` mode only (:class:`TimmView`, MCTformer's view; ``long_side``,
            ``crop_fill`` and ``saliency_resize`` do not apply there).

    In ``"crop"`` and ``"authors"`` mode ``saliency`` comes out cropped (``crop x crop``, 0 outside the image) and
    ``geometry`` holds ``resized_h, resized_w, flip, crop_y, crop_x``.
    """
    if mode not in ("crop", "authors", "timm"):
        raise ValueError(f"mode must be 'crop', 'authors' or 'timm', got {mode!r}")
    if mode == "timm":
        if second_view is not None:
            raise ValueError("second_view needs the crop: use mode='crop'")
        return Compose([TimmView(crop_size, auto_augment, "bicubic", flip_p, re_prob)])
    if crop_fill not in CROP_FILLS:
        raise ValueError(f"crop_fill must be one of {tuple(CROP_FILLS)}, got {crop_fill!r}")
    resize = RandomResizeLong(*long_side, saliency_resize=saliency_resize)
    if mode == "authors":
        if second_view is not None:
            raise ValueError("second_view needs the crop: use mode='crop'")
        return Compose([resize, RandomHorizontalFlip(flip_p), CanvasCrop(crop_size, canvas=long_side[1])])
    transforms: list[Any] = [resize, RandomHorizontalFlip(flip_p), RandomCrop(crop_size, CROP_FILLS[crop_fill])]
    if second_view is not None:
        transforms.append(SecondView(second_view))
    return Compose(transforms)


def seg_train_geometry(crop_size: int = 448, scale: tuple[float, float] = (0.5, 1.5), flip_p: float = 0.5) -> Compose:
    """The segmentation-network geometry of docs/method.md §6: random scale, flip, ``crop_size`` crop.

    A scaled image smaller than the crop is padded with the ImageNet mean (0 after normalisation) and
    its mask with 255 (ignored by the loss), as in DeepLab.
    """
    return Compose([RandomScale(*scale), RandomHorizontalFlip(flip_p), RandomCrop(crop_size)])
