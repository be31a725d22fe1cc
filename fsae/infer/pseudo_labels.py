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
images (and runs its own CRF pool); the integer confusion matrices and coverage counts are summed across
processes, so the metrics do not depend on the number of processes.

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
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fsae.data import DatasetError, get_dataset
from fsae.data.palette import IGNORE_INDEX, write_label_png
from fsae.errors import ConfigError
from fsae.eval import ConfusionMatrix
from fsae.eval.confusion import MIOU_MEANS
from fsae.infer.cams import SCALE_RESIZES, multiscale_cams
from fsae.infer.checkpoint import load_cam_model, locate_run_files
from fsae.infer.crf import crf_masks
from fsae.infer.report import metrics_markdown, plot_curve, side_by_side
from fsae.methods import import_method_module
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
    _check_settings(scales, threshold, alpha, workers, limit, pictures, scale_resize, miou_over)
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
    model = None
    if from_cams is None:
        model, _ = load_cam_model(checkpoint, weights, device)
        has_authors = callable(getattr(model, "authors_cams", None))
        if cams == "authors" and not has_authors:
            raise ConfigError(f"--cams authors: the {type(model).__name__} method has no authors_cams (use fsae)")
        cams = cams or ("authors" if has_authors else "fsae")
    else:
        first = next(iter(sorted(Path(from_cams).glob("*.npz"))), None)
        saved = "authors" if first is not None and read_background(first) is not None else "fsae"
        if cams is not None and cams != saved:
            raise ConfigError(f"--cams {cams}: the saved CAMs in {from_cams} are {saved} CAMs")
        cams = saved
    source = cams

    output_dir = Path(output_dir)
    folders = {"seeds": True, "masks": crf, "cams": save_cams, "pictures": pictures > 0}
    for name, wanted in folders.items():
        if wanted:
            (output_dir / name).mkdir(parents=True, exist_ok=True)
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
    if accelerator.is_main_process:
        args = {
            **settings,
            "data_root": str(sources["data_root"]),
            "dataset": sources["dataset"],
            "split": sources["split"],
            "threshold": threshold,
            "alpha": alpha,
            "crf": crf,
            "workers": workers,
            "save_cams": save_cams,
            "from_cams": str(from_cams) if from_cams is not None else None,
            "evaluate": evaluate,
            "miou_over": miou_over,
            "limit": limit,
            "pictures": pictures,
            "device": str(device),
            "num_processes": accelerator.num_processes,
        }
        (output_dir / "args.json").write_text(json.dumps(args, indent=2) + "\n")

    ids = list(data.ids[:limit] if limit is not None else data.ids)
    rank, world = accelerator.process_index, accelerator.num_processes
    local = list(range(len(ids)))[rank::world]
    num_classes = data.num_classes
    seed_cm, mask_cm = ConfusionMatrix(num_classes + 1), ConfusionMatrix(num_classes + 1)
    curve = ThresholdCurve(num_classes + 1, mean=miou_over)
    coverage = torch.zeros(len(ids), 2, dtype=torch.int64)  # per image: gt fg pixels seeded fg, gt fg pixels

    def images() -> Iterator[dict[str, Any]]:
        """Per local image: CAMs, seed (written), metrics updates; what the CRF and the pictures need."""
        for index in local:
            sample = data[index]
            image_id, labels = sample["id"], sample["labels"]
            height, width = sample["image"].shape[1:]
            label_ids = [int(c) for c in torch.nonzero(labels).flatten()]
            background = None
            if from_cams is not None:
                cams, saved_ids = read_cams(Path(from_cams) / f"{image_id}.npz", num_classes)
                if source == "authors":
                    background = read_background(Path(from_cams) / f"{image_id}.npz")
                    if background is None:
                        raise DatasetError(f"saved CAMs of {image_id} have no background map (the others have)")
                    background = background.to(device)
                if cams.shape[1:] != (height, width):
                    raise DatasetError(
                        f"saved CAMs of {image_id} are {tuple(cams.shape[1:])}, image is {(height, width)}"
                    )
                if saved_ids != label_ids:
                    raise DatasetError(
                        f"saved CAMs of {image_id} are for classes {saved_ids}, the image labels are {label_ids} "
                        "(CAMs of another dataset or split?)"
                    )
                cams = cams.to(device)
            elif source == "authors":
                maps = model.authors_cams(sample["image"][None].to(device), labels[None].to(device))[0].float()
                present = (labels != 0).to(device=maps.device, dtype=maps.dtype)[:, None, None]
                background, cams = maps[0], maps[1:] * present
            else:
                # the uint8 image: multiscale_cams resizes (scale_resize) and normalises it
                batch = sample["image"][None].to(device)
                cams = multiscale_cams(model, batch, labels[None].to(device), scales, flip, scale_resize)[0]
            if save_cams:
                cams = cams.to(torch.float16).float()  # the stored precision (module docstring)
                if background is not None:
                    background = background.to(torch.float16).float()
                write_cams(output_dir / "cams" / f"{image_id}.npz", cams, label_ids, background)
            if background is not None:
                seed = argmax_seed(background, cams, labels.to(cams.device)).cpu()
            else:
                seed = cams_to_labels(cams[None], labels[None].to(cams.device), bg_threshold=threshold)[0].cpu()
            write_label_png(output_dir / "seeds" / f"{image_id}.png", seed.numpy().astype(np.uint8))
            gt = sample.get("mask")
            if evaluate:
                seed_cm.update(seed, gt)
                curve.update(cams, gt.to(cams.device), labels.to(cams.device))
                foreground = (gt >= 1) & (gt <= num_classes)
                coverage[index, 0] = int((foreground & (seed > 0)).sum())
                coverage[index, 1] = int(foreground.sum())
            present = cams[label_ids].cpu().numpy() if label_ids else np.zeros((0, height, width), np.float32)
            image = np.ascontiguousarray(sample["image"].permute(1, 2, 0).numpy())
            yield {
                "index": index,
                "id": image_id,
                "image": image,
                "seed": seed.numpy(),
                "gt": gt,
                "label_ids": label_ids,
                "present": present,
            }

    def finish(record: dict[str, Any], mask: np.ndarray | None) -> None:
        if mask is not None:
            write_label_png(output_dir / "masks" / f"{record['id']}.png", mask)
            if evaluate:
                mask_cm.update(mask, record["gt"])
        if record["index"] < pictures:
            gt = record["gt"]
            side_by_side(
                output_dir / "pictures" / f"{record['id']}.png",
                record["image"],
                record["present"],
                record["seed"],
                mask,
                None if gt is None else gt.numpy(),
                titles=("image", "CAM", seed_title, "CRF mask", "ground truth"),
                class_names=data.class_names,
            )

    seed_title = "seed (argmax)" if source == "authors" else f"seed t={threshold:.2f}"
    from tqdm.auto import tqdm

    show = progress and accelerator.is_main_process and sys.stderr.isatty()
    bar = tqdm(total=len(local), desc="pseudo-labels", disable=not show)
    if crf:
        pending: deque[dict[str, Any]] = deque()

        def crf_items() -> Iterator[tuple[np.ndarray, np.ndarray, list[int]]]:
            for record in images():
                pending.append(record)
                yield record["image"], record["present"], list(range(len(record["label_ids"])))

        for local_mask in crf_masks(crf_items(), workers=workers, alpha=alpha):
            record = pending.popleft()
            lut = np.asarray([0] + [c + 1 for c in record["label_ids"]], dtype=np.uint8)
            finish(record, lut[local_mask])
            bar.update()
    else:
        for record in images():
            finish(record, None)
            bar.update()
    bar.close()

    metrics: dict[str, Any] = {
        "split": sources["split"],
        "dataset": sources["dataset"],
        "num_images": len(ids),
        **settings,
        "threshold": threshold,
        "alpha": alpha,
        "crf": crf,
        "from_cams": str(from_cams) if from_cams is not None else None,
        "class_names": list(data.class_names),
    }
    if evaluate:
        seed_cm.reduce(accelerator)
        curve.reduce(accelerator)
        if crf:
            mask_cm.reduce(accelerator)
        if world > 1:
            coverage = accelerator.reduce(coverage.to(accelerator.device), reduction="sum").cpu()
        points = curve.curve()
        best_t, best_miou = curve.best()
        counted = coverage[coverage[:, 1] > 0].double()
        metrics["miou_over"] = miou_over
        metrics["seed"] = _summary(seed_cm, miou_over)
        both = zip(curve.curve("all"), curve.curve("present"), strict=True)
        metrics["curve"] = [
            {"threshold": t, "miou": _json_float(m), "miou_all": _json_float(a), "miou_present": _json_float(p)}
            for (t, m), ((_, a), (_, p)) in zip(points, both, strict=True)
        ]
        metrics["best"] = {"threshold": best_t, "miou": _json_float(best_miou), "chosen_on": sources["split"]}
        if crf:
            metrics["mask"] = _summary(mask_cm, miou_over)
        metrics["completeness"] = _json_float(float((counted[:, 0] / counted[:, 1]).mean())) if len(counted) else None
        metrics["completeness_images"] = len(counted)
    if accelerator.is_main_process:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (output_dir / "metrics.md").write_text(metrics_markdown(metrics))
        if evaluate:
            seed_miou = metrics["seed"]["miou"]
            marked = {f"best: t={best_t:.2f} (chosen on {sources['split']})": (best_t, best_miou)}
            if seed_miou is not None:
                marked[f"used: t={threshold:.2f}"] = (threshold, seed_miou)
            plot_curve(output_dir / "threshold_curve.png", {"seed": points}, marked=marked)
    accelerator.wait_for_everyone()
    return metrics
