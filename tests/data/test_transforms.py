"""Geometry transforms: what they draw, and that image and mask stay aligned."""

from __future__ import annotations

import numpy as np
import pytest

from fsae.data.transforms import (
    IMAGENET_MEAN_RGB,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizeLong,
    RandomScale,
    SecondView,
    seg_train_geometry,
    train_geometry,
)


def sample(height=30, width=40):
    """An image whose pixel (y, x) encodes (y, x, 7) and a mask equal to x % 20."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([ys, xs, np.full_like(ys, 7)], axis=-1).astype(np.uint8)
    return {"image": image, "mask": (xs % 20).astype(np.uint8)}


def test_resize_long_side_range_and_alignment():
    rng = np.random.default_rng(0)
    longs = set()
    for _ in range(50):
        out = RandomResizeLong(20, 25)(sample(), rng)
        longs.add(max(out["image"].shape[:2]))
        assert out["mask"].shape == out["image"].shape[:2]
        assert out["geometry"]["resized_h"] == out["image"].shape[0]
    assert longs == set(range(20, 26))
    assert round(40 * 20 / 40) == 20


def test_resize_mask_is_nearest():
    out = RandomResizeLong(80, 80)(sample(), np.random.default_rng(0))
    assert set(np.unique(out["mask"])) <= set(range(20))


def test_flip_flips_both_and_records_it():
    flipped = RandomHorizontalFlip(1.0)(sample(), np.random.default_rng(0))
    assert flipped["geometry"]["flip"] == 1
    assert flipped["image"][0, 0, 1] == 39 and flipped["mask"][0, 0] == 39 % 20
    kept = RandomHorizontalFlip(0.0)(sample(), np.random.default_rng(0))
    assert kept["geometry"]["flip"] == 0 and kept["image"][0, 0, 1] == 0


def test_crop_inside_image_records_its_offset():
    out = RandomCrop(16)(sample(), np.random.default_rng(1))
    y, x = out["geometry"]["crop_y"], out["geometry"]["crop_x"]
    assert 0 <= y <= 14 and 0 <= x <= 24
    assert out["image"][0, 0, 0] == y and out["image"][0, 0, 1] == x
    assert (out["mask"] == (np.arange(x, x + 16) % 20)[None]).all()


def test_crop_larger_than_image_pads_image_with_mean_and_mask_with_255():
    out = RandomCrop(50)(sample(30, 40), np.random.default_rng(2))
    y, x = out["geometry"]["crop_y"], out["geometry"]["crop_x"]
    assert -20 <= y <= 0 and -10 <= x <= 0
    assert out["image"].shape == (50, 50, 3) and out["mask"].shape == (50, 50)
    inside = np.zeros((50, 50), dtype=bool)
    inside[-y : -y + 30, -x : -x + 40] = True
    assert (out["mask"][~inside] == 255).all() and (out["mask"][inside] != 255).all()
    assert (out["image"][~inside] == IMAGENET_MEAN_RGB).all()
    assert out["image"][-y, -x, 0] == 0 and out["image"][-y, -x, 1] == 0


def test_pipeline_is_reproducible_and_second_view():
    pipeline = train_geometry(24, (30, 50), second_view=8)
    a = pipeline(sample(), np.random.default_rng(5))
    b = pipeline(sample(), np.random.default_rng(5))
    assert a["geometry"] == b["geometry"] and np.array_equal(a["image"], b["image"])
    assert a["image"].shape == (24, 24, 3) and a["image_small"].shape == (8, 8, 3)


@pytest.mark.parametrize(
    "bad", [lambda: RandomResizeLong(10, 5), lambda: RandomHorizontalFlip(2), lambda: RandomCrop(0)]
)
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        bad()


def test_second_view_only_adds_a_key():
    out = SecondView(4)(sample(), np.random.default_rng(0))
    assert out["image_small"].shape == (4, 4, 3) and out["image"].shape == (30, 40, 3)


# ------------------------------------------------------------------ saliency follows the geometry


def blob_sample(height=30, width=40, dtype=np.uint8):
    """``sample()`` with a rectangular object (mask 5) and a saliency equal to the object's mask."""
    out = sample(height, width)
    out["mask"][:] = 0
    out["mask"][8:22, 5:18] = 5
    scale = 255 if dtype == np.uint8 else 1.0
    out["saliency"] = ((out["mask"] == 5) * scale).astype(dtype)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_saliency_stays_aligned_through_flip_and_crop(dtype):
    pipeline = Compose([RandomHorizontalFlip(0.5), RandomCrop(36)])  # 36 > 30: pads rows, crops columns
    flips = set()
    for seed in range(12):
        out = pipeline(blob_sample(dtype=dtype), np.random.default_rng(seed))
        flips.add(out["geometry"]["flip"])
        saliency = out["saliency"]
        assert saliency.dtype == dtype and saliency.shape == out["mask"].shape == (36, 36)
        top = 255 if dtype == np.uint8 else 1.0
        np.testing.assert_array_equal(saliency, np.where(out["mask"] == 5, top, 0).astype(dtype))
        assert (saliency[out["mask"] == 255] == 0).all()  # the padding is not salient
    assert flips == {0, 1}


@pytest.mark.parametrize(
    "pipeline", [train_geometry(24, (30, 50), second_view=8), seg_train_geometry(24, (0.5, 1.5))], ids=["cam", "seg"]
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_saliency_stays_aligned_through_resize_flip_crop(pipeline, dtype):
    for seed in range(10):
        out = pipeline(blob_sample(dtype=np.uint8 if dtype == np.uint8 else np.float64), np.random.default_rng(seed))
        saliency = out["saliency"].astype(np.float32) / (255 if dtype == np.uint8 else 1)
        assert out["saliency"].dtype == dtype and saliency.shape == out["mask"].shape == (24, 24)
        assert saliency.min() >= 0 and saliency.max() <= 1
        agree = (saliency > 0.5) == (out["mask"] == 5)
        assert agree.mean() > 0.93, seed  # bilinear edges against nearest ones
        assert (saliency[out["mask"] == 255] == 0).all()


def test_saliency_resize_is_bilinear():
    for transform in (RandomResizeLong(80, 80), RandomScale(2.0, 2.0)):
        out = transform(blob_sample(), np.random.default_rng(0))
        assert out["saliency"].shape == out["mask"].shape == out["image"].shape[:2]
        assert len(np.unique(out["saliency"])) > 2  # soft edge, where the mask stays two-valued
        assert set(np.unique(out["mask"]).tolist()) == {0, 5}


@pytest.mark.parametrize(
    "pipeline", [train_geometry(24, (30, 50), second_view=8), seg_train_geometry(24, (0.5, 1.5))], ids=["cam", "seg"]
)
def test_saliency_changes_nothing_else(pipeline):
    """With or without a saliency map: the same draws, image, mask and geometry."""
    for seed in range(5):
        plain = pipeline(sample(), np.random.default_rng(seed))
        with_saliency = {**sample(), "saliency": np.full((30, 40), 200, dtype=np.uint8)}
        out = pipeline(with_saliency, np.random.default_rng(seed))
        assert out["geometry"] == plain["geometry"] and out.keys() - plain.keys() == {"saliency"}
        for key in plain.keys() - {"geometry"}:
            np.testing.assert_array_equal(out[key], plain[key])
