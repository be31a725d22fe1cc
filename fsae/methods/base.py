"""The interface every base WSSS method implements, and how FSAE attaches to it.

A method is an ``nn.Module`` that owns its CAM network and knows its own
losses.  The training engine only needs three things from it:

* :meth:`WSSSMethod.training_step` — the base loss terms of one step (from
  the method's own views of the weak crop) and, when a strong view is given,
  the student's CAM logits ``(B, C+1, h, w)`` on it for the FSAE term;
* :meth:`WSSSMethod.cam_logits` — CAM logits ``(B, C+1, h, w)`` (channel 0 =
  background) of any images: the teacher's on the weak view, and inference;
* :meth:`WSSSMethod.parameter_groups` — pretrained vs new parameters (new
  layers train with 10x the learning rate).

FSAE itself stays outside the method (``fsae.losses.FSAELoss`` on
``step.strong_logits`` and the EMA teacher's ``cam_logits`` of the weak
view), so every method gets it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["StepOutput", "WSSSMethod"]


@dataclass
class StepOutput:
    """What one training step of a base method produces.

    Attributes:
        losses: the base loss terms, already weighted; their sum is ``L_base``.
        strong_logits: ``(B, C+1, h, w)`` student CAM logits on the strong view
            (None when no strong view was given).
    """

    losses: dict[str, torch.Tensor]
    strong_logits: torch.Tensor | None = None

    @property
    def base_loss(self) -> torch.Tensor:
        return sum(self.losses.values())


class WSSSMethod(nn.Module):
    """Base class of the methods in :mod:`fsae.methods` (see the module docstring)."""

    name: str = "base"
    num_classes: int
    #: keyword options of a small instance (CPU seconds), used by the contract test every registered method passes
    #: (tests/methods/test_contract.py) and by smoke runs; e.g. ``{"backbone": "resnet18"}``
    tiny_options: ClassVar[dict[str, Any]] = {}

    def training_step(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        strong: torch.Tensor | None = None,
        images_small: torch.Tensor | None = None,
        saliency: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """Base losses of one step.

        Args:
            images: ``(B, 3, H, W)`` float, ImageNet-normalised weak view.
            labels: ``(B, C)`` multi-hot.
            strong: ``(B, 3, H, W)`` the strong view of the same crops (pixel aligned), or None.
            images_small: the method's second view when it has one (PPC: the crop at 128x128);
                derived from ``images`` when None.
            saliency: ``(B, 1, H, W)`` saliency maps in [0, 1] for methods that use them.
            generator: for the method's own random choices (e.g. PPC's anchors).
        """
        raise NotImplementedError

    def cam_logits(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C+1, h, w)`` CAM logits of ``images``, channel 0 = background.

        ``labels`` ``(B, C)``: the image labels when they are known (training: the student's strong view and the
        teacher's weak view).  A method with a learned background ignores them; a background-free one builds its
        background from the present classes (:func:`fsae.losses.attach_background`).  None: label-free logits.
        """
        raise NotImplementedError

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, *, cam_only: bool = False, **step_options
    ) -> object:
        """``method(images)`` or ``method(images, labels, cam_only=True)``: :meth:`cam_logits` (so
        ``EMATeacher(method)(weak, labels, cam_only=True)`` is the teacher's view); ``method(images, labels,
        strong=..., ...)``: :meth:`training_step`.  Training goes through ``forward`` so that a DDP wrapper sees the
        call and synchronises the gradients."""
        if labels is None or cam_only:
            return self.cam_logits(images, labels)
        return self.training_step(images, labels, **step_options)

    def parameter_groups(self) -> list[dict]:
        """``[{"params": [...], "lr_mult": 1.0}, {"params": [...], "lr_mult": 10.0}]``: pretrained, then new."""
        raise NotImplementedError
