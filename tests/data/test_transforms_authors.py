"""The authors' loader geometry: ``train_geometry(mode="authors")``, :class:`CanvasCrop`, bicubic saliency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsae.augment.views import crop_canvas
from fsae.data.transforms import (
    CanvasCrop,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizeLong,
    train_geometry,
)


def _sample(h: int = 30, w: int = 44, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    y, x = np.mgrid[0:h, 0:w]
    saliency = (255 * np.exp(-((y - h / 2) ** 2 + (x - w / 3) ** 2) / 60.0)).astype(np.uint8)
    saliency[2:6, w - 10 : w - 2] = 255  # a hard edge: bicubic overshoots where bilinear does not
    mask = rng.integers(0, 21, (h, w), dtype=np.uint8)
    return {"image": image, "saliency": saliency, "mask": mask}


def test_authors_layout_is_a_canvas_with_the_crop_box() -> None:
    pipeline = train_geometry(24, (30, 50), mode="authors", saliency_resize="bicubic")
    for seed in range(20):
        out = pipeline(_sample(seed=seed), np.random.default_rng(seed))
        g = out["geometry"]
        assert out["image"].shape == (50, 50, 3) and out["image"].dtype == np.uint8
        h, w = g["resized_h"], g["resized_w"]
        assert max(h, w) in range(30, 51)
        assert not out["image"][h:].any() and not out["image"][:, w:].any()  # zeros outside the image
        assert out["saliency"].shape == (24, 24) and out["mask"].shape == (24, 24)
        # the crop box follows RandomCrop's rule: inside the image, or a padding offset when it is smaller
        for start, length in ((g["crop_y"], h), (g["crop_x"], w)):
            assert (0 <= start <= length - 24) if length >= 24 else (0 <= -start <= 24 - length)


def test_canvas_then_device_crop_equals_the_loader_crop_with_black_fill() -> None:
    """The same draws: CanvasCrop + crop_canvas == RandomCrop(fill black), image, saliency and mask."""
    for seed in range(30):
        sample = _sample(20 + seed % 7, 15 + seed % 11, seed)
        resize = RandomResizeLong(18, 40, saliency_resize="bicubic")
        canvas = Compose([resize, RandomHorizontalFlip(0.5), CanvasCrop(32, canvas=40)])
        cropped = Compose([resize, RandomHorizontalFlip(0.5), RandomCrop(32, image_fill=(0, 0, 0))])
        a = canvas({k: v.copy() for k, v in sample.items()}, np.random.default_rng(seed))
        b = cropped({k: v.copy() for k, v in sample.items()}, np.random.default_rng(seed))
        assert a["geometry"] == b["geometry"]
        g = a["geometry"]
        image = torch.from_numpy(a["image"].transpose(2, 0, 1).copy())[None]
        region = torch.tensor([[g["resized_h"], g["resized_w"]]])
        origin = torch.tensor([[g["crop_y"], g["crop_x"]]])
        crop = crop_canvas(image, region, origin, 32, (0, 0, 0))[0].numpy().transpose(1, 2, 0)
        assert np.array_equal(crop, b["image"])
        assert np.array_equal(a["saliency"], b["saliency"]) and np.array_equal(a["mask"], b["mask"])


def test_saliency_resize_bicubic_is_pils() -> None:
    sample = _sample()
    out = Compose([RandomResizeLong(60, 60, saliency_resize="bicubic"), RandomHorizontalFlip(1.0)])(
        {k: v.copy() for k, v in sample.items()}, np.random.default_rng(0)
    )
    h, w = out["geometry"]["resized_h"], out["geometry"]["resized_w"]
    expected = np.asarray(Image.fromarray(sample["saliency"]).resize((w, h), Image.Resampling.BICUBIC))[:, ::-1]
    assert np.array_equal(out["saliency"], expected)
    # the authors resized the map as RGB and averaged the channels: the same levels for a grey map
    rgb = np.asarray(Image.fromarray(sample["saliency"]).convert("RGB").resize((w, h), Image.Resampling.BICUBIC))
    assert np.array_equal(rgb.mean(axis=2), expected[:, ::-1])
    bilinear = Compose([RandomResizeLong(60, 60)])({k: v.copy() for k, v in sample.items()}, np.random.default_rng(0))
    assert not np.array_equal(bilinear["saliency"], expected[:, ::-1])


@pytest.mark.parametrize("size", [(300, 451), (451, 300), (333, 500), (500, 375), (1, 700), (640, 640)])
def test_resize_long_rounds_as_the_authors(size: tuple[int, int]) -> None:
    """Short side ``int(round(short * target / long))``, in that order of operations, for every target."""
    h, w = size
    for target in range(100, 769, 7):
        out = RandomResizeLong(target, target)({"image": np.zeros((h, w, 3), np.uint8)}, np.random.default_rng(0))
        g = out["geometry"]
        expected = (target, int(round(w * target / h))) if w < h else (int(round(h * target / w)), target)
        assert (g["resized_h"], g["resized_w"]) == (max(1, expected[0]), max(1, expected[1]))


def test_crop_mode_fill_and_errors() -> None:
    black = train_geometry(64, (30, 40), crop_fill="black")(_sample(), np.random.default_rng(0))
    mean = train_geometry(64, (30, 40), crop_fill="mean")(_sample(), np.random.default_rng(0))
    assert (black["image"][-1, -1] == 0).all() and (mean["image"][-1, -1] == (124, 116, 104)).all()
    with pytest.raises(ValueError):
        train_geometry(24, (30, 50), mode="authors", second_view=8)
    with pytest.raises(ValueError):
        train_geometry(24, mode="canvas")
    with pytest.raises(ValueError):
        train_geometry(24, crop_fill="grey")
    with pytest.raises(ValueError):
        RandomResizeLong(10, 20, saliency_resize="nearest")
    with pytest.raises(ValueError):
        CanvasCrop(8, canvas=10)({"image": np.zeros((12, 4, 3), np.uint8)}, np.random.default_rng(0))


def test_authors_layout_through_a_dataset_and_collate(tmp_path) -> None:
    """VOC-style tree -> loader batch: ``image`` (B, 3, L, L) uint8 canvases, ``geometry`` (B,) tensors,
    ``saliency`` (B, 1, crop, crop) float in [0, 1]."""
    from data_trees import make_voc_tree
    from torch.utils.data import DataLoader

    from fsae.data import VOCSegmentation

    root = make_voc_tree(tmp_path)
    (root / "SALImages").mkdir()
    for path in (root / "JPEGImages").glob("*.jpg"):
        w, h = Image.open(path).size
        Image.fromarray(_sample(h, w)["saliency"], "L").save(root / "SALImages" / f"{path.stem}.png")
    dataset = VOCSegmentation(
        root,
        "train_aug",
        transform=train_geometry(32, (24, 48), mode="authors", saliency_resize="bicubic"),
        saliency_dir="SALImages",
    )
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["image"].shape == (3, 3, 48, 48) and batch["image"].dtype == torch.uint8
    assert batch["saliency"].shape == (3, 1, 32, 32) and batch["saliency"].dtype == torch.float32
    assert batch["saliency"].min() >= 0 and batch["saliency"].max() <= 1
    for key in ("resized_h", "resized_w", "crop_y", "crop_x"):
        assert batch["geometry"][key].shape == (3,)
