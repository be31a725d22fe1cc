"""The procedural toy dataset (fsae.data.toy): VOC2012 layout, masks, reproducibility, CLI, design."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsae.data import toy as toy_module
from fsae.data.palette import IGNORE_INDEX, read_label_png, voc_palette
from fsae.data.toy import (
    BODY_FAMILIES,
    CLASS_DESIGN,
    SAME_BODY_CLASSES,
    design_table_markdown,
    load_toy_sample,
    main,
    make_toy_dataset,
    render_toy_sample,
)

REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN, NUM_VAL, SIZE = 12, 4, 96
VOC_DIRS = {"Annotations", "ImageSets", "JPEGImages", "SegmentationClass", "SegmentationClassAug", "SegmentationObject"}
TOY_DIRS = VOC_DIRS | {"SALImages"}  # + the simulated saliency maps EPS / PPC read
ID_PATTERN = re.compile(r"^20(0[7-9]|1[01])_\d{6}$")


def _stems(folder: Path, suffix: str) -> set[str]:
    names = list(folder.iterdir())
    assert all(p.suffix == suffix and p.is_file() for p in names), names
    return {p.stem for p in names}


def _list(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().splitlines()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "VOC2012"
    assert make_toy_dataset(root, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0, image_size=SIZE) == root
    return root


def test_layout_is_voc2012(toy: Path) -> None:
    assert {p.name for p in toy.iterdir() if not p.name.startswith(".")} == TOY_DIRS
    assert not any((toy / "Annotations").iterdir()) and not any((toy / "SegmentationObject").iterdir())
    assert {p.name for p in (toy / "ImageSets").iterdir()} == {"Segmentation"}
    assert {p.name for p in (toy / "ImageSets" / "Segmentation").iterdir()} == {"train.txt", "val.txt", "trainval.txt"}

    train, val, trainval = _list(toy, "train"), _list(toy, "val"), _list(toy, "trainval")
    for ids in (train, val, trainval):
        assert ids == sorted(set(ids)) and all(ID_PATTERN.match(i) for i in ids)
    assert not set(train) & set(val) and set(trainval) == set(train) | set(val)
    assert len(val) == NUM_VAL

    images = _stems(toy / "JPEGImages", ".jpg")
    aug = _stems(toy / "SegmentationClassAug", ".png")
    assert images == aug and len(aug) == NUM_TRAIN + NUM_VAL
    assert _stems(toy / "SALImages", ".png") == images
    assert _stems(toy / "SegmentationClass", ".png") == set(trainval)
    train_aug = aug - set(val)  # what the loader derives
    assert len(train_aug) == NUM_TRAIN and set(train) < train_aug
    aug_only = aug - set(trainval)
    assert len(aug_only) >= 1 and len(train) >= 1


def test_masks_and_images(toy: Path) -> None:
    allowed = set(range(21)) | {IGNORE_INDEX}
    palette = voc_palette()
    for image_id in sorted(_stems(toy / "SegmentationClassAug", ".png")):
        with Image.open(toy / "SegmentationClassAug" / f"{image_id}.png") as png:
            assert png.format == "PNG" and png.mode == "P"
            assert png.getpalette()[: len(palette)] == palette
            mask_size = png.size
        with Image.open(toy / "JPEGImages" / f"{image_id}.jpg") as jpg:
            assert jpg.format == "JPEG" and jpg.mode == "RGB"
            assert jpg.size == mask_size and max(jpg.size) == SIZE
        mask = read_label_png(toy / "SegmentationClassAug" / f"{image_id}.png")
        values = set(np.unique(mask).tolist())
        assert values <= allowed and IGNORE_INDEX in values and 0 in values
        assert 1 <= len(values - {0, IGNORE_INDEX}) <= 3
        voc_mask = toy / "SegmentationClass" / f"{image_id}.png"
        if voc_mask.exists():
            assert voc_mask.read_bytes() == (toy / "SegmentationClassAug" / f"{image_id}.png").read_bytes()


def test_written_files_match_the_render(toy: Path) -> None:
    for image_id in _list(toy, "val")[:2]:
        sample = load_toy_sample(toy, image_id)
        np.testing.assert_array_equal(read_label_png(toy / "SegmentationClassAug" / f"{image_id}.png"), sample.label)
        with Image.open(toy / "JPEGImages" / f"{image_id}.jpg") as jpg:
            decoded = np.asarray(jpg, dtype=np.int16)
        assert np.abs(decoded - sample.image).mean() < 6  # JPEG at quality 90
        assert set(np.unique(sample.label).tolist()) - {0, IGNORE_INDEX} == set(sample.classes)
    with pytest.raises(KeyError):
        load_toy_sample(toy, "2099_000001")


def test_seed_reproducibility(toy: Path, tmp_path: Path) -> None:
    same = make_toy_dataset(tmp_path / "same", num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0, image_size=SIZE)
    assert _files(same) == _files(toy)  # byte-identical masks, images and lists

    other = make_toy_dataset(tmp_path / "other", num_train=NUM_TRAIN, num_val=NUM_VAL, seed=1, image_size=SIZE)
    masks = sorted((toy / "SegmentationClassAug").iterdir())
    other_masks = sorted((other / "SegmentationClassAug").iterdir())
    assert [p.name for p in masks] != [p.name for p in other_masks]
    assert [p.read_bytes() for p in masks] != [p.read_bytes() for p in other_masks]

    # one image depends on (seed, index, size) only, not on what was rendered before it
    first, again = render_toy_sample(3, 7, 128), render_toy_sample(3, 7, 128)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.label, again.label)
    assert not np.array_equal(render_toy_sample(4, 7, 128).label, first.label)


def test_rerun_is_idempotent_and_replaces_an_earlier_toy(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    make_toy_dataset(root, num_train=4, num_val=2, image_size=64)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    make_toy_dataset(root, num_train=4, num_val=2, image_size=64)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # same arguments: left as it is

    (root / "JPEGImages" / sorted(os.listdir(root / "JPEGImages"))[0]).unlink()  # incomplete: rewritten
    make_toy_dataset(root, num_train=4, num_val=2, image_size=64)
    assert len(list((root / "JPEGImages").iterdir())) == 6

    make_toy_dataset(root, num_train=3, num_val=1, seed=5, image_size=64)  # other arguments: replaced
    ids = _stems(root / "SegmentationClassAug", ".png")
    assert len(ids) == 4 and _stems(root / "JPEGImages", ".jpg") == ids


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing"):
        make_toy_dataset(foreign, num_train=4, num_val=2, image_size=64)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        make_toy_dataset(a_file, num_train=4, num_val=2, image_size=64)

    empty = tmp_path / "empty"
    empty.mkdir()
    make_toy_dataset(empty, num_train=2, num_val=1, image_size=64)  # an empty folder is fine


@pytest.mark.parametrize(
    "kwargs",
    [{"num_train": 1}, {"num_val": 0}, {"image_size": 32}, {"seed": -1}, {"num_train": True}, {"num_val": 2.0}],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    arguments = {"num_train": 4, "num_val": 2, "image_size": 64, **kwargs}
    with pytest.raises(ValueError):
        make_toy_dataset(tmp_path / "VOC2012", **arguments)
    assert not (tmp_path / "VOC2012").exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "fsae.data.toy", "--num-train", "4", "--num-val", "2", "--image-size", "64"]
    done = subprocess.run([*command, "--root", str(tmp_path / "VOC2012")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "wrote toy VOC2012 dataset" in done.stdout
    assert len(_list(tmp_path / "VOC2012", "val")) == 2

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    done = subprocess.run([*command, "--root", str(foreign)], capture_output=True, text=True, env=env)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "refusing to overwrite" in done.stderr
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]

    # argument errors, in process: one line on stderr, non-zero exit
    assert main(["--root", str(tmp_path / "x"), "--num-val", "0"]) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["--root", str(tmp_path / "x"), "--num-train", "many"])
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("error:" in line for line in errors)
    assert not (tmp_path / "x").exists()


def test_class_pool(tmp_path: Path) -> None:
    root = make_toy_dataset(tmp_path / "VOC2012", num_train=10, num_val=3, image_size=64, classes=SAME_BODY_CLASSES)
    seen = set()
    for path in (root / "SegmentationClassAug").glob("*.png"):
        values = set(np.unique(read_label_png(path)).tolist()) - {0, IGNORE_INDEX}
        assert values and values <= set(SAME_BODY_CLASSES)
        seen |= values
    assert len(seen) >= 3
    # one body family, five parts: only the part tells the pool's classes apart
    designs = [CLASS_DESIGN[c - 1] for c in SAME_BODY_CLASSES]
    assert len({d.body_family for d in designs}) == 1 and len({(d.part_pattern, d.part_colour) for d in designs}) == 5
    # the pool is part of the dataset's identity: re-rendering from the marker gives the written files
    some_id = sorted(p.stem for p in (root / "JPEGImages").glob("*.jpg"))[0]
    assert np.array_equal(
        load_toy_sample(root, some_id).label, read_label_png(root / "SegmentationClassAug" / f"{some_id}.png")
    )
    # the default pool draws the same images as before the option existed
    assert np.array_equal(render_toy_sample(0, 3, 64).label, render_toy_sample(0, 3, 64, list(range(1, 21))).label)
    for bad in ([1, 2], [0, 1, 2], [1, 2, 21]):
        with pytest.raises(ValueError, match="classes"):
            render_toy_sample(0, 0, 64, bad)


def test_class_design_table() -> None:
    assert [d.class_id for d in CLASS_DESIGN] == list(range(1, 21))
    assert len({(d.part_pattern, d.part_colour) for d in CLASS_DESIGN}) == 20  # the part names the class
    for family in BODY_FAMILIES:  # the body does not: each family is shared by five classes
        assert sum(d.body_family == family for d in CLASS_DESIGN) == 5
    assert design_table_markdown().count("\n") == 21


def test_design_part_is_a_small_fraction_of_each_object() -> None:
    fractions, classes, counts = [], set(), []
    for index in range(100):
        sample = render_toy_sample(0, index)
        counts.append(len(sample.classes))
        classes.update(sample.classes)
        assert len(set(sample.classes)) == len(sample.classes)
        for k, class_id in enumerate(sample.classes, start=1):
            obj, part = sample.instances == k, sample.parts == k
            assert part.any() and np.all(obj[part])  # the part lies inside its (visible) object
            assert np.all(sample.label[part] == class_id)  # fully visible, away from the ignore band
            fractions.append(part.sum() / obj.sum())
    fractions = np.array(fractions)
    assert fractions.max() < 0.25
    assert 0.05 < fractions.mean() < 0.15
    assert classes == set(range(1, 21)) and set(counts) == {1, 2, 3}


# ------------------------------------------------------------------ simulated saliency (SALImages)


def test_saliency_maps_are_written_for_every_id_and_follow_the_objects(toy: Path) -> None:
    inside, outside = [], []
    for image_id in sorted(_stems(toy / "JPEGImages", ".jpg")):
        with Image.open(toy / "SALImages" / f"{image_id}.png") as png:
            assert png.format == "PNG" and png.mode == "L"
            saliency = np.asarray(png)
        with Image.open(toy / "JPEGImages" / f"{image_id}.jpg") as jpg:
            assert saliency.shape == (jpg.height, jpg.width)
        sample = load_toy_sample(toy, image_id)
        assert sample.saliency.dtype == np.uint8
        np.testing.assert_array_equal(saliency, sample.saliency)  # the written map is the render's
        mask = read_label_png(toy / "SegmentationClassAug" / f"{image_id}.png")
        values = saliency / 255.0
        inside.append(values[(mask > 0) & (mask != IGNORE_INDEX)])
        outside.append(values[mask == 0])
    inside, outside = np.concatenate(inside), np.concatenate(outside)
    assert inside.mean() > 0.5 and outside.mean() < 0.2
    assert (inside > 0.5).mean() > 0.7 and (outside > 0.5).mean() < 0.15


def test_saliency_simulates_an_imperfect_detector() -> None:
    objects, missed, false_positive_images = 0, 0, 0
    for index in range(60):
        sample = render_toy_sample(0, index, 96)
        values = sample.saliency / 255.0
        for k in range(1, len(sample.classes) + 1):
            core = (sample.instances == k) & (sample.label != IGNORE_INDEX)
            objects += 1
            missed += values[core].mean() < 0.5
            assert values[sample.parts == k].mean() > 0.3  # a half-missed object stays salient near its part
        false_positive_images += np.any(values[sample.label == 0] > 0.5)
        assert 0 < values.max() <= 1 and values.min() >= 0
    assert 0 < missed < 0.35 * objects  # some objects (about 10 %) are half-missed, most are found
    assert false_positive_images > 10  # salient decoys / clutter in the background
    soft = render_toy_sample(0, 0, 192).saliency
    assert len(np.unique(soft)) > 20  # blurred: soft edges, not a binary mask


def test_saliency_is_deterministic_and_leaves_the_image_draws_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    first, again = render_toy_sample(3, 7, 128), render_toy_sample(3, 7, 128)
    np.testing.assert_array_equal(first.saliency, again.saliency)
    assert not np.array_equal(render_toy_sample(4, 7, 128).saliency, first.saliency)
    # the saliency draws from its own stream: without it the image, masks and maps are the same
    monkeypatch.setattr(
        toy_module, "_simulated_saliency", lambda seed, index, size, grid, *rest: np.zeros(grid.shape, np.uint8)
    )
    without = render_toy_sample(3, 7, 128)
    for name in ("image", "label", "instances", "parts"):
        np.testing.assert_array_equal(getattr(without, name), getattr(first, name))
    assert without.classes == first.classes


def test_a_toy_without_saliency_maps_is_rewritten(tmp_path: Path) -> None:
    """A dataset written before SALImages existed (marker version 1) is regenerated, with identical images."""
    root = make_toy_dataset(tmp_path / "VOC2012", num_train=4, num_val=2, image_size=64)
    before = _files(root)
    shutil.rmtree(root / "SALImages")
    marker = json.loads((root / ".fsae_toy.json").read_text())
    (root / ".fsae_toy.json").write_text(json.dumps({**marker, "version": 1}))
    make_toy_dataset(root, num_train=4, num_val=2, image_size=64)
    assert _files(root) == before
