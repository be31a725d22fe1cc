"""Public entry points of the fused CAM ops.

Each function validates its arguments (``ValueError`` with a one-line
message), then calls the operator ``torch.ops.fsae.*`` of ``fsae._C`` when the
extension is loaded and has kernels for the inputs' device, else the reference
in :mod:`fsae.ops.reference`.  Both paths give the same results (tested).  The
operators carry their own autograd formulas and fake kernels
(:mod:`fsae.ops._autograd`, :mod:`fsae.ops._fake`), so these functions hold no
autograd logic and ``torch.compile(fullgraph=True)`` traces through them.

Every option after the tensors is keyword-only, here and in the layers above
(:mod:`fsae.losses`), so that a new option cannot shift the others.

Shapes and dtypes follow docs/method.md §1: CAM logits ``(B, C+1, H, W)`` with
channel 0 = background, ``labels (B, C)`` multi-hot (float or bool; a class
is present where its label is non-zero).  Inputs may be float16, bfloat16,
float32 or float64 and need not be contiguous; the math runs in float32
(float64 for float64 inputs).
"""

from __future__ import annotations

import torch

from fsae.ops import checks, reference
from fsae.ops._extension import use_extension
from fsae.ops.reference import ExpansionMasks

__all__ = ["ExpansionMasks", "cam_normalize", "cams_to_labels", "expansion_loss", "expansion_masks"]


def _present(labels: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` contiguous bool tensor of present classes, as the kernels take it."""
    return (labels.detach() != 0).contiguous()


def cam_normalize(
    cams: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    mode: str = "max",
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalise each activation map of ``cams (B, C, H, W)`` to [0, 1].

    Args:
        cams: ``(B, C, H, W)`` foreground activations, any float dtype.
        labels: optional ``(B, C)`` multi-hot; maps of absent classes are zeroed.
        mode: ``"max"``: ``relu(x) / (max + eps)``; ``"minmax"``: the SEAM/PPC
            form ``relu(relu(x) - min - eps) / (max - min + eps)`` (min/max of
            ``relu(x)`` over each map).
        eps: stabiliser, >= 0.

    Returns:
        Tensor of the shape and dtype of ``cams``, differentiable w.r.t. ``cams``
        (the op's registered backward, in torch ops).
    """
    checks.check_rank4("cams", cams, "(B, C, H, W)")
    checks.check_choice("mode", mode, checks.NORMALIZE_MODES)
    checks.check_nonnegative("eps", eps)
    if labels is not None:
        checks.check_labels(labels, cams.shape[0], cams.shape[1], f"cams of shape {tuple(cams.shape)}")
        checks.check_same_device(cams=cams, labels=labels)
    if not use_extension(cams):
        return reference.cam_normalize(cams, labels, mode=mode, eps=eps)
    present = None if labels is None else _present(labels)
    return torch.ops.fsae.cam_normalize(cams, present, minmax=mode == "minmax", eps=float(eps))


def cams_to_labels(
    norm_cams: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    bg_threshold: float | None = None,
    bg_power: float | None = None,
) -> torch.Tensor:
    """Seed labels (argmax over ``[background, classes]``) from normalised CAMs.

    Args:
        norm_cams: ``(B, C, H, W)`` CAMs in [0, 1] (e.g. from :func:`cam_normalize`).
        labels: optional ``(B, C)`` multi-hot; absent classes count as 0.
        bg_threshold: constant background score in [0, 1], or
        bg_power: background ``max(1 - max_c cam, 0) ** bg_power`` (>= 0).
            Exactly one of the two must be given.

    Returns:
        int64 ``(B, H, W)`` with values in 0..C (0 = background; ties go to the
        lowest index, so background wins a tie).
    """
    checks.check_rank4("norm_cams", norm_cams, "(B, C, H, W)")
    if (bg_threshold is None) == (bg_power is None):
        raise ValueError(
            f"give exactly one of bg_threshold or bg_power, got bg_threshold={bg_threshold!r}, bg_power={bg_power!r}"
        )
    if bg_threshold is not None:
        checks.check_unit_interval("bg_threshold", bg_threshold)
    else:
        checks.check_nonnegative("bg_power", bg_power)
    if labels is not None:
        checks.check_labels(
            labels, norm_cams.shape[0], norm_cams.shape[1], f"norm_cams of shape {tuple(norm_cams.shape)}"
        )
        checks.check_same_device(norm_cams=norm_cams, labels=labels)
    if not use_extension(norm_cams):
        return reference.cams_to_labels(norm_cams, labels, bg_threshold=bg_threshold, bg_power=bg_power)
    present = None if labels is None else _present(labels)
    threshold = None if bg_threshold is None else float(bg_threshold)
    power = None if bg_power is None else float(bg_power)
    return torch.ops.fsae.cams_to_labels(norm_cams, present, bg_threshold=threshold, bg_power=power)


def _check_expansion_args(
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    conf_threshold: float,
    ring_threshold: float,
    ring_kernel: int,
    absent: str,
) -> None:
    checks.check_logits("teacher_logits", teacher_logits)
    batch, channels = teacher_logits.shape[:2]
    checks.check_labels(labels, batch, channels - 1, f"teacher_logits of shape {tuple(teacher_logits.shape)}")
    checks.check_unit_interval("conf_threshold", conf_threshold)
    checks.check_unit_interval("ring_threshold", ring_threshold)
    checks.check_ring_kernel(ring_kernel)
    checks.check_choice("absent", absent, checks.ABSENT_MODES)


def _as_masks(outputs: tuple[torch.Tensor, ...]) -> ExpansionMasks:
    return ExpansionMasks(*outputs)


def expansion_masks(
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    conf_threshold: float = 0.95,
    ring_threshold: float = 0.8,
    ring_kernel: int = 3,
    absent: str = "zero",
) -> ExpansionMasks:
    """Teacher-side FSAE masks (docs/method.md §2).

    Args:
        teacher_logits: ``(B, C+1, H, W)`` CAM logits, channel 0 = background.
        labels: ``(B, C)`` multi-hot image labels.
        conf_threshold: ``tau_conf`` in [0, 1].
        ring_threshold: ``tau_ring`` in [0, 1].
        ring_kernel: odd window of the dilation that makes the ring (3 = the paper).
        absent: ``"zero"`` (absent classes get logit 0, the original) or
            ``"exclude"`` (logit -inf).

    Returns:
        :class:`ExpansionMasks` of ``(B, H, W)`` tensors: ``pseudo_label`` int64,
        ``confidence`` float32 (float64 for float64 input), and the bool
        ``conf_mask``, ``ring_mask`` and ``mask``.  Nothing is differentiable.
    """
    options = {
        "conf_threshold": conf_threshold,
        "ring_threshold": ring_threshold,
        "ring_kernel": ring_kernel,
        "absent": absent,
    }
    _check_expansion_args(teacher_logits, labels, **options)
    checks.check_same_device(teacher_logits=teacher_logits, labels=labels)
    if not use_extension(teacher_logits):
        return reference.expansion_masks(teacher_logits, labels, **options)
    outputs = torch.ops.fsae.expansion_masks(
        teacher_logits.detach(),
        _present(labels),
        conf_threshold=float(conf_threshold),
        ring_threshold=float(ring_threshold),
        ring_kernel=int(ring_kernel),
        exclude=absent == "exclude",
    )
    return _as_masks(outputs)


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
    """The FSAE term: student CE on the teacher's expansion masks (docs/method.md §2).

    Args:
        student_logits: ``(B, C+1, H, W)`` CAM logits of the student on the
            strong view (receives the gradient).
        teacher_logits: ``(B, C+1, H, W)`` CAM logits of the teacher on the weak
            view, pixel-aligned (treated as constant).
        labels: ``(B, C)`` multi-hot image labels.
        conf_threshold, ring_threshold, ring_kernel, absent: as in
            :func:`expansion_masks`.
        boundary_weight: None for the union form ``sum(mask * CE) / (B*H*W)``;
            a number ``lambda_b >= 0`` for ``(sum(conf_mask * CE) + lambda_b *
            sum(ring_mask * CE)) / (B*H*W)``.
        mask_student: True (the paper) applies the label masking of ``absent``
            to the student's logits too; False takes the student's CE over its
            raw ``C+1`` logits, so the term also lowers the classes absent from
            the image on the teacher's pixels (the teacher's masks and labels
            are the same either way).  False computes the masks with the fused
            kernel and the CE with torch ops.  With ``absent="zero"`` the
            teacher can label a pixel with an absent class (its logit 0 above
            all others); the unmasked student then raises that class there,
            which ``absent="exclude"`` rules out.

    Returns:
        ``(loss, masks)``: a 0-d loss, float32 (float64 when an input is
        float64), differentiable w.r.t. ``student_logits``; and the
        :class:`ExpansionMasks` of the teacher.  When the two logits differ in
        dtype both are computed in the promoted dtype.
    """
    options = {
        "conf_threshold": conf_threshold,
        "ring_threshold": ring_threshold,
        "ring_kernel": ring_kernel,
        "absent": absent,
    }
    checks.check_logits("student_logits", student_logits)
    _check_expansion_args(teacher_logits, labels, **options)
    checks.check_nonnegative("boundary_weight", boundary_weight, allow_none=True)
    checks.check_bool("mask_student", mask_student)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.numel() == 0:
        raise ValueError(f"expansion_loss needs at least one pixel, got logits of shape {tuple(student_logits.shape)}")
    checks.check_same_device(student_logits=student_logits, teacher_logits=teacher_logits, labels=labels)

    dtype = torch.promote_types(student_logits.dtype, teacher_logits.dtype)
    student = student_logits.to(dtype)
    teacher = teacher_logits.detach().to(dtype)
    if not mask_student:
        masks = expansion_masks(teacher, labels, **options)
        logits = student.to(reference.accumulate_dtype(dtype))
        return reference.weighted_ce(logits, masks, boundary_weight=boundary_weight), masks
    if not use_extension(student):
        return reference.expansion_loss(student, teacher, labels, **options, boundary_weight=boundary_weight)
    # The op's registered autograd gives the fused backward w.r.t. the student (fsae.ops._autograd).  Contiguous
    # here (a no-op for the usual conv output) so that the student it saves needs no second copy in the backward.
    loss, _lse, *masks = torch.ops.fsae.expansion_loss_forward(
        student.contiguous(),
        teacher.contiguous(),
        _present(labels),
        conf_threshold=float(conf_threshold),
        ring_threshold=float(ring_threshold),
        ring_kernel=int(ring_kernel),
        exclude=absent == "exclude",
        boundary_weight=None if boundary_weight is None else float(boundary_weight),
    )
    return loss, _as_masks(masks)
