"""``on_error="skip"``: the skipped samples are recorded across DataLoader workers; ``check_dataset`` lists every
bad file at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from fsae.data import DatasetError, VOCSegmentation, check_dataset, make_toy_dataset
from fsae.data.palette import read_label_png, write_label_png


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "VOC2012", num_train=8, num_val=4, image_size=64)


@pytest.fixture
def toy(pristine, tmp_path):
    """A fresh copy of the toy dataset (the tests corrupt files of it)."""
    return Path(shutil.copytree(pristine, tmp_path / "VOC2012"))


def truncate(path, keep=200):
    path.write_bytes(path.read_bytes()[:keep])


def test_truncated_jpeg_is_an_error_naming_the_file(toy):
    dataset = VOCSegmentation(toy, "train_aug")
    victim = toy / "JPEGImages" / f"{dataset.ids[2]}.jpg"
    truncate(victim)
    with pytest.raises(DatasetError, match=f"unreadable image {victim}"):
        dataset[2]


@pytest.mark.parametrize("workers", [0, 2])
def test_skipped_samples_are_counted_across_loader_workers(toy, workers):
    dataset = VOCSegmentation(toy, "train_aug", on_error="skip")
    bad = [dataset.ids[1], dataset.ids[5]]
    for sample_id in bad:
        truncate(toy / "JPEGImages" / f"{sample_id}.jpg")
    assert dataset.skipped == 0 and dataset.skipped_ids() == []
    loader = DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=lambda items: items)
    for _ in range(2):  # two epochs: each bad file counted once
        ids = [item["id"] for batch in loader for item in batch]
        assert len(ids) == len(dataset) and not set(ids) & set(bad)
    assert dataset.skipped == 2  # seen in the main process, also when workers did the reading
    assert dataset.skipped_ids() == sorted(bad, key=dataset.ids.index)


def test_raise_mode_stops_in_a_worker_too(toy):
    dataset = VOCSegmentation(toy, "train_aug")
    truncate(toy / "JPEGImages" / f"{dataset.ids[0]}.jpg")
    with pytest.raises(DatasetError, match="unreadable image"):
        next(iter(DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=lambda items: items)))
    assert dataset.skipped == 0


def test_every_sample_bad(toy):
    dataset = VOCSegmentation(toy, "train", on_error="skip")
    for sample_id in dataset.ids:
        truncate(toy / "JPEGImages" / f"{sample_id}.jpg")
    with pytest.raises(DatasetError, match=f"every sample of the dataset failed to load \\({len(dataset)} unreadable"):
        dataset[0]
    assert dataset.skipped == len(dataset)


@pytest.mark.parametrize("workers", [0, 3, None])
def test_check_dataset_lists_every_bad_file(toy, workers):
    dataset = VOCSegmentation(toy, "train_aug", saliency_dir="SALImages")
    assert check_dataset(dataset, workers=workers) == []
    ids = dataset.ids
    image = toy / "JPEGImages" / f"{ids[0]}.jpg"
    truncate(image)
    mask = toy / "SegmentationClassAug" / f"{ids[3]}.png"
    values = read_label_png(mask).copy()
    values[0, 0] = 77
    write_label_png(mask, values)
    small = toy / "SegmentationClassAug" / f"{ids[4]}.png"
    write_label_png(small, np.ascontiguousarray(read_label_png(small)[:-3]))
    saliency = toy / "SALImages" / f"{ids[6]}.png"
    with Image.open(saliency) as sal:
        w, h = sal.size
        sal.crop((0, 0, w - 2, h)).save(saliency)
    truncate(toy / "SALImages" / f"{ids[7]}.png", keep=30)

    problems = check_dataset(dataset, workers=workers)
    assert len(problems) == 5, problems
    assert problems[0].startswith(f"unreadable image {image}: ")
    assert problems[1].startswith(f"mask {mask} has values [77] outside 0..20 and 255")
    assert problems[2] == f"mask {small} is {w}x{h - 3} but its image is {w}x{h}"
    assert problems[3] == f"saliency map {saliency} is {w - 2}x{h} but its image is {w}x{h}"
    assert problems[4].startswith(f"unreadable saliency map {toy / 'SALImages' / f'{ids[7]}.png'}: ")
    assert all("\n" not in p for p in problems)


def test_check_dataset_of_a_split_without_masks(toy):
    (toy / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(VOCSegmentation(toy, "val").ids) + "\n")
    dataset = VOCSegmentation(toy, "test")
    truncate(toy / "JPEGImages" / f"{dataset.ids[1]}.jpg")
    problems = check_dataset(dataset, workers=0)
    assert len(problems) == 1 and problems[0].startswith(f"unreadable image {toy / 'JPEGImages'}")


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_the_config_key_reaches_the_training_datasets(pristine, tmp_path, on_error):
    from fsae.engine import load_config, load_seg_config
    from fsae.engine.seg_trainer import build_train_dataset
    from fsae.engine.trainer import build_dataset

    cam = build_dataset(load_config(None, [("data.root", str(pristine)), f"data.on_error={on_error}"]))
    seg = build_train_dataset(
        load_seg_config(None, [("data.root", str(pristine)), f"data.on_error={on_error}"]), tmp_path / "out"
    )
    assert cam.on_error == seg.on_error == on_error
