"""SIPE's CAM network (Chen et al., "Self-supervised Image-specific Prototype Exploration", CVPR 2022) on timm.

docs/method.md §5. Any timm CNN that supports ``features_only=True`` with four feature levels works as the backbone
(ResNet-50 at output stride 16 without dilation by default, as the authors'; ``resnet18`` in the tests)::

    images (B, 3, H, W) --backbone--> x1, x2, x3, x4          four levels (timm out_indices (-4, -3, -2, -1))
    cam       = classifier(x4)                                 (B, C, h, w), 1x1 conv, no bias
    score     = GAP(cam)                                       (B, C) image logits
    norm_cam  = [1 - max_c n_c, n_1 .. n_C]                     (B, C+1, h, w), n = ReLU(cam) / (max_hw + 1e-5)
    hie       = cat_l resize(L2norm(side_l(x_l.detach())))     (B, 128+128+256+256, h, w) hierarchical features

and, when ``labels`` are given (training), SIPE's image-specific CAM:

    seeds     = one-hot argmax_k IoU_k(i) * [1, labels]        IoU of pixel i's feature-correlation row with
                                                               map k (background's IoU halved), features = x4
    prototype = masked average of ``hie`` over each seed        (B, C+1, D)
    is_cam    = ReLU(cos(hie, prototype_k))                    (B, C+1, h, w)

``(h, w)`` is the size of the last feature map (H/16 x W/16 at output stride 16); the side features of the
earlier, larger levels are resized to it (bilinear). Background is channel 0 everywhere (project convention).

Facts taken from the original (``network/resnet50_SIPE.py``, ``train_resnet50_SIPE.py``; our own code):

* **BatchNorm** is SIPE's ``FixedBatchNorm``: always normalises with the ImageNet running statistics (train mode
  too) while its affine weight and bias stay trainable. ``batchnorm="fixed"`` (default) does the same by keeping
  every BatchNorm layer of the backbone in eval mode through ``train()``; ``"frozen"`` also fixes the affine
  parameters (:func:`fsae.models.freeze_batchnorm`); ``"train"`` is ordinary BatchNorm.
* **Gradient stop**: ``x2 = stage2(x1).detach()`` in the original, so the stem and the first two stages never
  receive a gradient (``conv1``/``bn1`` are frozen explicitly as well). Here ``frozen_levels=2`` sets
  ``requires_grad=False`` on exactly the backbone parameters the second feature level depends on (found once by
  autograd on a dummy input, so it works for any timm backbone): the same training, without parameters that get
  no gradient (which DDP would reject).
* **Side branch**: the side 1x1 convs (128/128/256/256 channels, no bias) read *detached* features, so the
  image-specific branch trains only the side convs, never the backbone.
* **Seeds** use the (undetached, but argmax'ed: no gradient) last backbone features ``x4`` for the correlation in
  training (the original's inference class uses ``hie`` instead), the label-masked ``norm_cam``, the background
  IoU halved, argmax, then times ``[1, labels]``; computed without gradient and in float32.
* **Prototypes**: the original averages ``seed * hie`` over *all* pixels; here over the seed's pixels (a masked
  average). The two differ by a positive factor per prototype, which the cosine similarity ignores: ``is_cam`` is
  identical.
* ``norm_cam``: background is ``1 - max`` over *all* foreground maps, computed before the label mask (as the
  original); with ``labels`` (and ``valid_mask``) the maps of absent classes (and invalid pixels) are then zeroed.
* **Last stage**: the original's ResNet-50 has strides 2, 2, 2, 1 and no dilation anywhere (its
  ``network/resnet50.py``): the last stage keeps the resolution of the third without dilating.
  ``last_stage="stride1"`` (default) builds timm's network at output stride 32 and sets the stride-2
  convolutions of the last stage to stride 1 (ResNets: the block's 3x3 conv and the downsample 1x1 conv); the
  same weights then compute the original's function (measured equal, tests/fidelity/test_sipe_authors.py).
  ``last_stage="dilated"`` is timm's ``output_stride=16``, which dilates the last stage (dilation 2): the same
  weights, a larger receptive field, ``norm_cam`` 44 % (relative L2) apart from the original's on the fixture crops.
* **Valid mask**: the original multiplies ``norm_cam`` (and so the seeds and the GSC loss) by a mask that is 0 on
  the crop padding (times ``[1, labels]``), resized to ``(h, w)`` by nearest; here ``valid_mask`` does the same
  (the trainer passes it: :func:`fsae.augment.views.crop_valid_mask`).
* **Inference IS-CAM** (the original's ``CAM`` class for ``make_cam.py``): :meth:`SIPENet.flip_fused_is_cam`
  (an image and its flip fused; seeds from the *unmasked* ``norm_cam`` with ``hie`` as the correlation features);
  the multi-scale pipeline around it is :meth:`fsae.methods.SIPEMethod.authors_cams`.

Deviations (none changes what is computed): the prototypes' masked average (above); ``seed_iou``'s denominator
clamp at 1e-5; the original's ``align_corners=True`` resizes of ``norm_cam`` / ``is_cam`` to the size they already
have are skipped.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.pooling import _AvgPoolNd, _MaxPoolNd

from fsae.models.freeze import freeze_batchnorm
from fsae.models.pretrained import create_backbone
from fsae.ops import cam_normalize

__all__ = ["BATCHNORM_MODES", "LAST_STAGES", "SIPENet", "image_specific_cam", "seed_iou", "undo_last_stride"]

BATCHNORM_MODES = ("fixed", "frozen", "train")
LAST_STAGES = ("stride1", "dilated")
SIDE_CHANNELS = (128, 128, 256, 256)


def _l2_normalize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """SIPE's channel normalisation ``x / (||x||_2 + eps)`` (dim 1)."""
    return x / (x.norm(dim=1, keepdim=True) + eps)


def seed_iou(norm_cam: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """SIPE's IoU between each pixel's feature-correlation row and each normalised map.

    With ``f_i`` the L2-normalised feature of pixel ``i`` and ``A_ij = ReLU(f_i . f_j)``::

        IoU_k(i) = sum_j A_ij n_kj / (sum_j A_ij + sum_j n_kj - sum_j A_ij n_kj)

    Background's IoU (channel 0) is halved, as in the original. The denominator is clamped at 1e-5 (the original
    divides by it as is; it is zero only for an all-zero feature at a pixel with an all-zero map).

    Args:
        norm_cam: ``(B, K, h, w)`` maps in [0, 1].
        feature: ``(B, D, h, w)`` features at the same resolution.

    Returns:
        ``(B, K, h, w)`` float32, no gradient.
    """
    with torch.no_grad(), torch.autocast(norm_cam.device.type, enabled=False):
        b, k, h, w = norm_cam.shape
        f = _l2_normalize(feature.detach().float().flatten(2))  # (B, D, N)
        corr = torch.bmm(f.transpose(1, 2), f).relu_()  # (B, N, N), symmetric
        cam = norm_cam.detach().float().flatten(2)  # (B, K, N)
        inter = torch.bmm(cam, corr)  # (B, K, N): sum_j n_kj A_ji
        union = corr.sum(-1).unsqueeze(1) + cam.sum(-1, keepdim=True) - inter
        iou = inter / union.clamp_min(1e-5)
        iou[:, 0] *= 0.5
        return iou.view(b, k, h, w)


def image_specific_cam(
    seeds: torch.Tensor, features: torch.Tensor, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes (masked averages of ``features`` over each seed) and ``ReLU(cosine similarity)`` to them.

    Args:
        seeds: ``(B, K, h, w)`` 0/1 seed masks (no gradient needed).
        features: ``(B, D, h, w)`` hierarchical features.
        eps: the cosine similarity's guard on the norms; an empty seed gives a zero prototype and a zero map.

    Returns:
        ``prototypes (B, K, D)`` and ``is_cam (B, K, h, w)``, both float32 (differentiable w.r.t. ``features``).
    """
    b, k, h, w = seeds.shape
    with torch.autocast(features.device.type, enabled=False):  # float32 under autocast too
        feats = features.float().flatten(2)  # (B, D, N)
        masks = seeds.detach().float().flatten(2)  # (B, K, N)
        area = masks.sum(-1, keepdim=True).clamp_min(1.0)
        prototypes = torch.bmm(masks, feats.transpose(1, 2)) / area  # (B, K, D)
        unit_p = prototypes / prototypes.norm(dim=2, keepdim=True).clamp_min(eps)
        unit_f = feats / feats.norm(dim=1, keepdim=True).clamp_min(eps)
        is_cam = torch.bmm(unit_p, unit_f).relu().view(b, k, h, w)
    return prototypes, is_cam


def undo_last_stride(backbone: nn.Module) -> list[str]:
    """Set every stride-2 convolution of the last feature stage of a timm ``features_only`` backbone to stride 1.

    The last stage is the modules after the third feature level's module up to the fourth's (``feature_info``
    module names, in definition order). A pooling with a stride there (e.g. ResNet-D's average-pool
    downsample), or a last level that still has a larger stride than the third afterwards, is a ValueError.

    Returns:
        The names of the convolutions changed.
    """
    names = backbone.feature_info.module_name()
    modules = list(backbone.named_modules())
    order = [n for n, _ in modules]

    def end_of(name: str) -> int:  # the index past ``name``'s last submodule
        start = order.index(name)
        inside = [i for i, n in enumerate(order) if n == name or n.startswith(name + ".")]
        return max(inside, default=start) + 1

    first, last = end_of(names[-2]), end_of(names[-1])
    changed = []
    for name, module in modules[first:last]:
        stride = getattr(module, "stride", None)
        if isinstance(module, nn.Conv2d) and tuple(module.stride) != (1, 1):
            module.stride = (1, 1)
            changed.append(name)
        elif isinstance(module, (_AvgPoolNd, _MaxPoolNd)) and stride not in (None, 1, (1, 1)):
            raise ValueError(f"last_stage='stride1': {name} ({type(module).__name__}) has stride {stride}; use "
                             "last_stage='dilated'")  # fmt: skip
    with torch.no_grad():
        was_training = backbone.training
        backbone.eval()
        try:
            sizes = [f.shape[-1] for f in backbone(torch.zeros(1, 3, 64, 64))]
        finally:
            backbone.train(was_training)
    if not changed or sizes[-1] != sizes[-2]:
        raise ValueError("last_stage='stride1' works on backbones whose last stage downsamples with strided convs "
                         "(ResNets); use last_stage='dilated'")  # fmt: skip
    return changed


def _with_background(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, C)`` multi-hot -> ``(B, C+1)`` 0/1 with a leading column of ones."""
    present = (labels.detach() != 0).to(dtype)
    return torch.cat([torch.ones_like(present[:, :1]), present], dim=1)


class SIPENet(nn.Module):
    """SIPE's network on a timm backbone (see the module docstring for the computation and the original's facts).

    Args:
        num_classes: C, the number of foreground classes.
        backbone: timm model name (a CNN with four feature levels; ``"resnet50"`` as in SIPE).
        pretrained: timm's published ImageNet weights (needs internet or timm's cache).
        pretrained_path: local weights file instead (see :func:`fsae.models.create_backbone`).
        output_stride: the total stride, 16 as in SIPE. With ``last_stage="stride1"`` only 16 (timm's network at
            32, the last stage's stride removed); with ``"dilated"`` passed to timm (8 or 16 dilate stages).
        last_stage: ``"stride1"`` (the original: last stage at stride 1, not dilated) or ``"dilated"`` (timm's
            ``output_stride``, dilation 2 in the last stage at 16); see the module docstring.
        side_channels: output channels of the four side 1x1 convs (SIPE: 128, 128, 256, 256).
        frozen_levels: the stem and the stages up to this feature level (0..4) get no gradient (SIPE: 2, its
            ``detach()`` after stage 2). 0 trains the whole backbone.
        batchnorm: ``"fixed"`` (SIPE: running statistics, trainable affine), ``"frozen"`` or ``"train"``.
        **timm_kwargs: more arguments for ``timm.create_model`` (e.g. ``drop_path_rate``).

    Attributes:
        backbone: timm features_only model; ``side`` (ModuleList of 4 convs) and ``classifier`` (1x1 conv, C out,
        no bias): the new layers.
    """

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "resnet50",
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
        output_stride: int = 16,
        last_stage: str = "stride1",
        side_channels: tuple[int, int, int, int] = SIDE_CHANNELS,
        frozen_levels: int = 2,
        batchnorm: str = "fixed",
        **timm_kwargs: object,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
        if len(side_channels) != 4:
            raise ValueError(f"side_channels must give 4 channel counts, got {side_channels!r}")
        if isinstance(frozen_levels, bool) or not isinstance(frozen_levels, int) or not 0 <= frozen_levels <= 4:
            raise ValueError(f"frozen_levels must be an integer in 0..4, got {frozen_levels!r}")
        if last_stage not in LAST_STAGES:
            raise ValueError(f"last_stage must be one of {LAST_STAGES}, got {last_stage!r}")
        if last_stage == "stride1" and output_stride != 16:
            raise ValueError(f"last_stage='stride1' gives output stride 16, got output_stride={output_stride} "
                             "(use last_stage='dilated' for timm's output strides)")  # fmt: skip
        self.num_classes = num_classes
        self.batchnorm = batchnorm
        self.last_stage = last_stage
        self.backbone = create_backbone(
            backbone,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            features_only=True,
            out_indices=(-4, -3, -2, -1),
            output_stride=32 if last_stage == "stride1" else output_stride,
            **timm_kwargs,
        )
        channels = list(self.backbone.feature_info.channels())
        if len(channels) != 4:
            raise ValueError(f"{backbone}: expected 4 feature levels, timm gives {len(channels)}")
        if last_stage == "stride1":
            undo_last_stride(self.backbone)
        if batchnorm == "frozen":
            self.backbone = freeze_batchnorm(self.backbone)
        self.frozen_parameters = self._freeze_levels(frozen_levels)

        self.side = nn.ModuleList(nn.Conv2d(c, s, 1, bias=False) for c, s in zip(channels, side_channels, strict=True))
        self.classifier = nn.Conv2d(channels[-1], num_classes, 1, bias=False)
        self.train()

    def _freeze_levels(self, levels: int) -> list[str]:
        """``requires_grad=False`` on the backbone parameters that feature level ``levels`` (1-based) depends on."""
        if levels == 0:
            return []
        named = [(n, p) for n, p in self.backbone.named_parameters() if p.requires_grad]
        if not named:
            return []
        was_training = self.backbone.training
        self.backbone.eval()  # no BatchNorm statistics update from the probe
        try:
            size = 4 * max(self.backbone.feature_info.reduction())
            with torch.enable_grad():
                probe = self.backbone(torch.zeros(1, 3, size, size))[levels - 1]
                grads = torch.autograd.grad(probe.sum(), [p for _, p in named], allow_unused=True)
        finally:
            self.backbone.train(was_training)
        frozen = [n for (n, p), g in zip(named, grads, strict=True) if g is not None]
        for n, p in named:
            if n in frozen:
                p.requires_grad_(False)
        return frozen

    def train(self, mode: bool = True) -> SIPENet:
        """``nn.Module.train``; with ``batchnorm="fixed"`` the backbone's BatchNorm layers stay in eval mode."""
        super().train(mode)
        if self.batchnorm == "fixed":
            for m in self.backbone.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def new_modules(self) -> list[nn.Module]:
        """The layers SIPE adds to the backbone (10x learning rate): the side convs and the classifier."""
        return [self.side, self.classifier]

    def hierarchical_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``(B, sum(side_channels), h, w)``: side convs on the detached levels, L2-normalised, resized, stacked."""
        size = features[-1].shape[-2:]
        out = []
        for conv, x in zip(self.side, features, strict=True):
            s = _l2_normalize(conv(x.detach()))
            if s.shape[-2:] != size:
                s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
            out.append(s)
        return torch.cat(out, dim=1)

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        valid_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """CAMs of ``images``; SIPE's image-specific CAM too when ``labels`` are given.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised.
            labels: ``(B, C)`` multi-hot (float or bool), or None (inference: no seeds, no ``is_cam``).
            valid_mask: optional ``(B, 1, H', W')`` 1 on image pixels, 0 on crop padding (resized to ``(h, w)`` by
                nearest); only used with ``labels``.

        Returns:
            dict with

            * ``cam``: ``(B, C, h, w)`` raw class activations (the classifier's dtype: float32, or the autocast
              dtype under autocast);
            * ``score``: ``(B, C)`` image logits = spatial mean of ``cam`` (same dtype);
            * ``norm_cam``: ``(B, C+1, h, w)`` float32 in [0, 1]; channel 0 = ``1 - max_c n_c``; with ``labels``
              absent classes (and invalid pixels) zeroed;

            and with ``labels``:

            * ``features``: ``(B, D, h, w)`` hierarchical features (D = sum of side channels);
            * ``seeds``: ``(B, C+1, h, w)`` float32 one-hot seeds (absent classes all zero; a pixel whose argmax
              is an absent class has no seed);
            * ``prototypes``: ``(B, C+1, D)`` float32;
            * ``is_cam``: ``(B, C+1, h, w)`` float32 >= 0, the image-specific CAM (zero for absent classes).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        features = self.backbone(images)
        x4 = features[-1]
        cam = self.classifier(x4)
        out = {"cam": cam, "score": cam.mean(dim=(2, 3))}
        foreground = cam_normalize(cam.float())  # ReLU / (max + 1e-5), float32
        background = 1.0 - foreground.amax(dim=1, keepdim=True)
        norm_cam = torch.cat([background, foreground], dim=1)
        if labels is None:
            out["norm_cam"] = norm_cam
            return out

        b, k, h, w = norm_cam.shape
        if labels.dim() != 2 or tuple(labels.shape) != (b, k - 1):
            raise ValueError(f"labels must have shape (B, C) = ({b}, {k - 1}), got {tuple(labels.shape)}")
        mask = _with_background(labels, norm_cam.dtype)[:, :, None, None]
        if valid_mask is not None:
            valid = F.interpolate(valid_mask.detach().to(norm_cam.dtype), size=(h, w), mode="nearest")
            mask = mask * valid
        norm_cam = norm_cam * mask
        hie = self.hierarchical_features(features)
        iou = seed_iou(norm_cam, x4)
        seeds = F.one_hot(iou.argmax(dim=1), k).permute(0, 3, 1, 2).to(norm_cam.dtype) * mask
        prototypes, is_cam = image_specific_cam(seeds, hie)
        out.update(norm_cam=norm_cam, features=hie, seeds=seeds, prototypes=prototypes, is_cam=is_cam)
        return out

    @torch.no_grad()
    def flip_fused_is_cam(self, pair: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The original's inference IS-CAM (its ``CAM`` class, ``make_cam.py``) of one image and its mirror image.

        ``cam`` and the hierarchical features are fused as ``x[0] + flip(x[1])``; ``norm_cam`` is built from the
        fused ``cam`` *without* the label mask (background ``1 - max`` over all classes); the seeds use the fused
        hierarchical features for the correlation (not ``x4`` as in training), argmax over all ``C+1`` maps, then
        times ``[1, labels]``; prototypes and ``is_cam`` as in training.

        Args:
            pair: ``(2, 3, H, W)`` ImageNet-normalised: an image and its horizontal flip.
            labels: ``(1, C)`` multi-hot.

        Returns:
            ``norm_cam`` and ``is_cam``: ``(1, C+1, h, w)`` float32 (``is_cam`` zero for absent classes).
        """
        if pair.dim() != 4 or pair.shape[0] != 2:
            raise ValueError(f"pair must be (2, 3, H, W) (an image and its flip), got {tuple(pair.shape)}")
        features = self.backbone(pair)
        cam = self.classifier(features[-1]).float()
        cam = (cam[0] + cam[1].flip(-1))[None]
        hie = self.hierarchical_features(features).float()
        hie = (hie[0] + hie[1].flip(-1))[None]
        foreground = cam_normalize(cam)
        norm_cam = torch.cat([1.0 - foreground.amax(dim=1, keepdim=True), foreground], dim=1)
        k = norm_cam.shape[1]
        if labels.dim() != 2 or tuple(labels.shape) != (1, k - 1):
            raise ValueError(f"labels must have shape (1, C) = (1, {k - 1}), got {tuple(labels.shape)}")
        mask = _with_background(labels, norm_cam.dtype)[:, :, None, None]
        iou = seed_iou(norm_cam, hie)
        seeds = F.one_hot(iou.argmax(dim=1), k).permute(0, 3, 1, 2).to(norm_cam.dtype) * mask
        _, is_cam = image_specific_cam(seeds, hie)
        return {"norm_cam": norm_cam, "is_cam": is_cam}
