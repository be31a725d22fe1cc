"""Inference: multi-scale CAMs, seeds, dense CRF masks, loading trained runs (docs/method.md §6).

* :func:`multiscale_cams`: normalised CAMs over scales x flips (fused normalisation).
* :func:`dense_crf`, :func:`crf_mask`, :func:`crf_masks`: pydensecrf post-processing, one image or a
  process pool over many.
* :func:`load_cam_model`: the trained method of a training run's output folder.
* :func:`make_pseudo_labels`: seeds, CRF masks and their evaluation for a split (``recipes/make_pseudo_labels.py``);
  :class:`ThresholdCurve` / :func:`seed_curve_counts`: seed confusion matrices for many thresholds in one pass.
* :func:`multiscale_segment`, :func:`segment_dataset`, :func:`load_segmenter`: the second stage's multi-scale +
  flip (+ CRF) inference and evaluation (``recipes/train_seg.py``).
"""

from fsae._optional import check

check("fsae.infer", "train")  # every piece of the training stack, before importing any

from fsae.infer.cams import multiscale_cams
from fsae.infer.checkpoint import load_cam_model
from fsae.infer.crf import crf_mask, crf_masks, dense_crf
from fsae.infer.pseudo_labels import ThresholdCurve, make_pseudo_labels, seed_curve_counts
from fsae.infer.segment import load_segmenter, multiscale_segment, segment_dataset

__all__ = ["crf_mask", "crf_masks", "dense_crf", "load_cam_model", "multiscale_cams"]
__all__ += ["ThresholdCurve", "make_pseudo_labels", "seed_curve_counts"]
__all__ += ["load_segmenter", "multiscale_segment", "segment_dataset"]
