"""The contract every registered dataset keeps, swept over ``fsae.data.list_datasets()`` on generated trees in each
one's real layout (``toy_voc`` is registered from outside fsae: tests/methods/external/toy_wsss.py).

A registered dataset the sweep has no tree for fails ``test_every_registered_dataset_has_a_tree``: add its generator
to ``TREES``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_coco import make_coco_tree

from fsae.data import DatasetError, get_dataset, list_datasets, make_toy_dataset, train_geometry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods" / "external"))
import toy_wsss  # noqa: E402, F401  (registers toy_cam and toy_voc)


def _voc(tmp: Path) -> tuple[Path, str]:
    return make_toy_dataset(tmp / "VOC2012", num_train=6, num_val=2, image_size=64), "train"


def _coco(tmp: Path) -> tuple[Path, str]:
    make_coco_tree(tmp / "COCO2014")
    return tmp / "COCO2014", "train"


# name -> writes a small tree in the dataset's layout under a folder: (root, a split with masks)
TREES = {"voc": _voc, "coco": _coco, "toy_voc": _voc}


def test_every_registered_dataset_has_a_tree():
    assert {"voc", "coco", "toy_voc"} <= set(list_datasets())
    assert set(list_datasets()) <= set(TREES), f"no generated tree for {sorted(set(list_datasets()) - set(TREES))}"


@pytest.mark.parametrize("name", sorted(TREES))
def test_samples_labels_and_geometry(name, tmp_path):
    cls = get_dataset(name)
    root, split = TREES[name](tmp_path)
    plain = cls(root, split)  # what make_pseudo_labels builds
    assert len(plain) > 0 and len(plain.ids) == len(set(plain.ids)) == len(plain)
    c = cls.num_classes
    for index in range(len(plain)):
        sample = plain[index]
        image, mask, labels = sample["image"], sample["mask"], sample["labels"]
        assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3
        assert mask.dtype == torch.int64 and mask.shape == image.shape[1:]
        valid = mask[(mask != 255)]
        assert valid.min() >= 0 and valid.max() <= c
        assert labels.shape == (c,) and labels.dtype == torch.float32
        present = {int(v) - 1 for v in valid.unique() if v > 0}  # image labels = the classes in the mask
        assert set(labels.nonzero().flatten().tolist()) == present, sample["id"]
    # what the training recipes build: the training geometry, a seed and on_error
    crop = cls(root, split, transform=train_geometry(32, (32, 48)), seed=3, saliency_dir=None, on_error="raise")
    first, again = crop[0], crop[0]
    assert "geometry" in first and torch.equal(first["image"], again["image"])  # a fixed draw per (seed, epoch, index)
    assert first["labels"].equal(plain.label_vector(0))


@pytest.mark.parametrize("name", sorted(TREES))
def test_a_missing_root_is_a_dataset_error(name, tmp_path):
    with pytest.raises(DatasetError) as info:
        get_dataset(name)(tmp_path / "nowhere", "train")
    assert "\n" not in str(info.value)
