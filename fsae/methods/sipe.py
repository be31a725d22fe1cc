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

SIPE has no background logit, so FSAE needs ``(B, C+1, h, w)`` logits from somewhere. ``fsae_attach`` chooses:

``"derived"`` (default): logits are the log of SIPE's own normalised maps. With ``n_k = ReLU(cam_k) / max`` and
``m = max_k n_k`` (all classes: no labels are needed, so the teacher and inference can call it)::

    p_0 = (1 - m) ** bg_power            (bg_power = 1: SIPE's own background map; 8 = the mask of docs/method.md §6)
    p_k = n_k                            k = 1..C
    z_c = log(max(p_c, eps)) - log(eps)  (eps = 1e-4; no temperature)

so ``softmax(z)`` is exactly the normalised ``[p_0, p_1 .. p_C] / sum`` (after clamping at ``eps``). The shift by
``-log(eps)`` is what makes it work with FSAE's original label masking ("multiply", docs/method.md §2), which sets the
logits of absent classes to 0: here 0 is the smallest logit, the one of a map at (or below) ``eps``, so an absent
class counts as a class with probability ``eps``. Unshifted log-probabilities (all <= 0) would make every absent
class the most probable one and no pixel could ever be confident. Reaching ``tau_conf = 0.95``: at a pixel where
one map is 1 and all others are ~0 (background included), ``conf = 1 / (1 + C * eps)`` (0.998 for C = 20, 0.992
for C = 80); generally with one active class ``conf = n / (n + (1 - n) ** bg_power + (C - 1) * eps)``, i.e. about
``n >= 0.95`` with ``bg_power = 1`` and ``n >= 0.39`` with 8; background is confident where ``sum_k n_k`` is below
about 0.05 (``bg_power = 1``). ``eps`` must stay below ``(1 / 0.95 - 1) / C = 0.0526 / C`` for 0.95 to be reachable
at all. The
student's gradient flows through the log, the normalisation and the max into the classifier and the backbone.

``"learned"``: a 1x1 conv (with bias) on the last backbone features gives a background logit ``b``; logits are
``[b, cam_1 .. cam_C]`` (SIPE's raw class activations). The CAM channels are trained by SIPE's losses, but nothing
in SIPE trains ``b``, so a ``bg`` term does: cross-entropy of ``[b, cam.detach() * labels]`` (absent classes at 0,
as FSAE's "multiply" masking sees them) against SIPE's own seeds (argmax of the feature-correlation IoU, masked by
the labels), over the seeded pixels, weighted by ``bg_weight``. The class logits are detached in it, so it trains
only the background head and the backbone under it and leaves SIPE's base losses as they are; FSAE then trains all
channels on the strong view.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fsae.losses.sipe import sipe_loss
from fsae.methods.base import StepOutput, WSSSMethod
from fsae.models.sipe_net import SIPENet

__all__ = ["AUTHORS_CAM_SCALES", "FSAE_ATTACH_MODES", "SIPEMethod", "derived_cam_logits", "seed_background_loss"]

FSAE_ATTACH_MODES = ("derived", "learned")
#: the input scales of the original's ``make_cam.py`` (``VOC12ClsDatasetMSF(..., scales=(1.0, 0.5, 1.5, 2.0))``)
AUTHORS_CAM_SCALES = (1.0, 0.5, 1.5, 2.0)
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
    x = (image / 255.0 - np.asarray(_MEAN)) / np.asarray(_STD)
    return torch.from_numpy(np.ascontiguousarray(x.astype(np.float32).transpose(2, 0, 1)))[None]


def derived_cam_logits(norm_cam: torch.Tensor, bg_power: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """``(B, C+1, h, w)`` logits ``log(max(p, eps)) - log(eps)`` from SIPE's ``norm_cam`` (see the module docstring).

    Args:
        norm_cam: ``(B, C+1, h, w)`` with channel 0 = ``1 - max_k n_k`` and channels 1.. = ``n_k`` in [0, 1].
        bg_power: exponent of the background map (> 0).
        eps: probability floor (> 0); the logits lie in ``[0, -log(eps)]``.

    Returns:
        float32 logits (float64 for float64 input) whose softmax is the normalised ``max(p, eps)``.
    """
    x = norm_cam if norm_cam.dtype == torch.float64 else norm_cam.float()
    background = x[:, :1].clamp_min(eps)
    if bg_power != 1.0:
        background = background.pow(bg_power)
    p = torch.cat([background, x[:, 1:]], dim=1)
    return p.clamp_min(eps).log() - math.log(eps)


def seed_background_loss(
    bg_logit: torch.Tensor, cam: torch.Tensor, seeds: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The ``bg`` term of ``fsae_attach="learned"``: cross-entropy of ``[bg, cam.detach() * labels]`` vs the seeds.

    Args:
        bg_logit: ``(B, 1, h, w)`` background logits.
        cam: ``(B, C, h, w)`` raw class activations (detached here).
        seeds: ``(B, C+1, h, w)`` one-hot seeds, all-zero at unseeded pixels (ignored).
        labels: ``(B, C)`` multi-hot.

    Returns:
        0-d float32: mean over the seeded pixels (0 when there are none).
    """
    present = (labels.detach() != 0).to(torch.float32)[:, :, None, None]
    logits = torch.cat([bg_logit.float(), cam.detach().float() * present], dim=1)
    seeded = seeds.sum(dim=1) > 0
    target = seeds.argmax(dim=1)
    ce = F.cross_entropy(logits, target, reduction="none")
    return (ce * seeded).sum() / seeded.sum().clamp_min(1)


class SIPEMethod(WSSSMethod):
    """SIPE with FSAE attached through ``fsae_attach`` (see the module docstring).

    Args:
        num_classes: C (VOC 20, COCO 80).
        backbone: timm CNN name (``"resnet50"`` as in SIPE; any four-level timm CNN works).
        pretrained: timm's published ImageNet weights.
        pretrained_path: local weights file instead.
        fsae_attach: ``"derived"`` or ``"learned"``.
        bg_power: ``"derived"`` only: exponent of the background map ``(1 - max n) ** bg_power``.
        eps: ``"derived"`` only: probability floor of the logits.
        bg_weight: ``"learned"`` only: weight of the ``bg`` seed cross-entropy.
        use_valid_mask: take the crop's valid mask from the trainer (the original's; False: padding counts as
            image, the former fsae behaviour).
        **net_kwargs: for :class:`~fsae.models.sipe_net.SIPENet` (``last_stage``, ``output_stride``, ``frozen_levels``,
            ``batchnorm``, ``side_channels``, timm arguments).

    As for every method, ``self(images)`` is :meth:`cam_logits` (so ``fsae.losses.EMATeacher(method)(weak)`` gives
    the teacher's logits) and ``self(images, labels, strong=...)`` is :meth:`training_step`.
    The network's full output (``is_cam`` etc.) is ``method.net(images, labels)``.
    """

    name = "sipe"

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "resnet50",
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
        fsae_attach: str = "derived",
        bg_power: float = 1.0,
        eps: float = 1e-4,
        bg_weight: float = 1.0,
        use_valid_mask: bool = True,
        **net_kwargs: object,
    ) -> None:
        super().__init__()
        if fsae_attach not in FSAE_ATTACH_MODES:
            raise ValueError(f"fsae_attach must be one of {FSAE_ATTACH_MODES}, got {fsae_attach!r}")
        if not (isinstance(bg_power, (int, float)) and bg_power > 0):
            raise ValueError(f"bg_power must be a positive number, got {bg_power!r}")
        if not (isinstance(eps, (int, float)) and 0 < eps < 1):
            raise ValueError(f"eps must be a number in (0, 1), got {eps!r}")
        if not (isinstance(bg_weight, (int, float)) and bg_weight >= 0):
            raise ValueError(f"bg_weight must be a non-negative number, got {bg_weight!r}")
        self.num_classes = num_classes
        self.fsae_attach = fsae_attach
        self.bg_power = float(bg_power)
        self.eps = float(eps)
        self.bg_weight = float(bg_weight)
        if not isinstance(use_valid_mask, bool):
            raise ValueError(f"use_valid_mask must be true or false, got {use_valid_mask!r}")
        self.uses_valid_mask = use_valid_mask
        self.net = SIPENet(
            num_classes=num_classes,
            backbone=backbone,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            background_head=fsae_attach == "learned",
            **net_kwargs,
        )

    def _logits(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.fsae_attach == "learned":
            return torch.cat([out["bg_logit"], out["cam"]], dim=1)
        return derived_cam_logits(out["norm_cam"], self.bg_power, self.eps)

    def cam_logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C+1, h, w)`` logits, channel 0 = background; no labels needed. Float32 for ``"derived"``."""
        return self._logits(self.net(images))

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
        """SIPE's ``cls`` and ``gsc`` on ``images`` (plus ``bg`` with ``"learned"``); logits on ``strong``.

        ``valid_mask``: optional ``(B, 1, H, W)`` 1 on image pixels, 0 on the crop padding (the original's; see
        :meth:`SIPENet.forward`). ``images_small``, ``saliency`` and ``generator`` are accepted for the common
        interface and ignored.
        """
        out = self.net(images, labels, valid_mask=valid_mask)
        losses = sipe_loss(out["score"], labels, out["norm_cam"], out["is_cam"])
        if self.fsae_attach == "learned":
            losses["bg"] = self.bg_weight * seed_background_loss(out["bg_logit"], out["cam"], out["seeds"], labels)
        strong_logits = self.cam_logits(strong) if strong is not None else None
        extras = {
            "score": out["score"].detach(),
            "seed_fraction": (out["seeds"][:, 1:].sum(dim=1) > 0).float().mean().detach(),
        }
        return StepOutput(losses=losses, strong_logits=strong_logits, extras=extras)

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
        """Trainable backbone parameters (lr x1), then side convs, classifier and background head (lr x10)."""
        new = [p for m in self.net.new_modules() for p in m.parameters() if p.requires_grad]
        backbone = [p for p in self.net.backbone.parameters() if p.requires_grad]
        return [{"params": backbone, "lr_mult": 1.0}, {"params": new, "lr_mult": 10.0}]
