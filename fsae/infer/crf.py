"""Dense CRF post-processing (pydensecrf, docs/method.md §6): single images and a process pool for many.

* :func:`dense_crf`: marginals of one image; :func:`crf_mask`: the pseudo-mask of one image's CAMs.
* :func:`crf_masks`: :func:`crf_mask` over many images on a process pool.
* :func:`ordered_pool_map`: that pool, for any per-image CRF function (also the segmentation stage's,
  :func:`fsae.infer.segment.segment_dataset`).
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np

from fsae._optional import require

__all__ = ["crf_mask", "crf_masks", "dense_crf", "ordered_pool_map"]

_Result = TypeVar("_Result")
_Extra = TypeVar("_Extra")


def _densecrf():
    return require("pydensecrf.densecrf", "crf", "fsae.infer.crf")


def dense_crf(
    image_uint8_hwc: np.ndarray,
    probs_chw: np.ndarray,
    iterations: int = 5,
    gaussian: tuple[float, float] = (3, 3),
    bilateral: tuple[float, float, float] = (80, 13, 10),
) -> np.ndarray:
    """Fully connected CRF inference (Krähenbühl & Koltun) on one image.

    Args:
        image_uint8_hwc: ``(H, W, 3)`` uint8 RGB image.
        probs_chw: ``(K, H, W)`` non-negative class scores; the unary is ``-log(clip(p, 1e-5, 1))``
            (scores need not sum to one: the original pipeline feeds ``[(1 - max cam)^8, cams]``).
        iterations: mean-field iterations.
        gaussian: ``(sxy, compat)`` of the smoothness kernel.
        bilateral: ``(sxy, srgb, compat)`` of the appearance kernel.

    Returns:
        ``(K, H, W)`` float32 marginals (each pixel sums to 1).
    """
    image = np.asarray(image_uint8_hwc)
    probs = np.asarray(probs_chw, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be (K, H, W), got {probs.shape}")
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"image is {image.shape[0]}x{image.shape[1]} but the probabilities are "
            f"{probs.shape[1]}x{probs.shape[2]}: resize the CAMs to the image first"
        )
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    dcrf = _densecrf()
    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(k, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gaussian[0], compat=gaussian[1])
    # pydensecrf takes the image through a writable memoryview: a read-only array (np.asarray of a PIL
    # image, a memory map) is copied.
    rgbim = np.require(image, requirements=["C_CONTIGUOUS", "WRITEABLE"])
    crf.addPairwiseBilateral(sxy=bilateral[0], srgb=bilateral[1], rgbim=rgbim, compat=bilateral[2])
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(k, h, w)


def crf_mask(
    image_uint8_hwc: np.ndarray,
    cams_chw: np.ndarray,
    label_ids: Sequence[int] | None = None,
    alpha: float = 8.0,
    **crf_options,
) -> np.ndarray:
    """The CRF pseudo-mask of one image (docs/method.md §6, "Mask").

    Args:
        image_uint8_hwc: ``(H, W, 3)`` uint8 RGB image.
        cams_chw: ``(C, H, W)`` normalised foreground CAMs in [0, 1] (all C classes).
        label_ids: the present foreground classes, 0-based (channel indices into ``cams_chw``);
            None = the classes whose map is not all zero.
        alpha: background score ``(1 - max_c cam) ** alpha``.
        crf_options: passed to :func:`dense_crf`.

    Returns:
        ``(H, W)`` uint8 class ids 0..C (0 = background).  The CRF runs on ``[background, present classes]``
        only, so absent classes never appear.
    """
    cams = np.asarray(cams_chw, dtype=np.float32)
    if cams.ndim != 3:
        raise ValueError(f"cams must be (C, H, W), got {cams.shape}")
    if label_ids is None:
        label_ids = [c for c in range(cams.shape[0]) if cams[c].max() > 0]
    label_ids = np.asarray(sorted(label_ids), dtype=np.int64)
    if label_ids.size and (label_ids.min() < 0 or label_ids.max() >= cams.shape[0]):
        raise ValueError(f"label ids must be in 0..{cams.shape[0] - 1}, got {label_ids.tolist()}")
    present = cams[label_ids]
    background = np.power(1.0 - (present.max(0) if label_ids.size else np.zeros(cams.shape[1:], np.float32)), alpha)
    scores = np.concatenate([background[None], present], 0)
    marginals = dense_crf(image_uint8_hwc, scores, **crf_options)
    classes = np.concatenate([[0], label_ids + 1]).astype(np.uint8)
    return classes[marginals.argmax(0)]


def _single_thread_worker() -> None:
    # the CRF is single-threaded; an OpenMP pool per worker would only oversubscribe the cores
    os.environ["OMP_NUM_THREADS"] = "1"


def ordered_pool_map(
    fn: Callable[..., _Result],
    items: Iterable[tuple[tuple[Any, ...], _Extra]],
    workers: int = 1,
    in_flight: int = 4,
) -> Iterator[tuple[_Result, _Extra]]:
    """``(fn(*args), extra)`` for each ``(args, extra)`` of ``items``, in input order, on ``workers`` processes.

    The CRF process pool: the worker processes run with ``OMP_NUM_THREADS=1``; ``items`` are consumed lazily, at
    most ``in_flight * workers`` of them submitted and not yet yielded, so memory stays bounded on a dataset of any
    size; each result is yielded as soon as it and all before it are done, so that a caller can write each file
    and advance a progress bar.  ``args`` (and ``fn``: a module-level function or a :func:`functools.partial` of
    one) are pickled to a worker; ``extra`` stays in this process: what the caller needs to finish the item.
    ``workers <= 1`` calls ``fn`` in this process, one item at a time.

    An exception of ``fn`` is raised here when its item's turn comes, one of ``items`` when it is reached; the
    pool then waits for the tasks in flight and drops their results.
    """
    if workers <= 1:
        for args, extra in items:
            yield fn(*args), extra
        return
    window: deque[tuple[Future, _Extra]] = deque()
    with ProcessPoolExecutor(max_workers=workers, initializer=_single_thread_worker) as pool:
        for args, extra in items:
            window.append((pool.submit(fn, *args), extra))
            if len(window) >= in_flight * workers:
                future, done = window.popleft()
                yield future.result(), done
        while window:
            future, done = window.popleft()
            yield future.result(), done


def _present_only(
    cams_chw: np.ndarray, label_ids: Sequence[int] | None
) -> tuple[np.ndarray, Sequence[int] | None, np.ndarray | None]:
    """The part of one item that :func:`crf_mask` reads: the present classes' maps only.

    Sending a worker ``(C, H, W)`` CAMs costs a pickle and a pipe copy of all C maps (15 MB for VOC's
    20 classes at 500x375, about a tenth of the CRF's own time on each side) although the CRF reads
    only the 1-3 present ones.  Returns ``(cams[ids], range(len(ids)), lut)`` with ``lut = [0, ids + 1]``
    (uint8), so that ``lut[crf_mask(image, cams[ids], range(len(ids)))] == crf_mask(image, cams, label_ids)``;
    or the item unchanged with ``lut=None`` when it is malformed (the worker's :func:`crf_mask` raises).
    """
    cams = np.asarray(cams_chw)
    if cams.ndim != 3:
        return cams_chw, label_ids, None
    if label_ids is None:
        ids = np.flatnonzero(cams.reshape(cams.shape[0], -1).max(1) > 0)
    else:
        ids = np.asarray(sorted(label_ids), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= cams.shape[0]):
            return cams_chw, label_ids, None
    lut = np.concatenate([[0], ids + 1]).astype(np.uint8)
    return np.ascontiguousarray(cams[ids], dtype=np.float32), list(range(ids.size)), lut


def crf_masks(
    items: Iterable[tuple[np.ndarray, np.ndarray, Sequence[int] | None]],
    workers: int = 1,
    alpha: float = 8.0,
    **crf_options,
) -> Iterator[np.ndarray]:
    """:func:`crf_mask` over many ``(image, cams, label_ids)`` items on ``workers`` processes.

    Results come back in input order as they complete, so a caller can write each file and advance a
    progress bar.  Items are consumed lazily: at most ``4 * workers`` are in flight, so memory stays
    bounded on a dataset of any size (the pool is :func:`ordered_pool_map`).  ``workers <= 1`` runs in this
    process.  Each worker is sent the image and the present classes' maps only (not all C), and the mask's
    channel indices are mapped back to class ids here, which gives the same masks as :func:`crf_mask` on the
    full item.
    """
    if workers <= 1:
        for image, cams, label_ids in items:
            yield crf_mask(image, cams, label_ids, alpha, **crf_options)
        return

    def tasks() -> Iterator[tuple[tuple[Any, ...], np.ndarray | None]]:
        for image, cams, label_ids in items:
            present, ids, lut = _present_only(cams, label_ids)
            yield (image, present, ids), lut

    one = functools.partial(crf_mask, alpha=alpha, **crf_options)
    for mask, lut in ordered_pool_map(one, tasks(), workers):
        yield mask if lut is None else lut[mask]
