"""The dataset machinery shared by the VOC and COCO loaders.

A :class:`SegmentationDataset` is a list of ids with an image path and
(optionally) a mask path per id.  Image-level labels are derived from the
masks (every value other than 0 and 255), computed once and cached in a small
JSON file that is recomputed when any mask file changes.  Errors are one line
naming the file: :class:`DatasetError` (a ``ValueError``).

Samples are dicts.  The loader reads ``image`` (``uint8 (H, W, 3)`` RGB),
``mask`` (``uint8 (H, W)``, when the split has masks) and ``saliency``
(``uint8 (H, W)``, 0..255, when the dataset was given a saliency folder:
off-the-shelf saliency maps as EPS / PPC use them), calls the optional
``transform(sample, rng)`` (geometry only, see :mod:`fsae.data.transforms`;
``rng`` is a ``numpy.random.Generator`` seeded from ``(seed, epoch, index)``,
so the draws do not depend on the number of workers or processes), then
returns tensors: every ``image*`` array as ``uint8 (3, H, W)``, every
``mask*`` array as ``int64 (H, W)``, every ``saliency*`` array as
``float32 (1, H, W)`` in [0, 1] (``uint8`` maps divided by 255), ``labels`` as
``float32 (C,)`` multi-hot, ``id`` as ``str``, plus whatever the transform
recorded (e.g. ``geometry``).  The default collate stacks ``saliency`` into
``float32 (B, 1, H, W)``, geometry-aligned with ``image`` and ``mask``.

With ``on_error="skip"`` an unreadable sample is replaced by the next readable one
and recorded in a flag per sample held in shared memory, so the samples skipped
inside DataLoader worker processes are seen by the main process:
``dataset.skipped`` (how many) and ``dataset.skipped_ids()`` (which), e.g. for the
end-of-training report.  :func:`check_dataset` reads every file once up front and
lists every bad one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from fsae.data.palette import IGNORE_INDEX, read_label_png
from fsae.errors import DatasetError

__all__ = ["DatasetError", "SegmentationDataset", "Transform", "check_dataset"]

log = logging.getLogger(__name__)

Transform = Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]
CACHE_VERSION = 1


def read_image(path: Path) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB; :class:`DatasetError` naming the file if it is missing or unreadable."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetError(f"unreadable image {path}: {err}") from None


def read_mask(path: Path, num_classes: int, lut: np.ndarray | None = None) -> np.ndarray:
    """``uint8 (H, W)`` class ids 0..C and 255, after the optional value lookup table ``lut``."""
    try:
        mask = read_label_png(path)
    except FileNotFoundError:
        raise DatasetError(f"mask not found: {path}") from None
    except ValueError as err:
        raise DatasetError(str(err)) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetError(f"unreadable mask {path}: {err}") from None
    if lut is not None:
        mask = lut[mask]
    bad = (mask > num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        values = sorted(set(np.unique(mask[bad]).tolist()))
        raise DatasetError(
            f"mask {path} has values {values[:5]} outside 0..{num_classes} and {IGNORE_INDEX} "
            f"(wrong mask folder, or RGB colour masks instead of class-id PNGs?)"
        )
    return mask


def read_saliency(path: Path) -> np.ndarray:
    """``uint8 (H, W)`` saliency map, 0..255, from an 8-bit PNG (grayscale; colour maps are converted to luminance).

    :class:`DatasetError` naming the file when it is missing, unreadable or not 8 bits per channel.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
                raise DatasetError(
                    f"saliency map {path} has image mode {image.mode}; expected an 8-bit grayscale PNG (0..255)"
                )
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"saliency map not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetError(f"unreadable saliency map {path}: {err}") from None


def _check_files_exist(what: str, paths: dict[str, Path], ids: Sequence[str]) -> None:
    """:class:`DatasetError` ``"<what> not found: <first missing path> (and N more)"`` unless every id's file exists."""
    missing = [paths[i] for i in ids if not paths[i].is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"{what} not found: {missing[0]}{more}")


def labels_from_mask(mask: np.ndarray, num_classes: int) -> list[int]:
    """Foreground classes present in a mask: the values other than 0 and 255, as 1..C."""
    values = np.unique(mask)
    return [int(v) for v in values if 0 < v <= num_classes]


def _signature(paths: Sequence[Path]) -> str:
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def cached_labels(
    mask_paths: dict[str, Path], num_classes: int, cache_file: Path, lut: np.ndarray | None = None
) -> dict[str, list[int]]:
    """Image labels (class ids 1..C) of every mask, from ``cache_file`` when it is up to date.

    The cache is keyed by the masks' names, sizes and modification times; any
    change recomputes it.  When ``cache_file`` cannot be written the labels are
    still returned (with a warning).
    """
    ids = sorted(mask_paths)
    signature = _signature([mask_paths[i] for i in ids])
    if cache_file.exists():
        try:
            cached = json.loads(cache_file.read_text())
            if cached.get("version") == CACHE_VERSION and cached.get("signature") == signature:
                return {i: cached["labels"][i] for i in ids}
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring unreadable label cache %s", cache_file)
    labels = {}
    for i in _progress(ids, f"deriving image labels from {len(ids)} masks"):
        labels[i] = labels_from_mask(read_mask(mask_paths[i], num_classes, lut), num_classes)
    payload = {"version": CACHE_VERSION, "signature": signature, "num_classes": num_classes, "labels": labels}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload))
        tmp.replace(cache_file)  # atomic: a concurrent reader sees the old or the new file
    except OSError as err:
        log.warning("could not write the label cache %s (%s); labels will be derived again next time", cache_file, err)
    return labels


def _progress(items: Sequence[str], description: str):
    """A transient bar over ``items`` for long one-off work, on a terminal only (a log file gets no bar)."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional here
        return items
    return tqdm(items, desc=description, disable=len(items) < 500 or not sys.stderr.isatty(), leave=False)


class SegmentationDataset(Dataset):
    """Ids with images, optional masks and mask-derived image labels.

    Args:
        ids: sample ids, in order.
        image_paths / mask_paths: per id; ``mask_paths`` None for a split without masks.
        num_classes: C, the number of foreground classes.
        class_names: C+1 names, background first.
        label_cache: JSON file for the derived labels (see :func:`cached_labels`).
        transform: ``transform(sample, rng) -> sample`` (geometry; see module docstring).
        seed: base seed of the per-sample generators; :meth:`set_epoch` varies them per epoch.
        on_error: ``"raise"`` (default) stops at an unreadable image or mask with a one-line
            error naming the file; ``"skip"`` logs it (once per sample), records it (:attr:`skipped`,
            :meth:`skipped_ids`; also from DataLoader workers) and returns the next readable sample
            instead (for long runs over data with a few corrupt files).
        mask_lut: optional ``uint8 (256,)`` table applied to raw mask values (e.g. COCO ids).
        saliency_paths: per id, an 8-bit grayscale saliency map of the image's size (``uint8`` 0..255);
            items then hold ``saliency`` ``float32 (1, H, W)`` in [0, 1], transformed with the image.
            None (default): no saliency.
    """

    def __init__(
        self,
        ids: Sequence[str],
        image_paths: dict[str, Path],
        mask_paths: dict[str, Path] | None,
        num_classes: int,
        class_names: Sequence[str],
        label_cache: Path | None,
        transform: Transform | None = None,
        seed: int = 0,
        on_error: str = "raise",
        mask_lut: np.ndarray | None = None,
        saliency_paths: dict[str, Path] | None = None,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.ids = list(ids)
        self.image_paths = image_paths
        self.mask_paths = mask_paths
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.on_error = on_error
        self.mask_lut = mask_lut
        self.saliency_paths = saliency_paths
        # one flag per sample, in shared memory: set by whichever process (a DataLoader worker) failed to read it
        self._bad = torch.zeros(max(len(self.ids), 1), dtype=torch.bool).share_memory_()
        _check_files_exist("image", image_paths, self.ids)
        if saliency_paths is not None:
            _check_files_exist("saliency map", saliency_paths, self.ids)
        self.labels: dict[str, list[int]] | None = None
        if mask_paths is not None:
            _check_files_exist("mask", mask_paths, self.ids)
            if label_cache is not None:
                self.labels = cached_labels({i: mask_paths[i] for i in self.ids}, num_classes, label_cache, mask_lut)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def skipped(self) -> int:
        """How many samples (distinct ids) ``on_error="skip"`` has skipped so far, in this process and in its
        DataLoader workers (whose copies of the dataset share the record)."""
        return int(self._bad.sum())

    def skipped_ids(self) -> list[str]:
        """The ids of the samples skipped so far (see :attr:`skipped`), in dataset order."""
        return [self.ids[i] for i in torch.nonzero(self._bad[: len(self.ids)]).flatten().tolist()]

    def set_epoch(self, epoch: int) -> None:
        """Vary the random geometry per epoch (call before each epoch, like a DistributedSampler)."""
        self.epoch = epoch

    def label_vector(self, index: int) -> torch.Tensor:
        """``float32 (C,)`` multi-hot image label of sample ``index``."""
        vector = torch.zeros(self.num_classes, dtype=torch.float32)
        if self.labels is not None:
            for k in self.labels[self.ids[index]]:
                vector[k - 1] = 1.0
        return vector

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.on_error == "raise":
            return self._load(index)
        for attempt in range(len(self)):
            j = (index + attempt) % len(self)
            if self._bad[j]:  # known bad: not read again
                continue
            try:
                return self._load(j)
            except DatasetError as err:
                self._bad[j] = True
                log.warning("skipping sample %s (%d skipped so far): %s", self.ids[j], self.skipped, err)
        raise DatasetError(f"every sample of the dataset failed to load ({self.skipped} unreadable)")

    def _load(self, index: int) -> dict[str, Any]:
        sample_id = self.ids[index]
        sample: dict[str, Any] = {"image": read_image(self.image_paths[sample_id])}
        if self.mask_paths is not None:
            mask = read_mask(self.mask_paths[sample_id], self.num_classes, self.mask_lut)
            if mask.shape != sample["image"].shape[:2]:
                raise DatasetError(
                    f"mask {self.mask_paths[sample_id]} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                    f"{sample['image'].shape[1]}x{sample['image'].shape[0]}"
                )
            sample["mask"] = mask
        if self.saliency_paths is not None:
            saliency = read_saliency(self.saliency_paths[sample_id])
            if saliency.shape != sample["image"].shape[:2]:
                raise DatasetError(
                    f"saliency map {self.saliency_paths[sample_id]} is {saliency.shape[1]}x{saliency.shape[0]} "
                    f"but its image is {sample['image'].shape[1]}x{sample['image'].shape[0]}"
                )
            sample["saliency"] = saliency
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = self.transform(sample, rng)
        out = {key: _to_tensor(key, value) for key, value in sample.items()}
        out["labels"] = self.label_vector(index)
        out["id"] = sample_id
        return out


def _to_tensor(key: str, value: Any) -> Any:
    if not isinstance(value, np.ndarray):
        return value
    if key.startswith("image"):
        return torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1)))
    if key.startswith("mask"):
        return torch.from_numpy(value.astype(np.int64))
    if key.startswith("saliency"):
        if value.dtype == np.uint8:
            return torch.from_numpy(value.astype(np.float32) / 255.0)[None]
        return torch.from_numpy(np.clip(value, 0.0, 1.0).astype(np.float32))[None]
    return torch.from_numpy(value)


def _check_sample(dataset: SegmentationDataset, sample_id: str) -> list[str]:
    """Every problem of one sample's files (image, mask, saliency map), each a one-line reason naming the file."""
    problems = []
    try:
        size = read_image(dataset.image_paths[sample_id]).shape[:2]
    except DatasetError as err:
        problems.append(str(err))
        size = None
    others = []
    if dataset.mask_paths is not None:
        path = dataset.mask_paths[sample_id]
        others.append(("mask", path, lambda p: read_mask(p, dataset.num_classes, dataset.mask_lut)))
    if dataset.saliency_paths is not None:
        others.append(("saliency map", dataset.saliency_paths[sample_id], read_saliency))
    for what, path, read in others:
        try:
            shape = read(path).shape
        except DatasetError as err:
            problems.append(str(err))
            continue
        if size is not None and shape != size:
            problems.append(f"{what} {path} is {shape[1]}x{shape[0]} but its image is {size[1]}x{size[0]}")
    return problems


def check_dataset(dataset: SegmentationDataset, workers: int | None = None) -> list[str]:
    """Read every image, mask and saliency map of ``dataset`` once; every bad file with its reason.

    The pre-scan behind a recipe's ``--check-data``: one pass over the files (no transform, no
    labels), reporting all the problems at once instead of stopping (``on_error="raise"``) or
    skipping (``"skip"``) at the first during training.  It checks what loading a sample checks:
    the image decodes, the mask decodes and holds only 0..C and 255, the saliency map is an 8-bit
    map, and mask and saliency map have the image's size.  Missing files are already an error
    when the dataset is built.

    Args:
        dataset: a :class:`SegmentationDataset` (:class:`~fsae.data.VOCSegmentation`,
            :class:`~fsae.data.COCOSegmentation`).
        workers: reader threads (image decoding releases the GIL); None: up to 8, one per CPU;
            0 or 1: in the calling thread.

    Returns:
        One line per bad file, in dataset order, each naming the file (the message the loader would
        raise); empty when every file is readable.

    Example::

        problems = check_dataset(VOCSegmentation(root, "train_aug", saliency_dir="SALImages"), workers=8)
        if problems:
            raise SystemExit(f"{len(problems)} bad files:\n" + "\n".join(problems))
    """
    if workers is None:
        workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    ids = list(dataset.ids)
    if workers <= 1:
        results = [_check_sample(dataset, i) for i in _progress(ids, f"checking {len(ids)} samples")]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda i: _check_sample(dataset, i), ids, chunksize=16))
    return [problem for problems in results for problem in problems]
