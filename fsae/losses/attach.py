"""Attach FSAE to a method that has no background channel: class maps + image labels -> CAM logits.

FSAE (:class:`fsae.losses.FSAELoss`) supervises ``(B, C+1, h, w)`` logits with background at channel 0. Methods
such as SIPE and MCTformer produce ``C`` class maps and no background; :func:`attach_background` builds the logits
from them (docs/method.md §10, "SIPE and MCTformer-V2 with FSAE")::

    r_k = ReLU(m_k)                                    (B, C, h, w) raw class activations
    n_k = r_k / (max_hw r_k + 1e-5)                    the peak detached (detach_peak=True)
    n_k = n_k * sigmoid(s_k)                           with gate_logits s (detached): optional
    n_k = 0 for classes absent from ``labels``         with labels
    p   = [(1 - max_k n_k) ** bg_power, n_1, .., n_C]  background from the present classes
    z   = log(max(p, floor)) - log(floor)              every logit in [0, -log(floor)]

so ``softmax(z)`` is ``max(p, floor)`` normalised. Why each step:

* **labels.** Without them the background is ``1 - max`` over *all* maps, and every map is normalised to peak at 1
  wherever it is positive: where an absent class dominates, the background is suppressed and a weak present class
  becomes the teacher's confident label (measured on SIPE: half its confident pixels sat under an absent class).
  With the labels the absent maps are at the floor and the background is built from the present classes only.
  In training both the student and the teacher know the labels (FSAE's loss needs them anyway).
* **detach_peak.** Through the max-normalisation FSAE could "expand" a map by lowering its peak instead of raising
  its ring (measured on SIPE: 2 of 3 supervised peaks were pushed down); with the peak detached, the gradient at a
  pixel acts on that pixel's activation only.
* **the shift by -log(floor).** FSAE's original label masking (``absent="zero"``, docs/method.md §2) sets absent
  classes' logits to 0: here 0 is the smallest logit, the one of a map at the floor, so "zero" means "absent", as
  intended; with plain ``log p <= 0`` logits, 0 would be the *largest*. ``absent="exclude"`` works unchanged.
* **reaching conf_threshold = 0.95.** With one active class ``conf = n / (n + (1 - n) ** bg_power + (C' - 1) floor)``
  (``C'`` the classes at the floor): ``n >= ~0.95`` with ``bg_power = 1``, ``n >= ~0.39`` with 8; the background is
  confident where every present map is below ~0.05. ``floor`` must stay well below ``0.05 / C`` for 0.95 to be
  reachable at all (1e-4: C * floor = 0.002 on VOC, 0.008 on COCO). Two present classes that share a pixel split
  its probability: such a pixel is confident for neither.

Three lines in a foreign method (``cams (B, C, h, w)`` from any network)::

    from fsae.losses import FSAELoss, attach_background
    student = attach_background(model(strong)["cams"], labels)
    loss = base_loss + FSAELoss()(student, attach_background(teacher(weak)["cams"], labels), labels)
"""

from __future__ import annotations

import math

import torch

__all__ = ["attach_background"]


def attach_background(
    maps: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    gate_logits: torch.Tensor | None = None,
    bg_power: float = 1.0,
    floor: float = 1e-4,
    detach_peak: bool = True,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``(B, C+1, h, w)`` CAM logits (background = channel 0) from ``C`` class maps (module docstring).

    Args:
        maps: ``(B, C, h, w)`` raw class activations (ReLU is applied here), any float dtype; computed in float32.
        labels: ``(B, C)`` multi-hot image labels (float or bool), or None (label-free: the background is
            ``1 - max`` over all maps, for inference without labels).
        gate_logits: ``(B, C)`` image-level logits; each map is scaled by their detached sigmoid (the class claims
            pixels only as far as the image classifier believes it present). None: no gate.
        bg_power: exponent of the background map (> 0).
        floor: probability floor in (0, 1): the probability of a silent or absent map, logit 0.
        detach_peak: normalise by the detached per-map peak (no gradient through the max).
        eps: added to the peak (1e-5, as :func:`fsae.ops.cam_normalize`).

    Returns:
        float32 logits ``(B, C+1, h, w)`` in ``[0, -log(floor)]`` (float64 for float64 maps), differentiable
        w.r.t. ``maps``.
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must be (B, C, h, w), got shape {tuple(maps.shape)}")
    b, c = maps.shape[:2]
    for name, value in (("labels", labels), ("gate_logits", gate_logits)):
        if value is not None and tuple(value.shape) != (b, c):
            raise ValueError(f"{name} must have shape (B, C) = ({b}, {c}), got {tuple(value.shape)}")
    if not (isinstance(bg_power, (int, float)) and bg_power > 0):
        raise ValueError(f"bg_power must be a positive number, got {bg_power!r}")
    if not (isinstance(floor, (int, float)) and 0 < floor < 1):
        raise ValueError(f"floor must be a number in (0, 1), got {floor!r}")
    dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
    with torch.autocast(maps.device.type, enabled=False):
        active = maps.to(dtype).relu()
        peak = active.amax(dim=(2, 3), keepdim=True)
        if detach_peak:
            peak = peak.detach()
        n = active / (peak + eps)
        if gate_logits is not None:
            n = n * gate_logits.detach().to(dtype).sigmoid()[:, :, None, None]
        if labels is not None:
            n = n * (labels.detach() != 0).to(dtype)[:, :, None, None]
        background = (1.0 - n.amax(dim=1, keepdim=True)).clamp_min(0.0)
        if bg_power != 1.0:
            background = background.clamp_min(floor).pow(bg_power)
        p = torch.cat([background, n], dim=1)
        return p.clamp_min(floor).log() - math.log(floor)
