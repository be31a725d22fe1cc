"""MS-COCO 2014 for WSSS, in the layout of docs/method.md §8.

::

    COCO2014/{train,validation}/image/{id}.jpg
    COCO2014/{train,validation}/mask/{id}.png    class-id PNGs, 0 = background, 255 = ignore
    COCO2014/{train,validation}/xml/             (not read)
    COCO2014/{train,validation}/{saliency_dir}/{id}.png   optional saliency maps (8-bit grayscale)

``root`` is the ``COCO2014`` folder; split ``train`` or ``val`` (the
``validation`` folder).  Ids are the image file stems.

Class ids: the 80 object categories map to 1..80 in the order of their COCO
category ids (``COCO_CATEGORY_IDS``: 1 person, 2 bicycle, ..., 80
toothbrush; the standard contiguous mapping that skips COCO's unused ids 12,
26, 29, 30, 45, 66, 68, 69, 71, 83).  Masks written with contiguous ids
(values 0..80) are read as they are (``mask_ids="contiguous"``, default);
masks that store the raw COCO category ids (values 1..90) are mapped with
``mask_ids="coco"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsae.data.palette import IGNORE_INDEX
from fsae.data.registry import register_dataset
from fsae.data.segmentation import DatasetError, SegmentationDataset, Transform

__all__ = ["COCO_CATEGORY_IDS", "COCO_CLASSES", "COCOSegmentation", "coco_id_lut"]

COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

COCO_CLASSES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

SPLIT_FOLDERS = {"train": "train", "val": "validation"}


def coco_id_lut() -> np.ndarray:
    """``uint8 (256,)`` table: raw COCO category id -> contiguous class id (unused ids -> 255)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[0] = 0
    for contiguous, category in enumerate(COCO_CATEGORY_IDS, start=1):
        lut[category] = contiguous
    return lut


@register_dataset("coco")
class COCOSegmentation(SegmentationDataset):
    """COCO 2014 segmentation (80 classes) with image-level labels derived from the masks.

    Args:
        root: the ``COCO2014`` folder.
        split: ``train`` or ``val``.
        mask_ids: ``"contiguous"`` (mask values 0..80) or ``"coco"`` (raw category ids, mapped).
        transform, cache_dir, seed, on_error: as for :class:`~fsae.data.voc.VOCSegmentation`.
        saliency_dir: folder of saliency maps ``{id}.png`` inside the split's folder (next to ``image`` and
            ``mask``, e.g. ``train/SALImages``; an absolute path is used as it is), or None (default).

    Items: ``image`` uint8 (3, H, W), ``mask`` int64 (H, W), ``labels`` float32 (80,), ``id``; with
    ``saliency_dir`` also ``saliency`` float32 (1, H, W) in [0, 1].
    """

    num_classes = 80

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        mask_ids: str = "contiguous",
        cache_dir: str | Path | None = None,
        seed: int = 0,
        on_error: str = "raise",
        saliency_dir: str | None = None,
    ) -> None:
        root = Path(root)
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"split must be one of {tuple(SPLIT_FOLDERS)}, got {split!r}")
        if mask_ids not in ("contiguous", "coco"):
            raise ValueError(f"mask_ids must be 'contiguous' or 'coco', got {mask_ids!r}")
        if not root.is_dir():
            raise DatasetError(f"COCO root not found: {root} (expected the COCO2014 folder)")
        folder = root / SPLIT_FOLDERS[split]
        images, masks = folder / "image", folder / "mask"
        for needed in (images, masks):
            if not needed.is_dir():
                raise DatasetError(f"COCO folder not found: {needed}")
        saliency = None if saliency_dir is None else folder / saliency_dir
        if saliency is not None and not saliency.is_dir():
            raise DatasetError(f"saliency folder not found: {saliency}")
        ids = sorted(p.stem for p in images.glob("*.jpg"))
        if not ids:
            raise DatasetError(f"no .jpg images in {images}")
        cache = Path(cache_dir) if cache_dir is not None else root
        super().__init__(
            ids,
            {i: images / f"{i}.jpg" for i in ids},
            {i: masks / f"{i}.png" for i in ids},
            self.num_classes,
            COCO_CLASSES,
            label_cache=cache / ".fsae_cache" / f"labels_{split}_{mask_ids}.json",
            transform=transform,
            seed=seed,
            on_error=on_error,
            mask_lut=coco_id_lut() if mask_ids == "coco" else None,
            saliency_paths=None if saliency is None else {i: saliency / f"{i}.png" for i in ids},
        )
        self.root, self.split = root, split
