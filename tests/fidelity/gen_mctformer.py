"""Fixtures: the authors' MCTformer-V2 (github ``xulianuwa/MCTformer``, ``models.py`` / ``engine.py`` /
``datasets.py``) at image sizes that are not multiples of 16, and their pseudo-label CAM pipeline.

Run by ``regenerate.py --mctformer DIR``. Writes

* ``mctformer_layout.json``: the names and shapes of their ``deit_small_MCTformerV2_patch16_224(num_classes=20)``
  state dict (the deterministic weights of :func:`fidelity_weights.authors_state_dict` are built from it);
* ``mctformer_network.npz``: ``image`` (a uint8 ``(75, 100, 3)`` crop of ``chelsea.jpg``) and, for every input
  ``s`` in ``sizes`` (``(h, w)`` rows: the crop, its PIL-bicubic resizes at scales 0.5 and 1.5 as their
  ``VOC12DatasetMS`` makes them, a square 96x96 and a 224x238 one on the pretraining grid), their eval-mode
  ``model(x, return_att=True, n_layers=3, attention_type="fused")`` outputs ``token_{i}`` (class-token logits),
  ``fused_{i}`` (fused CAM at the grid) and ``refined_{i}`` (the patch-attention refinement of their
  ``generate_attention_maps_ms``), plus ``patch_{i}`` (their plain forward's patch logits);
* ``mctformer_cams.npz``: their ``generate_attention_maps_ms`` end to end (``--attention-type fused
  --layer-index 3 --patch-attn-refine --visualize-cls-attn``: the V2 recipe of ``run_coco.sh``) on that image
  saved losslessly, for ``--scales 1.0`` (``cams_1``) and ``--scales 1.0 0.5 1.5`` (``cams_ms``): ``(K, 75, 100)``
  float32 maps of the ``label_ids`` present classes (their saved ``.npy`` dict), ``labels (20,)``;
* ``mctformer_views.npz``: their training transform (``datasets.build_transform(True, args)`` with ``main.py``'s
  default arguments, ``--input-size 64`` to keep the fixture small) on ``image`` for ``VIEW_DRAWS`` draws, each
  drawn as :class:`fsae.data.transforms.TimmView` seeds timm's three random streams (:func:`view_seeds`):
  ``pil_{i}`` the uint8 view after its PIL stages, ``box_{i}`` the erased box ``(y, x, h, w)`` (zeros: none) and
  ``erased_{i}`` their final tensor's values in it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from fidelity_weights import FIXTURES, authors_state_dict, write_layout
from PIL import Image
from upstream import mctformer_code

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LAYOUT = FIXTURES / "mctformer_layout.json"
BOX = (150, 50, 250, 125)  # (left, top, right, bottom) of chelsea.jpg: 75 x 100
LABEL_IDS = (6, 7, 14)  # present classes; 7 has an all-zero fused map at scale 1.0 with these weights (edge case)
SQUARE, WIDE = (96, 96), (224, 238)
VIEW_SIZE, VIEW_DRAWS = 64, 12


def view_seeds(draw: int) -> list[int]:
    """The three seeds (Python ``random``, NumPy + torch, the erasing's torch draw) of draw ``draw``: what
    :class:`fsae.data.transforms.TimmView` takes from the sample generator ``default_rng([0, 0, draw])``."""
    return [int(v) for v in np.random.default_rng([0, 0, draw]).integers(0, 2**31, size=3)]


def photo() -> np.ndarray:
    """``(75, 100, 3)`` uint8 crop of ``chelsea.jpg``."""
    return np.asarray(Image.open(FIXTURES / "chelsea.jpg").convert("RGB").crop(BOX)).copy()


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """Their ``ToTensor`` + ``Normalize`` of an ``(H, W, 3)`` uint8 array: ``(1, 3, H, W)`` float32."""
    from torchvision import transforms

    t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    return t(Image.fromarray(rgb))[None]


def sizes_and_inputs(rgb: np.ndarray) -> list[np.ndarray]:
    """The crop, its scale-0.5 / 1.5 PIL-bicubic resizes (their ``round(side * s)``), a square and a wide photo."""
    image = Image.fromarray(rgb)
    out = [rgb]
    for s in (0.5, 1.5):
        out.append(np.asarray(image.resize((round(image.size[0] * s), round(image.size[1] * s)), Image.BICUBIC)))
    big = Image.open(FIXTURES / "chelsea.jpg").convert("RGB")
    out.append(np.asarray(big.resize((SQUARE[1], SQUARE[0]), Image.BICUBIC)))
    out.append(np.asarray(big.resize((WIDE[1], WIDE[0]), Image.BICUBIC)))
    return out


def authors_network(seed: int = 0) -> torch.nn.Module:
    import models  # the authors' module, from the checkout

    net = models.deit_small_MCTformerV2_patch16_224(num_classes=20, drop_rate=0.0, drop_path_rate=0.1)
    net.load_state_dict(authors_state_dict(seed, LAYOUT), strict=True)
    return net.eval()


def run_their_cam_generation(net: torch.nn.Module, rgb: np.ndarray, scales: tuple[float, ...]) -> dict[int, np.ndarray]:
    """Their ``generate_attention_maps_ms`` on ``rgb`` (one image in a VOC-like folder), returning their dict."""
    import datasets as their_datasets
    import engine

    labels = np.zeros(20, np.float32)
    labels[list(LABEL_IDS)] = 1.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "JPEGImages").mkdir()
        Image.fromarray(rgb).save(root / "JPEGImages" / "img.jpg", format="PNG")  # lossless, PIL reads by content
        (root / "list").mkdir()
        (root / "list" / "train_aug_id.txt").write_text("img\n")
        (root / "voc12").mkdir()
        np.save(root / "voc12" / "cls_labels.npy", {"img": labels})
        args = SimpleNamespace(
            data_set="VOC12MS", img_list=str(root / "list"), data_path=str(root), scales=list(scales),
            input_size=224, gen_attention_maps=True, model="deit_small_MCTformerV2_patch16_224", nb_classes=20,
            patch_size=16, layer_index=3, attention_type="fused", patch_attn_refine=True, visualize_cls_attn=True,
            attention_dir=None, cam_npy_dir=str(root / "npy"), out_crf=None,
        )  # fmt: skip
        cwd = os.getcwd()
        os.chdir(root)  # their label file path is relative: voc12/cls_labels.npy
        try:
            dataset, _ = their_datasets.build_dataset(is_train=False, gen_attn=True, args=args)
            loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=0)
            engine.generate_attention_maps_ms(loader, net, torch.device("cpu"), args)
        finally:
            os.chdir(cwd)
        return np.load(root / "npy" / "img.npy", allow_pickle=True).item()


def generate(upstream: Path, out: Path) -> list[Path]:
    torch.manual_seed(0)
    with mctformer_code(upstream):
        import models

        write_layout(
            models.deit_small_MCTformerV2_patch16_224(num_classes=20).state_dict(), out / "mctformer_layout.json"
        )
        net = authors_network()
        rgb = photo()
        arrays: dict[str, np.ndarray] = {"image": rgb}
        shapes = []
        with torch.no_grad():
            for i, array in enumerate(sizes_and_inputs(rgb)):
                x = to_input(array)
                shapes.append(x.shape[-2:])
                token, fused, patch_attn = net(x, return_att=True, n_layers=3, attention_type="fused")
                patch_attn = patch_attn.sum(0)  # as their generate_attention_maps_ms, all 12 layers
                b, c, h, w = fused.shape
                refined = torch.matmul(patch_attn.unsqueeze(1), fused.view(b, c, -1, 1)).reshape(b, c, h, w)
                arrays[f"token_{i}"], arrays[f"fused_{i}"] = token.numpy(), fused.numpy()
                arrays[f"refined_{i}"], arrays[f"patch_{i}"] = refined.numpy(), net(x)[1].numpy()
        arrays["sizes"] = np.asarray(shapes, np.int64)
        network = out / "mctformer_network.npz"
        np.savez_compressed(network, **arrays)

        cams: dict[str, np.ndarray] = {"labels": np.isin(np.arange(20), LABEL_IDS).astype(np.float32)}
        for name, scales in (("cams_1", (1.0,)), ("cams_ms", (1.0, 0.5, 1.5))):
            maps = run_their_cam_generation(net, rgb, scales)
            cams["label_ids"] = np.asarray(sorted(maps), np.int64)
            cams[name] = np.stack([np.asarray(maps[k], np.float32) for k in sorted(maps)])
        path = out / "mctformer_cams.npz"
        np.savez_compressed(path, **cams)
        views = out / "mctformer_views.npz"
        np.savez_compressed(views, **their_views(rgb))
    return [out / "mctformer_layout.json", network, path, views]


def their_views(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Their training transform, stage by stage (module docstring), on ``rgb`` for every draw."""
    import random

    import datasets as their_datasets
    import main as their_main

    args = their_main.get_args_parser().parse_args([])  # main.py's defaults: --aa, --reprob, --color-jitter, ...
    args.input_size = VIEW_SIZE
    transform = their_datasets.build_transform(True, args)
    names = [type(t).__name__ for t in transform.transforms]
    assert names[-2:] == ["Normalize", "RandomErasing"] and "ToTensor" in names[-3], names
    out: dict[str, np.ndarray] = {"view_size": np.asarray(VIEW_SIZE)}
    for draw in range(VIEW_DRAWS):
        s_py, s_np, s_erase = view_seeds(draw)
        random.seed(s_py)
        np.random.seed(s_np)
        torch.manual_seed(s_np)
        image = Image.fromarray(rgb)
        for t in transform.transforms[:-3]:
            image = t(image)
        out[f"pil_{draw}"] = np.asarray(image, dtype=np.uint8)
        tensor = transform.transforms[-2](transform.transforms[-3](image))
        before = tensor.clone()
        torch.manual_seed(s_erase)
        tensor = transform.transforms[-1](tensor)
        changed = (tensor != before).any(dim=0)
        rows, cols = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
        box = (int(rows[0]), int(cols[0]), len(rows), len(cols)) if len(rows) else (0, 0, 0, 0)
        y, x, h, w = box
        out[f"box_{draw}"] = np.asarray(box, np.int64)
        out[f"erased_{draw}"] = tensor[:, y : y + h, x : x + w].numpy()
    return out
