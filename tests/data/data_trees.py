"""Tiny hand-made dataset trees in the real layouts, written into tmp dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fsae.data.palette import write_label_png


def write_image(path: Path, height: int, width: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=95)


def write_mask(path: Path, classes: list[int], height: int, width: int) -> np.ndarray:
    """Background, one vertical band per class, a 255 line between bands."""
    mask = np.zeros((height, width), dtype=np.uint8)
    band = max(1, width // (len(classes) + 1))
    for n, k in enumerate(classes, start=1):
        mask[:, n * band : (n + 1) * band] = k
        mask[:, n * band] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_png(path, mask)
    return mask


# id -> classes; "train"/"val" in ImageSets, "aug" only in SegmentationClassAug.
VOC_TREE = {
    "train": {"2007_000001": [1], "2007_000002": [15, 7]},
    "val": {"2008_000001": [3], "2008_000002": [20, 1, 5]},
    "aug": {"2009_000001": [12], "2009_000002": [9, 9]},
}


def make_voc_tree(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, entries in VOC_TREE.items():
        for sample_id, classes in entries.items():
            height, width = int(rng.integers(20, 40)), int(rng.integers(20, 40))
            write_image(root / "JPEGImages" / f"{sample_id}.jpg", height, width, rng)
            write_mask(root / "SegmentationClassAug" / f"{sample_id}.png", classes, height, width)
            if split != "aug":
                write_mask(root / "SegmentationClass" / f"{sample_id}.png", classes, height, width)
    (lists / "train.txt").write_text("\n".join(VOC_TREE["train"]) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_TREE["val"]) + "\n")
    (lists / "trainval.txt").write_text("\n".join([*VOC_TREE["train"], *VOC_TREE["val"]]) + "\n")
    write_image(root / "JPEGImages" / "2010_000001.jpg", 24, 32, rng)
    (lists / "test.txt").write_text("2010_000001\n")
    return root
