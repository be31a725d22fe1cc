"""EPS saliency loss (Lee et al., CVPR 2021), as PPC uses it (docs/method.md §4, ``L_sal``).

Needs off-the-shelf saliency maps; without them PPC runs as "PPC on SEAM" and
this term is simply left out.  Project convention: CAM logits ``(B, C+1, h, w)``
with channel 0 = background, ``labels`` ``(B, C)`` multi-hot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsae.ops import checks
from fsae.ops.reference import accumulate_dtype

__all__ = ["saliency_loss"]


def saliency_loss(
    cam_logits: torch.Tensor,
    saliency: torch.Tensor,
    labels: torch.Tensor,
    tau: float = 0.4,
    alpha: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EPS pseudo-pixel supervision from a saliency map.

    Steps (``p = softmax(cam_logits)`` over the C+1 channels, per pixel):

    1. ``s`` = ``saliency`` resized to ``(h, w)`` with nearest-neighbour
       interpolation (``F.interpolate``'s default, as in EPS).
    2. For each present class k, the overlap
       ``sum(round(p_k) * round(s)) / (sum(round(p_k)) + 1e-4 * h * w)`` (the
       original adds 1e-4 per pixel; ``round`` is round-half-to-even, so 0.5 -> 0):
       the fraction of the class's predicted area that is salient.  This selection
       is not differentiated.
    3. Present classes with overlap ``> tau`` are foreground; present classes
       with overlap ``<= tau`` join the background channel; absent classes are
       in neither.
    4. ``fg = sum_{foreground k} p_k``, ``bg = p_0 + sum_{other present k} p_k``,
       predicted saliency ``alpha * fg + (1 - alpha) * (1 - bg)``.
    5. Loss = mean squared error to ``s`` over ``B * h * w``.

    Args:
        cam_logits: ``(B, C+1, h, w)`` CAM logits (PPC applies it to the CAM and
            to the PCM-refined CAM of both views).
        saliency: ``(B, 1, H, W)`` saliency in [0, 1] (any size).
        labels: ``(B, C)`` multi-hot.
        tau: overlap threshold (0.4 in docs/method.md §4; EPS's argparse default is 0.5).
        alpha: blending weight of the foreground map (0.5 VOC, 0.9 COCO).

    Returns:
        ``(loss, fg_map)``: 0-d float32 loss (float64 for float64 logits) and
        the ``(B, 1, h, w)`` foreground map ``fg``.  Gradient flows to
        ``cam_logits`` through the softmax, not to ``saliency``.
    """
    checks.check_logits("cam_logits", cam_logits)
    batch, channels, height, width = cam_logits.shape
    checks.check_labels(labels, batch, channels - 1, f"cam_logits of shape {tuple(cam_logits.shape)}")
    checks.check_rank4("saliency", saliency, "(B, 1, H, W)")
    if saliency.shape[0] != batch or saliency.shape[1] != 1:
        raise ValueError(f"saliency must have shape ({batch}, 1, H, W), got {tuple(saliency.shape)}")
    checks.check_unit_interval("tau", tau)
    checks.check_unit_interval("alpha", alpha)

    dtype = accumulate_dtype(cam_logits.dtype)
    probs = torch.softmax(cam_logits.to(dtype), dim=1)
    target = F.interpolate(saliency.detach().to(dtype), size=(height, width), mode="nearest")

    with torch.no_grad():
        predicted = torch.round(probs[:, 1:])
        overlap = (predicted * torch.round(target)).sum(dim=(2, 3)) / (
            predicted.sum(dim=(2, 3)) + 1e-4 * height * width
        )
        present = labels.detach() != 0
        foreground = present & (overlap > tau)
        background = present & ~foreground
    fg_map = (probs[:, 1:] * foreground[:, :, None, None].to(dtype)).sum(dim=1, keepdim=True)
    bg_map = probs[:, :1] + (probs[:, 1:] * background[:, :, None, None].to(dtype)).sum(dim=1, keepdim=True)
    predicted_saliency = alpha * fg_map + (1 - alpha) * (1 - bg_map)
    return F.mse_loss(predicted_saliency, target), fg_map
