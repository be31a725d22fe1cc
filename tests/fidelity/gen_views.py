"""Fixture: the authors' weak and strong training views, with every parameter they drew (``views.npz``).

Runs their ``ClassificationDatasetWithSaliency.__getitem__`` with ``aug_type='strong'`` (their RandomResizeLong,
flip, ColorJitter on the whole resized image, ``random_crop_with_saliency`` with its zero container, then for
the strong view their ``GaussianBlur`` and ``RandAugment``) on ``chelsea.jpg`` / ``coffee.jpg`` with a synthetic
saliency map, for a few seeds and three geometries: a crop inside a large image, a toy-sized one padded on the
short side, and a crop larger than the resized image (padded on both sides).  Recorded per sample, through
run-time wrappers that do not change what their code computes: the long side, flip and crop box their
``__apply_transform_with_sal`` returns, the ColorJitter draws (``ColorJitter.get_params``), the blur sigma
(``GaussianBlur.get_params``) and window, their RandAugment ops, and the ``uint8`` crops their
``TorchvisionNormalize`` receives (the views before normalisation), plus their saliency crop.

Arrays (sample ``i`` of ``N``; ``crop_i`` its crop side; views flattened into one vector per kind):
``photo`` (N,) 0 chelsea / 1 coffee; ``seed``, ``crop_size``, ``target_long``, ``hflip`` (N,) int;
``box`` (N, 8) their crop box; ``weak_order`` / ``strong_order`` (N, 4) their ``fn_idx``; ``weak_factors`` /
``strong_factors`` (N, 4) brightness, contrast, saturation, hue; ``blur_kernel`` (N,), ``sigma`` (N,);
``ra_ops`` (N, 5) their op indices (``augment_list(False)`` order), ``ra_values`` (N, 5) float64 magnitudes;
``weak`` / ``strong`` uint8 concatenated ``(crop_i, crop_i, 3)`` crops; ``saliency`` uint8 concatenated
``(crop_i, crop_i)`` levels (theirs / 255, channel mean); ``saliency_map_<photo>`` the synthetic map (uint8).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from upstream import authors_code

HERE = Path(__file__).resolve().parent
PHOTOS = ("chelsea", "coffee")
# (crop size, (min_long, max_long), seeds): inside a large image; toy-sized (short side padded); crop larger
# than the image.  Seeds chosen so that the three blur windows (1, 3, 5) all occur.
CASES = (
    (96, (448, 768), (0, 1, 2, 3)),
    (112, (112, 160), (4, 5, 6, 7)),
    (128, (80, 112), (8, 9, 10, 11)),
)


def saliency_map(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic synthetic saliency map, ``uint8 (height, width)``: a Gaussian blob and a hard rectangle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    blob = 255.0 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2.0 * (0.15 * min(height, width)) ** 2))
    blob[int(0.1 * height) : int(0.3 * height), int(0.6 * width) : int(0.9 * width)] = 200.0
    return np.round(blob).astype(np.uint8)


def generate(upstream: Path, out: Path) -> list[Path]:
    records: dict[str, list] = {k: [] for k in ("photo", "seed", "crop_size", "target_long", "hflip", "box",
                                                 "weak_order", "strong_order", "weak_factors", "strong_factors",
                                                 "blur_kernel", "sigma", "ra_ops", "ra_values", "weak", "strong",
                                                 "saliency")}  # fmt: skip
    with authors_code(upstream), tempfile.TemporaryDirectory() as tmp:
        import data.dataset as their_dataset  # the authors' module, from the checkout
        from torchvision import transforms

        tmp_path = Path(tmp)
        maps = {}
        for k, name in enumerate(PHOTOS):
            size = Image.open(HERE / "fixtures" / f"{name}.jpg").size
            maps[name] = saliency_map(size[1], size[0], seed=k)
            Image.fromarray(maps[name], "L").save(tmp_path / f"{name}.png")
        (tmp_path / "ids.txt").write_text("\n".join(PHOTOS) + "\n")

        jitter_draws: list = []
        blur_draws: list = []
        get_jitter, get_blur = transforms.ColorJitter.get_params, transforms.GaussianBlur.get_params

        def record_jitter(*args):
            drawn = get_jitter(*args)
            jitter_draws.append(drawn)
            return drawn

        def record_blur(*args):
            drawn = get_blur(*args)
            blur_draws.append(drawn)
            return drawn

        transforms.ColorJitter.get_params = staticmethod(record_jitter)
        transforms.GaussianBlur.get_params = staticmethod(record_blur)
        try:
            for crop_size, resize_size, seeds in CASES:
                for seed in seeds:
                    photo = seed % 2
                    random.seed(seed)
                    np.random.seed(seed)
                    torch.manual_seed(seed)
                    cls = their_dataset.ClassificationDatasetWithSaliency
                    dataset = cls.__new__(cls)
                    # their ImageDataset constructor (draws the blur window); the labels file is not needed
                    their_dataset.ImageDataset.__init__(
                        dataset, dataset="voc12", img_id_list_file=str(tmp_path / "ids.txt"),
                        img_root=str(HERE / "fixtures"), crop_size=crop_size, resize_size=resize_size,
                        aug_type="strong",
                    )  # fmt: skip
                    dataset.saliency_root = str(tmp_path)
                    dataset.label_list = [np.zeros(20, np.float32)] * len(PHOTOS)
                    transform = dataset._ClassificationDatasetWithSaliency__apply_transform_with_sal
                    geometry: list = []

                    def record_transform(*args, _transform=transform, _geometry=geometry, **kwargs):
                        result = _transform(*args, **kwargs)
                        _geometry.append(result[2])
                        return result

                    dataset._ClassificationDatasetWithSaliency__apply_transform_with_sal = record_transform
                    crops: list = []
                    normalise = dataset.img_normal

                    def record_crop(img, _normalise=normalise, _crops=crops):
                        _crops.append(np.array(img, dtype=np.uint8, copy=True))
                        return _normalise(img)

                    dataset.img_normal = record_crop
                    jitter_draws.clear()
                    blur_draws.clear()
                    _, _, saliency, _, ra_ops, _ = dataset[photo]
                    (target_long, hflip, box), _ = geometry
                    assert len(jitter_draws) == 2 and len(blur_draws) == 1 and len(crops) == 2
                    assert crops[0].shape == (crop_size, crop_size, 3)
                    sal = saliency.numpy()[0] * 255.0
                    assert np.abs(sal - np.round(sal)).max() < 1e-3, "their saliency is not on 8-bit levels"
                    records["photo"].append(photo)
                    records["seed"].append(seed)
                    records["crop_size"].append(crop_size)
                    records["target_long"].append(target_long)
                    records["hflip"].append(int(hflip))
                    records["box"].append(list(box))
                    for view, draw in zip(("weak", "strong"), jitter_draws, strict=True):
                        order, *factors = draw
                        records[f"{view}_order"].append(order.tolist())
                        records[f"{view}_factors"].append(factors)
                    records["blur_kernel"].append(dataset.blur.kernel_size[0])
                    records["sigma"].append(blur_draws[0])
                    records["ra_ops"].append([int(i) for i, _ in ra_ops])
                    records["ra_values"].append([float(v) for _, v in ra_ops])
                    records["weak"].append(crops[0].reshape(-1))
                    records["strong"].append(crops[1].reshape(-1))
                    records["saliency"].append(np.round(sal).astype(np.uint8).reshape(-1))
        finally:
            transforms.ColorJitter.get_params = staticmethod(get_jitter)
            transforms.GaussianBlur.get_params = staticmethod(get_blur)

    arrays = {}
    for key, values in records.items():
        if key in ("weak", "strong", "saliency"):
            arrays[key] = np.concatenate(values)
        elif key in ("weak_factors", "strong_factors", "sigma", "ra_values"):
            arrays[key] = np.asarray(values, dtype=np.float64)
        else:
            arrays[key] = np.asarray(values, dtype=np.int64)
    for name, array in maps.items():
        arrays[f"saliency_map_{name}"] = array
    kernels = set(arrays["blur_kernel"].tolist())
    assert kernels == {1, 3, 5}, f"the seeds should cover every blur window, got {sorted(kernels)}"
    path = out / "views.npz"
    np.savez_compressed(path, **arrays)
    return [path]
