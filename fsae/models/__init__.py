"""Backbones: timm models (``resnet38d`` registered here), local pretrained weights, freezing.

Segmentation networks of the second stage: :class:`DeepLabV2`, :class:`DeepLabV3Plus`, :func:`build_segmenter`
(:mod:`fsae.models.deeplab`).

Importing :mod:`fsae.models` registers ``"resnet38d"`` (:mod:`fsae.models.resnet38d`) into timm's registry.
"""

from fsae._optional import check

check("fsae.models", "train", "timm", "safetensors")

from fsae.models.deeplab import DeepLabV2, DeepLabV3Plus, build_segmenter
from fsae.models.freeze import freeze_batchnorm, freeze_by_prefix
from fsae.models.pretrained import LoadReport, PretrainedLoadWarning, create_backbone, load_pretrained
from fsae.models.resnet38d import PPC_FROZEN_PREFIXES, ResNet38d

__all__ = [
    "PPC_FROZEN_PREFIXES",
    "DeepLabV2",
    "DeepLabV3Plus",
    "LoadReport",
    "PretrainedLoadWarning",
    "ResNet38d",
    "build_segmenter",
    "create_backbone",
    "freeze_batchnorm",
    "freeze_by_prefix",
    "load_pretrained",
]
