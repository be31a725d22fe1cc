"""Datasets (VOC 2012 + SBD, COCO 2014, the procedural toy set) and loader-side geometry.

* :class:`VOCSegmentation`, :class:`COCOSegmentation`: the real layouts (docs/method.md §8),
  image-level labels derived from the masks and cached.
* :func:`make_toy_dataset`: a small procedural dataset written in the exact VOC2012
  layout, read by :class:`VOCSegmentation` through the same code path.
* :func:`convert_sbd`: SBD ``.mat`` -> ``SegmentationClassAug`` PNGs.
* :func:`register_dataset`, :func:`list_datasets`, :func:`get_dataset`: the dataset registry (``data.dataset``).
* :func:`check_dataset`: read every file of a dataset once and list every bad one (``--check-data``).
* :mod:`fsae.data.transforms`: random resize / flip / crop that record what they drew.
"""

from fsae._optional import check

check("fsae.data", "train", "PIL", "tqdm")

from fsae.data.coco import COCO_CLASSES, COCOSegmentation
from fsae.data.palette import IGNORE_INDEX, VOC_CLASSES
from fsae.data.registry import get_dataset, list_datasets, register_dataset
from fsae.data.segmentation import DatasetError, SegmentationDataset, check_dataset
from fsae.data.transforms import train_geometry
from fsae.data.voc import VOCSegmentation

# The two command-line modules (python -m fsae.data.toy / fsae.data.sbd) are imported on first
# use, so that running them does not import them twice.
_LAZY = {"make_toy_dataset": "fsae.data.toy", "convert_sbd": "fsae.data.sbd"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fsae.data' has no attribute {name!r}")


__all__ = [
    "COCO_CLASSES",
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "COCOSegmentation",
    "DatasetError",
    "SegmentationDataset",
    "VOCSegmentation",
    "check_dataset",
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "convert_sbd",
    "make_toy_dataset",
    "train_geometry",
]
