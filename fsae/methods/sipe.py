"""SIPE (Chen et al., CVPR 2022) as a :class:`~fsae.methods.base.WSSSMethod`, and how FSAE attaches to it.

Base method (docs/method.md §5): :class:`~fsae.models.sipe_net.SIPENet` on the weak crop with its labels, losses from
:func:`fsae.losses.sipe.sipe_loss`: ``cls`` = multilabel soft margin on GAP(cam), ``gsc`` = mean
``|norm_cam - is_cam / max|``. One view per step: ``images_small``, ``saliency`` and ``generator`` are not used.
The original trains with SGD, poly decay, lr 0.1 (10x for the new layers), weight decay 1e-4, batch 16, 5 epochs,
crop 512, and clips the gradient norm at 1 (that is the training loop's job: ``optim.clip_grad_norm``). Its valid
mask (0 on the crop padding) reaches the network through ``training_step(valid_mask=...)``: the trainer passes it
to methods whose ``uses_valid_mask`` is true (``use_valid_mask=True``, the default). Pseudo-labels:
:meth:`SIPEMethod.authors_cams` is the authors' ``make_cam.py`` / ``eval_cam.py`` pipeline (fused multi-scale IS-CAMs,
argmax seed), which ``fsae.infer.make_pseudo_labels`` uses by default for SIPE (``--cams authors``).

How FSAE attaches (ours: neither SIPE's authors nor FSAE's wrote it). SIPE has no background logit, so the
``(B, C+1, h, w)`` logits FSAE supervises come from :func:`fsae.losses.attach_background` on SIPE's raw class
activations ``cam`` and the image labels (docs/method.md §10)::

    n_k = ReLU(cam_k) / (max_hw ReLU(cam_k) + 1e-5)     SIPE's own normalisation, the peak detached
    p   = [(1 - max_{k present} n_k) ** bg_power, n]    absent classes at the floor (eps)
    z   = log(max(p, eps)) - log(eps)

In training the teacher and the student both get the labels. Two faults of the earlier, label-free form were
measured on real photos: its background ``1 - max`` over all 20 maps let an absent class suppress the background,
so half the teacher's confident pixels sat where an absent class dominated; and the gradient through the
max-normalisation "expanded" maps by lowering their peaks (2 of 3 supervised peaks pushed down). A learned
background head (a former ``fsae_attach="learned"``) is not offered: nothing in SIPE's losses trains it, and under
FSAE's "zero" masking absent classes sat at logit 0, above raw CAM logits' floor, so no foreground pixel was ever
confident.

Without labels (``cam_logits(images)``, e.g. ``fsae.infer`` with ``--cams fsae``), the background is ``1 - max`` over
all maps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fsae.constants import IMAGENET_MEAN, IMAGENET_STD
from fsae.losses.attach import attach_background
from fsae.losses.sipe import sipe_loss
from fsae.methods.base import StepOutput, WSSSMethod
from fsae.methods.registry import register_method
from fsae.models.sipe_net import SIPENet

__all__ = ["AUTHORS_CAM_SCALES", "SIPEMethod"]

#: the input scales of the original's ``make_cam.py`` (``VOC12ClsDatasetMSF(..., scales=(1.0, 0.5, 1.5, 2.0))``)
AUTHORS_CAM_SCALES = (1.0, 0.5, 1.5, 2.0)


def _scaled_normalised(image: np.ndarray, scale: float) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> ``(1, 3, round(H s), round(W s))`` float32: PIL bicubic resize (none at scale 1),
    then ``(x / 255 - mean) / std`` in float64 rounded once to float32 (the original's ``pil_rescale`` +
    ``TorchvisionNormalize``)."""
    if scale != 1:
        height, width = image.shape[:2]
        size = (int(np.round(height * scale)), int(np.round(width * scale)))
        if min(size) < 1:
            raise ValueError(f"a {height}x{width} image at scale {scale:g} has a side of 0 pixels")
        image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BICUBIC))
    x = (image / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    return torch.from_numpy(np.ascontiguousarray(x.astype(np.float32).transpose(2, 0, 1)))[None]


@register_method("sipe")
class SIPEMethod(WSSSMethod):
    """SIPE with FSAE attached through :func:`fsae.losses.attach_background` (see the module docstring).

    Args:
        num_classes: C (VOC 20, COCO 80).
        backbone: timm CNN name (``"resnet50"`` as in SIPE; any four-level timm CNN works).
        pretrained: timm's published ImageNet weights.
        pretrained_path: local weights file instead.
        bg_power: exponent of the background map ``(1 - max n) ** bg_power``.
        eps: probability floor of the logits (absent classes sit at it).
        use_valid_mask: take the crop's valid mask from the trainer (the original's; False: padding counts as
            image, the former fsae behaviour).
        **net_kwargs: for :class:`~fsae.models.sipe_net.SIPENet` (``last_stage``, ``output_stride``, ``frozen_levels``,
            ``batchnorm``, ``side_channels``, timm arguments).

    As for every method, ``self(images, labels, cam_only=True)`` is :meth:`cam_logits` (so
    ``fsae.losses.EMATeacher(method)(weak, labels, cam_only=True)`` gives the teacher's logits) and
    ``self(images, labels, strong=...)`` is :meth:`training_step`. The network's full output (``is_cam`` etc.) is
    ``method.net(images, labels)``.
    """

    name = "sipe"
    tiny_options = {"backbone": "resnet18"}

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "resnet50",
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
        bg_power: float = 1.0,
        eps: float = 1e-4,
        use_valid_mask: bool = True,
        **net_kwargs: object,
    ) -> None:
        super().__init__()
        if not (isinstance(bg_power, (int, float)) and bg_power > 0):
            raise ValueError(f"bg_power must be a positive number, got {bg_power!r}")
        if not (isinstance(eps, (int, float)) and 0 < eps < 1):
            raise ValueError(f"eps must be a number in (0, 1), got {eps!r}")
        self.num_classes = num_classes
        self.bg_power = float(bg_power)
        self.eps = float(eps)
        if not isinstance(use_valid_mask, bool):
            raise ValueError(f"use_valid_mask must be true or false, got {use_valid_mask!r}")
        self.uses_valid_mask = use_valid_mask
        self.net = SIPENet(
            num_classes=num_classes,
            backbone=backbone,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            **net_kwargs,
        )

    def cam_logits(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """float32 ``(B, C+1, h, w)`` logits (channel 0 = background) of ``images`` at the last feature map.

        ``labels`` ``(B, C)``: the background is built from the present classes and absent ones sit at the floor;
        None: label-free (``1 - max`` over all maps).
        """
        return attach_background(self.net(images)["cam"], labels, bg_power=self.bg_power, floor=self.eps)

    def training_step(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        strong: torch.Tensor | None = None,
        images_small: torch.Tensor | None = None,
        saliency: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        valid_mask: torch.Tensor | None = None,
    ) -> StepOutput:
        """SIPE's ``cls`` and ``gsc`` on ``images``; the student's CAM logits on ``strong`` (with the labels).

        ``valid_mask``: optional ``(B, 1, H, W)`` 1 on image pixels, 0 on the crop padding (the original's; see
        :meth:`SIPENet.forward`). ``images_small``, ``saliency`` and ``generator`` are accepted for the common
        interface and ignored.
        """
        out = self.net(images, labels, valid_mask=valid_mask)
        losses = sipe_loss(out["score"], labels, out["norm_cam"], out["is_cam"])
        strong_logits = self.cam_logits(strong, labels) if strong is not None else None
        return StepOutput(losses=losses, strong_logits=strong_logits)

    @torch.no_grad()
    def authors_cams(
        self, image: torch.Tensor, labels: torch.Tensor, scales: Sequence[float] = AUTHORS_CAM_SCALES
    ) -> torch.Tensor:
        """The original's pseudo-label maps (``make_cam.py`` + ``eval_cam.py``): fused multi-scale IS-CAMs.

        For each scale (1.0, 0.5, 1.5, 2.0): PIL-bicubic resize of the uint8 image, ImageNet normalisation, the
        image and its flip through :meth:`SIPENet.flip_fused_is_cam` (flip-fused ``cam`` and hierarchical
        features, label-dependent prototypes, a background IS-CAM); each ``is_cam`` upsampled bilinearly
        (``align_corners=False``) to ``(H, W)``; summed over the scales; each map divided by its maximum + 1e-5.
        The original's seed is the argmax of these maps over the background and the present classes, **no
        threshold** (``fsae.infer.make_pseudo_labels`` with ``cams="authors"`` does that).

        Args:
            image: ``uint8 (1, 3, H, W)`` RGB.
            labels: ``(1, C)`` multi-hot.
            scales: input scales (default the original's).

        Returns:
            ``(1, C+1, H, W)`` float32 in [0, 1] on the network's device, channel 0 = background; absent
            classes 0.
        """
        if image.dtype != torch.uint8 or image.dim() != 4 or tuple(image.shape[:2]) != (1, 3):
            raise ValueError(f"image must be uint8 (1, 3, H, W), got {image.dtype} {tuple(image.shape)}")
        if labels.dim() != 2 or tuple(labels.shape) != (1, self.num_classes):
            raise ValueError(f"labels must be (1, {self.num_classes}), got {tuple(labels.shape)}")
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            array = np.ascontiguousarray(image[0].permute(1, 2, 0).cpu().numpy())
            height, width = array.shape[:2]
            labels = labels.to(device)
            total = None
            for scale in scales:
                x = _scaled_normalised(array, scale).to(device)
                is_cam = self.net.flip_fused_is_cam(torch.cat([x, x.flip(-1)]), labels)["is_cam"]
                up = F.interpolate(is_cam, size=(height, width), mode="bilinear", align_corners=False)
                total = up if total is None else total + up
        finally:
            self.train(was_training)
        return total / (total.amax(dim=(2, 3), keepdim=True) + 1e-5)

    def parameter_groups(self) -> list[dict]:
        """Trainable backbone parameters (lr x1), then the side convs and the classifier (lr x10)."""
        new = [p for m in self.net.new_modules() for p in m.parameters() if p.requires_grad]
        backbone = [p for p in self.net.backbone.parameters() if p.requires_grad]
        return [{"params": backbone, "lr_mult": 1.0}, {"params": new, "lr_mult": 10.0}]
