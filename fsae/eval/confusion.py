"""Confusion matrix and the segmentation metrics derived from it, reducible across processes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["MIOU_MEANS", "ConfusionMatrix"]

MIOU_MEANS = ("all", "present")  # the classes an mIoU averages over (ConfusionMatrix.compute)


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` int64 confusion matrix (rows = ground truth, columns = prediction).

    ``K = num_classes`` counts every class including background (VOC: 21).  Pixels whose ground truth is
    ``ignore_index`` are skipped; predictions must lie in ``0..K-1`` (anything else is an error, since it
    would silently vanish from the counts).

    Metrics (:meth:`compute`): per-class ``iou = TP / (TP + FP + FN)``; a class absent from both the ground
    truth and the prediction has no defined IoU (``nan`` in ``iou``).  Two means:

    * ``miou_present``: over the classes that occur in the ground truth or the prediction (the undefined ones
      left out rather than counted as 0 or 1);
    * ``miou_all``: over all K classes, an undefined IoU counted as 0 -- what the authors' ``eval.py`` reports
      (``TP / (T + P - TP + 1e-10)`` per class, averaged over the 21 VOC classes).

    ``miou`` is the one ``compute(mean=...)`` asks for (``"present"`` by default).  ``mean_acc`` averages the
    per-class recall over classes present in the ground truth.

    Example::

        cm = ConfusionMatrix(21)
        for pred, gt in batches:           # int tensors / arrays (..., H, W)
            cm.update(pred, gt)
        cm.reduce(accelerator)             # sum over processes (no-op with one)
        print(cm.compute()["miou"])
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> None:
        """Add ``pred`` vs ``gt`` (integer maps of the same shape, any leading dims)."""
        pred = torch.as_tensor(pred, device=self.mat.device).long()
        gt = torch.as_tensor(gt, device=self.mat.device).long()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
        keep = gt != self.ignore_index
        pred, gt = pred[keep], gt[keep]
        k = self.num_classes
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= k):
            raise ValueError(f"prediction values must be in 0..{k - 1}, got {int(pred.min())}..{int(pred.max())}")
        if gt.numel() and (int(gt.min()) < 0 or int(gt.max()) >= k):
            low, high = int(gt.min()), int(gt.max())
            raise ValueError(f"ground-truth values must be in 0..{k - 1} or {self.ignore_index}, got {low}..{high}")
        self.mat += torch.bincount(gt * k + pred, minlength=k * k).view(k, k)

    def reduce(self, accelerator: Any = None) -> ConfusionMatrix:
        """Sum the matrix over all processes (in place; call once, after the last :meth:`update`).

        Uses ``accelerator.reduce`` when given, else ``torch.distributed`` when it is initialised;
        with a single process it changes nothing.
        """
        if accelerator is not None:
            if accelerator.num_processes > 1:
                self.mat = accelerator.reduce(self.mat.to(accelerator.device), reduction="sum").to(self.mat.device)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat)
        return self

    def compute(self, mean: str = "present") -> dict[str, Any]:
        """``miou`` (``miou_all`` or ``miou_present`` as ``mean`` says), ``miou_all``, ``miou_present``, ``iou``
        (list, ``nan`` for undefined classes), ``pixel_acc``, ``mean_acc``, ``present`` (classes counted in
        ``miou_present``), all as Python floats / lists."""
        if mean not in MIOU_MEANS:
            raise ValueError(f"mean must be one of {MIOU_MEANS}, got {mean!r}")
        mat = self.mat.double().cpu()
        tp = mat.diag()
        gt_count, pred_count = mat.sum(1), mat.sum(0)
        union = gt_count + pred_count - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        recall = tp[gt_count > 0] / gt_count[gt_count > 0]
        total = mat.sum()
        miou_present = float(iou[present].mean()) if present.any() else float("nan")
        miou_all = float(torch.where(present, iou, torch.zeros_like(iou)).mean())
        return {
            "miou": miou_all if mean == "all" else miou_present,
            "miou_all": miou_all,
            "miou_present": miou_present,
            "iou": iou.tolist(),
            "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_acc": float(recall.mean()) if recall.numel() else float("nan"),
            "present": present.tolist(),
        }
