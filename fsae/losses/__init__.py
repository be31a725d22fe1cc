"""Losses that other WSSS codebases import: pure tensors in, tensors out.

* :class:`FSAELoss` / :func:`fsae_loss`: the FSAE expansion term (METHOD.md §2).
* :class:`EMATeacher`: the exponential-moving-average teacher it needs.

Three lines in a foreign training loop::

    fsae_loss, teacher = FSAELoss(), EMATeacher(model)                    # once
    loss = base_loss + fsae_loss(model(strong), teacher(weak), labels)  # every step
    teacher.update(model)                                               # after optimizer.step()
"""

from fsae.losses.ema import EMATeacher, unwrap_model
from fsae.losses.expansion import FSAELoss, expansion_stats, fsae_loss

__all__ = ["EMATeacher", "FSAELoss", "expansion_stats", "fsae_loss", "unwrap_model"]
