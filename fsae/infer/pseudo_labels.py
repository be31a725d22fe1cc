"""Pseudo-labels from a trained CAM network: seeds, CRF masks and their evaluation (docs/method.md §6).

:func:`make_pseudo_labels` is the whole pipeline behind ``recipes/make_pseudo_labels.py`` (and what a
benchmark calls in-process): for every image of a split it computes multi-scale CAMs (or reads CAMs saved
by an earlier run), writes the **seed** (constant background plane ``t``, argmax) and the dense-CRF **mask**
as VOC palette PNGs, and with ``evaluate=True`` measures both against the ground truth:

* the seed's confusion matrix at ``t`` and a whole **threshold curve** (``t`` = 0.00, 0.01, ..., 0.49, the
  authors' ``eval.py --curve --max_th 50``; one confusion matrix per threshold, accumulated in one pass by
  :class:`ThresholdCurve`);
* the CRF mask's confusion matrix;
* **completeness**: how much of the ground-truth foreground the seed covers (see :func:`make_pseudo_labels`).

Every mIoU is reported twice (:meth:`fsae.eval.ConfusionMatrix.compute`): ``miou_all``, the mean over all C+1
classes with a class absent from ground truth and seeds counted as 0 (the authors' ``eval.py``: the paper's
figure), and ``miou_present``, over the classes that occur; ``miou`` is the one ``miou_over`` picks (default
``"all"``), and the curve's best threshold is chosen on it.  On a dataset with few of the classes (the toy
dataset) only ``miou_present`` is meaningful.

Distribution: the ids are sharded by rank (``ids[rank::world]``); each process computes and writes its own
images (and runs its own CRF pool and data-loader workers); the integer confusion matrices and coverage counts are
summed across processes, so the metrics do not depend on the number of processes.

Stages of :func:`make_pseudo_labels`, one function each: the settings resolved and checked, every error before any
work (``_resolve_plan``); the CAMs per image, the images read by ``loader_workers`` data-loader processes ahead of
the network or of the saved CAMs (``_image_cams``); the seeds, saved CAMs, CRF masks (on the
:func:`fsae.infer.crf.ordered_pool_map` pool) and pictures written (``_write_labels``); the metrics reduced over
processes and the report written (``_metrics``, ``_write_report``).  The number of loader or CRF workers changes
no byte of the outputs.

Which CAMs (``cams``): ``"fsae"`` is the pipeline above (:func:`multiscale_cams` of the method's CAM logits, a
constant background threshold); ``"authors"`` is the method's own pipeline, for methods that define
``authors_cams(image, labels) -> (1, C+1, H, W)`` (SIPE: its fused multi-scale IS-CAMs with a background map,
:meth:`fsae.methods.SIPEMethod.authors_cams`): the seed is then the argmax over the background map and the
present classes' maps, **no threshold**, as the authors' code takes it. The default is ``"authors"`` for a method
that has ``authors_cams``, else ``"fsae"``. With ``"authors"`` the CRF masks use the foreground maps (with the
``alpha`` background, as for ``"fsae"``), and the threshold curve is computed on the foreground maps with a
constant background as a diagnostic (what a threshold would give on those maps): the seed metrics, the
completeness and the pictures are of the argmax seed; ``metrics.json`` records ``cams``. Saved CAMs
(``save_cams``) then also hold the ``background`` map, and a ``from_cams`` run with them seeds by the argmax.

Seeds and masks are made from the float32 CAMs, as the authors' (their ``.npy`` CAMs are float32).  With
``save_cams`` the CAMs are first rounded to float16, the precision stored, so that a run from saved CAMs
(``from_cams``) reproduces the run that saved them exactly; that rounding (<= 2.5e-4) moves a seed pixel whose
CAM is that close to the threshold (on the fidelity photos 0.01-0.02 % of the pixels).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from fsae.data import DatasetError, get_dataset
from fsae.data.palette import IGNORE_INDEX, write_label_png
from fsae.errors import ConfigError
from fsae.eval import ConfusionMatrix
from fsae.eval.confusion import MIOU_MEANS
from fsae.infer.cams import SCALE_RESIZES, multiscale_cams
from fsae.infer.checkpoint import load_cam_model, locate_run_files
from fsae.infer.crf import crf_mask, ordered_pool_map
from fsae.infer.report import metrics_markdown, plot_curve, side_by_side
from fsae.methods import WSSSMethod, import_method_module
from fsae.ops import cams_to_labels
from fsae.paths import check_writable

__all__ = [
    "CAM_SOURCES",
    "DEFAULT_SCALES",
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "ThresholdCurve",
    "argmax_seed",
    "make_pseudo_labels",
    "read_background",
    "read_cams",
    "seed_curve_counts",
    "write_cams",
]

DEFAULT_SCALES = (0.5, 1.0, 1.5, 2.0)  # the authors' contrast_infer.py
DEFAULT_THRESHOLD = 0.22  # the seed background score: --thr of contrast_infer.py in their script/voc_ppc0.sh
DEFAULT_THRESHOLDS = tuple(i / 100 for i in range(50))  # 0.00 .. 0.49: their eval.py --curve --max_th 50
CAM_SOURCES = ("authors", "fsae")  # make_pseudo_labels(cams=...): the method's authors_cams, or multiscale_cams


def argmax_seed(background: torch.Tensor, cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The seed of maps with a background map: argmax over ``[background, cams of the present classes]``, no
    threshold (ties: the lower index, background first, as ``numpy.argmax`` over the authors' kept channels).

    Args:
        background: ``(H, W)``; cams: ``(C, H, W)``; labels: ``(C,)`` multi-hot.

    Returns:
        int64 ``(H, W)`` in 0..C (0 = background).
    """
    present = torch.as_tensor(labels, device=cams.device).reshape(-1, 1, 1) != 0
    fg = torch.where(present, cams, torch.full_like(cams, -math.inf))
    return torch.cat([background[None].to(cams.dtype), fg]).argmax(dim=0)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def seed_curve_counts(
    norm_cams: torch.Tensor,
    gt: torch.Tensor,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    labels: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Confusion matrices of the seeds ``cams_to_labels(norm_cams, labels, bg_threshold=t)`` for many ``t`` at once.

    The seed at threshold ``t`` is the argmax over ``[t, cam_1, ..., cam_C]`` with ties going to the lowest
    index: a pixel is foreground iff ``m = max_c cam_c > t`` (compared in the CAMs' compute precision, float32
    unless they are float64, as :func:`fsae.ops.cams_to_labels` does), and then takes the first class reaching
    ``m``.  So the class argmax and ``m`` are computed once; ``k`` = the number of thresholds below ``m`` says for
    which thresholds a pixel is foreground, and one ``bincount`` over ``(k, gt, class)`` plus a suffix sum gives
    every threshold's matrix.

    Args:
        norm_cams: ``(B, C, H, W)`` (or ``(C, H, W)``) float CAMs in [0, 1].
        gt: ``(B, H, W)`` (or ``(H, W)``) integer ground truth in 0..C, ``ignore_index`` skipped.
        thresholds: the background thresholds ``t`` (any order).
        labels: optional ``(B, C)`` multi-hot; absent classes count as 0 (as in ``cams_to_labels``).
        ignore_index: ground-truth value to skip.

    Returns:
        int64 ``(T, C+1, C+1)`` on ``norm_cams``' device: ``[i, g, p]`` = pixels of ground truth ``g`` predicted
        ``p`` at ``thresholds[i]`` (rows ground truth, columns prediction, as in :class:`ConfusionMatrix`).
    """
    if norm_cams.dim() == 3:
        norm_cams = norm_cams[None]
        gt = gt[None] if gt.dim() == 2 else gt
        labels = labels[None] if labels is not None and labels.dim() == 1 else labels
    if norm_cams.dim() != 4:
        raise ValueError(f"norm_cams must be (B, C, H, W), got {tuple(norm_cams.shape)}")
    batch, classes, height, width = norm_cams.shape
    gt = torch.as_tensor(gt, device=norm_cams.device).long()
    if gt.shape != (batch, height, width):
        raise ValueError(f"gt must be (B, H, W) = {(batch, height, width)}, got {tuple(gt.shape)}")
    if len(thresholds) == 0:
        raise ValueError("thresholds must not be empty")
    x = norm_cams.to(_accumulate_dtype(norm_cams.dtype))
    if labels is not None:
        if labels.shape != (batch, classes):
            raise ValueError(f"labels must be (B, C) = {(batch, classes)}, got {tuple(labels.shape)}")
        x = x * (labels.to(x.device) != 0)[:, :, None, None]
    best = x.amax(dim=1)
    arg = x.argmax(dim=1) + 1  # the first maximal class (1-based)
    keep = gt != ignore_index
    g, p, m = gt[keep], arg[keep], best[keep]
    k_classes = classes + 1
    if g.numel() and (int(g.min()) < 0 or int(g.max()) >= k_classes):
        raise ValueError(f"ground-truth values must be in 0..{classes} or {ignore_index}")
    t = torch.tensor([float(v) for v in thresholds], dtype=x.dtype, device=x.device)
    order = torch.argsort(t, stable=True)
    sorted_t = t[order]
    n_t = t.numel()
    below = torch.searchsorted(sorted_t, m.contiguous(), right=False)  # thresholds strictly below m
    hist = torch.bincount((below * k_classes + g) * k_classes + p, minlength=(n_t + 1) * k_classes * k_classes)
    hist = hist.view(n_t + 1, k_classes, k_classes)
    # Sorted threshold i is below m iff i < below: foreground counts at i = sum of hist[j] for j > i.
    foreground = hist.flip(0).cumsum(0).flip(0)[1:]
    counts = foreground.clone()
    counts[:, :, 0] = torch.bincount(g, minlength=k_classes)[None] - foreground.sum(2)
    out = torch.empty_like(counts)
    out[order] = counts
    return out


class ThresholdCurve:
    """Seed confusion matrices for a list of background thresholds, accumulated over images.

    Equivalent to one :class:`ConfusionMatrix` per threshold updated with
    ``cams_to_labels(norm_cams, labels, bg_threshold=t)``, in a single pass (:func:`seed_curve_counts`).
    :meth:`curve` and :meth:`best` use the mIoU over ``mean`` = ``"all"`` classes (default: the authors'
    ``eval.py --curve``, an absent class counted as 0) or the ``"present"`` ones (see
    :meth:`ConfusionMatrix.compute`).

    Example::

        curve = ThresholdCurve(21)
        for cams, labels, gt in images:
            curve.update(cams, gt, labels)
        curve.reduce(accelerator)
        best_t, best_miou = curve.best()
    """

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str = "cpu",
        mean: str = "all",
    ) -> None:
        """``num_classes`` = C+1 (background included); ``thresholds``: non-empty; ``mean``: ``"all"`` or
        ``"present"``."""
        if not thresholds:
            raise ValueError("thresholds must not be empty")
        if mean not in MIOU_MEANS:
            raise ValueError(f"mean must be one of {MIOU_MEANS}, got {mean!r}")
        self.mean = mean
        self.num_classes = num_classes
        self.thresholds = [float(t) for t in thresholds]
        self.ignore_index = ignore_index
        self.mat = torch.zeros(len(self.thresholds), num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, norm_cams: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add images: ``norm_cams (B, C, H, W)``, ``gt (B, H, W)``, ``labels (B, C)`` (or unbatched)."""
        if norm_cams.shape[-3] + 1 != self.num_classes:
            raise ValueError(f"expected {self.num_classes - 1} CAM channels, got {norm_cams.shape[-3]}")
        counts = seed_curve_counts(norm_cams, gt, self.thresholds, labels, self.ignore_index)
        self.mat += counts.to(self.mat.device)

    def reduce(self, accelerator: Any = None) -> ThresholdCurve:
        """Sum over processes (in place), like :meth:`ConfusionMatrix.reduce`."""
        if accelerator is not None:
            if accelerator.num_processes > 1:
                self.mat = accelerator.reduce(self.mat.to(accelerator.device), reduction="sum").to(self.mat.device)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat)
        return self

    def confusion(self, index: int) -> ConfusionMatrix:
        """The :class:`ConfusionMatrix` of ``thresholds[index]``."""
        cm = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.mat.device)
        cm.mat = self.mat[index].clone()
        return cm

    def curve(self, mean: str | None = None) -> list[tuple[float, float]]:
        """``[(threshold, miou), ...]`` in the order of ``thresholds``; the mIoU over ``mean`` (default
        ``self.mean``) classes."""
        mean = self.mean if mean is None else mean
        return [(t, self.confusion(i).compute(mean)["miou"]) for i, t in enumerate(self.thresholds)]

    def best(self, mean: str | None = None) -> tuple[float, float]:
        """``(threshold, miou)`` of the highest mIoU (ties: the first such threshold; NaN never wins)."""
        points = self.curve(mean)
        finite = [(t, m) for t, m in points if math.isfinite(m)]
        if not finite:
            return points[0]
        best_miou = max(m for _, m in finite)
        return next((t, m) for t, m in finite if m == best_miou)


def write_cams(
    path: str | Path,
    cams: torch.Tensor | np.ndarray,
    label_ids: Sequence[int],
    background: torch.Tensor | np.ndarray | None = None,
) -> None:
    """Save the CAMs of the present classes: compressed ``.npz`` with ``cams`` float16 ``(K, H, W)`` (the
    channels ``label_ids`` of the ``(C, H, W)`` input) and ``label_ids`` int64 ``(K,)``, 0-based; with a
    ``background`` map ``(H, W)`` (``cams="authors"``) also ``background`` float16 ``(H, W)``."""
    cams = torch.as_tensor(cams).detach().cpu()
    ids = np.asarray(list(label_ids), dtype=np.int64)
    extra = {}
    if background is not None:
        extra["background"] = torch.as_tensor(background).detach().cpu().to(torch.float16).numpy()
    np.savez_compressed(path, cams=cams[torch.as_tensor(ids)].to(torch.float16).numpy(), label_ids=ids, **extra)


def read_background(path: str | Path) -> torch.Tensor | None:
    """The ``background`` map ``(H, W)`` float32 of a :func:`write_cams` file, None when it has none."""
    try:
        with np.load(path) as data:
            return torch.from_numpy(data["background"].astype(np.float32)) if "background" in data else None
    except FileNotFoundError:
        raise DatasetError(f"no saved CAMs: {path}") from None
    except (OSError, ValueError) as err:
        raise DatasetError(f"unreadable CAM file {path}: {err}") from None


def read_cams(path: str | Path, num_classes: int) -> tuple[torch.Tensor, list[int]]:
    """Load :func:`write_cams` output as float32 ``(C, H, W)`` (absent classes zero) and the 0-based label ids."""
    try:
        with np.load(path) as data:
            present, ids = data["cams"], data["label_ids"]
    except FileNotFoundError:
        raise DatasetError(f"no saved CAMs: {path}") from None
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"unreadable CAM file {path}: {err}") from None
    if present.ndim != 3 or ids.ndim != 1 or present.shape[0] != ids.shape[0]:
        raise DatasetError(f"{path}: expected cams (K, H, W) and label_ids (K,), got {present.shape}, {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise DatasetError(f"{path}: label ids {ids.tolist()} outside 0..{num_classes - 1}")
    cams = torch.zeros(num_classes, *present.shape[1:], dtype=torch.float32)
    cams[torch.as_tensor(ids, dtype=torch.int64)] = torch.from_numpy(present.astype(np.float32))
    return cams, [int(i) for i in ids]


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _summary(cm: ConfusionMatrix, mean: str) -> dict[str, Any]:
    result = cm.compute(mean)
    return {
        "miou": _json_float(result["miou"]),
        "miou_all": _json_float(result["miou_all"]),
        "miou_present": _json_float(result["miou_present"]),
        "iou": [_json_float(v) for v in result["iou"]],
        "pixel_acc": _json_float(result["pixel_acc"]),
        "mean_acc": _json_float(result["mean_acc"]),
        "confusion": cm.mat.cpu().tolist(),  # pixels: rows ground truth, columns prediction
    }


def _check_settings(
    scales: Sequence[float],
    threshold: float,
    alpha: float,
    workers: int,
    loader_workers: int | None,
    limit: int | None,
    pictures: int,
    scale_resize: str,
    miou_over: str,
) -> None:
    if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise ConfigError(f"scales must be positive numbers, got {list(scales)}")
    if scale_resize not in SCALE_RESIZES:
        raise ConfigError(f"scale_resize must be one of {', '.join(SCALE_RESIZES)}, got {scale_resize!r}")
    if miou_over not in MIOU_MEANS:
        raise ConfigError(f"miou_over must be one of {', '.join(MIOU_MEANS)}, got {miou_over!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise ConfigError(f"alpha must be >= 0, got {alpha}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if loader_workers is not None and loader_workers < 0:
        raise ConfigError(f"loader_workers must be >= 0, got {loader_workers}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if pictures < 0:
        raise ConfigError(f"pictures must be >= 0, got {pictures}")


def _cams_folder(from_cams: str | Path) -> Path:
    """The folder of ``<id>.npz`` files: ``from_cams`` itself, or its ``cams/`` (the output dir of a run)."""
    folder = Path(from_cams)
    if not folder.is_dir():
        raise ConfigError(f"--from-cams folder not found: {folder}")
    if (folder / "cams").is_dir() and next(folder.glob("*.npz"), None) is None:
        return folder / "cams"
    return folder


def _resolve_sources(
    checkpoint: str | Path | None,
    weights: str,
    from_cams: str | Path | None,
    data_root: str | Path | None,
    dataset: str | None,
    split: str | None,
) -> dict[str, Any]:
    """Fill data root / dataset / split from the saved-CAM run's ``args.json``, then the run config."""
    resolved: dict[str, Any] = {"provenance": {}}
    sources: list[dict[str, Any]] = []
    if from_cams is not None:
        folder = Path(from_cams)
        args_file = folder.parent / "args.json"
        if args_file.is_file():
            saved = json.loads(args_file.read_text())
            sources.append(
                {"root": saved.get("data_root"), "dataset": saved.get("dataset"), "split": saved.get("split")}
            )
            keys = ("checkpoint", "weights", "scales", "flip", "scale_resize")
            resolved["provenance"] = {k: saved.get(k) for k in keys}
    if checkpoint is not None:
        if weights not in ("model", "teacher"):
            raise ConfigError(f"weights must be 'model' or 'teacher', got {weights!r}")
        config_file, _ = locate_run_files(checkpoint, weights)
        run_config = yaml.safe_load(config_file.read_text()) or {}
        # the run's own module may register its dataset
        import_method_module(run_config.get("method", {}).get("module"), key=f"{config_file}: method.module")
        data = run_config.get("data", {})
        sources.append({"root": data.get("root"), "dataset": data.get("dataset", "voc"), "split": None})
    elif from_cams is None:
        raise ConfigError("give --checkpoint (a training run folder) or --from-cams")
    pick = {
        "root": data_root,
        "dataset": dataset,
        "split": split,
    }
    for key in pick:
        for source in sources:
            if pick[key] is None and source.get(key) is not None:
                pick[key] = source[key]
    if pick["root"] is None:
        raise ConfigError("no data root: give --data-root")
    resolved["data_root"] = Path(pick["root"])
    resolved["dataset"] = pick["dataset"] or "voc"
    resolved["split"] = pick["split"] or "train"
    try:
        get_dataset(resolved["dataset"])
    except ValueError as err:
        raise ConfigError(f"--dataset: {err}") from None
    if not resolved["data_root"].is_dir():
        raise ConfigError(f"data root not found: {resolved['data_root']}")
    return resolved


def _build_dataset(name: str, root: Path, split: str):
    try:
        data = get_dataset(name)(root, split)
    except DatasetError:
        raise
    except ValueError as err:  # a bad split name
        raise ConfigError(str(err)) from None
    if data.labels is None:
        raise ConfigError(f"split {split!r} has no masks, hence no image labels: pseudo-labels need image labels")
    return data


def _make_accelerator(device: str | torch.device | None):
    """An Accelerator for ``device``; on the CPU (asked for, or no CUDA under a multi-process launcher) with
    ``cpu=True``, without which Accelerate ignores a torchrun / ``accelerate launch`` environment there."""
    from accelerate import Accelerator

    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = (device is not None and torch.device(device).type == "cpu") or (
        device is None and multi_process and not torch.cuda.is_available()
    )
    return Accelerator(cpu=cpu)


def _default_loader_workers(num_processes: int) -> int:
    """``min(4, CPUs / processes)``, at least 1: JPEG decoding leaves the main process, which then only waits for
    the network; more than a few workers per process only compete with the CRF pool for the cores."""
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this job may use (a batch scheduler's share)
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus // max(1, num_processes)))


@dataclass
class _Plan:
    """The resolved settings of one :func:`make_pseudo_labels` run (stage 1, :func:`_resolve_plan`); the other
    stages read only this.  The options keep the meaning of :func:`make_pseudo_labels`' arguments."""

    output_dir: Path
    data: Any  # the split's SegmentationDataset: items image uint8 (3, H, W), labels (C,), mask int64 (H, W), id
    sources: dict[str, Any]  # data_root, dataset, split (resolved), provenance (the saved run's settings)
    accelerator: Any
    device: torch.device
    model: WSSSMethod | None  # the CAM network in eval mode; None with from_cams
    source: str  # "authors" or "fsae": whose CAMs make the seeds
    settings: dict[str, Any]  # checkpoint, weights, scales, flip, scale_resize, cams: as recorded
    ids: list[str]  # the split's ids, limit applied
    local: list[int]  # this process's shard: positions in ids, rank::world
    scales: Sequence[float]
    flip: bool
    scale_resize: str
    threshold: float
    alpha: float
    crf: bool
    workers: int
    loader_workers: int
    save_cams: bool
    from_cams: Path | None
    evaluate: bool
    miou_over: str
    limit: int | None
    pictures: int
    progress: bool


def _cam_source(
    checkpoint: str | Path | None, weights: str, from_cams: Path | None, cams: str | None, device: torch.device
) -> tuple[WSSSMethod | None, str]:
    """The network (None with ``from_cams``) and whose CAMs make the seeds, ``"authors"`` or ``"fsae"``: the
    asked ``cams`` checked against what the method has, or the saved CAMs hold (a background map or not)."""
    if from_cams is None:
        model, _ = load_cam_model(checkpoint, weights, device)
        has_authors = callable(getattr(model, "authors_cams", None))
        if cams == "authors" and not has_authors:
            raise ConfigError(f"--cams authors: the {type(model).__name__} method has no authors_cams (use fsae)")
        return model, cams or ("authors" if has_authors else "fsae")
    first = next(iter(sorted(Path(from_cams).glob("*.npz"))), None)
    saved = "authors" if first is not None and read_background(first) is not None else "fsae"
    if cams is not None and cams != saved:
        raise ConfigError(f"--cams {cams}: the saved CAMs in {from_cams} are {saved} CAMs")
    return None, saved


def _resolve_plan(
    output_dir: str | Path,
    checkpoint: str | Path | None,
    weights: str,
    data_root: str | Path | None,
    dataset: str | None,
    split: str | None,
    scales: Sequence[float],
    flip: bool,
    scale_resize: str,
    threshold: float,
    alpha: float,
    crf: bool,
    workers: int,
    loader_workers: int | None,
    save_cams: bool,
    from_cams: str | Path | None,
    evaluate: bool,
    miou_over: str,
    limit: int | None,
    pictures: int,
    device: str | torch.device | None,
    progress: bool,
    accelerator: Any,
    cams: str | None,
) -> _Plan:
    """Stage 1: check the settings and resolve the defaults (data root, dataset, split, accelerator, device, the
    network, whose CAMs), every error before any work; nothing is written but the output folder's write test.

    Raises: as :func:`make_pseudo_labels`.
    """
    _check_settings(scales, threshold, alpha, workers, loader_workers, limit, pictures, scale_resize, miou_over)
    if cams is not None and cams not in CAM_SOURCES:
        raise ConfigError(f"cams must be one of {', '.join(CAM_SOURCES)}, got {cams!r}")
    if from_cams is not None and save_cams:
        raise ConfigError("--save-cams with --from-cams would rewrite the CAMs being read")
    if from_cams is not None:
        from_cams = _cams_folder(from_cams)
    sources = _resolve_sources(checkpoint, weights, from_cams, data_root, dataset, split)
    check_writable(Path(output_dir))  # a file or a read-only folder stops here, before the network runs
    data = _build_dataset(sources["dataset"], sources["data_root"], sources["split"])
    if len(data) == 0:
        raise DatasetError(f"split {sources['split']!r} of {sources['data_root']} lists no images")
    accelerator = accelerator if accelerator is not None else _make_accelerator(device)
    device = torch.device(device) if device is not None else accelerator.device
    model, source = _cam_source(checkpoint, weights, from_cams, cams, device)
    provenance = sources["provenance"] if from_cams is not None else {}
    # with the method's own CAMs, scales / flip / resizing are the method's: recorded as None (not ours)
    own = source == "authors"
    settings = {
        "checkpoint": str(checkpoint) if checkpoint is not None and from_cams is None else provenance.get("checkpoint"),
        "weights": weights if from_cams is None else provenance.get("weights"),
        "scales": (None if own else [float(s) for s in scales]) if from_cams is None else provenance.get("scales"),
        "flip": (None if own else flip) if from_cams is None else provenance.get("flip"),
        "scale_resize": (None if own else scale_resize) if from_cams is None else provenance.get("scale_resize"),
        "cams": source,
    }
    ids = list(data.ids[:limit] if limit is not None else data.ids)
    local = list(range(len(ids)))[accelerator.process_index :: accelerator.num_processes]
    if loader_workers is None:
        loader_workers = _default_loader_workers(accelerator.num_processes)
    return _Plan(
        output_dir=Path(output_dir),
        data=data,
        sources=sources,
        accelerator=accelerator,
        device=device,
        model=model,
        source=source,
        settings=settings,
        ids=ids,
        local=local,
        scales=scales,
        flip=flip,
        scale_resize=scale_resize,
        threshold=threshold,
        alpha=alpha,
        crf=crf,
        workers=workers,
        loader_workers=loader_workers,
        save_cams=save_cams,
        from_cams=from_cams,
        evaluate=evaluate,
        miou_over=miou_over,
        limit=limit,
        pictures=pictures,
        progress=progress,
    )


def _prepare_output(plan: _Plan) -> None:
    """The output folders (every process) and ``args.json``, the resolved settings (the main process)."""
    folders = {"seeds": True, "masks": plan.crf, "cams": plan.save_cams, "pictures": plan.pictures > 0}
    for name, wanted in folders.items():
        if wanted:
            (plan.output_dir / name).mkdir(parents=True, exist_ok=True)
    if not plan.accelerator.is_main_process:
        return
    args = {
        **plan.settings,
        "data_root": str(plan.sources["data_root"]),
        "dataset": plan.sources["dataset"],
        "split": plan.sources["split"],
        "threshold": plan.threshold,
        "alpha": plan.alpha,
        "crf": plan.crf,
        "workers": plan.workers,
        "loader_workers": plan.loader_workers,
        "save_cams": plan.save_cams,
        "from_cams": str(plan.from_cams) if plan.from_cams is not None else None,
        "evaluate": plan.evaluate,
        "miou_over": plan.miou_over,
        "limit": plan.limit,
        "pictures": plan.pictures,
        "device": str(plan.device),
        "num_processes": plan.accelerator.num_processes,
    }
    (plan.output_dir / "args.json").write_text(json.dumps(args, indent=2) + "\n")


class _ShardImages(Dataset):
    """This process's images for the loader: item ``i`` is ``{"index", "sample", "saved"}`` for position
    ``index = local[i]`` of the split, ``sample = data[index]`` and, with a ``from_cams`` folder, ``saved = (cams
    float32 (C, H, W), label_ids, background float32 (H, W) or None)`` read from ``<id>.npz``; or ``{"index",
    "error"}`` when one of them is unreadable (:class:`DatasetError`)."""

    def __init__(self, data: Any, local: Sequence[int], from_cams: Path | None, background: bool) -> None:
        self.data, self.local, self.from_cams, self.background = data, list(local), from_cams, background

    def __len__(self) -> int:
        return len(self.local)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.local[position]
        try:
            sample = self.data[index]
            saved = None
            if self.from_cams is not None:
                path = self.from_cams / f"{sample['id']}.npz"
                cams, label_ids = read_cams(path, self.data.num_classes)
                saved = (cams, label_ids, read_background(path) if self.background else None)
        except DatasetError as err:
            # raised in a loader worker it would reach the main process wrapped in the worker's traceback: the
            # message travels as data and is raised there, the same one-line error as without workers
            return {"index": index, "error": str(err)}
        return {"index": index, "sample": sample, "saved": saved}


def _as_is(item: Any) -> Any:
    return item  # the loader's collate_fn: one item at a time, no batching, no conversion


@dataclass
class _ImageCams:
    """One image's CAMs (stage 2): ``cams`` float32 ``(C, H, W)`` in [0, 1] on the device (absent classes 0),
    ``background`` float32 ``(H, W)`` with ``cams="authors"`` (else None), ``label_ids`` the present classes
    (0-based), ``sample`` the dataset item, ``index`` its position in the split's ids."""

    index: int
    sample: dict[str, Any]
    cams: torch.Tensor
    background: torch.Tensor | None
    label_ids: list[int]


def _checked_saved_cams(
    plan: _Plan,
    sample: dict[str, Any],
    saved: tuple[torch.Tensor, list[int], torch.Tensor | None],
    label_ids: list[int],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The saved ``(cams, background)`` of ``sample`` on the device, checked to be its own (size, classes)."""
    cams, saved_ids, background = saved
    image_id = sample["id"]
    height, width = sample["image"].shape[1:]
    if plan.source == "authors":
        if background is None:
            raise DatasetError(f"saved CAMs of {image_id} have no background map (the others have)")
        background = background.to(plan.device)
    if cams.shape[1:] != (height, width):
        raise DatasetError(f"saved CAMs of {image_id} are {tuple(cams.shape[1:])}, image is {(height, width)}")
    if saved_ids != label_ids:
        raise DatasetError(
            f"saved CAMs of {image_id} are for classes {saved_ids}, the image labels are {label_ids} "
            "(CAMs of another dataset or split?)"
        )
    return cams.to(plan.device), background


def _image_cams(plan: _Plan) -> Iterator[_ImageCams]:
    """Stage 2: the CAMs of this process's images, in id order: the network's (``"fsae"``: :func:`multiscale_cams`
    of the uint8 image; ``"authors"``: the method's ``authors_cams``) or read from ``from_cams``.  The images (and
    saved CAMs) are read and decoded by ``plan.loader_workers`` loader processes (0: this one), ahead of the
    network.  An unreadable image raises :class:`DatasetError` when its turn comes, as without workers."""
    background_maps = plan.source == "authors"
    shard = _ShardImages(plan.data, plan.local, plan.from_cams, background_maps)
    loader = DataLoader(shard, batch_size=None, collate_fn=_as_is, num_workers=plan.loader_workers)
    for item in loader:
        if "error" in item:
            raise DatasetError(item["error"])
        sample = item["sample"]
        labels = sample["labels"]
        label_ids = [int(c) for c in torch.nonzero(labels).flatten()]
        background = None
        if item["saved"] is not None:
            cams, background = _checked_saved_cams(plan, sample, item["saved"], label_ids)
        elif background_maps:
            maps = plan.model.authors_cams(sample["image"][None].to(plan.device), labels[None].to(plan.device))
            maps = maps[0].float()
            present = (labels != 0).to(device=maps.device, dtype=maps.dtype)[:, None, None]
            background, cams = maps[0], maps[1:] * present
        else:
            # the uint8 image: multiscale_cams resizes (scale_resize) and normalises it
            batch = sample["image"][None].to(plan.device)
            cams = multiscale_cams(
                plan.model, batch, labels[None].to(plan.device), plan.scales, plan.flip, plan.scale_resize
            )[0]
        yield _ImageCams(item["index"], sample, cams, background, label_ids)


class _Scores:
    """The evaluation's accumulators: the seeds' confusion matrix (at ``threshold``) and threshold curve, the CRF
    masks' confusion matrix, and per image of the split int64 ``coverage[index] = (ground-truth foreground pixels
    seeded foreground, ground-truth foreground pixels)``.  Each process adds its own images; :meth:`reduce` sums
    them over processes."""

    def __init__(self, num_classes: int, num_images: int, miou_over: str) -> None:
        self.num_classes = num_classes
        self.seed = ConfusionMatrix(num_classes + 1)
        self.mask = ConfusionMatrix(num_classes + 1)
        self.curve = ThresholdCurve(num_classes + 1, mean=miou_over)
        self.coverage = torch.zeros(num_images, 2, dtype=torch.int64)

    def add_seed(
        self, index: int, seed: torch.Tensor, cams: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """``seed`` int64 ``(H, W)`` (CPU), ``cams`` float32 ``(C, H, W)``, ``gt`` int64 ``(H, W)``, ``labels (C,)``."""
        self.seed.update(seed, gt)
        self.curve.update(cams, gt.to(cams.device), labels.to(cams.device))
        foreground = (gt >= 1) & (gt <= self.num_classes)
        self.coverage[index, 0] = int((foreground & (seed > 0)).sum())
        self.coverage[index, 1] = int(foreground.sum())

    def add_mask(self, mask: np.ndarray, gt: torch.Tensor) -> None:
        """``mask`` uint8 ``(H, W)``, ``gt`` int64 ``(H, W)``."""
        self.mask.update(mask, gt)

    def reduce(self, accelerator: Any, masks: bool) -> None:
        """Sum over processes (a collective: every process calls it); ``masks``: the mask matrix too."""
        self.seed.reduce(accelerator)
        self.curve.reduce(accelerator)
        if masks:
            self.mask.reduce(accelerator)
        if accelerator.num_processes > 1:
            self.coverage = accelerator.reduce(self.coverage.to(accelerator.device), reduction="sum").cpu()


@dataclass
class _Record:
    """What finishing one image after its seed needs: ``image`` uint8 ``(H, W, 3)``, ``seed`` int64 ``(H, W)``,
    ``gt`` int64 ``(H, W)`` or None, ``label_ids`` the present classes (0-based), ``present`` float32 ``(K, H, W)``
    their CAMs (the CRF's and the picture's input)."""

    index: int
    id: str
    image: np.ndarray
    seed: np.ndarray
    gt: torch.Tensor | None
    label_ids: list[int]
    present: np.ndarray


def _write_seed(plan: _Plan, item: _ImageCams, scores: _Scores) -> _Record:
    """Stage 3, per image: the saved CAMs (``save_cams``: the seed is then made from the stored float16 values),
    the seed PNG and, with ``evaluate``, the seed's scores."""
    sample, cams, background, label_ids = item.sample, item.cams, item.background, item.label_ids
    image_id, labels = sample["id"], sample["labels"]
    height, width = sample["image"].shape[1:]
    if plan.save_cams:
        cams = cams.to(torch.float16).float()  # the stored precision (module docstring)
        if background is not None:
            background = background.to(torch.float16).float()
        write_cams(plan.output_dir / "cams" / f"{image_id}.npz", cams, label_ids, background)
    if background is not None:
        seed = argmax_seed(background, cams, labels.to(cams.device)).cpu()
    else:
        seed = cams_to_labels(cams[None], labels[None].to(cams.device), bg_threshold=plan.threshold)[0].cpu()
    write_label_png(plan.output_dir / "seeds" / f"{image_id}.png", seed.numpy().astype(np.uint8))
    gt = sample.get("mask")
    if plan.evaluate:
        scores.add_seed(item.index, seed, cams, gt, labels)
    present = cams[label_ids].cpu().numpy() if label_ids else np.zeros((0, height, width), np.float32)
    image = np.ascontiguousarray(sample["image"].permute(1, 2, 0).numpy())
    return _Record(item.index, image_id, image, seed.numpy(), gt, label_ids, present)


def _finish(plan: _Plan, record: _Record, mask: np.ndarray | None, scores: _Scores) -> None:
    """Stage 3, per image after the CRF: the mask PNG (uint8 ``(H, W)`` class ids, or None without ``crf``) and its
    scores, and the side-by-side picture of the first ``pictures`` ids."""
    if mask is not None:
        write_label_png(plan.output_dir / "masks" / f"{record.id}.png", mask)
        if plan.evaluate:
            scores.add_mask(mask, record.gt)
    if record.index < plan.pictures:
        seed_title = "seed (argmax)" if plan.source == "authors" else f"seed t={plan.threshold:.2f}"
        side_by_side(
            plan.output_dir / "pictures" / f"{record.id}.png",
            record.image,
            record.present,
            record.seed,
            mask,
            None if record.gt is None else record.gt.numpy(),
            titles=("image", "CAM", seed_title, "CRF mask", "ground truth"),
            class_names=plan.data.class_names,
        )


def _write_labels(plan: _Plan, images: Iterable[_ImageCams], scores: _Scores) -> None:
    """Stage 3: the seeds (and saved CAMs) as the CAMs come, the CRF masks of their present classes on
    ``plan.workers`` processes (:func:`ordered_pool_map`, in order), the pictures; a progress bar on the main
    process when it writes to a terminal."""
    from tqdm.auto import tqdm

    show = plan.progress and plan.accelerator.is_main_process and sys.stderr.isatty()
    bar = tqdm(total=len(plan.local), desc="pseudo-labels", disable=not show)
    records = (_write_seed(plan, item, scores) for item in images)
    try:
        if plan.crf:
            # the CRF sees the present classes only (channels 0..K-1); the lookup table maps them back
            tasks = (((r.image, r.present, list(range(len(r.label_ids)))), r) for r in records)
            for local_mask, record in ordered_pool_map(partial(crf_mask, alpha=plan.alpha), tasks, plan.workers):
                lut = np.asarray([0] + [c + 1 for c in record.label_ids], dtype=np.uint8)
                _finish(plan, record, lut[local_mask], scores)
                bar.update()
        else:
            for record in records:
                _finish(plan, record, None, scores)
                bar.update()
    finally:
        bar.close()


def _metrics(plan: _Plan, scores: _Scores) -> dict[str, Any]:
    """Stage 4: the metrics dict of :func:`make_pseudo_labels`, the same on every process; with ``evaluate`` the
    scores are summed over processes first (a collective: every process calls this)."""
    metrics: dict[str, Any] = {
        "split": plan.sources["split"],
        "dataset": plan.sources["dataset"],
        "num_images": len(plan.ids),
        **plan.settings,
        "threshold": plan.threshold,
        "alpha": plan.alpha,
        "crf": plan.crf,
        "from_cams": str(plan.from_cams) if plan.from_cams is not None else None,
        "class_names": list(plan.data.class_names),
    }
    if not plan.evaluate:
        return metrics
    scores.reduce(plan.accelerator, masks=plan.crf)
    curve = scores.curve
    points = curve.curve()
    best_t, best_miou = curve.best()
    coverage = scores.coverage
    counted = coverage[coverage[:, 1] > 0].double()
    metrics["miou_over"] = plan.miou_over
    metrics["seed"] = _summary(scores.seed, plan.miou_over)
    both = zip(curve.curve("all"), curve.curve("present"), strict=True)
    metrics["curve"] = [
        {"threshold": t, "miou": _json_float(m), "miou_all": _json_float(a), "miou_present": _json_float(p)}
        for (t, m), ((_, a), (_, p)) in zip(points, both, strict=True)
    ]
    metrics["best"] = {"threshold": best_t, "miou": _json_float(best_miou), "chosen_on": plan.sources["split"]}
    if plan.crf:
        metrics["mask"] = _summary(scores.mask, plan.miou_over)
    metrics["completeness"] = _json_float(float((counted[:, 0] / counted[:, 1]).mean())) if len(counted) else None
    metrics["completeness_images"] = len(counted)
    return metrics


def _write_report(plan: _Plan, metrics: dict[str, Any], scores: _Scores) -> None:
    """Stage 4, the main process: ``metrics.json``, ``metrics.md`` and, with ``evaluate``, ``threshold_curve.png``
    (``scores`` already reduced by :func:`_metrics`)."""
    if not plan.accelerator.is_main_process:
        return
    (plan.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (plan.output_dir / "metrics.md").write_text(metrics_markdown(metrics))
    if plan.evaluate:
        best_t, best_miou = scores.curve.best()
        split, seed_miou = plan.sources["split"], metrics["seed"]["miou"]
        marked = {f"best: t={best_t:.2f} (chosen on {split})": (best_t, best_miou)}
        if seed_miou is not None:
            marked[f"used: t={plan.threshold:.2f}"] = (plan.threshold, seed_miou)
        plot_curve(plan.output_dir / "threshold_curve.png", {"seed": scores.curve.curve()}, marked=marked)


def make_pseudo_labels(
    output_dir: str | Path,
    checkpoint: str | Path | None = None,
    weights: str = "model",
    data_root: str | Path | None = None,
    dataset: str | None = None,
    split: str | None = None,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    scale_resize: str = "pil-bicubic",
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = 8.0,
    crf: bool = True,
    workers: int = 1,
    loader_workers: int | None = None,
    save_cams: bool = False,
    from_cams: str | Path | None = None,
    evaluate: bool = False,
    miou_over: str = "all",
    limit: int | None = None,
    pictures: int = 8,
    device: str | torch.device | None = None,
    progress: bool = True,
    accelerator: Any = None,
    cams: str | None = None,
) -> dict[str, Any]:
    """Write seeds (and CRF masks) for a split and, with ``evaluate``, measure them; returns the metrics.

    Args:
        output_dir: gets ``seeds/<id>.png``, ``masks/<id>.png`` (``crf``), ``cams/<id>.npz`` (``save_cams``;
            see :func:`write_cams`), ``pictures/<id>.png`` (the first ``pictures`` ids), ``args.json`` (the
            resolved settings) and ``metrics.json`` / ``metrics.md`` / ``threshold_curve.png`` (``evaluate``).
            Label PNGs are VOC palette PNGs of the image size with values 0..C (only present classes).
        checkpoint: a training run folder (or what :func:`load_cam_model` accepts); with ``from_cams`` it only
            supplies defaults (data root, dataset) and no network is loaded.
        weights: ``"model"`` (student) or ``"teacher"`` (EMA teacher).
        data_root, dataset, split: default to the saved-CAM run's settings (``from_cams``), then the run config
            (``data.root``, ``data.dataset``), then ``"train"`` for the split.
        scales, flip, scale_resize: multi-scale CAM inference (:func:`multiscale_cams`; ``scale_resize``
            ``"pil-bicubic"``, the authors', or ``"tensor-bilinear"``).
        threshold: constant background score of the seeds (``cams_to_labels(bg_threshold=threshold)``); default
            0.22, the ``--thr`` of the authors' ``script/voc_ppc0.sh``.
        alpha: CRF background ``(1 - max cam) ** alpha``.
        crf: also write CRF masks; ``workers`` CRF processes per process.
        loader_workers: data-loader processes per process reading and decoding the images (and saved CAMs) ahead
            of the network; 0 reads them in this process; None: ``min(4, CPUs / processes)``, at least 1.  The
            outputs do not depend on it.
        from_cams: a folder of ``<id>.npz`` from an earlier ``save_cams`` run (its ``cams/``, or the run's output
            folder), used instead of the network.
        evaluate: compare with the ground-truth masks.
        miou_over: the classes ``miou`` (and the curve, its best threshold) averages over: ``"all"`` C+1 (the
            authors' ``eval.py``; absent classes count 0) or ``"present"`` (see the module docstring).
        limit: only the first ``limit`` ids of the split.
        device: inference device (default: the accelerator's, i.e. the process's GPU when there is one).
        progress: tqdm bar on the main process (on a terminal only: off one it writes only carriage returns).
        accelerator: an ``accelerate.Accelerator`` (created when None) -- gives rank, world size and the reduction.
        cams: ``"authors"`` (the method's ``authors_cams``: its own scales and resizing, seed = argmax with its
            background map; ``scales``, ``flip``, ``scale_resize`` and ``threshold`` then do not make the seed) or
            ``"fsae"`` (:func:`multiscale_cams` and ``threshold``); None: ``"authors"`` when the method has
            ``authors_cams``, else ``"fsae"``; with ``from_cams``: ``"authors"`` when the saved files hold a
            background map (see the module docstring).

    Returns:
        The metrics dict (the same on every process), written to ``metrics.json`` by the main process:
        ``split``, ``dataset``, ``num_images``, ``checkpoint``, ``weights``, ``scales``, ``flip``,
        ``scale_resize``, ``threshold``, ``alpha``, ``crf``, ``from_cams``, ``class_names``; with ``evaluate`` also
        ``miou_over``, ``seed`` (``miou`` (over ``miou_over``), ``miou_all``, ``miou_present``, ``iou`` per class
        with ``None`` = undefined, ``pixel_acc``, ``mean_acc``, ``confusion``: the (C+1, C+1) pixel counts, rows
        ground truth, columns prediction; seeds at ``threshold``), ``curve`` (``[{threshold, miou, miou_all,
        miou_present}]`` for t = 0.00..0.49), ``best`` (``{threshold, miou}``, the highest ``miou``, chosen on
        this split), ``mask`` (as ``seed``, for the CRF masks; when ``crf``), ``completeness`` and
        ``completeness_images``.

        ``completeness`` = the mean over images with at least one ground-truth foreground pixel (value in 1..C)
        of ``|{gt in 1..C} & {seed > 0}| / |{gt in 1..C}|``, the seed taken at ``threshold``: the fraction of
        the objects' pixels the CAMs reach at all (any foreground class counts, so it measures coverage, not
        classification); ``completeness_images`` counts those images.  The per-image pixel counts are summed
        across processes and the mean is taken in id order, so it too is independent of the process count.

    Raises:
        ConfigError: bad settings, missing checkpoint or data root, split without labels.
        DatasetError: unreadable image or mask, missing or mismatched saved CAMs.
    """
    plan = _resolve_plan(
        output_dir,
        checkpoint=checkpoint,
        weights=weights,
        data_root=data_root,
        dataset=dataset,
        split=split,
        scales=scales,
        flip=flip,
        scale_resize=scale_resize,
        threshold=threshold,
        alpha=alpha,
        crf=crf,
        workers=workers,
        loader_workers=loader_workers,
        save_cams=save_cams,
        from_cams=from_cams,
        evaluate=evaluate,
        miou_over=miou_over,
        limit=limit,
        pictures=pictures,
        device=device,
        progress=progress,
        accelerator=accelerator,
        cams=cams,
    )
    _prepare_output(plan)
    scores = _Scores(plan.data.num_classes, len(plan.ids), plan.miou_over)
    _write_labels(plan, _image_cams(plan), scores)
    metrics = _metrics(plan, scores)
    _write_report(plan, metrics, scores)
    plan.accelerator.wait_for_everyone()
    return metrics
