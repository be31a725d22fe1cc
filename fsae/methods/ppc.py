"""PPC (Du et al., CVPR 2022) on SEAM, the base method of the paper's FSAE numbers (docs/method.md §4).

One step sees the weak crop ``x1`` (448 px) and ``x2`` = ``x1`` resized to 128 px; the losses are

* ``cls``: multilabel soft-margin on both views' image logits (GAP of the foreground CAM logits) + SEAM's
  background suppression on both views' PCM-refined CAMs (each pair averaged);
* ``er`` / ``ecr``: SEAM's equivariant (cross) regularisation between the views;
* ``nce``: PPC's pixel-to-prototype contrast on the refined CAMs and the projections (weight 0.1, T 0.1);
* ``sal``: EPS's saliency loss on the CAM and the refined CAM of both views, summed as the authors do
  (``(sal(cam1) + sal(cam2)) / 2 + (sal(ref1) + sal(ref2)) / 2``; ``saliency_total="mean"``: their mean), only with
  saliency maps (without them the method is "PPC on SEAM").

FSAE attaches directly: the network has a background logit, so ``cam_logits`` are fc8's ``(B, C+1, h, w)``
outputs.  The trainer runs the strong view as its own pass after the teacher's (:func:`fsae.engine.trainer.step_terms`);
``training_step(strong=...)`` shares the backbone pass with ``x1`` (one batch) instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsae.losses import eps, ppc, seam
from fsae.methods.base import StepOutput, WSSSMethod
from fsae.methods.registry import register_method
from fsae.models.ppc_net import PPCNet

__all__ = ["PPCMethod"]


@register_method("ppc")
class PPCMethod(WSSSMethod):
    """PPC with an optional EPS saliency term; FSAE attaches to fc8's logits.

    Args:
        num_classes: C (20 for VOC, 80 for COCO).
        backbone, pretrained, pretrained_path, freeze_bn, freeze_stem: see :class:`~fsae.models.ppc_net.PPCNet`.
        small_size: side of the second view (128).
        nce_weight, temperature: PPC contrast weight (0.1) and temperature (0.1).
        saliency_tau, saliency_alpha: EPS (tau 0.4; alpha 0.5 VOC / 0.9 COCO).
        ppc_channel_quirk: the authors' off-by-one channel slice in ECR (on, the authors' code; see
            :func:`fsae.losses.seam.max_onehot`); False: SEAM's intended foreground competition.
        head_dropout: Dropout2d before ``fc8`` (0, the authors' network; see :class:`~fsae.models.ppc_net.PPCNet`).
        contrast_scores: ``"original"`` (the authors' min-max scores and ``topk`` prototypes, an empty class map
            scoring -1) or ``"clamped"`` (our correction; :func:`fsae.losses.ppc.ppc_contrast_terms` ``score_form``).
        saliency_total: ``"sum"`` (the authors': ``(sal(cam1) + sal(cam2)) / 2 + (sal(ref1) + sal(ref2)) / 2``,
            twice the mean of the four terms) or ``"mean"`` (the mean of the four).
        saliency_small: how the 128 px view's target is made: ``"nearest"`` (the authors': the full-size saliency
            map, resized by nearest neighbour inside the loss) or ``"bilinear"`` (first resized bilinearly to the
            view's size).
    """

    name = "ppc"
    tiny_options = {"backbone": "resnet18"}

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "resnet38d",
        pretrained: bool = False,
        pretrained_path: str | None = None,
        freeze_bn: bool = True,
        freeze_stem: bool = True,
        small_size: int = 128,
        nce_weight: float = 0.1,
        temperature: float = 0.1,
        saliency_tau: float = 0.4,
        saliency_alpha: float = 0.5,
        ppc_channel_quirk: bool = True,
        head_dropout: float = 0.0,
        contrast_scores: str = "original",
        saliency_total: str = "sum",
        saliency_small: str = "nearest",
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("contrast_scores", contrast_scores, ("original", "clamped")),
            ("saliency_total", saliency_total, ("sum", "mean")),
            ("saliency_small", saliency_small, ("nearest", "bilinear")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.num_classes = num_classes
        self.net = PPCNet(num_classes, backbone, pretrained, pretrained_path, freeze_bn, freeze_stem, head_dropout)
        self.small_size = small_size
        self.nce_weight, self.temperature = nce_weight, temperature
        self.saliency_tau, self.saliency_alpha = saliency_tau, saliency_alpha
        self.ppc_channel_quirk = ppc_channel_quirk
        self.contrast_scores = contrast_scores
        self.saliency_total, self.saliency_small = saliency_total, saliency_small

    def cam_logits(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C+1, h, w)`` fc8 logits (PPC learns its background logit: ``labels`` are not used)."""
        return self.net.cam_logits(images)

    def training_step(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        strong: torch.Tensor | None = None,
        images_small: torch.Tensor | None = None,
        saliency: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        if images_small is None:
            size = (self.small_size, self.small_size)
            images_small = F.interpolate(images, size, mode="bilinear", align_corners=True)
        out1 = self.net(images, extra=strong)
        out2 = self.net(images_small)
        cam1, cam2 = out1["cam_logits"], out2["cam_logits"]
        ref1, ref2 = out1["refined"], out2["refined"]

        image_logits = [cam.mean(dim=(2, 3))[:, 1:] for cam in (cam1, cam2)]
        classification = sum(seam.multilabel_soft_margin(logits, labels) for logits in image_logits) / 2
        suppression = (seam.background_suppression(ref1, labels) + seam.background_suppression(ref2, labels)) / 2
        losses = {
            "cls": classification + suppression,
            "er": seam.equivariant_regularization(cam1, cam2, labels),
            "ecr": seam.equivariant_cross_regularization(
                cam1, cam2, ref1, ref2, labels, ppc_channel_quirk=self.ppc_channel_quirk
            ),
            "nce": ppc.ppc_contrast_loss(
                ref1,
                ref2,
                out1["embeddings"],
                out2["embeddings"],
                labels,
                weight=self.nce_weight,
                temperature=self.temperature,
                generator=generator,
                score_form=self.contrast_scores,
            ),
        }
        if saliency is not None:
            small = saliency  # the authors': nearest-neighbour from the full-size map, inside the loss
            if self.saliency_small == "bilinear":
                small = F.interpolate(saliency, images_small.shape[-2:], mode="bilinear", align_corners=True)
            terms = [
                eps.saliency_loss(maps, sal, labels, self.saliency_tau, self.saliency_alpha)[0]
                for maps, sal in ((cam1, saliency), (cam2, small), (ref1, saliency), (ref2, small))
            ]
            total = (terms[0] + terms[1]) / 2 + (terms[2] + terms[3]) / 2
            losses["sal"] = total if self.saliency_total == "sum" else total / 2
        return StepOutput(losses, out1.get("extra_cam_logits"))

    def parameter_groups(self) -> list[dict]:
        new = {id(p) for module in self.net.new_modules() for p in module.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in trainable if id(p) not in new], "lr_mult": 1.0},
            {"params": [p for p in trainable if id(p) in new], "lr_mult": 10.0},
        ]
