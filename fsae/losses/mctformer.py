"""MCTformer-V2 losses (Xu et al., CVPR 2022; docs/method.md §5) as a pure tensor function."""

from __future__ import annotations

import torch

from fsae.losses.seam import multilabel_soft_margin
from fsae.ops import checks

__all__ = ["mctformer_loss"]


def mctformer_loss(
    token_logits: torch.Tensor,
    patch_logits: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """MCTformer-V2's two classification terms.

    * ``cls_token`` = multilabel soft margin on the class-token logits (the
      original averages each of the C class tokens over the embedding dimension).
    * ``cls_patch`` = multilabel soft margin on the global average pool of the
      raw (pre-ReLU) patch CAM from the conv head.

    Args:
        token_logits: ``(B, C)`` class-token logits.
        patch_logits: ``(B, C, h, w)`` patch-token CAM logits (no background channel).
        labels: ``(B, C)`` multi-hot.

    Returns:
        ``{"cls_token": ..., "cls_patch": ...}``: 0-d float32 tensors (float64 for float64 input).
    """
    checks.check_floating("token_logits", token_logits)
    checks.check_rank4("patch_logits", patch_logits, "(B, C, h, w)")
    if tuple(patch_logits.shape[:2]) != tuple(token_logits.shape):
        raise ValueError(
            f"patch_logits (B, C, h, w) must match token_logits {tuple(token_logits.shape)}, "
            f"got {tuple(patch_logits.shape)}"
        )
    return {
        "cls_token": multilabel_soft_margin(token_logits, labels),
        "cls_patch": multilabel_soft_margin(patch_logits.mean(dim=(2, 3)), labels),
    }
