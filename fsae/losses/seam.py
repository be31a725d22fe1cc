"""SEAM losses (Wang et al., CVPR 2020) as used by PPC (docs/method.md §4), as pure tensor functions.

Project convention: CAM logits are ``(B, C+1, h, w)`` with channel 0 = background
(SEAM itself puts background first as well; PPC moved it last); ``labels`` are
``(B, C)`` multi-hot over the foreground classes, float or bool.

* :func:`multilabel_soft_margin`: the image-level classification loss.
* :func:`background_suppression`: SEAM's "adaptive min pooling" on refined CAMs.
* :func:`equivariant_regularization` (ER) and :func:`equivariant_cross_regularization`
  (ECR) between a large view and its downscaled copy; :func:`max_onehot` is the
  target transform of ECR.

Everything is computed in float32 (float64 for float64 input) and returned as 0-d
tensors; nothing is stored between calls.  "max-norm" below is SEAM's ``max_norm``,
i.e. :func:`fsae.ops.cam_normalize` with ``mode="minmax"``: per map,
``relu(relu(x) - min - 1e-5) / (max - min + 1e-5)`` with min/max of ``relu(x)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsae.ops import cam_normalize, checks
from fsae.ops.reference import accumulate_dtype

__all__ = [
    "background_suppression",
    "equivariant_cross_regularization",
    "equivariant_regularization",
    "labels_with_background",
    "max_onehot",
    "multilabel_soft_margin",
    "seam_normalized_cams",
]


def _acc(t: torch.Tensor) -> torch.Tensor:
    """``t`` in the dtype the losses compute in (float32, float64 for float64)."""
    return t.to(accumulate_dtype(t.dtype))


def _check_cams(name: str, cams: torch.Tensor, labels: torch.Tensor) -> None:
    checks.check_logits(name, cams)
    checks.check_labels(labels, cams.shape[0], cams.shape[1] - 1, f"{name} of shape {tuple(cams.shape)}")


def labels_with_background(labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, C)`` multi-hot -> ``(B, C+1)`` 0/1 of ``dtype`` with a leading background column of ones."""
    present = (labels.detach() != 0).to(dtype)
    return torch.cat([torch.ones_like(present[:, :1]), present], dim=1)


def multilabel_soft_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multilabel soft-margin loss on image logits (``F.multilabel_soft_margin_loss``).

    ``-mean_{b,c} [y log sigmoid(x) + (1 - y) log sigmoid(-x)]``.

    Args:
        logits: ``(B, C)`` foreground image logits (no background column: with the
            PPC net pass ``image_logits[:, 1:]``, the original ``pred[:, :-1]``).
        labels: ``(B, C)`` multi-hot, float or bool.

    Returns:
        0-d float32 tensor (float64 for float64 logits).
    """
    checks.check_floating("logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (B, C), got shape {tuple(logits.shape)}")
    checks.check_labels(labels, logits.shape[0], logits.shape[1], f"logits of shape {tuple(logits.shape)}")
    logits = _acc(logits)
    return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))


def background_suppression(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SEAM's adaptive min-pooling loss on refined CAMs (part of ``L_cls`` in PPC).

    Per image: zero the maps of absent classes, take the per-pixel max over the
    foreground channels, keep the ``h*w // 4`` smallest values, ReLU them; the
    loss is their mean over the batch (``sum / (k * B)``).  The background
    channel is not used.

    Args:
        cams: ``(B, C+1, h, w)`` refined CAMs (PCM output, not normalised), channel 0 = background.
        labels: ``(B, C)`` multi-hot.

    Returns:
        0-d float32 tensor; gradient flows to the selected foreground entries of ``cams``.
    """
    _check_cams("cams", cams, labels)
    cams = _acc(cams)
    batch, _, height, width = cams.shape
    present = (labels.detach() != 0).to(cams.dtype)[:, :, None, None]
    peak = (cams[:, 1:] * present).amax(dim=1).reshape(batch, -1)
    k = max(1, height * width // 4)
    lowest = torch.topk(peak, k, dim=-1, largest=False).values
    return lowest.relu().mean()


def seam_normalized_cams(cams: torch.Tensor, labels: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Max-normed foreground CAMs with the SEAM background ``1 - max_k cam_k`` in channel 0.

    Foreground maps: :func:`fsae.ops.cam_normalize` (``"minmax"``, absent classes
    zeroed), then, when ``size`` is given, bilinear resizing (``align_corners=True``,
    as SEAM/PPC) to ``size``; the background channel is computed after resizing.
    Differentiable w.r.t. ``cams``.

    Args:
        cams: ``(B, C+1, h, w)`` CAM logits (channel 0 is ignored).
        labels: ``(B, C)`` multi-hot.
        size: optional output ``(H', W')``.

    Returns:
        ``(B, C+1, H', W')`` float32 (float64 for float64 input).
    """
    _check_cams("cams", cams, labels)
    foreground = cam_normalize(_acc(cams[:, 1:]), labels, mode="minmax")
    if size is not None and tuple(foreground.shape[-2:]) != tuple(size):
        foreground = F.interpolate(foreground, size=tuple(size), mode="bilinear", align_corners=True)
    background = 1 - foreground.amax(dim=1, keepdim=True)
    return torch.cat([background, foreground], dim=1)


def equivariant_regularization(cam_large: torch.Tensor, cam_small: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SEAM equivariant regularisation ``L_er`` between a view and its downscaled copy.

    ``mean |resize(maxnorm(cam_large)) - maxnorm(cam_small)|`` over the foreground
    channels (absent classes are zero in both, and still count in the mean, as in
    the original ``torch.mean`` over ``B * C * h * w``).  The large view's CAM is
    max-normed first, then resized bilinearly (``align_corners=True``) to the
    small view's size.  Gradient flows into both views.

    Args:
        cam_large: ``(B, C+1, H, W)`` CAM logits of the full-size view.
        cam_small: ``(B, C+1, h, w)`` CAM logits of the downscaled view.
        labels: ``(B, C)`` multi-hot.

    Returns:
        0-d float32 tensor; 0 when both views give the same normalised maps.
    """
    _check_cams("cam_large", cam_large, labels)
    _check_cams("cam_small", cam_small, labels)
    size = tuple(cam_small.shape[-2:])
    large = seam_normalized_cams(cam_large, labels, size)[:, 1:]
    small = seam_normalized_cams(cam_small, labels)[:, 1:]
    return (large - small).abs().mean()


def max_onehot(x: torch.Tensor, ppc_channel_quirk: bool = False) -> torch.Tensor:
    """SEAM's ``max_onehot``: keep, per pixel, only the largest foreground value.

    Foreground entries (channels 1..C) that are not equal to the per-pixel max
    over the foreground become 0; the max keeps its *value* (it is not set to 1);
    the background channel 0 is unchanged.  Ties keep every maximal entry.
    Returns a new tensor (the original modified its input in place).

    Args:
        x: ``(B, C+1, h, w)`` normalised CAMs, channel 0 = background.
        ppc_channel_quirk: reproduce PPC's channel slip: PPC put background last
            but kept SEAM's ``x[:, 1:]``, so there the competing set is
            {classes 2..C, background} and class 1 passes through untouched.  In
            our layout that is channels ``[0, 2, ..., C]``.

    Returns:
        Tensor of the shape and dtype of ``x``.
    """
    checks.check_logits("x", x)
    channels = x.shape[1]
    if ppc_channel_quirk:
        index = torch.tensor([0, *range(2, channels)], device=x.device)
    else:
        index = torch.arange(1, channels, device=x.device)
    competing = x.index_select(1, index)
    kept = torch.where(competing == competing.amax(dim=1, keepdim=True), competing, torch.zeros_like(competing))
    return x.index_copy(1, index, kept)


def equivariant_cross_regularization(
    cam_large: torch.Tensor,
    cam_small: torch.Tensor,
    refined_large: torch.Tensor,
    refined_small: torch.Tensor,
    labels: torch.Tensor,
    top_ratio: float = 0.2,
    ppc_channel_quirk: bool = False,
) -> torch.Tensor:
    """SEAM equivariant cross regularisation ``L_ecr`` (sum of the two directions).

    All maps are brought to the small view's size ``(h, w)``:

    * ``cam_*``: :func:`seam_normalized_cams` (max-normed foreground, absent
      classes zeroed, background ``1 - max foreground``), the large one resized
      bilinearly (``align_corners=True``) after normalising;
    * ``refined_*`` (PCM output): max-normed on *all* C+1 channels (the
      background too, with its own min/max), absent classes zeroed, the large
      one resized likewise.

    Then ``d1 = |max_onehot(cam_small).detach() - refined_large|`` and
    ``d2 = |max_onehot(cam_large).detach() - refined_small|``; each direction is
    the mean of the ``k = int((C+1) * h * w * top_ratio)`` largest entries per
    image (over channels and pixels together, mean over the batch too), and the
    loss is their sum.  The CAM targets are detached: gradient reaches only the
    refined CAMs.  (The original hard-codes ``k = int(21 * h * w * 0.2)``, i.e.
    VOC's 21 channels even on COCO; here the channel count is used.)

    Args:
        cam_large: ``(B, C+1, H, W)`` CAM logits of the full-size view.
        cam_small: ``(B, C+1, h, w)`` CAM logits of the downscaled view.
        refined_large: ``(B, C+1, H, W)`` refined (PCM) CAMs of the full-size view.
        refined_small: ``(B, C+1, h, w)`` refined CAMs of the downscaled view.
        labels: ``(B, C)`` multi-hot.
        top_ratio: fraction of the ``(C+1) * h * w`` entries per image kept (0.2).
        ppc_channel_quirk: see :func:`max_onehot` (PPC's misplaced channel slice).

    Returns:
        0-d float32 tensor.
    """
    for name, t in (
        ("cam_large", cam_large),
        ("cam_small", cam_small),
        ("refined_large", refined_large),
        ("refined_small", refined_small),
    ):
        _check_cams(name, t, labels)
    if tuple(refined_large.shape) != tuple(cam_large.shape) or tuple(refined_small.shape) != tuple(cam_small.shape):
        raise ValueError(
            "refined CAMs must match their view's CAMs, got "
            f"cam_large {tuple(cam_large.shape)} / refined_large {tuple(refined_large.shape)}, "
            f"cam_small {tuple(cam_small.shape)} / refined_small {tuple(refined_small.shape)}"
        )
    if not 0 < top_ratio <= 1:
        raise ValueError(f"top_ratio must be in (0, 1], got {top_ratio!r}")
    batch, channels, height, width = cam_small.shape
    size = (height, width)
    target_small = max_onehot(seam_normalized_cams(cam_small, labels).detach(), ppc_channel_quirk)
    target_large = max_onehot(seam_normalized_cams(cam_large, labels, size).detach(), ppc_channel_quirk)
    with_bg = labels_with_background(labels)
    ref_large = cam_normalize(_acc(refined_large), with_bg, mode="minmax")
    ref_large = F.interpolate(ref_large, size=size, mode="bilinear", align_corners=True)
    ref_small = cam_normalize(_acc(refined_small), with_bg, mode="minmax")
    k = max(1, int(channels * height * width * top_ratio))
    d1 = (target_small - ref_large).abs().reshape(batch, -1)
    d2 = (target_large - ref_small).abs().reshape(batch, -1)
    return torch.topk(d1, k, dim=-1).values.mean() + torch.topk(d2, k, dim=-1).values.mean()
