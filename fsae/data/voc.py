"""PASCAL VOC 2012 with the SBD-augmented masks (``SegmentationClassAug``).

Layout (docs/method.md §8): ``root`` is the ``VOC2012`` folder::

    VOC2012/JPEGImages/{id}.jpg
    VOC2012/SegmentationClassAug/{id}.png     class-id palette PNGs, 255 = ignore
    VOC2012/SegmentationClass/{id}.png        VOC's own masks (train + val ids)
    VOC2012/ImageSets/Segmentation/{train,val,trainval,test}.txt
    VOC2012/SALImages/{id}.png                optional: off-the-shelf saliency maps (EPS / PPC;
                                              8-bit grayscale, 0..255, the image's size)

Splits: ``train_aug`` = every id with a mask in ``mask_dir`` minus the ``val``
ids (10,582 on the real data); ``train`` / ``val`` / ``trainval`` / ``test``
from ``ImageSets/Segmentation`` (``test`` has no masks and no labels).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fsae.data.palette import VOC_CLASSES
from fsae.data.registry import register_dataset
from fsae.data.segmentation import DatasetError, SegmentationDataset, Transform

__all__ = ["VOCSegmentation"]

VOC_SPLITS = ("train_aug", "train", "val", "trainval", "test")


def read_id_list(path: Path) -> list[str]:
    """Ids of an ImageSets list file (first token of each non-empty line)."""
    if not path.is_file():
        raise DatasetError(f"split file not found: {path}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _cache_key(mask_dir: str) -> str:
    """A file-name-safe key for ``mask_dir``: the name itself for a plain folder name (``SegmentationClassAug``),
    else its last part plus a hash of the whole path (pseudo-label folders are often absolute paths)."""
    if Path(mask_dir).name == mask_dir:
        return mask_dir
    digest = hashlib.sha1(str(mask_dir).encode()).hexdigest()[:10]
    return f"{Path(mask_dir).name or 'masks'}-{digest}"


@register_dataset("voc")
class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation with image-level labels derived from the masks.

    Args:
        root: the ``VOC2012`` folder.
        split: one of ``train_aug``, ``train``, ``val``, ``trainval``, ``test``.
        transform: geometry ``transform(sample, rng) -> sample`` (see :mod:`fsae.data.transforms`).
        mask_dir: folder of class-id masks under ``root`` (``SegmentationClass`` for users without SBD;
            ``train_aug`` then equals ``train``).
        cache_dir: where the derived-label cache goes (default: ``root``; give an output dir when
            ``root`` is read-only).
        seed, on_error: see :class:`~fsae.data.segmentation.SegmentationDataset`.
        saliency_dir: folder of saliency maps ``{id}.png`` under ``root`` (e.g. ``SALImages``, as EPS / PPC
            users have it; an absolute path is used as it is), or None (default) for none. Every id of the
            split needs its map (:class:`~fsae.data.segmentation.DatasetError` naming the first missing one).

    Items: ``image`` uint8 (3, H, W), ``mask`` int64 (H, W) (not for ``test``), ``labels``
    float32 (20,), ``id``; with ``saliency_dir`` also ``saliency`` float32 (1, H, W) in [0, 1]
    (transformed with the image).
    """

    num_classes = 20

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        mask_dir: str = "SegmentationClassAug",
        cache_dir: str | Path | None = None,
        seed: int = 0,
        on_error: str = "raise",
        saliency_dir: str | None = None,
    ) -> None:
        root = Path(root)
        if split not in VOC_SPLITS:
            raise ValueError(f"split must be one of {VOC_SPLITS}, got {split!r}")
        if not root.is_dir():
            raise DatasetError(f"VOC root not found: {root} (expected the VOC2012 folder)")
        if not (root / "JPEGImages").is_dir():
            raise DatasetError(f"not a VOC2012 folder (no JPEGImages/): {root}")
        lists = root / "ImageSets" / "Segmentation"
        masks = root / mask_dir
        if split != "test" and not masks.is_dir():
            raise DatasetError(f"mask folder not found: {masks}")
        saliency = None if saliency_dir is None else root / saliency_dir
        if saliency is not None and not saliency.is_dir():
            raise DatasetError(f"saliency folder not found: {saliency}")
        if split == "train_aug":
            val = set(read_id_list(lists / "val.txt"))
            ids = sorted(p.stem for p in masks.glob("*.png") if p.stem not in val)
            if not ids:
                raise DatasetError(f"no masks for train_aug in {masks}")
        else:
            ids = read_id_list(lists / f"{split}.txt")
        image_paths = {i: root / "JPEGImages" / f"{i}.jpg" for i in ids}
        mask_paths = None if split == "test" else {i: masks / f"{i}.png" for i in ids}
        cache = Path(cache_dir) if cache_dir is not None else root
        super().__init__(
            ids,
            image_paths,
            mask_paths,
            self.num_classes,
            VOC_CLASSES,
            label_cache=cache / ".fsae_cache" / f"labels_{_cache_key(mask_dir)}_{split}.json",
            transform=transform,
            seed=seed,
            on_error=on_error,
            saliency_paths=None if saliency is None else {i: saliency / f"{i}.png" for i in ids},
        )
        self.root, self.split = root, split
