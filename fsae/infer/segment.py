"""Segmentation-network inference and evaluation (docs/method.md §6, second stage).

* :func:`multiscale_segment`: class probabilities averaged over input scales x horizontal flips.
* :func:`segment_dataset`: a whole dataset (or this process's shard of it), optional dense CRF on a process pool,
  scored with :class:`fsae.eval.ConfusionMatrix` (reduced across processes) and/or written as palette PNGs.
* :func:`prediction_dir`: where the PASCAL VOC evaluation server wants the PNGs:
  ``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` (``comp6``: trained with data outside VOC, here the
  ImageNet / COCO pretraining).  ``tar czf results.tgz results`` and upload.
* :func:`write_metrics`: ``metrics.json`` and a Markdown table with per-class IoU.
* :func:`load_segmenter`: the trained network of a ``recipes/train_seg.py`` run.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsae.augment import imagenet_normalize
from fsae.data.palette import write_label_png
from fsae.eval.confusion import ConfusionMatrix
from fsae.infer._scales import summed_scale_probs
from fsae.infer.crf import dense_crf, ordered_pool_map

__all__ = [
    "load_segmenter",
    "multiscale_segment",
    "prediction_dir",
    "segment_dataset",
    "write_metrics",
]


@torch.no_grad()
def multiscale_segment(
    model: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    image: torch.Tensor,
    scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    flip: bool = True,
) -> torch.Tensor:
    """Class probabilities of ``image``: the mean over scales (x flips) of the upsampled softmax.

    For every scale ``s`` the batch is resized bilinearly (``align_corners=False``) to
    ``(round(H s), round(W s))``; with ``flip`` its mirror image joins it in the same forward pass.  Each pass's
    logits are soft-maxed over the K channels, upsampled bilinearly to ``(H, W)`` and un-flipped; the result is the
    mean over the ``len(scales) * (1 + flip)`` passes.

    Args:
        model: maps ``(N, 3, h, w)`` to logits ``(N, K, h', w')`` at any resolution; an ``nn.Module`` is put in
            eval mode for the call (its mode is restored afterwards).
        image: ``(B, 3, H, W)`` float, ImageNet-normalised.
        scales: input scale factors.
        flip: also run the horizontally flipped images.

    Returns:
        ``(B, K, H, W)`` float32 probabilities (summing to 1 over K) on ``image``'s device.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    if not scales:
        raise ValueError("scales must not be empty")

    def check(logits: torch.Tensor, inputs: torch.Tensor) -> None:
        if logits.dim() != 4 or logits.shape[0] != inputs.shape[0]:
            raise ValueError(f"model returned {tuple(logits.shape)}; expected (N, K, h, w) with N={inputs.shape[0]}")

    total = summed_scale_probs(model, image, scales, flip, check)
    return total / (len(scales) * (2 if flip else 1))


def prediction_dir(output_dir: str | Path, split: str, competition: str = "comp6") -> Path:
    """``output_dir/results/VOC2012/Segmentation/<competition>_<split>_cls`` (the VOC devkit's ``clsresdir``)."""
    return Path(output_dir) / "results" / "VOC2012" / "Segmentation" / f"{competition}_{split}_cls"


def _crf_labels(image_hwc: np.ndarray, probs_chw: np.ndarray, options: dict[str, Any]) -> np.ndarray:
    return dense_crf(image_hwc, probs_chw, **options).argmax(0).astype(np.uint8)


def _labels_in_order(
    items: Iterable[tuple[np.ndarray, np.ndarray, Any]], crf: dict[str, Any] | None, workers: int
) -> Iterator[tuple[np.ndarray, Any]]:
    """``(labels uint8 (H, W), extra)`` per ``(image uint8 (H, W, 3), probs float32 (K, H, W), extra)`` item, in
    order: argmax, or the argmax of the dense CRF on ``workers`` processes (:func:`fsae.infer.crf.ordered_pool_map`:
    at most ``4 * workers`` in flight)."""
    if crf is None:
        for _, probs, extra in items:
            yield probs.argmax(0).astype(np.uint8), extra
        return
    tasks = (((image, probs, crf), extra) for image, probs, extra in items)
    yield from ordered_pool_map(_crf_labels, tasks, workers)


def segment_dataset(
    model: torch.nn.Module,
    dataset: Any,
    *,
    scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    flip: bool = True,
    crf: dict[str, Any] | None = None,
    crf_workers: int = 1,
    accelerator: Any = None,
    device: torch.device | str | None = None,
    evaluate: bool = True,
    predictions: str | Path | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Segment every image of ``dataset`` (this process's shard: ids ``rank::processes``); score and/or write.

    Args:
        model: the network (``(N, 3, h, w) -> (N, K, h', w')`` logits); run in eval mode under
            ``accelerator.autocast()`` when an accelerator is given.
        dataset: a :class:`fsae.data.SegmentationDataset` without transform; items ``image`` uint8 (3, H, W),
            ``mask`` int64 (H, W) when ``evaluate``, ``id``.
        scales, flip: see :func:`multiscale_segment`.
        crf: keyword arguments of :func:`fsae.infer.dense_crf` (``iterations``, ``gaussian``, ``bilateral``) to
            refine the probabilities, or None.
        crf_workers: CRF processes (per training process).
        accelerator: shards the ids by ``process_index`` / ``num_processes`` and sums the confusion matrix over
            processes; None = one process on ``device``.
        evaluate: accumulate the confusion matrix against ``mask``.
        predictions: folder for ``<id>.png`` palette PNGs (uint8 class ids, image size), or None.
        num_workers: data-loader workers.
        progress: a progress bar on the main process (on a terminal only).

    Returns:
        With ``evaluate``: :meth:`ConfusionMatrix.compute` of all processes plus ``num_images`` and ``num_pixels``
        (labelled pixels scored); else None.
    """
    from torch.utils.data import DataLoader, Subset

    rank = accelerator.process_index if accelerator is not None else 0
    processes = accelerator.num_processes if accelerator is not None else 1
    if accelerator is not None:
        device = accelerator.device
    device = torch.device(device or "cpu")
    shard = Subset(dataset, list(range(rank, len(dataset), processes)))
    loader = DataLoader(shard, batch_size=1, num_workers=num_workers, collate_fn=_first)
    num_classes = dataset.num_classes + 1
    confusion = ConfusionMatrix(num_classes) if evaluate else None
    if predictions is not None:
        predictions = Path(predictions)
        predictions.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress and rank == 0 and sys.stderr.isatty():  # off a terminal a bar only writes carriage returns
        from tqdm import tqdm

        bar = tqdm(total=len(shard), desc="segment", dynamic_ncols=True)
    autocast = accelerator.autocast if accelerator is not None else _no_autocast
    was_training = model.training
    model.eval()

    def probabilities() -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        for item in loader:
            image = item["image"]
            inputs = imagenet_normalize(image.to(device)[None].float().div_(255))  # float32, as in training
            with autocast():
                probs = multiscale_segment(model, inputs, scales, flip)[0]
            yield image.permute(1, 2, 0).contiguous().numpy(), probs.cpu().numpy(), (item["id"], item.get("mask"))

    try:
        for labels, (sample_id, mask) in _labels_in_order(probabilities(), crf, crf_workers):
            if confusion is not None:
                if mask is None:
                    raise ValueError(f"cannot evaluate: the dataset has no mask for {sample_id}")
                confusion.update(torch.from_numpy(labels), mask)
            if predictions is not None:
                write_label_png(predictions / f"{sample_id}.png", labels)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    if confusion is None:
        return None
    counted = torch.tensor([len(shard)], dtype=torch.int64)
    if accelerator is not None and processes > 1:
        counted = accelerator.reduce(counted.to(accelerator.device), reduction="sum").cpu()
    confusion.reduce(accelerator)
    return {**confusion.compute(), "num_images": int(counted.item()), "num_pixels": int(confusion.mat.sum())}


def _first(items: list[Any]) -> Any:
    return items[0]


class _no_autocast:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def write_metrics(
    metrics: dict[str, Any], class_names: Sequence[str], folder: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``folder/metrics.json`` and ``folder/metrics.md`` (mIoU, accuracies, per-class IoU table).

    Args:
        metrics: :func:`segment_dataset`'s result (``miou``, ``pixel_acc``, ``mean_acc``, ``iou`` list, ...).
        class_names: K names, background first.
        extra: settings recorded alongside (split, scales, CRF, checkpoint, ...).

    Returns:
        The JSON payload (IoU per class name, ``null`` for a class absent from ground truth and prediction).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        **(extra or {}),
        "num_images": metrics.get("num_images"),
        "num_pixels": metrics.get("num_pixels"),
        "miou": _finite(metrics["miou"]),
        "pixel_acc": _finite(metrics["pixel_acc"]),
        "mean_acc": _finite(metrics["mean_acc"]),
        "iou": {name: _finite(v) for name, v in zip(class_names, metrics["iou"], strict=True)},
    }
    (folder / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    settings = ", ".join(f"{k}: {v}" for k, v in (extra or {}).items())
    lines = [
        f"# Segmentation results ({payload.get('split', 'eval')})",
        "",
        f"{settings}" if settings else "",
        "",
        "| metric | value (%) |",
        "|---|---|",
        f"| mIoU | {pct(payload['miou'])} |",
        f"| pixel accuracy | {pct(payload['pixel_acc'])} |",
        f"| mean accuracy | {pct(payload['mean_acc'])} |",
        "",
        "| class | IoU (%) |",
        "|---|---|",
        *(f"| {name} | {pct(v)} |" for name, v in payload["iou"].items()),
        "",
    ]
    (folder / "metrics.md").write_text("\n".join(lines))
    return payload


def load_segmenter(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network of a ``recipes/train_seg.py`` run, in eval mode on ``device``, and the run's config.

    Args:
        path: the run's ``--output-dir`` (``config.yaml`` + ``model.safetensors``), one of its
            ``checkpoints/step_*`` folders, or a ``.safetensors`` file inside either.
    """
    import yaml
    from safetensors.torch import load_file

    from fsae.errors import ConfigError
    from fsae.infer.checkpoint import locate_run_files
    from fsae.models.deeplab import build_segmenter

    config_file, weights_file = locate_run_files(path, "model")
    config = yaml.safe_load(config_file.read_text())
    if "model" not in config:
        raise ConfigError(f"{config_file} is not a segmentation run (no model section; a CAM run?)")
    model_cfg = config["model"]
    num_classes = config.get("_run", {}).get("num_classes", 20)
    model = build_segmenter(
        model_cfg["name"],
        num_classes + 1,
        backbone=model_cfg["backbone"],
        pretrained=False,
        pretrained_path=None,
        output_stride=model_cfg["output_stride"],
        freeze_bn=False,  # frozen or not, the state-dict keys are the same; inference runs in eval mode
        **model_cfg.get("options", {}),
    )
    state = load_file(str(weights_file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ConfigError(
            f"{weights_file} does not fit the {model_cfg['name']} / {model_cfg['backbone']} network of {config_file}: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    return model.to(device).eval(), config
