"""FSAE's weak and strong training views from the loader's batch, on the training device: one entry point.

:class:`TrainingViews` turns a batch of ``uint8`` images (``batch["image"]``) and the geometry the loader drew
(``batch["geometry"]``) into the float ``[0, 1]`` weak and strong views (ImageNet normalisation comes after).
Two layouts, chosen by ``data.geometry`` (:func:`fsae.data.transforms.train_geometry`):

* ``"authors"`` (the paper's pipeline, docs/method.md §3): the loader resizes (long side, bicubic) and flips,
  draws the crop box, and delivers the image top-left on a fixed ``(3, L, L)`` canvas (zeros outside).  Here
  each view is ColorJittered over the *whole* image (Contrast's mean over the image region only, as
  torchvision's ColorJitter on the resized PIL image), then cropped with ``crop_fill`` (black) where the crop
  leaves the image; the strong view is then blurred and RandAugmented on that padded crop.
* ``"crop"`` (ours): the loader delivers the ``(3, crop, crop)`` crops, already padded; both views are
  perturbed on the crop.
* ``"timm"`` (MCTformer's training view, :class:`fsae.data.transforms.TimmView`): the loader delivers timm's
  finished ``(3, crop, crop)`` views (random-resized crop, flip, RandAugment); here as ``"crop"`` (set
  ``augment.weak_color_jitter`` to zeros for the authors' input unchanged), and :func:`random_erase` applies the
  loader's erasing boxes to the normalised weak view.

With the uint8 arithmetic (``augment.arithmetic``) every op runs on 8-bit levels with PIL's rounding
(:mod:`fsae.augment.levels`), so that the views are those of the authors' PIL code, given the same draws.

Example (the trainer's call; ``config`` = :func:`fsae.engine.config.load_config`'s dict)::

    views = TrainingViews.from_config(config)
    weak01, strong01 = views(batch["image"], batch["geometry"], config["data"]["crop_size"],
                             state.generators, strong=expanding)   # strong01 is None when not expanding
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fsae.constants import IMAGENET_MEAN_RGB

from . import functional as AF
from . import levels as LV
from .perturbation import StrongPerturbation, WeakPerturbation, _Photometric

__all__ = ["CROP_FILLS", "GEOMETRIES", "TrainingViews", "crop_canvas", "crop_valid_mask", "random_erase"]

#: ``data.geometry``: where the views are cut (see the module docstring).
GEOMETRIES: tuple[str, ...] = ("authors", "crop", "timm")
#: ``data.crop_fill``: the value of crop pixels outside the image, uint8 RGB: black (the authors' zero
#: container) or the ImageNet mean (0 after normalisation).
CROP_FILLS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "mean": IMAGENET_MEAN_RGB}


def crop_canvas(
    canvas: torch.Tensor, region: torch.Tensor, origin: torch.Tensor, size: int, fill: Sequence[float]
) -> torch.Tensor:
    """Per-sample ``size x size`` crops of images lying top-left on a canvas, ``fill`` outside each image.

    Args:
        canvas: ``(B, C, L, L')`` any dtype, any device: sample ``i``'s image is ``canvas[i, :, :h_i, :w_i]``.
        region: ``(B, 2)`` integer ``(h_i, w_i)``.
        origin: ``(B, 2)`` integer ``(y_i, x_i)``: the crop's top-left in image coordinates, negative where the
            crop starts before the image (a smaller image padded: the loader's ``crop_y`` / ``crop_x``).
        size: the crop side.
        fill: ``C`` values in the canvas's units for crop pixels outside the image.

    Returns:
        ``(B, C, size, size)``, the canvas's dtype and device; pixel ``(dy, dx)`` = image pixel
        ``(y_i + dy, x_i + dx)`` where that is inside ``[0, h_i) x [0, w_i)``, else ``fill``.
    """
    b, c, height, width = canvas.shape
    device = canvas.device
    region = region.to(device=device, dtype=torch.int64)
    origin = origin.to(device=device, dtype=torch.int64)
    offsets = torch.arange(size, device=device)
    ys = origin[:, :1] + offsets  # (B, size)
    xs = origin[:, 1:] + offsets
    valid_y = (ys >= 0) & (ys < region[:, :1])
    valid_x = (xs >= 0) & (xs < region[:, 1:])
    rows = canvas.gather(2, ys.clamp(0, height - 1)[:, None, :, None].expand(b, c, size, width))
    out = rows.gather(3, xs.clamp(0, width - 1)[:, None, None, :].expand(b, c, size, size))
    inside = valid_y[:, None, :, None] & valid_x[:, None, None, :]
    fill_values = torch.tensor(list(fill), dtype=canvas.dtype, device=device).view(1, c, 1, 1)
    return torch.where(inside, out, fill_values)


def random_erase(images: torch.Tensor, geometry: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """timm's ``RandomErasing`` (``mode="pixel"``) with the boxes the loader drew (:class:`~fsae.data.transforms.
    TimmView`): sample ``i``'s box ``erase_y, erase_x, erase_h, erase_w`` of the ImageNet-normalised ``images``
    ``(B, 3, H, W)`` is replaced by ``N(0, 1)`` values, ``torch.Generator().manual_seed(erase_seed).normal_`` of
    shape ``(3, h, w)`` (the values timm draws); ``erase_h = 0``: untouched. Returns a new tensor (same dtype and
    device); without ``erase_h`` in ``geometry`` the images are returned as they are."""
    if "erase_h" not in geometry:
        return images
    boxes = torch.stack([geometry[k] for k in ("erase_y", "erase_x", "erase_h", "erase_w")], dim=1).tolist()
    seeds = geometry["erase_seed"].tolist()
    out = None
    for i, ((y, x, h, w), seed) in enumerate(zip(boxes, seeds, strict=True)):
        if h == 0 or w == 0:
            continue
        noise = torch.empty(images.shape[1], h, w).normal_(generator=torch.Generator().manual_seed(int(seed)))
        out = images.clone() if out is None else out
        out[i, :, y : y + h, x : x + w] = noise.to(device=images.device, dtype=images.dtype)
    return images if out is None else out


def crop_valid_mask(
    geometry: Mapping[str, torch.Tensor], crop_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(B, 1, crop, crop)`` float32: 1 where the crop shows the image, 0 on its padding.

    From the loader's ``batch["geometry"]`` (``resized_h``, ``resized_w``, ``crop_y``, ``crop_x``: the same in both
    ``data.geometry`` layouts): pixel ``(dy, dx)`` is valid when ``(crop_y + dy, crop_x + dx)`` lies in
    ``[0, resized_h) x [0, resized_w)``. This is SIPE's ``valid_mask`` (their ``random_crop`` box).
    """

    def column(name: str) -> torch.Tensor:
        return torch.as_tensor(geometry[name]).to(device=device, dtype=torch.int64).view(-1, 1)

    offsets = torch.arange(crop_size, device=device).view(1, -1)
    ys, xs = column("crop_y") + offsets, column("crop_x") + offsets  # (B, crop)
    valid_y = (ys >= 0) & (ys < column("resized_h"))
    valid_x = (xs >= 0) & (xs < column("resized_w"))
    return (valid_y[:, None, :, None] & valid_x[:, None, None, :]).to(torch.float32)


def _work_from_uint8(module: _Photometric, images: torch.Tensor) -> torch.Tensor:
    """A float32 working buffer of ``module`` from ``uint8`` images: the levels, or levels / 255."""
    work = images.to(dtype=torch.float32, memory_format=torch.contiguous_format)
    return work if module.levels else AF._levels_to_unit_(work)


class TrainingViews:
    """The weak and strong views of a training batch: ``views(images, geometry, crop_size, generators, strong)``.

    Args:
        weak: the weak view's :class:`~fsae.augment.WeakPerturbation`.
        strong: the strong view's :class:`~fsae.augment.StrongPerturbation`.
        geometry: ``"authors"`` (images are canvases: jitter the whole image, then crop), ``"crop"`` or
            ``"timm"`` (images are the crops / timm's views), see :data:`GEOMETRIES`.
        crop_fill: ``"black"`` or ``"mean"`` (:data:`CROP_FILLS`): crop pixels outside the image, in the
            ``"authors"`` geometry (in ``"crop"`` the loader has padded already).

    Example:
        >>> import torch
        >>> from fsae.engine.config import DEFAULTS
        >>> views = TrainingViews.from_config(DEFAULTS)       # the paper's recipe: authors' geometry, uint8 ops
        >>> canvas = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
        >>> canvas[:, :, :48, :40] = torch.randint(0, 256, (2, 3, 48, 40), dtype=torch.uint8)
        >>> geometry = {"resized_h": torch.tensor([48, 48]), "resized_w": torch.tensor([40, 40]),
        ...             "crop_y": torch.tensor([0, 16]), "crop_x": torch.tensor([-8, 0])}
        >>> generators = {"weak": torch.Generator().manual_seed(0), "strong": torch.Generator().manual_seed(1)}
        >>> weak, strong = views(canvas, geometry, 32, generators, strong=True)
        >>> weak.shape, strong.shape, weak.dtype
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 3, 32, 32]), torch.float32)
        >>> bool((weak[0, :, :, :8] == 0).all())              # left of the image: black padding
        True
        >>> views(canvas, geometry, 32, generators, strong=False)[1] is None
        True
    """

    def __init__(
        self,
        weak: WeakPerturbation,
        strong: StrongPerturbation,
        geometry: str = "authors",
        crop_fill: str = "black",
    ) -> None:
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        if crop_fill not in CROP_FILLS:
            raise ValueError(f"crop_fill must be one of {tuple(CROP_FILLS)}, got {crop_fill!r}")
        self.weak, self.strong = weak, strong
        self.geometry, self.crop_fill = geometry, crop_fill

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainingViews:
        """From a training config (:data:`fsae.engine.config.DEFAULTS` layout): its ``augment`` section,
        ``data.geometry`` / ``data.crop_fill``, and ``train.seed``, which gives the once-per-run blur window when
        ``augment.blur_kernel_size`` is 0: the window the authors' code drew with that seed
        (:func:`fsae.augment.levels.draw_blur_kernel_size`; the same on every process and on resume)."""
        aug, data = config["augment"], config["data"]
        kernel_size = int(aug.get("blur_kernel_size", 0))
        if aug.get("blur", "torchvision") == "torchvision" and kernel_size == 0:
            seed = int(config.get("train", {}).get("seed", 0))
            kernel_size = LV.draw_blur_kernel_size(seed)  # the authors' draw for this seed
        arithmetic = aug.get("arithmetic", "uint8")
        weak = WeakPerturbation(tuple(aug["weak_color_jitter"]), arithmetic=arithmetic)
        strong = StrongPerturbation(
            aug["n_ops"],
            tuple(aug["strong_color_jitter"]),
            tuple(aug["blur_sigma"]),
            aug["p_blur"],
            arithmetic=arithmetic,
            blur=aug.get("blur", "torchvision"),
            blur_kernel_size=kernel_size or None,
            solarize_max=float(aug.get("solarize_max", 256.0)),
        )
        return cls(weak, strong, data.get("geometry", "authors"), data.get("crop_fill", "black"))

    def _fill(self, module: _Photometric) -> tuple[float, ...]:
        levels = CROP_FILLS[self.crop_fill]
        return tuple(float(v) if module.levels else v / 255.0 for v in levels)

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        geometry: Mapping[str, torch.Tensor],
        crop_size: int,
        generators: Mapping[str, torch.Generator | None],
        strong: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weak view and (``strong``) the strong view of a batch.

        Args:
            images: ``uint8`` on the training device: ``(B, 3, L, L)`` canvases (``"authors"`` geometry; sample
                ``i``'s resized, flipped image top-left, ``resized_h x resized_w``) or ``(B, 3, crop, crop)``
                crops (``"crop"``).
            geometry: ``batch["geometry"]``: ``(B,)`` integer tensors ``resized_h``, ``resized_w``, ``crop_y``,
                ``crop_x`` (any device; only read in the ``"authors"`` geometry).
            crop_size: the crop side (``data.crop_size``).
            generators: CPU ``torch.Generator`` per view, keys ``"weak"`` and ``"strong"`` (the trainer's
                ``state.generators``); the parameters drawn are kept in ``self.weak.last_params`` /
                ``self.strong.last_params``.
            strong: False skips the strong view (and its draws).

        Returns:
            ``(weak, strong)``: float32 ``(B, 3, crop_size, crop_size)`` in ``[0, 1]`` on ``images.device``
            (multiples of 1/255 in the uint8 arithmetic); ``strong`` is None when not asked for.
        """
        batch = images.shape[0]
        weak_params = self.weak.generate_parameters(batch, generators.get("weak"))
        strong_params = self.strong.generate_parameters(batch, generators.get("strong")) if strong else None
        self.weak.last_params, self.strong.last_params = weak_params, strong_params
        return self.apply(images, geometry, crop_size, weak_params, strong_params)

    @torch.no_grad()
    def apply(
        self,
        images: torch.Tensor,
        geometry: Mapping[str, torch.Tensor],
        crop_size: int,
        weak_params: dict[str, torch.Tensor],
        strong_params: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The views for given parameters (``generate_parameters`` of the weak / strong modules): a replay.

        Arguments and result as in :meth:`__call__`; no strong view when ``strong_params`` is None."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise TypeError(f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if self.geometry != "authors" and tuple(images.shape[-2:]) != (crop_size, crop_size):
            raise ValueError(
                f"{self.geometry} geometry: images must be {crop_size}x{crop_size}, got {tuple(images.shape)}"
            )
        region = origin = None
        if self.geometry == "authors":
            region = torch.stack([geometry["resized_h"], geometry["resized_w"]], dim=1)
            origin = torch.stack([geometry["crop_y"], geometry["crop_x"]], dim=1)
            region = region.to(device=images.device, dtype=torch.int64, non_blocking=True)
            origin = origin.to(device=images.device, dtype=torch.int64, non_blocking=True)

        def view(module: _Photometric, params: dict[str, torch.Tensor]) -> torch.Tensor:
            work = _work_from_uint8(module, images)
            module.apply_jitter_(work, params, region)
            if region is not None:
                work = crop_canvas(work, region, origin, crop_size, self._fill(module))
            if isinstance(module, StrongPerturbation):
                module.apply_post_(work, params)
            return module.from_work(work)

        weak = view(self.weak, weak_params)
        return weak, (view(self.strong, strong_params) if strong_params is not None else None)

    def __repr__(self) -> str:
        return (
            f"TrainingViews(geometry={self.geometry!r}, crop_fill={self.crop_fill!r},\n  weak={self.weak},\n"
            f"  strong={self.strong})"
        )
