"""Batched photometric perturbations of FSAE's weak and strong views (docs/method.md §3).

* :class:`WeakPerturbation`: torchvision-style ColorJitter, per sample.
* :class:`StrongPerturbation`: a fresh ColorJitter, Gaussian blur (p = 0.5), and
  RandAugment with ``n_ops`` ops per sample drawn with replacement from the 9
  photometric ops of :data:`RANDAUGMENT_OPS`.
* :class:`TrainingViews` (:mod:`fsae.augment.views`): the trainer's entry point, both views of a loader
  batch (whole-image jitter on a canvas and crop, as the authors, or on crops).

Two arithmetics (``arithmetic=``): ``"float"``, continuous ops (:mod:`fsae.augment.functional`), and
``"uint8"``, every op on 8-bit levels with PIL's / torchvision's exact rounding (:mod:`fsae.augment.levels`),
the authors' PIL pipeline (:meth:`StrongPerturbation.authors`).

Images enter as float ``(B, 3, H, W)`` RGB in ``[0, 1]`` on the training
device (ImageNet normalisation comes after); the output is a new tensor of the
same shape, dtype and device, pixel-aligned with the input (no geometry).
Random choices come from a CPU ``torch.Generator`` (``seed=`` / ``generator=``
/ per-call ``generator``), drawn by ``generate_parameters`` and applied by
``apply``, so views are reproducible and replayable.  The batched ops with
per-sample magnitudes live in :mod:`fsae.augment.functional`.

Example:
    >>> import torch
    >>> from fsae.augment import StrongPerturbation, WeakPerturbation
    >>> weak, strong = WeakPerturbation(seed=0), StrongPerturbation(seed=1)
    >>> crops = torch.rand(8, 3, 64, 64)
    >>> weak_view, strong_view = weak(crops), strong(crops)
    >>> strong_view.shape
    torch.Size([8, 3, 64, 64])
"""

from . import functional, levels
from .functional import imagenet_normalize
from .perturbation import JITTER_COMPONENTS, RANDAUGMENT_OPS, StrongPerturbation, WeakPerturbation
from .views import TrainingViews

__all__ = [
    "imagenet_normalize",
    "JITTER_COMPONENTS",
    "RANDAUGMENT_OPS",
    "StrongPerturbation",
    "TrainingViews",
    "WeakPerturbation",
    "functional",
    "levels",
]
