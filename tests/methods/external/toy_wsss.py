"""A WSSS method and a dataset defined outside fsae, registered through the public API only.

The contract test (tests/methods/test_contract.py) sweeps it with the built-in methods, and
tests/methods/test_external_method.py trains it with ``recipes/voc_fsae.py --set method.module=toy_wsss`` and
makes its pseudo-labels, with no file of fsae edited. docs/attach_fsae.md walks through the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsae.data import VOCSegmentation, register_dataset
from fsae.losses import attach_background
from fsae.methods import StepOutput, WSSSMethod, register_method


@register_method("toy_cam")
class ToyCAMMethod(WSSSMethod):
    """A background-free CAM network: a small conv stem (stride 4) and a 1x1 classifier giving ``C`` class maps;
    its base loss is the multi-label soft margin on their global average; FSAE attaches through
    :func:`fsae.losses.attach_background`."""

    tiny_options = {"width": 8}

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "toy",
        pretrained: bool = False,
        pretrained_path: str | None = None,
        width: int = 16,
    ) -> None:
        super().__init__()
        if pretrained or pretrained_path:
            raise ValueError("the toy method has no pretrained weights")
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(2 * width, num_classes, 1, bias=False)

    def class_maps(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H/4, W/4)`` raw class activations."""
        return self.classifier(self.features(images))

    def training_step(self, images, labels, strong=None, images_small=None, saliency=None, generator=None):
        maps = self.class_maps(images)
        losses = {"cls": F.multilabel_soft_margin_loss(maps.mean(dim=(2, 3)), labels)}
        strong_logits = self.cam_logits(strong, labels) if strong is not None else None
        return StepOutput(losses=losses, strong_logits=strong_logits)

    def cam_logits(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return attach_background(self.class_maps(images), labels)

    def parameter_groups(self) -> list[dict]:
        return [
            {"params": list(self.features.parameters()), "lr_mult": 1.0},
            {"params": list(self.classifier.parameters()), "lr_mult": 10.0},
        ]


@register_dataset("toy_voc")
class ToyVOC(VOCSegmentation):
    """VOC's layout under another name: a dataset registered from outside fsae."""
