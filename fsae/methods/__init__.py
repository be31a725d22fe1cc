"""Base WSSS methods with FSAE attached: ``build_method(name, num_classes=..., **options)``.

=========  ====================  =========================================================
name       class                 network
=========  ====================  =========================================================
ppc        :class:`PPCMethod`    ResNet-38 (resnet38d) + fc8 with background, PCM, projection
sipe       ``SIPEMethod``        ResNet-50 OS16, image-specific prototypes (IS-CAM)
mctformer  ``MCTformerMethod``   DeiT-S/16 with C class tokens, conv head, attention CAMs
=========  ====================  =========================================================

Methods live in a registry (:mod:`fsae.methods.registry`): :func:`register_method` is a class decorator,
:func:`list_methods` the names; a method defined outside fsae is registered when its module is imported (the
config key ``method.module``), and then trains and makes pseudo-labels like the built-ins.

Every method implements :class:`~fsae.methods.base.WSSSMethod`: ``training_step`` (base losses + the
student's CAM logits on the strong view), ``cam_logits`` (B, C+1, h, w) and ``parameter_groups``.
"""

from __future__ import annotations

from fsae._optional import check

check("fsae.methods", "train", "timm", "safetensors")

import fsae.models  # noqa: E402, F401  (registers resnet38d into timm's registry)
from fsae.methods.base import StepOutput, WSSSMethod  # noqa: E402
from fsae.methods.registry import (  # noqa: E402
    build_method,
    get_method,
    import_method_module,
    list_methods,
    register_method,
)

__all__ = [
    "StepOutput",
    "WSSSMethod",
    "build_method",
    "get_method",
    "import_method_module",
    "list_methods",
    "register_method",
]
