"""Plain PyTorch implementation of the fused CAM ops.

This module is the specification in code: every function follows docs/method.md
§2 / §6 line by line, written for clarity rather than speed.  It is the
fallback used when the compiled extension is missing (or disabled with
``FSAE_DISABLE_EXTENSION=1``) and the oracle the extension is tested against.

The functions here do not validate their arguments; the public entry points
in :mod:`fsae.ops` do that and then call either this module or ``fsae._C``.
As there, every option after the tensors is keyword-only.

Conventions (docs/method.md §1): CAM logits are ``(B, C+1, H, W)`` with channel 0 =
background; ``labels`` are ``(B, C)`` multi-hot over the foreground classes
(a class is present where its label is non-zero).  Half-precision inputs are
computed in float32; float64 inputs stay float64.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "ExpansionMasks",
    "accumulate_dtype",
    "cam_normalize",
    "cams_to_labels",
    "expansion_loss",
    "expansion_masks",
]


class ExpansionMasks(NamedTuple):
    """Teacher-side output of the FSAE expansion, each of shape ``(B, H, W)``.

    Attributes:
        pseudo_label: int64, argmax of the label-masked teacher logits
            (ties go to the lowest channel index).
        confidence: float32 (float64 for float64 input), max softmax probability.
        conf_mask: bool, ``confidence >= conf_threshold``.
        ring_mask: bool, the moderately confident ring around the confident
            foreground (docs/method.md §2).
        mask: bool, ``conf_mask | ring_mask``: the pixels the student is
            supervised on.
    """

    pseudo_label: torch.Tensor
    confidence: torch.Tensor
    conf_mask: torch.Tensor
    ring_mask: torch.Tensor
    mask: torch.Tensor


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops compute in: float64 for float64 input, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _present(labels: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` bool: which foreground classes are present."""
    return labels.detach() != 0


def masked_logits(logits: torch.Tensor, labels: torch.Tensor, *, absent: str) -> torch.Tensor:
    """Apply the image labels to CAM logits ``(B, C+1, H, W)``.

    Background (channel 0) is untouched.  An absent class gets logit 0 in
    "zero" mode (the original's ``z_k * y_k``; the class still takes part in
    the softmax) and ``-inf`` in "exclude" mode.  Computed in the accumulate
    dtype; differentiable w.r.t. ``logits`` (absent classes get zero gradient).
    """
    logits = logits.to(accumulate_dtype(logits.dtype))
    fill = float("-inf") if absent == "exclude" else 0.0
    absent_fg = ~_present(labels)[:, :, None, None]
    foreground = logits[:, 1:].masked_fill(absent_fg, fill)
    return torch.cat([logits[:, :1], foreground], dim=1)


def cam_normalize(
    cams: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    mode: str = "max",
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalise each ``(b, c)`` activation map of ``cams (B, C, H, W)``.

    mode "max":    ``relu(x) / (max relu(x) + eps)``
    mode "minmax": ``relu(relu(x) - min - eps) / (max - min + eps)`` with min
                   and max taken over ``relu(x)`` (the SEAM / PPC ``max_norm``)

    Maps of classes absent from ``labels (B, C)`` are zeroed.  Returns a tensor
    of the input's shape and dtype (computed in float32, float64 for float64).
    """
    x = cams.to(accumulate_dtype(cams.dtype)).relu()
    hi = x.amax(dim=(2, 3), keepdim=True)
    if mode == "max":
        out = x / (hi + eps)
    else:
        lo = x.amin(dim=(2, 3), keepdim=True)
        out = (x - lo - eps).relu() / (hi - lo + eps)
    if labels is not None:
        out = out * _present(labels)[:, :, None, None]
    return out.to(cams.dtype)


def cams_to_labels(
    norm_cams: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    bg_threshold: float | None = None,
    bg_power: float | None = None,
) -> torch.Tensor:
    """Seed labels from normalised CAMs ``(B, C, H, W)``.

    Classes absent from ``labels`` are set to 0 (docs/method.md §6: foreground
    channels times image labels).  The background plane is the constant
    ``bg_threshold`` or ``max(1 - max_c cam, 0) ** bg_power``; the result is
    the argmax over ``[background, classes]`` (ties: lowest index, so
    background wins a tie), an int64 ``(B, H, W)`` map with values in 0..C.
    """
    x = norm_cams.to(accumulate_dtype(norm_cams.dtype))
    if labels is not None:
        x = x * _present(labels)[:, :, None, None]
    if bg_threshold is not None:
        background = torch.full_like(x[:, :1], bg_threshold)
    else:
        background = (1 - x.amax(dim=1, keepdim=True)).clamp_min(0) ** bg_power
    return torch.cat([background, x], dim=1).argmax(dim=1)


def expansion_masks(
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    conf_threshold: float = 0.95,
    ring_threshold: float = 0.8,
    ring_kernel: int = 3,
    absent: str = "zero",
) -> ExpansionMasks:
    """Teacher-side FSAE masks (docs/method.md §2) from ``teacher_logits (B, C+1, H, W)``.

    ``p = softmax(masked logits)``; confident pixels have ``max p >=
    conf_threshold``; the ring is ``maxpool_k(M_fg) & ~M_fg`` (stride 1, zero
    padding) restricted to ``max p >= ring_threshold``, where ``M_fg`` marks
    pixels whose best foreground probability reaches ``conf_threshold``.
    No gradient flows to the teacher.
    """
    with torch.no_grad():
        logits = masked_logits(teacher_logits, labels, absent=absent)
        prob = logits.softmax(dim=1)
        confidence = prob.amax(dim=1)
        pseudo_label = logits.argmax(dim=1)
        fg_confidence = prob[:, 1:].amax(dim=1)

        conf_mask = confidence >= conf_threshold
        fg_mask = fg_confidence >= conf_threshold
        pad = ring_kernel // 2
        dilated = F.max_pool2d(fg_mask[:, None].float(), ring_kernel, stride=1, padding=pad)[:, 0] > 0
        ring_mask = dilated & ~fg_mask & (confidence >= ring_threshold)
        return ExpansionMasks(pseudo_label, confidence, conf_mask, ring_mask, conf_mask | ring_mask)


def expansion_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    conf_threshold: float = 0.95,
    ring_threshold: float = 0.8,
    ring_kernel: int = 3,
    absent: str = "zero",
    boundary_weight: float | None = None,
    mask_student: bool = True,
) -> tuple[torch.Tensor, ExpansionMasks]:
    """FSAE loss of the student on the teacher's expansion masks (docs/method.md §2).

    ``CE = logsumexp(l_s) - l_s[pseudo_label]`` per pixel on the label-masked
    student logits (the raw ones with ``mask_student=False``); the loss is
    ``sum(w * CE) / (B * H * W)`` (a mean over all pixels, not over the mask)
    with ``w = mask`` when ``boundary_weight`` is None, else ``w = conf_mask +
    boundary_weight * ring_mask`` (the variant with a separate boundary term).
    Returns a 0-d loss in the accumulate dtype, differentiable w.r.t.
    ``student_logits`` only, and the masks.
    """
    masks = expansion_masks(
        teacher_logits,
        labels,
        conf_threshold=conf_threshold,
        ring_threshold=ring_threshold,
        ring_kernel=ring_kernel,
        absent=absent,
    )
    if mask_student:
        logits = masked_logits(student_logits, labels, absent=absent)
    else:
        logits = student_logits.to(accumulate_dtype(student_logits.dtype))
    return weighted_ce(logits, masks, boundary_weight=boundary_weight), masks


def weighted_ce(logits: torch.Tensor, masks: ExpansionMasks, *, boundary_weight: float | None) -> torch.Tensor:
    """``sum(w * CE) / (B * H * W)`` of :func:`expansion_loss` for student ``logits (B, C+1, H, W)``, as given."""
    target = logits.gather(1, masks.pseudo_label[:, None])[:, 0]
    ce = torch.logsumexp(logits, dim=1) - target
    if boundary_weight is None:
        weight = masks.mask.to(ce.dtype)
    else:
        weight = masks.conf_mask.to(ce.dtype) + boundary_weight * masks.ring_mask.to(ce.dtype)
    return (weight * ce).sum() / ce.numel()
