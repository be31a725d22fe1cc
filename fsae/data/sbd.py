"""Build ``SegmentationClassAug`` from the SBD release (Hariharan et al. 2011).

``convert_sbd(sbd_root, voc_root)`` writes one palette PNG per SBD
``cls/{id}.mat`` (the ``GTcls.Segmentation`` class-id map) into
``voc_root/SegmentationClassAug/``, then copies VOC's own
``SegmentationClass/{id}.png`` over them (VOC's masks, with their 255 ignore
borders, take precedence where both exist).  This is the usual recipe for
the 10,582-image ``train_aug`` split for users without the prepared zip.

Needs scipy (``pip install fsae[sbd]``); nothing else in fsae does.

Command line::

    python -m fsae.data.sbd /data/benchmark_RELEASE/dataset /data/VOCdevkit/VOC2012
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from fsae.data.palette import read_label_png, write_label_png
from fsae.data.segmentation import DatasetError

__all__ = ["convert_sbd", "read_sbd_mat"]


def read_sbd_mat(path: Path) -> np.ndarray:
    """``uint8 (H, W)`` class ids of an SBD ``cls/*.mat`` file."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError("reading SBD .mat files needs scipy: pip install scipy") from None
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
        segmentation = np.asarray(mat["GTcls"].Segmentation)
    except (KeyError, AttributeError, ValueError, OSError) as err:
        raise DatasetError(f"not an SBD class file (GTcls.Segmentation) {path}: {err}") from None
    if segmentation.ndim != 2 or segmentation.max() > 20:
        raise DatasetError(
            f"SBD file {path} has a bad segmentation: shape {segmentation.shape}, max {segmentation.max()}"
        )
    return segmentation.astype(np.uint8)


def _sbd_cls_dir(sbd_root: Path) -> Path:
    for candidate in (sbd_root / "cls", sbd_root / "dataset" / "cls"):
        if candidate.is_dir():
            return candidate
    raise DatasetError(f"no SBD cls/ folder in {sbd_root} (expected benchmark_RELEASE/dataset)")


def convert_sbd(sbd_root: str | Path, voc_root: str | Path, overwrite: bool = False) -> int:
    """Write ``voc_root/SegmentationClassAug`` from SBD + VOC masks; returns the number of masks.

    Existing files are kept unless ``overwrite``; VOC's own masks always replace SBD's.
    """
    sbd_root, voc_root = Path(sbd_root), Path(voc_root)
    cls_dir = _sbd_cls_dir(sbd_root)
    if not voc_root.is_dir():
        raise DatasetError(f"VOC root not found: {voc_root}")
    out = voc_root / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    mats = sorted(cls_dir.glob("*.mat"))
    if not mats:
        raise DatasetError(f"no .mat files in {cls_dir}")
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    for mat in tqdm(mats, desc="SBD -> PNG") if tqdm else mats:
        target = out / f"{mat.stem}.png"
        if overwrite or not target.exists():
            write_label_png(target, read_sbd_mat(mat))
    voc_masks = voc_root / "SegmentationClass"
    for png in sorted(voc_masks.glob("*.png")) if voc_masks.is_dir() else []:
        read_label_png(png)  # class-id PNG, not an RGB rendering
        shutil.copyfile(png, out / png.name)
    return len(list(out.glob("*.png")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sbd_root", help="SBD's benchmark_RELEASE/dataset folder (with cls/)")
    parser.add_argument("voc_root", help="the VOC2012 folder")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing SegmentationClassAug files")
    args = parser.parse_args(argv)
    try:
        count = convert_sbd(args.sbd_root, args.voc_root, args.overwrite)
    except (DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{count} masks in {Path(args.voc_root) / 'SegmentationClassAug'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
