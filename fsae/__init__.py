"""fsae: weakly-supervised semantic segmentation with FSAE (WACV 2025).

Subpackages: :mod:`fsae.ops` (fused CAM ops, C++/CUDA with a PyTorch
reference).  See DESIGN.md for the public API and conventions.
"""

__version__ = "0.1.0"
