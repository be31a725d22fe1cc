"""Backbones: timm models (``resnet38d`` registered here), local pretrained weights, freezing.

Importing :mod:`fsae.models` registers ``"resnet38d"`` (:mod:`fsae.models.resnet38d`) into timm's registry.
"""

from fsae.models.freeze import freeze_batchnorm, freeze_by_prefix
from fsae.models.pretrained import LoadReport, PretrainedLoadWarning, create_backbone, load_pretrained
from fsae.models.resnet38d import PPC_FROZEN_PREFIXES, ResNet38d

__all__ = [
    "PPC_FROZEN_PREFIXES",
    "LoadReport",
    "PretrainedLoadWarning",
    "ResNet38d",
    "create_backbone",
    "freeze_batchnorm",
    "freeze_by_prefix",
    "load_pretrained",
]
