"""The real VOC loader reads the toy dataset (the same code path as for PASCAL VOC)."""

from __future__ import annotations

import torch

from fsae.data import VOCSegmentation, make_toy_dataset, train_geometry
from fsae.data.toy import load_toy_sample


def test_voc_loader_reads_every_split_of_the_toy_dataset(tmp_path):
    root = make_toy_dataset(tmp_path / "VOC2012", num_train=10, num_val=4, seed=1, image_size=96)
    train_aug, train, val = (VOCSegmentation(root, split) for split in ("train_aug", "train", "val"))
    assert len(train_aug) == 10 and len(val) == 4 and 0 < len(train) < 10
    assert set(train.ids) <= set(train_aug.ids) and not set(train_aug.ids) & set(val.ids)
    for dataset in (train_aug, val):
        for index in range(len(dataset)):
            item = dataset[index]
            truth = load_toy_sample(root, item["id"])
            expected = torch.zeros(20)
            expected[[k - 1 for k in truth.classes]] = 1
            assert torch.equal(item["labels"], expected)
            assert torch.equal(item["mask"], torch.from_numpy(truth.label).long())
    crops = VOCSegmentation(root, "train_aug", transform=train_geometry(64, (64, 128), second_view=16))
    batch = next(iter(torch.utils.data.DataLoader(crops, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["labels"].sum(1).min() >= 1
