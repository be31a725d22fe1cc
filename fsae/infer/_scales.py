"""The test-time augmentation loop shared by :func:`fsae.infer.multiscale_cams` and
:func:`fsae.infer.multiscale_segment`: input scales x horizontal flips, softmax, upsample, un-flip, sum."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["summed_scale_probs"]


def summed_scale_probs(
    model: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    image: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    check: Callable[[torch.Tensor, torch.Tensor], None],
    first_channel: int = 0,
    inputs_at: Callable[[float], torch.Tensor] | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over scales (x flips) of the softmax of ``model``'s logits, upsampled to the image size and un-flipped.

    For every scale ``s`` the batch is resized bilinearly (``align_corners=False``) to
    ``(max(1, round(H s)), max(1, round(W s)))`` (left as is at its own size), or ``inputs_at(s)`` makes the
    network input when given; with ``flip`` its mirror image joins it in the same forward pass.  Each pass's
    logits are soft-maxed in float32 over the channels, channels ``first_channel:`` kept, upsampled bilinearly
    (``align_corners=False``) to ``(H, W)``; the mirrored half is flipped back and added to the other.  An
    ``nn.Module`` in training mode is put in eval mode for the call (its mode is restored afterwards).  Run it
    under ``torch.no_grad()``.

    Args:
        model: maps ``(N, 3, h, w)`` images to logits ``(N, K, h', w')``.
        image: ``(B, 3, H, W)`` float (any dtype with ``inputs_at``); the caller validates it and that ``scales`` is
            not empty.
        scales: input scale factors.
        flip: also run the horizontally flipped images.
        check: called with ``(logits, inputs)`` of every pass before they are used; raises ``ValueError`` when
            the logits do not have the expected shape.
        first_channel: softmax channels before this one are dropped (1: keep the foreground of CAM logits).
        inputs_at: ``scale -> (B, 3, h, w)`` float network input on the model's device, replacing the bilinear
            resize of ``image`` (which then only gives ``B, H, W``: it may be the raw uint8 image).
        labels: ``(B, C)`` image labels: the model is called as ``model(inputs, labels, cam_only=True)`` (a
            :class:`fsae.methods.WSSSMethod`'s CAM logits with the labels; repeated for the flipped half).

    Returns:
        ``(B, K - first_channel, H, W)`` float32: the sum over the ``len(scales) * (1 + flip)`` passes, on
        ``image``'s device.
    """
    batch, _, height, width = image.shape
    was_training = getattr(model, "training", None)
    if was_training:
        model.eval()
    try:
        total = None
        for scale in scales:
            if inputs_at is not None:
                scaled = inputs_at(scale)
            else:
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                scaled = image
                if size != (height, width):
                    scaled = F.interpolate(image, size, mode="bilinear", align_corners=False)
            inputs = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
            if labels is None:
                logits = model(inputs)
            else:
                logits = model(inputs, labels.repeat(inputs.shape[0] // batch, 1), cam_only=True)
            check(logits, inputs)
            probs = logits.float().softmax(1)[:, first_channel:]
            probs = F.interpolate(probs, (height, width), mode="bilinear", align_corners=False)
            summed = probs[:batch] + probs[batch:].flip(-1) if flip else probs
            total = summed if total is None else total + summed
    finally:
        if was_training:
            model.train()
    return total
