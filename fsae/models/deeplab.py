"""Segmentation networks of the second stage (docs/method.md §6): DeepLab-v2 and DeepLab-v3+ over any timm CNN.

* :class:`DeepLabV2` (Chen et al., TPAMI 2017): a dilated backbone at output stride 8 and the ASPP-v2 head, the
  *sum* of four 3x3 convolutions with dilations 6, 12, 18, 24 straight to class logits.  The WSSS papers train
  it on the pseudo-masks of train_aug (crop 448, batch 10, lr 1e-3 with the head at 10x, poly 0.9).
* :class:`DeepLabV3Plus` (Chen et al., ECCV 2018): ASPP-v3 (1x1, three 3x3 atrous convolutions at 6/12/18 for
  output stride 16, doubled at 8, image pooling; BatchNorm + ReLU; 1x1 projection; dropout) and a decoder that
  fuses the stride-4 features (48-channel 1x1) with two 3x3 convolutions.

The backbone is ``timm.create_model(name, features_only=True, output_stride=...)``: any timm CNN whose feature
extractor supports ``output_stride`` (ResNets, ResNeSts, RegNets, EfficientNets, ...); timm dilates the last stages.
Weights come from a local file (``pretrained_path``, via :func:`fsae.models.create_backbone`) or from timm
(``pretrained=True``, needs internet).  The original DeepLab-v2 of the WSSS papers starts from a COCO-pretrained
ResNet-101 (the Caffe ``init.caffemodel``); the library ships no weights, so give a local ImageNet (or converted
COCO) ResNet-101 state dict with timm's key names.  Frozen BatchNorm (``freeze_bn=True``, the original setting: a
batch of 10 split over GPUs is too small for batch statistics) only makes sense with pretrained statistics.

Both models map ``images (B, 3, H, W)`` (ImageNet-normalised float) to logits ``(B, K, h, w)`` with K classes
including background (VOC: 21): ``h = ceil(H / 8)`` for DeepLab-v2 at output stride 8, ``ceil(H / 4)`` for
DeepLab-v3+ (its decoder works at the stride-4 features).  Upsample to the label size for the loss / prediction.
``parameter_groups()`` gives the trainable backbone at ``lr_mult`` 1 and the new head at 10, as
:func:`fsae.engine.schedule.build_optimizer` expects.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fsae.models.freeze import freeze_batchnorm
from fsae.models.pretrained import create_backbone

__all__ = ["SEGMENTERS", "ASPPv2", "ASPPv3", "DeepLabV2", "DeepLabV3Plus", "build_segmenter"]


def _make_backbone(
    name: str,
    pretrained: bool,
    pretrained_path: str | os.PathLike[str] | None,
    output_stride: int,
    freeze_bn: bool,
) -> nn.Module:
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    try:
        backbone = create_backbone(
            name,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            features_only=True,
            output_stride=output_stride,
        )
    except (TypeError, AssertionError, RuntimeError) as err:
        raise ValueError(
            f"timm backbone {name!r} cannot be built as a feature extractor at output stride {output_stride} "
            f"({err}); use a CNN such as resnet101"
        ) from err
    if freeze_bn:
        if not pretrained and pretrained_path is None:
            warnings.warn(
                f"freeze_bn=True without pretrained weights freezes the initial BatchNorm statistics of {name}",
                UserWarning,
                stacklevel=3,
            )
        backbone = freeze_batchnorm(backbone)
    return backbone


def _head_groups(model: nn.Module, backbone: nn.Module) -> list[dict]:
    in_backbone = {id(p) for p in backbone.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) in in_backbone], "lr_mult": 1.0},
        {"params": [p for p in trainable if id(p) not in in_backbone], "lr_mult": 10.0},
    ]


class ASPPv2(nn.Module):
    """DeepLab-v2's ASPP: ``sum_r conv3x3_r(x)`` over dilations ``r``, each a biased conv straight to K logits.

    ``(B, C_in, h, w) -> (B, K, h, w)``; weights N(0, 0.01), biases 0 (as in the original).
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = 0 if kernel == 1 else dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPPv3(nn.Module):
    """DeepLab-v3's ASPP: 1x1, three 3x3 atrous convs, image pooling; each conv + BN + ReLU; concat; 1x1 + BN + ReLU;
    dropout.  ``(B, C_in, h, w) -> (B, channels, h, w)``.

    The image-pooling branch normalises a 1x1 map with BatchNorm, so a training batch needs >= 2 images per process.
    """

    def __init__(
        self, in_channels: int, channels: int = 256, rates: Sequence[int] = (6, 12, 18), dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels, 1)] + [_conv_bn_relu(in_channels, channels, 3, r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(in_channels, channels, 1))
        self.project = nn.Sequential(
            _conv_bn_relu(channels * (len(rates) + 2), channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, dim=1))


def _init_new(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DeepLabV2(nn.Module):
    """DeepLab-v2: dilated timm backbone (output stride 8) + ASPP-v2 (sum of 3x3 convs at 6, 12, 18, 24).

    Args:
        num_classes: K output channels, background included (VOC: 21).
        backbone: timm model name (the paper's: ``"resnet101"``).
        pretrained / pretrained_path: backbone weights (see :func:`fsae.models.create_backbone`).
        output_stride: 8 (the paper's) or 16.
        freeze_bn: backbone BatchNorm frozen (ImageNet / COCO statistics, also in train mode).
        dilations: the ASPP rates.

    ``forward(images (B, 3, H, W) float) -> logits (B, K, ceil(H / os), ceil(W / os)) float``.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "resnet101",
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
        output_stride: int = 8,
        freeze_bn: bool = True,
        dilations: Sequence[int] = (6, 12, 18, 24),
    ) -> None:
        super().__init__()
        self.num_classes, self.output_stride = num_classes, output_stride
        self.backbone = _make_backbone(backbone, pretrained, pretrained_path, output_stride, freeze_bn)
        self.head = ASPPv2(self.backbone.feature_info.channels()[-1], num_classes, dilations)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)[-1])

    def parameter_groups(self) -> list[dict]:
        """``[{"params": backbone, "lr_mult": 1.0}, {"params": head, "lr_mult": 10.0}]`` (trainable parameters)."""
        return _head_groups(self, self.backbone)


class DeepLabV3Plus(nn.Module):
    """DeepLab-v3+: dilated timm backbone + ASPP-v3 + decoder with the stride-4 features.

    Args:
        num_classes: K output channels, background included.
        backbone, pretrained, pretrained_path, freeze_bn: as :class:`DeepLabV2`.
        output_stride: 16 (default; ASPP rates 6/12/18) or 8 (rates doubled to 12/24/36).
        aspp_channels: width of ASPP and decoder.
        low_level_channels: the 1x1 reduction of the stride-4 features (48 in the paper).
        dropout: after the ASPP projection.

    ``forward(images (B, 3, H, W) float) -> logits (B, K, h4, w4) float``, ``h4, w4`` = the backbone's stride-4
    feature size (``ceil(H / 4)`` for ResNets).
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "resnet101",
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
        output_stride: int = 16,
        freeze_bn: bool = True,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes, self.output_stride = num_classes, output_stride
        self.backbone = _make_backbone(backbone, pretrained, pretrained_path, output_stride, freeze_bn)
        info = self.backbone.feature_info
        reductions, channels = info.reduction(), info.channels()
        if 4 not in reductions:
            raise ValueError(f"backbone {backbone!r} has no stride-4 features (reductions {reductions})")
        self.low_index = reductions.index(4)
        rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
        self.aspp = ASPPv3(channels[-1], aspp_channels, rates, dropout)
        self.reduce = _conv_bn_relu(channels[self.low_index], low_level_channels, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(aspp_channels + low_level_channels, aspp_channels, 3),
            _conv_bn_relu(aspp_channels, aspp_channels, 3),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )
        for module in (self.aspp, self.reduce, self.decoder):
            _init_new(module)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        low = self.reduce(features[self.low_index])
        high = F.interpolate(self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat([high, low], dim=1))

    def parameter_groups(self) -> list[dict]:
        """``[{"params": backbone, "lr_mult": 1.0}, {"params": ASPP + decoder, "lr_mult": 10.0}]``."""
        return _head_groups(self, self.backbone)


SEGMENTERS: dict[str, type[nn.Module]] = {"deeplabv2": DeepLabV2, "deeplabv3plus": DeepLabV3Plus}


def build_segmenter(
    name: str,
    num_classes: int,
    backbone: str = "resnet101",
    pretrained: bool = False,
    pretrained_path: str | os.PathLike[str] | None = None,
    output_stride: int | None = None,
    freeze_bn: bool = True,
    **options: object,
) -> nn.Module:
    """``SEGMENTERS[name](num_classes, backbone, ...)``; ``output_stride=None`` keeps the model's default
    (8 for ``deeplabv2``, 16 for ``deeplabv3plus``); ``options`` go to the class (``dilations``, ``dropout``, ...).

    ``num_classes`` is K, background included.
    """
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmentation model {name!r}; choose one of {sorted(SEGMENTERS)}")
    kwargs = dict(options)
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    return SEGMENTERS[name](
        num_classes=num_classes,
        backbone=backbone,
        pretrained=pretrained,
        pretrained_path=pretrained_path,
        freeze_bn=freeze_bn,
        **kwargs,
    )
