"""SIPE losses (Chen et al., CVPR 2022; docs/method.md §5) as a pure tensor function.

Project convention: ``norm_cam`` / ``is_cam`` are ``(B, C+1, h, w)`` with channel
0 = background; ``labels`` ``(B, C)`` multi-hot.
"""

from __future__ import annotations

import torch

from fsae.losses.seam import multilabel_soft_margin
from fsae.ops import checks
from fsae.ops.reference import accumulate_dtype

__all__ = ["sipe_loss"]


def sipe_loss(
    class_logits: torch.Tensor,
    labels: torch.Tensor,
    norm_cam: torch.Tensor,
    is_cam: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """SIPE's two terms: classification and general-specific consistency (GSC).

    * ``cls`` = multilabel soft margin on the image logits (GAP of the raw CAM).
    * ``gsc`` = ``mean |norm_cam - is_cam / (max_hw is_cam + 1e-5)|`` over all
      ``B * (C+1) * h * w`` entries, background channel included.  The per-map
      max is not detached (as in the original, which divides in place), so the
      gradient reaches both ``norm_cam`` and ``is_cam``.

    Args:
        class_logits: ``(B, C)`` image logits.
        labels: ``(B, C)`` multi-hot.
        norm_cam: ``(B, C+1, h, w)`` general CAM: ReLU/max-normalised foreground
            (absent classes and invalid pixels zeroed by the net), background
            ``1 - max foreground`` in channel 0.
        is_cam: ``(B, C+1, h, w)`` image-specific CAM (ReLU of the cosine
            similarity to the image-specific prototypes), same layout.

    Returns:
        ``{"cls": ..., "gsc": ...}``: 0-d float32 tensors (float64 for float64 input).
    """
    checks.check_logits("norm_cam", norm_cam)
    checks.check_logits("is_cam", is_cam)
    if tuple(is_cam.shape) != tuple(norm_cam.shape):
        raise ValueError(f"is_cam must have the shape of norm_cam {tuple(norm_cam.shape)}, got {tuple(is_cam.shape)}")
    checks.check_labels(labels, norm_cam.shape[0], norm_cam.shape[1] - 1, f"norm_cam of shape {tuple(norm_cam.shape)}")
    dtype = accumulate_dtype(norm_cam.dtype)
    is_cam = is_cam.to(dtype)
    scaled = is_cam / (is_cam.amax(dim=(2, 3), keepdim=True) + 1e-5)
    return {
        "cls": multilabel_soft_margin(class_logits, labels),
        "gsc": (norm_cam.to(dtype) - scaled).abs().mean(),
    }
