"""VOCSegmentation on hand-made trees and on every bad input the issue lists."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
from data_trees import VOC_TREE, make_voc_tree, write_mask
from PIL import Image

from fsae.data import DatasetError, VOCSegmentation, make_toy_dataset
from fsae.data.palette import read_label_png
from fsae.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, train_geometry


@pytest.fixture
def voc(tmp_path):
    return make_voc_tree(tmp_path / "VOC2012")


def multi_hot(classes):
    vector = torch.zeros(20)
    vector[[k - 1 for k in classes]] = 1
    return vector


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ("train", VOC_TREE["train"]),
        ("val", VOC_TREE["val"]),
        ("train_aug", {**VOC_TREE["train"], **VOC_TREE["aug"]}),
        ("trainval", {**VOC_TREE["train"], **VOC_TREE["val"]}),
    ],
)
def test_splits_items_and_labels(voc, split, expected):
    dataset = VOCSegmentation(voc, split)
    assert sorted(dataset.ids) == sorted(expected)
    for index, sample_id in enumerate(dataset.ids):
        item = dataset[index]
        assert item["id"] == sample_id
        assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 3
        assert item["mask"].dtype == torch.int64 and item["mask"].shape == item["image"].shape[1:]
        assert torch.equal(item["labels"], multi_hot(expected[sample_id]))
        assert set(item["mask"].unique().tolist()) <= {0, 255, *expected[sample_id]}


def test_train_aug_excludes_val_ids(voc):
    ids = set(VOCSegmentation(voc, "train_aug").ids)
    assert not ids & set(VOC_TREE["val"])


def test_test_split_has_no_masks(voc):
    item = VOCSegmentation(voc, "test")[0]
    assert "mask" not in item and not item["labels"].any() and item["id"] == "2010_000001"


def test_without_sbd_masks(voc):
    dataset = VOCSegmentation(voc, "train_aug", mask_dir="SegmentationClass")
    assert sorted(dataset.ids) == sorted(VOC_TREE["train"])


def test_labels_are_cached_and_recomputed_when_stale(voc):
    first = VOCSegmentation(voc, "train")
    cache = voc / ".fsae_cache" / "labels_SegmentationClassAug_train.json"
    assert cache.exists()
    assert json.loads(cache.read_text())["labels"]["2007_000002"] == [7, 15]
    # A cached run does not read the masks: poison the cache content and see it used.
    payload = json.loads(cache.read_text())
    payload["labels"]["2007_000001"] = [2]
    cache.write_text(json.dumps(payload))
    assert VOCSegmentation(voc, "train").labels["2007_000001"] == [2]
    # Rewriting a mask makes the cache stale: labels are derived again.
    mask = voc / "SegmentationClassAug" / "2007_000001.png"
    write_mask(mask, [4], *np.array(Image.open(mask)).shape)
    stamp = time.time() + 5
    os.utime(mask, (stamp, stamp))
    assert VOCSegmentation(voc, "train").labels["2007_000001"] == [4]
    assert first.labels["2007_000001"] == [1]


def test_cache_dir_for_read_only_roots(voc, tmp_path):
    VOCSegmentation(voc, "val", cache_dir=tmp_path / "out")
    assert (tmp_path / "out" / ".fsae_cache" / "labels_SegmentationClassAug_val.json").exists()
    assert not (voc / ".fsae_cache").exists()


def test_geometry_transform_is_reproducible_and_recorded(voc):
    dataset = VOCSegmentation(voc, "train_aug", transform=train_geometry(32, (24, 48), second_view=16), seed=3)
    a, b = dataset[1], dataset[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert a["image"].shape == (3, 32, 32) and a["mask"].shape == (32, 32) and a["image_small"].shape == (3, 16, 16)
    assert set(a["geometry"]) == {"orig_h", "orig_w", "resized_h", "resized_w", "flip", "crop_y", "crop_x"}
    dataset.set_epoch(1)
    draws = {tuple(dataset[1]["geometry"].values()) for _ in range(1)} | {tuple(a["geometry"].values())}
    assert len(draws) == 2, "another epoch draws another geometry"
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["geometry"]["flip"].shape == (2,)


# ------------------------------------------------------------------ bad inputs


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="VOC root not found: .*nowhere"):
        VOCSegmentation(tmp_path / "nowhere", "train")


def test_wrong_layout(tmp_path):
    (tmp_path / "VOC2012").mkdir()
    with pytest.raises(DatasetError, match="not a VOC2012 folder"):
        VOCSegmentation(tmp_path / "VOC2012", "train")


def test_missing_split_file(voc):
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DatasetError, match="split file not found: .*val.txt"):
        VOCSegmentation(voc, "val")
    with pytest.raises(DatasetError, match="split file not found: .*val.txt"):
        VOCSegmentation(voc, "train_aug")


def test_unknown_split(voc):
    with pytest.raises(ValueError, match="split must be one of"):
        VOCSegmentation(voc, "training")


def test_id_without_image(voc):
    (voc / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(DatasetError, match="image not found: .*2007_000002.jpg"):
        VOCSegmentation(voc, "train")


def test_id_without_mask(voc):
    (voc / "SegmentationClassAug" / "2008_000001.png").unlink()
    with pytest.raises(DatasetError, match="mask not found: .*2008_000001.png"):
        VOCSegmentation(voc, "val")


def test_corrupt_jpeg_raises_or_is_skipped(voc, caplog):
    (voc / "JPEGImages" / "2007_000001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    dataset = VOCSegmentation(voc, "train")
    with pytest.raises(DatasetError, match="unreadable image .*2007_000001.jpg"):
        dataset[0]
    skipping = VOCSegmentation(voc, "train", on_error="skip")
    item = skipping[0]
    assert item["id"] == "2007_000002" and skipping.skipped == 1
    assert "2007_000001.jpg" in caplog.text


def test_mask_with_values_out_of_range(voc):
    bad = np.zeros((10, 10), dtype=np.uint8)
    bad[2, 2] = 37
    Image.fromarray(bad).save(voc / "SegmentationClassAug" / "2008_000002.png")
    with pytest.raises(DatasetError, match=r"mask .*2008_000002.png has values \[37\] outside 0..20 and 255"):
        VOCSegmentation(voc, "val")


def test_rgb_mask_is_rejected(voc):
    Image.new("RGB", (10, 10), (128, 0, 0)).save(voc / "SegmentationClassAug" / "2008_000001.png")
    with pytest.raises(DatasetError, match="2008_000001.png: label PNG must be palette"):
        VOCSegmentation(voc, "val")


def test_mask_size_differs_from_image(voc):
    write_mask(voc / "SegmentationClassAug" / "2007_000001.png", [1], 5, 5)
    dataset = VOCSegmentation(voc, "train")
    with pytest.raises(DatasetError, match="2007_000001.png is 5x5 but its image is"):
        dataset[0]


# ------------------------------------------------------------------ saliency maps (EPS / PPC: SALImages)


def write_saliency(voc, folder="SALImages"):
    """A saliency map per id equal to its objects (255 on classes 1..20, 0 on background and 255 lines)."""
    for path in sorted((voc / "SegmentationClassAug").glob("*.png")):
        mask = read_label_png(path)
        (voc / folder).mkdir(exist_ok=True)
        Image.fromarray((((mask > 0) & (mask != 255)) * 255).astype(np.uint8), mode="L").save(voc / folder / path.name)


def test_saliency_is_read_and_stays_aligned_through_flip_and_crop(voc):
    write_saliency(voc)
    geometry = Compose([RandomHorizontalFlip(0.5), RandomCrop(48)])  # images are 20-40 px: padded and cropped
    plain = VOCSegmentation(voc, "train_aug", transform=geometry, seed=1)
    dataset = VOCSegmentation(voc, "train_aug", transform=geometry, seed=1, saliency_dir="SALImages")
    flips = set()
    for index in range(len(dataset)):
        item, without = dataset[index], plain[index]
        assert "saliency" not in without and item.keys() - without.keys() == {"saliency"}
        assert torch.equal(item["image"], without["image"]) and torch.equal(item["mask"], without["mask"])
        saliency = item["saliency"]
        assert saliency.dtype == torch.float32 and saliency.shape == (1, 48, 48)
        objects = (item["mask"] > 0) & (item["mask"] != 255)
        assert torch.equal(saliency[0], objects.float())  # flipped and cropped / padded (with 0) with the mask
        flips.add(item["geometry"]["flip"])
    assert flips == {0, 1}


def test_saliency_batches_with_the_training_geometry(voc):
    write_saliency(voc)
    dataset = VOCSegmentation(voc, "train_aug", transform=train_geometry(32, (24, 48)), saliency_dir="SALImages")
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    saliency = batch["saliency"]
    assert saliency.shape == (3, 1, 32, 32) and saliency.dtype == torch.float32
    assert saliency.min() >= 0 and saliency.max() <= 1
    objects = (batch["mask"] > 0) & (batch["mask"] != 255)
    assert ((saliency[:, 0] > 0.5) == objects).float().mean() > 0.9  # bilinear edges against nearest ones
    untransformed = VOCSegmentation(voc, "val", saliency_dir="SALImages")[0]
    assert untransformed["saliency"].shape == (1, *untransformed["mask"].shape)
    assert set(untransformed["saliency"].unique().tolist()) == {0.0, 1.0}


def test_saliency_folder_or_map_missing(voc):
    with pytest.raises(DatasetError, match="saliency folder not found: .*VOC2012/SALImages$"):
        VOCSegmentation(voc, "train", saliency_dir="SALImages")
    write_saliency(voc)
    (voc / "SALImages" / "2007_000002.png").unlink()
    with pytest.raises(DatasetError, match="saliency map not found: .*SALImages/2007_000002.png$"):
        VOCSegmentation(voc, "train", saliency_dir="SALImages")
    dataset = VOCSegmentation(voc, "val", saliency_dir="SALImages")  # its ids all have maps
    (voc / "SALImages" / "2008_000001.png").unlink()  # vanishes after the check
    with pytest.raises(DatasetError, match="saliency map not found: .*2008_000001.png"):
        dataset[0]


def test_saliency_map_of_the_wrong_size_or_kind(voc):
    write_saliency(voc)
    Image.new("L", (5, 7)).save(voc / "SALImages" / "2007_000001.png")
    dataset = VOCSegmentation(voc, "train", saliency_dir="SALImages")
    with pytest.raises(DatasetError, match="saliency map .*2007_000001.png is 5x7 but its image is"):
        dataset[0]
    Image.fromarray(np.zeros((7, 5), dtype=np.uint16)).save(voc / "SALImages" / "2007_000001.png")
    with pytest.raises(DatasetError, match="2007_000001.png has image mode I;16.*8-bit grayscale"):
        dataset[0]
    (voc / "SALImages" / "2007_000001.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="unreadable saliency map .*2007_000001.png"):
        dataset[0]


def test_label_cache_of_a_nested_or_absolute_mask_dir_is_one_file(tmp_path):
    voc = make_toy_dataset(tmp_path / "VOC2012", num_train=6, num_val=2, image_size=64)
    nested = voc / "runs" / "labels" / "masks"
    shutil.copytree(voc / "SegmentationClassAug", nested)
    for mask_dir in ("runs/labels/masks", str(nested)):
        dataset = VOCSegmentation(voc, "train_aug", mask_dir=mask_dir)
        assert len(dataset) == 6
    cached = sorted(p.name for p in (voc / ".fsae_cache").iterdir())
    assert all(p.is_file() for p in (voc / ".fsae_cache").iterdir())
    keys = [name for name in cached if name.startswith("labels_masks-")]
    assert len(keys) == 2 and keys[0] != keys[1]  # two paths, two caches, no sub-folders
