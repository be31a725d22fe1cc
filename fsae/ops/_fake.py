"""Shape functions ("fake" kernels) of the ``torch.ops.fsae.*`` operators.

They let ``torch.compile`` trace through the fused ops (forward and, by the
formulas of :mod:`fsae.ops._autograd`, backward) without running them: each
returns empty tensors of the shapes, strides and dtypes the real kernel
returns (checked by ``torch.library.opcheck`` in tests/ops/test_compile.py).  Imported by
``fsae.ops._extension`` once ``fsae._C`` has registered the operators.
"""

from __future__ import annotations

import torch


def _acc(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _pixels(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.new_empty((t.shape[0], t.shape[2], t.shape[3]), dtype=dtype)


def _masks(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (
        _pixels(t, torch.int64),
        _pixels(t, _acc(t)),
        _pixels(t, torch.bool),
        _pixels(t, torch.bool),
        _pixels(t, torch.bool),
    )


@torch.library.register_fake("fsae::cam_normalize")
def _cam_normalize(cams, present, minmax, eps):
    return torch.empty_like(cams, memory_format=torch.contiguous_format)


@torch.library.register_fake("fsae::cams_to_labels")
def _cams_to_labels(norm_cams, present, bg_threshold, bg_power):
    return _pixels(norm_cams, torch.int64)


@torch.library.register_fake("fsae::expansion_masks")
def _expansion_masks(teacher_logits, present, conf_threshold, ring_threshold, ring_kernel, exclude):
    return _masks(teacher_logits)


@torch.library.register_fake("fsae::expansion_loss_forward")
def _expansion_loss_forward(
    student_logits, teacher_logits, present, conf_threshold, ring_threshold, ring_kernel, exclude, boundary_weight
):
    loss = student_logits.new_empty((), dtype=_acc(student_logits))
    return (loss, _pixels(student_logits, _acc(student_logits)), *_masks(teacher_logits))


@torch.library.register_fake("fsae::expansion_loss_backward")
def _expansion_loss_backward(
    grad_loss, student_logits, lse, pseudo_label, conf_mask, ring_mask, present, exclude, boundary_weight
):
    return torch.empty_like(student_logits, memory_format=torch.contiguous_format)
