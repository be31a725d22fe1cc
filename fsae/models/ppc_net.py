"""The PPC CAM network (docs/method.md §4): backbone, CAM head with background, projection head, PCM.

Same structure as SEAM's / PPC's ``resnet38_SEAM`` network, over any timm CNN:

* ``fc8``: 1x1 conv (no bias) from the last feature map to C+1 CAM logits, channel 0 = background;
* ``proj``: 1x1 conv to a 128-d pixel embedding + ReLU (PPC's prototype contrast);
* PCM (pixel correlation module, SEAM): affinities from ``concat(image resized, ReLU(1x1 conv 64 of the
  detached stage-4 features), ReLU(1x1 conv 128 of the detached stage-5 features)) -> 1x1 conv 192 -> L2
  normalise``; ``A = ReLU(F^T F)`` column-normalised; refined CAM = normalised detached CAM x A.

With ``backbone="resnet38d"`` (the paper's) the three feature maps are PSA's conv4 / conv5 / conv6 (output
stride 8); any other timm CNN uses its last three feature maps at output stride 8, resized to the last one's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsae.models.freeze import freeze_batchnorm, freeze_by_prefix
from fsae.models.pretrained import create_backbone
from fsae.models.resnet38d import PPC_FROZEN_PREFIXES

__all__ = ["PPCNet", "pcm_refine", "seam_cam_for_pcm"]


def seam_cam_for_pcm(cam_logits: torch.Tensor) -> torch.Tensor:
    """SEAM's input to PCM, without gradient: per-map ``relu(x - 1e-5) / (max + 1e-5)`` of the foreground,
    background = 1 - max foreground, and every foreground value below the pixel's max foreground set to 0.

    ``cam_logits (B, C+1, h, w)`` -> same shape, detached.
    """
    with torch.no_grad():
        cam = cam_logits.detach().float().relu()
        peak = cam.flatten(2).amax(-1)[..., None, None] + 1e-5
        cam = (cam - 1e-5).relu() / peak
        foreground = cam[:, 1:]
        best = foreground.amax(dim=1, keepdim=True)
        foreground = foreground * (foreground >= best)
        return torch.cat([1 - best, foreground], dim=1).to(cam_logits.dtype)


def pcm_refine(cam: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``cam (B, K, h, w)`` refined by the affinities of ``features (B, D, h, w)`` (already projected).

    ``f`` L2-normalised per pixel; ``A = relu(f^T f)`` normalised so each column sums to 1; output ``cam A``.
    """
    batch, _, height, width = features.shape
    f = features.flatten(2)
    f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
    affinity = torch.bmm(f.transpose(1, 2), f).relu()
    affinity = affinity / (affinity.sum(dim=1, keepdim=True) + 1e-5)
    return torch.bmm(cam.flatten(2), affinity).view(batch, -1, height, width)


# the authors' PPC / SEAM / EPS heads (network.resnet38_contrast), which a backbone file never holds
_AUTHORS_HEADS = ("fc8.", "proj_fc.", "f8_3.", "f8_4.", "f9.")


def _refuse_trained_heads(path: str) -> None:
    """A trained network's checkpoint as ``pretrained_path`` would load its backbone and drop its heads: refuse it."""
    from fsae.models.pretrained import read_state_dict

    heads = [k for k in read_state_dict(path) if k.startswith(_AUTHORS_HEADS)]
    if heads:
        raise ValueError(
            f"{path} is a trained PPC network, not a backbone: pretrained_path would ignore its heads "
            f"({', '.join(heads[:5])}). Import it as a run folder: "
            "python -m fsae.models.import_checkpoint --method ppc FILE RUN_DIR"
        )


class PPCNet(nn.Module):
    """CAM network of PPC (and SEAM) over a timm CNN.

    Args:
        num_classes: C foreground classes (the head has C+1 channels).
        backbone: timm model name (``"resnet38d"``, the paper's; any CNN with ``features_only``).
        pretrained / pretrained_path: backbone weights (see :func:`fsae.models.create_backbone`).
        freeze_bn: keep every BatchNorm frozen (docs/method.md §4); freeze_stem: freeze ``conv1a`` and stage 2
            (resnet38d only).
        dropout: Dropout2d before ``fc8``.  0 (the default): the authors' PPC network has none there
            (only the backbone's own Dropout2d 0.3 / 0.5 in its last two blocks); SEAM's ``dropout7`` was 0.5.
        proj_dim: pixel embedding size.

    ``forward(images (B, 3, H, W)) -> dict`` with ``cam_logits (B, C+1, h, w)``, ``refined (B, C+1, h, w)``
    (PCM output, gradient only through the affinity branch) and ``embeddings (B, proj_dim, h, w)``; h, w = H/8, W/8.
    """

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "resnet38d",
        pretrained: bool = False,
        pretrained_path: str | None = None,
        freeze_bn: bool = True,
        freeze_stem: bool = True,
        dropout: float = 0.0,
        proj_dim: int = 128,
    ) -> None:
        super().__init__()
        if pretrained_path is not None:
            _refuse_trained_heads(pretrained_path)
        if backbone == "resnet38d":
            kwargs: dict = {"out_indices": (3, 4, 6)}
        else:
            kwargs = {"out_indices": (-3, -2, -1), "output_stride": 8}
        self.backbone = create_backbone(
            backbone, pretrained=pretrained, pretrained_path=pretrained_path, features_only=True, **kwargs
        )
        if freeze_bn:
            freeze_batchnorm(self.backbone)
        if freeze_stem and backbone == "resnet38d":
            freeze_by_prefix(self.backbone, PPC_FROZEN_PREFIXES)
        mid4, mid5, last = self.backbone.feature_info.channels()
        self.num_classes = num_classes
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.fc8 = nn.Conv2d(last, num_classes + 1, 1, bias=False)
        self.proj = nn.Conv2d(last, proj_dim, 1, bias=False)
        self.f8_3 = nn.Conv2d(mid4, 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(mid5, 128, 1, bias=False)
        self.f9 = nn.Conv2d(3 + 64 + 128, 192, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        nn.init.xavier_uniform_(self.proj.weight)  # as the authors' proj_fc
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def new_modules(self) -> list[nn.Module]:
        """Layers trained from scratch (10x learning rate)."""
        return [self.fc8, self.proj, self.f8_3, self.f8_4, self.f9]

    def cam_logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C+1, h, w)`` CAM logits only (no PCM, no projection)."""
        return self.fc8(self.dropout(self.backbone(images)[-1]))

    def forward(self, images: torch.Tensor, extra: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Heads on ``images``; with ``extra`` (same size, e.g. the strong view) the backbone runs on both in one
        batch and ``extra_cam_logits`` holds the CAM logits of ``extra`` (no PCM / projection for it)."""
        batch = images.shape[0]
        stage4, stage5, last = self.backbone(images if extra is None else torch.cat([images, extra]))
        extra_cam_logits = None
        if extra is not None:
            extra_cam_logits = self.fc8(self.dropout(last[batch:]))
            stage4, stage5, last = stage4[:batch], stage5[:batch], last[:batch]
        size = last.shape[-2:]
        cam_logits = self.fc8(self.dropout(last))
        embeddings = F.relu(self.proj(last))
        f4 = F.relu(self.f8_3(F.interpolate(stage4.detach(), size, mode="bilinear", align_corners=True)))
        f5 = F.relu(self.f8_4(F.interpolate(stage5.detach(), size, mode="bilinear", align_corners=True)))
        image = F.interpolate(images, size, mode="bilinear", align_corners=True)
        features = self.f9(torch.cat([image, f4, f5], dim=1))
        refined = pcm_refine(seam_cam_for_pcm(cam_logits), features)
        out = {"cam_logits": cam_logits, "refined": refined, "embeddings": embeddings}
        if extra_cam_logits is not None:
            out["extra_cam_logits"] = extra_cam_logits
        return out
