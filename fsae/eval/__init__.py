"""Segmentation metrics: :class:`ConfusionMatrix` (mIoU, per-class IoU, accuracies), reducible across processes."""

from fsae.eval.confusion import ConfusionMatrix

__all__ = ["ConfusionMatrix"]
