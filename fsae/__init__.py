"""fsae: weakly-supervised semantic segmentation with FSAE (WACV 2025).

Subpackages: :mod:`fsae.ops` (fused CAM ops, C++/CUDA with a PyTorch reference), :mod:`fsae.losses`
(FSAE loss, EMA teacher, base-method terms), :mod:`fsae.augment` (device-side perturbations),
:mod:`fsae.data` (VOC / COCO / toy), :mod:`fsae.models` (backbones, CAM networks), :mod:`fsae.methods`
(PPC, SIPE, MCTformer-V2 with FSAE), :mod:`fsae.engine` (Accelerate training).  See README.md and docs/method.md.
"""

__version__ = "0.1.0"
