"""COCOSegmentation on a hand-made COCO2014 tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_trees import write_image
from PIL import Image

from fsae.data import COCOSegmentation, DatasetError
from fsae.data.coco import COCO_CATEGORY_IDS, COCO_CLASSES, coco_id_lut


def make_coco_tree(root, raw_ids: bool = False):
    rng = np.random.default_rng(0)
    samples = {"train": {"COCO_train2014_000000000009": [1, 80], "COCO_train2014_000000000025": [25]},
               "validation": {"COCO_val2014_000000000042": [18]}}  # fmt: skip
    for folder, entries in samples.items():
        for sample_id, classes in entries.items():
            write_image(root / folder / "image" / f"{sample_id}.jpg", 16, 20, rng)
            mask = np.zeros((16, 20), dtype=np.uint8)
            for n, k in enumerate(classes):
                mask[:, 4 * n : 4 * n + 3] = COCO_CATEGORY_IDS[k - 1] if raw_ids else k
            mask[0, 0] = 255
            (root / folder / "mask").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / folder / "mask" / f"{sample_id}.png")
        (root / folder / "xml").mkdir(exist_ok=True)
    return samples


@pytest.mark.parametrize("raw_ids", [False, True])
def test_splits_and_labels(tmp_path, raw_ids):
    samples = make_coco_tree(tmp_path / "COCO2014", raw_ids)
    mask_ids = "coco" if raw_ids else "contiguous"
    for split, folder in (("train", "train"), ("val", "validation")):
        dataset = COCOSegmentation(tmp_path / "COCO2014", split, mask_ids=mask_ids)
        assert dataset.ids == sorted(samples[folder])
        for index, sample_id in enumerate(dataset.ids):
            item = dataset[index]
            expected = torch.zeros(80)
            expected[[k - 1 for k in samples[folder][sample_id]]] = 1
            assert torch.equal(item["labels"], expected)
            assert set(item["mask"].unique().tolist()) == {0, 255, *samples[folder][sample_id]}


def test_mapping_is_the_standard_contiguous_one():
    lut = coco_id_lut()
    assert len(COCO_CATEGORY_IDS) == 80 and len(COCO_CLASSES) == 81
    assert lut[1] == 1 and lut[90] == 80 and lut[13] == 12 and lut[12] == 255
    assert COCO_CLASSES[1] == "person" and COCO_CLASSES[80] == "toothbrush"


def test_raw_ids_read_as_contiguous_are_rejected(tmp_path):
    make_coco_tree(tmp_path / "COCO2014", raw_ids=True)
    with pytest.raises(DatasetError, match=r"has values \[90\] outside 0..80"):
        COCOSegmentation(tmp_path / "COCO2014", "train")


def test_bad_roots(tmp_path):
    with pytest.raises(DatasetError, match="COCO root not found"):
        COCOSegmentation(tmp_path / "COCO2014", "train")
    (tmp_path / "COCO2014" / "train" / "image").mkdir(parents=True)
    with pytest.raises(DatasetError, match="COCO folder not found: .*train/mask"):
        COCOSegmentation(tmp_path / "COCO2014", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        COCOSegmentation(tmp_path / "COCO2014", "validation")


def test_saliency_maps_next_to_the_split_folders(tmp_path):
    samples = make_coco_tree(tmp_path / "COCO2014")
    with pytest.raises(DatasetError, match="saliency folder not found: .*train/SALImages"):
        COCOSegmentation(tmp_path / "COCO2014", "train", saliency_dir="SALImages")
    for sample_id in samples["train"]:
        saliency = np.zeros((16, 20), dtype=np.uint8)
        saliency[:, :10] = 255
        (tmp_path / "COCO2014" / "train" / "SALImages").mkdir(exist_ok=True)
        Image.fromarray(saliency, mode="L").save(tmp_path / "COCO2014" / "train" / "SALImages" / f"{sample_id}.png")
    item = COCOSegmentation(tmp_path / "COCO2014", "train", saliency_dir="SALImages")[0]
    assert item["saliency"].shape == (1, 16, 20) and item["saliency"].dtype == torch.float32
    assert item["saliency"][0, :, :10].eq(1).all() and item["saliency"][0, :, 10:].eq(0).all()
