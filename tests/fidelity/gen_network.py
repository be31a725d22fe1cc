"""Fixture: the authors' PPC network layout and its CAM logits with the deterministic weights.

Writes ``ppc_layout.json`` (their ``Net(21).state_dict()`` names and shapes, read by :mod:`fidelity_weights`) and
``ppc_network.npz``: ``image`` (a normalised 1x3x96x128 crop of ``chelsea.jpg``), the eval-mode ``forward_cam``
logits ``cam`` (background last, as theirs), and the train-mode ``forward`` outputs with dropout off
(``pred``, ``cam_train``, ``cam_rv``, ``feat``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from fidelity_weights import FIXTURES, authors_state_dict, write_layout
from PIL import Image
from upstream import authors_code

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo_crop(name: str = "chelsea.jpg", box: tuple[int, int, int, int] = (150, 60, 278, 156)) -> torch.Tensor:
    """``(1, 3, 96, 128)`` float32: the photo's ``box`` (left, top, right, bottom), ImageNet-normalised."""
    array = np.asarray(Image.open(FIXTURES / name).convert("RGB").crop(box), dtype=np.float32) / 255.0
    array = (array - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())[None]


def authors_network(upstream: Path, seed: int = 0) -> torch.nn.Module:
    """Their ``network.resnet38_contrast.Net(21)`` with :func:`fidelity_weights.authors_state_dict` (seed)."""
    import network.resnet38_contrast as contrast  # the authors' module, from the checkout

    net = contrast.Net(num_classes=21)
    net.load_state_dict(authors_state_dict(seed), strict=True)
    return net


def generate(upstream: Path, out: Path) -> list[Path]:
    with authors_code(upstream):
        import network.resnet38_contrast as contrast

        write_layout(contrast.Net(num_classes=21).state_dict(), out / "ppc_layout.json")
        net = authors_network(upstream)
        image = photo_crop()
        with torch.no_grad():
            net.eval()
            cam = net.forward_cam(image)
            net.train()  # their train(): BatchNorm stays frozen
            for module in net.modules():
                if isinstance(module, torch.nn.Dropout2d):
                    module.p = 0.0
            pred, cam_train, _, cam_rv, feat = net(image)
    path = out / "ppc_network.npz"
    np.savez_compressed(
        path, image=image.numpy(), cam=cam.numpy(), pred=pred.numpy(), cam_train=cam_train.numpy(),
        cam_rv=cam_rv.numpy(), feat=feat.numpy(),
    )  # fmt: skip
    return [out / "ppc_layout.json", path]
