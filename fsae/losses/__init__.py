"""Losses that other WSSS codebases import: pure tensors in, tensors out.

* :class:`FSAELoss` / :func:`fsae_loss`: the FSAE expansion term (docs/method.md §2).
* :class:`EMATeacher`: the exponential-moving-average teacher it needs.
* Base-method terms (pure functions, background = channel 0): :mod:`fsae.losses.seam`
  (classification, background suppression, ER, ECR), :mod:`fsae.losses.eps` (saliency),
  :mod:`fsae.losses.ppc` (pixel-to-prototype contrast), :mod:`fsae.losses.sipe`,
  :mod:`fsae.losses.mctformer`.
* :func:`attach_background`: CAM logits with a background channel from a background-free method's class maps
  and the image labels (how FSAE attaches to SIPE and MCTformer; :mod:`fsae.losses.attach`).

Three lines in a foreign training loop::

    fsae_loss, teacher = FSAELoss(), EMATeacher(model)                    # once
    loss = base_loss + fsae_loss(model(strong), teacher(weak), labels)  # every step
    teacher.update(model)                                               # after optimizer.step()
"""

from fsae.losses import eps, mctformer, ppc, seam, sipe
from fsae.losses.attach import attach_background
from fsae.losses.ema import EMATeacher, unwrap_model
from fsae.losses.expansion import FSAELoss, expansion_stats, fsae_loss

__all__ = [
    "EMATeacher",
    "FSAELoss",
    "attach_background",
    "eps",
    "expansion_stats",
    "fsae_loss",
    "mctformer",
    "ppc",
    "seam",
    "sipe",
    "unwrap_model",
]
