"""Base WSSS methods with FSAE attached: ``build_method(name, num_classes=..., **options)``.

=========  ====================  =========================================================
name       class                 network
=========  ====================  =========================================================
ppc        :class:`PPCMethod`    ResNet-38 (resnet38d) + fc8 with background, PCM, projection
sipe       ``SIPEMethod``        ResNet-50 OS16, image-specific prototypes (IS-CAM)
mctformer  ``MCTformerMethod``   DeiT-S/16 with C class tokens, conv head, attention CAMs
=========  ====================  =========================================================

Every method implements :class:`~fsae.methods.base.WSSSMethod`: ``training_step`` (base losses + the
student's CAM logits on the strong view), ``cam_logits`` (B, C+1, h, w) and ``parameter_groups``.
"""

from __future__ import annotations

import importlib

from fsae._optional import check

check("fsae.methods", "train", "timm", "safetensors")

from fsae.methods.base import StepOutput, WSSSMethod

__all__ = ["METHODS", "StepOutput", "WSSSMethod", "build_method"]

# name -> "module:class", imported on use.
METHODS = {
    "ppc": "fsae.methods.ppc:PPCMethod",
    "sipe": "fsae.methods.sipe:SIPEMethod",
    "mctformer": "fsae.methods.mctformer:MCTformerMethod",
}


def build_method(name: str, num_classes: int = 20, **options: object) -> WSSSMethod:
    """The method ``name`` (``ppc``, ``sipe``, ``mctformer``) for ``num_classes`` foreground classes."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)(num_classes=num_classes, **options)
