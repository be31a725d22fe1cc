"""Fixture: the authors' pseudo-label inference and evaluation on two downscaled photos.

Runs, from the checkout, the authors' own pipeline as their ``script/voc_ppc0.sh`` does, with their network
(``gen_network.authors_network``: :mod:`fidelity_weights` seed 0):

* ``contrast_infer.infer_cam_mp`` (``predict_cam``: PIL-bicubic input scales, flips, softmax, upsample; sum and
  max-normalisation; seed ``argmax([thr, cams])``; ``_crf_with_alpha``) with the scales of their ``__main__``
  and the ``--thr`` / ``--crf_t`` / ``--crf_alpha`` of their script, read from those files;
* ``pseudo_label_gen.do_save`` (argmax of the CRF marginals: the CRF masks);
* ``eval.do_python_eval``: the seed threshold curve over ``t = i / 100``, ``i < --max_th`` (``--type npy
  --curve``), and the mIoU of the seed and CRF PNGs (``--type png``), on synthetic ground truths.

Inputs (committed in the ``.npz``): ``chelsea.jpg`` downscaled to 181x120 (an odd width: ``round`` at the 0.5
and 1.5 scales meets halves) with one label, ``coffee.jpg`` to 192x128 with two (:data:`PHOTOS`), both
PIL-Lanczos resized from the JPEGs and handed to their code losslessly (PNG bytes under the ``<id>.jpg`` name
it opens); ground truths: an ellipse per labelled class, a 2-pixel 255 (ignored) band around each, background
elsewhere.  Their ``imageio.imwrite`` (not installed here) is replaced by a PIL PNG writer of the same array.

``infer.npz`` keys, per photo ``<p>`` in ``ids``: ``<p>_image`` uint8 (H, W, 3), ``<p>_labels`` float32 (20,),
``<p>_gt`` uint8 (H, W), ``<p>_label_ids`` int64 (K,) (0-based, present classes), ``<p>_cams`` uint16 (K, H, W):
their normalised CAMs of the present classes as ``round(cam * 65535)`` (quantisation error <= 7.7e-6),
``<p>_seed`` and ``<p>_mask`` uint8 (H, W): their seed PNG and CRF mask PNG (classes 0..20); and ``scales``,
``thr``, ``crf_t``, ``crf_alpha``, ``thresholds`` (float64 (T,)), ``curve_miou`` (float64 (T,), their mIoU in
percent at each t), ``seed_miou`` / ``mask_miou`` (their png-mode mIoU in percent).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from fidelity_weights import FIXTURES, authors_state_dict
from PIL import Image
from upstream import authors_code

# photo -> (file, downscaled (width, height), 0-based VOC class ids).  The weights are random, so the classes'
# names mean nothing: these are classes whose CAMs cross thr = 0.22 on 40-60 % of the pixels (a single class on
# one photo, two competing ones on the other), so that seeds, CRF masks and the curve have structure.
PHOTOS = {
    "chelsea": ("chelsea.jpg", (181, 120), [18]),  # "sofa"
    "coffee": ("coffee.jpg", (192, 128), [9, 16]),  # "chair", "pottedplant"
}


def photo(name: str) -> np.ndarray:
    """``uint8 (H, W, 3)``: the committed photo ``name`` of :data:`PHOTOS`, Lanczos-downscaled."""
    file, size, _ = PHOTOS[name]
    with Image.open(FIXTURES / file) as image:
        return np.asarray(image.convert("RGB").resize(size, resample=Image.LANCZOS), dtype=np.uint8)


def ground_truth(height: int, width: int, label_ids: list[int]) -> np.ndarray:
    """``uint8 (H, W)``: one ellipse per class (1-based ids), a 2-px 255 band around each, 0 elsewhere."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    gt = np.zeros((height, width), np.uint8)
    count = len(label_ids)
    for i, cls in enumerate(label_ids):
        cx, cy = width * (i + 1) / (count + 1), height * (0.45 + 0.1 * i)
        rx, ry = width / (2.2 * count + 0.6), height * 0.32
        r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
        gt[(r <= 1.0 + 2.0 / min(rx, ry)) & (gt == 0)] = 255
        gt[r <= 1.0] = cls + 1
    return gt


def their_settings(upstream: Path) -> dict[str, object]:
    """``scales`` from ``contrast_infer.py``'s ``__main__``; ``thr``, ``crf_t``, ``crf_alpha``, ``max_th`` from
    the first ``contrast_infer.py`` / ``eval.py --curve`` calls of ``script/voc_ppc0.sh``."""
    tree = ast.parse((upstream / "contrast_infer.py").read_text())
    scales = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "scales" for t in node.targets)
    )
    script = (upstream / "script" / "voc_ppc0.sh").read_text()
    infer_call = script[script.index("contrast_infer.py") :]
    eval_call = script[script.index("eval.py") :]

    def option(text: str, name: str) -> str:
        return re.search(rf"--{name}\s+(\S+)", text).group(1)

    return {
        "scales": tuple(float(s) for s in scales),
        "thr": float(option(infer_call, "thr")),
        "crf_t": int(option(infer_call, "crf_t")),
        "crf_alpha": int(option(infer_call, "crf_alpha")),
        "max_th": int(option(eval_call, "max_th")),
    }


def _png_writer() -> types.SimpleNamespace:
    """Stands for ``imageio`` (``imwrite(path, uint8 array)`` -> an 8-bit PNG of the array)."""
    return types.SimpleNamespace(imwrite=lambda path, array: Image.fromarray(np.asarray(array)).save(path))


def generate(upstream: Path, out: Path) -> list[Path]:
    settings = their_settings(upstream)
    ids = list(PHOTOS)
    inputs = {p: photo(p) for p in ids}
    labels = {p: np.zeros(20, np.float32) for p in ids}
    for p in ids:
        labels[p][PHOTOS[p][2]] = 1.0
    gts = {p: ground_truth(*inputs[p].shape[:2], PHOTOS[p][2]) for p in ids}
    with tempfile.TemporaryDirectory() as tmp, authors_code(upstream):
        tmp = Path(tmp)
        folders = {k: tmp / k for k in ("img", "gt", "cam_npy", "cam_png", "crf_npy", "crf_seg")}
        for folder in folders.values():
            folder.mkdir()
        crf_folder = folders["crf_npy"] / f"crf_{settings['crf_t']}_{settings['crf_alpha']}"
        crf_folder.mkdir()
        for p in ids:
            Image.fromarray(inputs[p]).save(folders["img"] / f"{p}.jpg", format="PNG")  # lossless, opened by content
            Image.fromarray(gts[p]).save(folders["gt"] / f"{p}.png")
        weights = tmp / "weights.pth"
        torch.save(authors_state_dict(0), weights)

        import torchvision

        infer = importlib.import_module("contrast_infer")
        infer.imageio = _png_writer()
        infer.scales = settings["scales"]
        infer.transform = torchvision.transforms.Compose([np.asarray, infer.Normalize(), infer.HWC_to_CHW])
        infer.args = argparse.Namespace(
            network="network.resnet38_contrast", weights=str(weights), num_classes=21, network_type="contrast",
            img_root=str(folders["img"]), cam_npy=str(folders["cam_npy"]), cam_png=str(folders["cam_png"]),
            crf=str(folders["crf_npy"]), crf_list=[(str(crf_folder), settings["crf_t"], settings["crf_alpha"])],
            thr=settings["thr"],
        )  # fmt: skip
        infer.infer_cam_mp(0, ids, [labels[p] for p in ids], 0, 21)

        label_gen = importlib.import_module("pseudo_label_gen")
        label_gen.imageio = _png_writer()
        label_gen.do_save(str(crf_folder), str(folders["crf_seg"]), ids, num_process=2, num_class=21)

        evaluation = importlib.import_module("eval")
        thresholds = np.array([i / 100.0 for i in range(settings["max_th"])])
        curve = [
            evaluation.do_python_eval(str(folders["cam_npy"]), str(folders["gt"]), ids, 21, "npy", t)["mIoU"]
            for t in thresholds
        ]
        seed_miou = evaluation.do_python_eval(str(folders["cam_png"]), str(folders["gt"]), ids, 21, "png")["mIoU"]
        mask_miou = evaluation.do_python_eval(str(folders["crf_seg"]), str(folders["gt"]), ids, 21, "png")["mIoU"]

        arrays: dict[str, np.ndarray] = {}
        for p in ids:
            cam_dict = np.load(folders["cam_npy"] / f"{p}.npy", allow_pickle=True).item()
            keys = sorted(cam_dict)
            cams = np.stack([cam_dict[k] for k in keys]).astype(np.float64)
            assert cams.min() >= 0 and cams.max() < 1
            arrays[f"{p}_image"] = inputs[p]
            arrays[f"{p}_labels"] = labels[p]
            arrays[f"{p}_gt"] = gts[p]
            arrays[f"{p}_label_ids"] = np.asarray(keys, np.int64)
            arrays[f"{p}_cams"] = np.round(cams * 65535).astype(np.uint16)
            arrays[f"{p}_seed"] = np.asarray(Image.open(folders["cam_png"] / f"{p}.png"), np.uint8)
            arrays[f"{p}_mask"] = np.asarray(Image.open(folders["crf_seg"] / f"{p}.png"), np.uint8)
        for name in ("contrast_infer", "pseudo_label_gen", "eval"):  # their top-level scripts: not left behind
            sys.modules.pop(name, None)
    path = out / "infer.npz"
    np.savez_compressed(
        path, ids=np.asarray(ids), scales=np.asarray(settings["scales"]), thr=settings["thr"],
        crf_t=settings["crf_t"], crf_alpha=settings["crf_alpha"], thresholds=thresholds,
        curve_miou=np.asarray(curve, np.float64), seed_miou=seed_miou, mask_miou=mask_miou, **arrays,
    )  # fmt: skip
    return [path]
