"""Fused CAM ops: normalisation, seeds, FSAE expansion masks and loss.

The four ops run in the compiled extension ``fsae._C`` (C++ kernels for the
CPU, CUDA kernels when the build found a CUDA toolkit) and fall back to the
pure PyTorch reference (:mod:`fsae.ops.reference`) with a one-time warning
when it is missing.  ``FSAE_DISABLE_EXTENSION=1`` forces the reference.
The operators ``torch.ops.fsae.*`` carry their own autograd formulas and fake
kernels, so they are differentiable and ``torch.compile(fullgraph=True)``
traces through them (and through these functions) without graph breaks.
Every option after the tensors is keyword-only.

>>> import torch, fsae.ops
>>> logits = torch.randn(2, 21, 56, 56)            # (B, C+1, h, w), channel 0 = background
>>> labels = torch.zeros(2, 20); labels[:, 14] = 1 # (B, C) multi-hot
>>> loss, masks = fsae.ops.expansion_loss(logits.requires_grad_(), logits.detach(), labels)
>>> masks.mask.shape
torch.Size([2, 56, 56])
"""

from fsae.ops._extension import build_info, has_extension
from fsae.ops.functional import (
    ExpansionMasks,
    cam_normalize,
    cams_to_labels,
    expansion_loss,
    expansion_masks,
)

__all__ = [
    "ExpansionMasks",
    "build_info",
    "cam_normalize",
    "cams_to_labels",
    "expansion_loss",
    "expansion_masks",
    "has_extension",
]
