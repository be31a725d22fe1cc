"""The FSAE term (docs/method.md §2) as a module and as a function.

Drop-in for any WSSS training loop whose CAM head gives ``(B, C+1, h, w)``
logits with channel 0 = background::

    from fsae.losses import EMATeacher, FSAELoss

    fsae_loss, teacher = FSAELoss(), EMATeacher(model)                    # once
    loss = base_loss + fsae_loss(model(strong), teacher(weak), labels)  # every step
    teacher.update(model)                                               # after optimizer.step()

``strong`` and ``weak`` are two photometric views of the same crop (pixel
aligned, e.g. from :mod:`fsae.augment`); ``labels`` is ``(B, C)`` multi-hot.
"""

from __future__ import annotations

import torch
from torch import nn

from fsae.ops import ExpansionMasks, checks, expansion_loss

__all__ = ["FSAELoss", "expansion_stats", "fsae_loss"]


def fsae_loss(
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
) -> torch.Tensor:
    """The FSAE loss alone: a 0-d float32 tensor (float64 for float64 logits).

    Same arguments as :func:`fsae.ops.expansion_loss` (the options keyword-only), which also returns the
    teacher's masks.  Gradient flows to ``student_logits`` only.
    """
    loss, _ = expansion_loss(
        student_logits,
        teacher_logits,
        labels,
        conf_threshold=conf_threshold,
        ring_threshold=ring_threshold,
        ring_kernel=ring_kernel,
        absent=absent,
        boundary_weight=boundary_weight,
        mask_student=mask_student,
    )
    return loss


def expansion_stats(masks: ExpansionMasks) -> dict[str, torch.Tensor]:
    """Summary of one step's masks, as detached 0-d float32 tensors (no host sync).

    Keys: ``conf_fraction``, ``ring_fraction``, ``mask_fraction`` (fractions of
    all pixels) and ``mean_confidence`` (the teacher's max probability averaged
    over all pixels).
    """
    return {
        "conf_fraction": masks.conf_mask.float().mean(),
        "ring_fraction": masks.ring_mask.float().mean(),
        "mask_fraction": masks.mask.float().mean(),
        "mean_confidence": masks.confidence.float().mean(),
    }


class FSAELoss(nn.Module):
    """FSAE expansion loss: student CE on the EMA teacher's confident pixels and ring.

    Args (keyword-only):
        conf_threshold: ``tau_conf``; pixels whose teacher confidence reaches it are supervised.
        ring_threshold: ``tau_ring``; the ring around the confident foreground needs this confidence.
        ring_kernel: odd window of the dilation that makes the ring (3 = one pixel, the paper).
        absent: ``"zero"`` (absent classes get logit 0, the original) or ``"exclude"`` (-inf).
        boundary_weight: None for the union form; ``lambda_b`` for
            ``mean(CE * conf_mask) + lambda_b * mean(CE * ring_mask)``.
        mask_student: True (the paper) label-masks the student's logits as the teacher's; False takes the
            student's CE over its raw logits, so absent classes are lowered on the teacher's pixels too (on the
            toy set this removes the class swaps the paper term causes: benchmarks/RESULTS.md).

    ``forward(student_logits, teacher_logits, labels) -> loss`` with logits
    ``(B, C+1, h, w)`` (channel 0 = background; student on the strong view,
    teacher on the weak view; the teacher gets no gradient) and ``labels``
    ``(B, C)`` multi-hot.  After each call, ``last_masks`` holds the teacher's
    :class:`~fsae.ops.ExpansionMasks` and ``last_stats`` the dict of
    :func:`expansion_stats` (detached tensors: call ``.item()`` only when logging).

    It compiles without graph breaks (``criterion.compile(fullgraph=True)``, or inside a compiled training step):
    the fused ops carry their autograd formulas and fake kernels (tests/ops/test_compile.py).
    """

    def __init__(
        self,
        *,
        conf_threshold: float = 0.95,
        ring_threshold: float = 0.8,
        ring_kernel: int = 3,
        absent: str = "zero",
        boundary_weight: float | None = None,
        mask_student: bool = True,
    ) -> None:
        super().__init__()
        checks.check_unit_interval("conf_threshold", conf_threshold)
        checks.check_unit_interval("ring_threshold", ring_threshold)
        checks.check_ring_kernel(ring_kernel)
        checks.check_choice("absent", absent, checks.ABSENT_MODES)
        checks.check_nonnegative("boundary_weight", boundary_weight, allow_none=True)
        checks.check_bool("mask_student", mask_student)
        self.conf_threshold = conf_threshold
        self.ring_threshold = ring_threshold
        self.ring_kernel = ring_kernel
        self.absent = absent
        self.boundary_weight = boundary_weight
        self.mask_student = mask_student
        self.last_masks: ExpansionMasks | None = None
        self.last_stats: dict[str, torch.Tensor] = {}

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss, masks = expansion_loss(
            student_logits,
            teacher_logits,
            labels,
            conf_threshold=self.conf_threshold,
            ring_threshold=self.ring_threshold,
            ring_kernel=self.ring_kernel,
            absent=self.absent,
            boundary_weight=self.boundary_weight,
            mask_student=self.mask_student,
        )
        self.last_masks = masks
        self.last_stats = expansion_stats(masks)
        return loss

    def extra_repr(self) -> str:
        return (
            f"conf_threshold={self.conf_threshold}, ring_threshold={self.ring_threshold}, "
            f"ring_kernel={self.ring_kernel}, absent={self.absent!r}, boundary_weight={self.boundary_weight}, "
            f"mask_student={self.mask_student}"
        )
