"""Multi-scale, flipped CAM inference (METHOD.md §6)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fsae.infer._scales import summed_scale_probs
from fsae.ops import cam_normalize

__all__ = ["multiscale_cams"]


@torch.no_grad()
def multiscale_cams(
    model: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    image: torch.Tensor,
    labels: torch.Tensor,
    scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    flip: bool = True,
) -> torch.Tensor:
    """Normalised foreground CAMs of ``image`` summed over scales and horizontal flips.

    For every scale the batch and (``flip=True``) its mirror image go through ``model`` in one
    forward pass; each pass's logits are soft-maxed over the C+1 channels, upsampled bilinearly
    (``align_corners=False``) to the image size, un-flipped and summed.  The sum of the C foreground
    channels is then normalised by the fused :func:`fsae.ops.cam_normalize` (each map divided by its
    maximum + 1e-5; classes absent from ``labels`` zeroed).

    Args:
        model: maps ``(N, 3, h, w)`` images to CAM logits ``(N, C+1, h', w')`` (channel 0 = background),
            e.g. a :class:`fsae.methods.WSSSMethod` or an ``EMATeacher``; put in eval mode for the call
            when it is an ``nn.Module`` (its mode is restored afterwards).
        image: ``(B, 3, H, W)`` float, ImageNet-normalised.
        labels: ``(B, C)`` multi-hot image labels.
        scales: input scale factors.
        flip: also run the horizontally flipped images.

    Returns:
        ``(B, C, H, W)`` float32 CAMs in [0, 1] on ``image``'s device.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    if labels.dim() != 2 or labels.shape[0] != image.shape[0]:
        raise ValueError(f"labels must be (B, C) with B={image.shape[0]}, got {tuple(labels.shape)}")
    if not scales:
        raise ValueError("scales must not be empty")
    num_classes = labels.shape[1]

    def check(logits: torch.Tensor, inputs: torch.Tensor) -> None:
        if logits.dim() != 4 or logits.shape[1] != num_classes + 1:
            raise ValueError(f"model returned {tuple(logits.shape)}; expected (N, C+1, h, w) with C={num_classes}")

    total = summed_scale_probs(model, image, scales, flip, check, first_channel=1)
    return cam_normalize(total, labels, mode="max", eps=1e-5)
