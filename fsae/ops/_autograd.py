"""Autograd formulas of the differentiable ``torch.ops.fsae.*`` operators.

Registered on the operators themselves (``torch.library.register_autograd``), so
``torch.ops.fsae.*`` is differentiable without a Python wrapper and
``torch.compile`` (AOTAutograd) traces forward and backward through them:

* ``expansion_loss_forward``: gradient w.r.t. ``student_logits`` by the fused
  ``expansion_loss_backward`` kernel; the teacher and ``present`` get none, the
  outputs other than the loss (``lse``, the masks) are not differentiable, and
  the backward is not itself differentiable (second derivatives raise).
* ``cam_normalize``: gradient w.r.t. ``cams`` in torch ops (the derivative of
  :func:`fsae.ops.reference.cam_normalize`, ties of the min / max sharing their
  gradient evenly, as ``torch.amax`` / ``torch.amin`` do).

* ``expansion_masks``: registered as not differentiable (its outputs never
  require grad, even for a teacher that does).

``cams_to_labels`` returns integer labels: nothing to differentiate.
Imported by ``fsae.ops._extension`` once ``fsae._C`` has registered the
operators.
"""

from __future__ import annotations

import torch

from fsae.ops.reference import accumulate_dtype


def _loss_setup_context(ctx, inputs, output) -> None:
    student, _teacher, present, _conf, _ring, _kernel, exclude, boundary_weight = inputs
    _loss, lse, pseudo_label, confidence, conf_mask, ring_mask, _mask = output
    ctx.save_for_backward(student, lse, pseudo_label, conf_mask, ring_mask, present)
    ctx.exclude = exclude
    ctx.boundary_weight = boundary_weight
    # only the loss has a gradient formula; the integer / bool masks are non-differentiable anyway
    ctx.mark_non_differentiable(lse, confidence)


@torch.autograd.function.once_differentiable
def _loss_backward(ctx, grad_loss, *_):
    student, lse, pseudo_label, conf_mask, ring_mask, present = ctx.saved_tensors
    grad_student = None
    if ctx.needs_input_grad[0]:
        grad_student = torch.ops.fsae.expansion_loss_backward(
            grad_loss,
            student,
            lse,
            pseudo_label,
            conf_mask,
            ring_mask,
            present,
            exclude=ctx.exclude,
            boundary_weight=ctx.boundary_weight,
        )
    return grad_student, None, None, None, None, None, None, None


def _spread(grad: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """``grad (B, C, 1, 1)`` of a per-map max or min, shared evenly by the pixels ``ties (B, C, H, W)`` at it."""
    return grad * ties / ties.sum(dim=(2, 3), keepdim=True)


def _normalize_setup_context(ctx, inputs, output) -> None:
    cams, present, minmax, eps = inputs
    ctx.save_for_backward(cams, present)
    ctx.minmax = minmax
    ctx.eps = eps


def _normalize_backward(ctx, grad_out):
    cams, present = ctx.saved_tensors
    grad_cams = None
    if ctx.needs_input_grad[0]:
        acc = accumulate_dtype(cams.dtype)
        x = cams.to(acc).relu()
        g = grad_out.to(acc)
        if present is not None:
            g = g * present[:, :, None, None]
        hi = x.amax(dim=(2, 3), keepdim=True)
        if ctx.minmax:  # out = relu(x - lo - eps) / (hi - lo + eps)
            lo = x.amin(dim=(2, 3), keepdim=True)
            den = hi - lo + ctx.eps
            num = (x - lo - ctx.eps).relu()
            g_num = g * (num > 0) / den
            g_den = -(g * num).sum(dim=(2, 3), keepdim=True) / den**2
            g_x = g_num + _spread(g_den, x == hi) - _spread(g_den + g_num.sum(dim=(2, 3), keepdim=True), x == lo)
        else:  # out = x / (hi + eps)
            den = hi + ctx.eps
            g_hi = -(g * x).sum(dim=(2, 3), keepdim=True) / den**2
            g_x = g / den + _spread(g_hi, x == hi)
        grad_cams = (g_x * (cams > 0)).to(cams.dtype)  # through relu(cams)
    return grad_cams, None, None, None


def _masks_setup_context(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(*output)  # the float confidence too: a teacher-side quantity, as documented


def _masks_backward(ctx, *grads):
    raise RuntimeError("fsae::expansion_masks is not differentiable")  # unreachable: no output requires grad


torch.library.register_autograd("fsae::expansion_loss_forward", _loss_backward, setup_context=_loss_setup_context)
torch.library.register_autograd("fsae::cam_normalize", _normalize_backward, setup_context=_normalize_setup_context)
torch.library.register_autograd("fsae::expansion_masks", _masks_backward, setup_context=_masks_setup_context)
