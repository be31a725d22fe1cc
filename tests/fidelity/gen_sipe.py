"""Fixtures: the authors' SIPE network, two training steps of their loop, their step counts and pseudo-label CAMs.

Runs the authors' code from a checkout of github ``chenqi1126/SIPE`` (``regenerate.py --sipe DIR``) on the CPU,
with their ``network.resnet50_SIPE.Net(21)`` (the deterministic weights of :mod:`fidelity_sipe`; their
``resnet50(pretrained=True)`` download is handed the freshly built network's own tensors, which the seeded
weights then replace):

* ``sipe_layout.json`` / ``sipe_aliases.json``: their state dict's canonical names and shapes, and its aliases;
* ``sipe_network.npz``: ``Net.forward(img, valid_mask_lowres)`` on :func:`fidelity_sipe.step_inputs` (the
  valid mask times the labels, resized by nearest to ``(h // 16, w // 16)`` as their loop does): ``score``,
  ``cam`` (their ``norm_cam``), ``seeds``, ``IS_cam``, ``probs`` and a summary of ``prototypes``;
* ``sipe_step.npz``: two iterations of their training loop body on that batch (``lossCLS``, ``lossGSC``,
  backward, ``clip_grad_norm_(model.parameters(), max_norm=1)``, their ``PolyOptimizerSGD`` with lr 0.1, weight
  decay 1e-4, 10x for the new layers, ``max_step = 10``): ``loss_cls_<k>``, ``loss_gsc_<k>``, ``norm_<k>`` (the
  norm before clipping), ``lr_<k>`` (each group's lr used), ``grad_<k>/<name>`` (the clipped gradients),
  ``update/<name>`` (the change over both steps) as :func:`fidelity_step.summarise`; and the optimizer's
  ``momentum`` / ``weight_decay`` per group as it runs (``param_groups``);
* ``sipe_steps.json``: their ``max_step = (len(train_dataset) // batch_size) * max_epoches`` for VOC and COCO from
  their own list files and argparse defaults;
* ``sipe_cams.npz``: their ``make_cam._work`` (the multi-scale ``VOC12ClsDatasetMSF`` with the scales of their
  ``__main__``, the ``CAM`` network, the fusion and normalisation) on :data:`fidelity_sipe.PHOTOS`, as the
  ``.npy`` files it saves (``keys``, ``IS_CAM``), and the seeds their ``eval_cam.py`` takes from them
  (``keys[argmax]``). Their ``imageio.imread`` (not installed) is handed the photo.
"""

from __future__ import annotations

import ast
import contextlib
import json
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fidelity_sipe import ALIASES, LAYOUT, PHOTOS, checkpoint, labels_of, photo, step_inputs
from fidelity_step import summarise
from upstream import authors_code

LR, WT_DEC, MAX_STEP = 0.1, 1e-4, 10


@contextlib.contextmanager
def _no_download():
    """Their ``resnet50(pretrained=True)`` loads the model zoo: give it the new network's own tensors."""
    import network.resnet50 as resnet50
    import torch.utils.model_zoo as model_zoo

    saved = model_zoo.load_url

    def load_url(url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        state = resnet50.ResNet(resnet50.Bottleneck, [3, 4, 6, 3]).state_dict()
        return {**state, "fc.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}

    model_zoo.load_url = load_url
    try:
        yield
    finally:
        model_zoo.load_url = saved


def _write_layout(state: dict[str, torch.Tensor]) -> None:
    canonical: dict[tuple, str] = {}
    layout, aliases = [], {}
    for key, value in state.items():
        identity = (value.data_ptr(), tuple(value.shape), value.dtype)
        if identity in canonical:
            aliases[key] = canonical[identity]
        else:
            canonical[identity] = key
            layout.append([key, list(value.shape)])
    LAYOUT.write_text(json.dumps(layout) + "\n")
    ALIASES.write_text(json.dumps(aliases) + "\n")


def _lowres(valid: torch.Tensor, labels: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Their loop: ``valid_mask[:, 1:] *= label``, then nearest to ``(h // 16, w // 16)``."""
    valid_mask = valid.repeat(1, 21, 1, 1)
    valid_mask[:, 1:] = valid_mask[:, 1:] * labels[:, :, None, None]
    return F.interpolate(valid_mask, size=(h // 16, w // 16), mode="nearest")


def _network_and_step(sipe, torchutils) -> tuple[dict, dict]:
    net = sipe.Net(num_cls=21)
    net.load_state_dict(checkpoint(0)["net"], strict=True)
    net.train()  # their train(): conv1 / bn1 frozen
    batch = {k: torch.from_numpy(v) for k, v in step_inputs().items()}
    img, labels = batch["img"], batch["labels"]
    n, c, h, w = img.shape
    lowres = _lowres(batch["valid"], labels, h, w)
    with torch.no_grad():
        outputs = net.forward(img, lowres)
    network = {k: outputs[k].numpy() for k in ("score", "cam", "seeds", "IS_cam", "probs")}
    network["prototypes"] = summarise("prototypes", outputs["prototypes"])
    network["lowres"] = lowres.numpy()

    groups = net.trainable_parameters()
    optimizer = torchutils.PolyOptimizerSGD([
        {"params": groups[0], "lr": LR, "weight_decay": WT_DEC},
        {"params": groups[1], "lr": 10 * LR, "weight_decay": WT_DEC},
    ], lr=LR, weight_decay=WT_DEC, max_step=MAX_STEP)  # fmt: skip
    names = [name for name, p in net.named_parameters()]
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    step: dict[str, np.ndarray] = {}
    label4d = labels[:, :, None, None]
    for k in range(2):
        outputs = net.forward(img, lowres)
        loss_cls = F.multilabel_soft_margin_loss(outputs["score"], label4d)
        is_cam = outputs["IS_cam"] / (F.adaptive_max_pool2d(outputs["IS_cam"], (1, 1)) + 1e-5)
        loss_gsc = torch.mean(torch.abs(outputs["cam"] - is_cam))
        optimizer.zero_grad()
        (loss_cls + loss_gsc).backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=1)
        optimizer.step()
        step[f"loss_cls_{k}"] = np.float64(loss_cls.item())
        step[f"loss_gsc_{k}"] = np.float64(loss_gsc.item())
        step[f"norm_{k}"] = np.float64(norm.item())
        step[f"lr_{k}"] = np.array([g["lr"] for g in optimizer.param_groups])
        for name, p in net.named_parameters():
            if p.grad is not None:
                step[f"grad_{k}/{name}"] = summarise(name, p.grad)
    for name, p in net.named_parameters():
        step[f"update/{name}"] = summarise(name, p.detach() - before[name])
    step["momentum"] = np.array([g["momentum"] for g in optimizer.param_groups])
    step["weight_decay"] = np.array([g["weight_decay"] for g in optimizer.param_groups])
    step["names"] = np.array(names)
    return network, step


def _defaults(script: Path) -> dict[str, object]:
    """``--name default`` of the ``parser.add_argument`` calls in ``script`` (read, not run)."""
    found = {}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            for kw in node.keywords:
                if kw.arg == "default":
                    found[ast.literal_eval(node.args[0]).lstrip("-")] = ast.literal_eval(kw.value)
    return found


def _step_counts(upstream: Path) -> dict[str, object]:
    from data import data_coco, data_voc

    defaults = _defaults(upstream / "train_resnet50_SIPE.py")
    batch, epochs = defaults["batch_size"], defaults["max_epoches"]
    voc = len(data_voc.load_img_name_list(str(upstream / "data" / "trainaug_voc.txt")))
    coco = len(data_coco.load_img_name_list(str(upstream / "data" / "train_coco.txt")))
    return {
        "batch_size": batch,
        "max_epoches": epochs,
        "lr": defaults["lr"],
        "wt_dec": defaults["wt_dec"],
        "crop_size": defaults["crop_size"],
        "seed": defaults["seed"],
        "voc_train_images": voc,
        "coco_train_images": coco,
        "voc_max_step": (voc // batch) * epochs,
        "coco_max_step": (coco // batch) * epochs,
    }


def _cams(upstream: Path, sipe) -> dict[str, np.ndarray]:
    import make_cam
    from data import data_voc

    model = sipe.CAM(num_cls=21)
    model.load_state_dict(checkpoint(0)["net"], strict=True)
    model.eval()
    script = (upstream / "make_cam.py").read_text()
    scales = ast.literal_eval(script.split("scales=")[1].split("))")[0] + ")")
    names = list(PHOTOS)
    images = {name: photo(name) for name in names}
    dataset = data_voc.VOC12ClsDatasetMSF.__new__(data_voc.VOC12ClsDatasetMSF)
    # _work prints every len // 20 images (a modulo by zero below 20): 20 entries, the photos in turn
    dataset.img_name_list = [names[i % len(names)] for i in range(20)]
    dataset.label_list = [labels_of(name) for name in dataset.img_name_list]
    dataset.voc12_root, dataset.scales = "", scales
    dataset.img_normal = data_voc.TorchvisionNormalize()
    data_voc.imageio = types.SimpleNamespace(imread=lambda path: images[Path(path).stem])
    out: dict[str, np.ndarray] = {"scales": np.array(scales)}
    with tempfile.TemporaryDirectory() as session:
        (Path(session) / "npy").mkdir()
        args = types.SimpleNamespace(num_workers=0, session_name=session, visualize=False)
        saved = torch.cuda.device_count, make_cam.cuda.device
        torch.cuda.device_count = lambda: 1
        make_cam.cuda.device = lambda index: contextlib.nullcontext()
        try:
            make_cam._work(0, model, [dataset], args)
        finally:
            torch.cuda.device_count, make_cam.cuda.device = saved
        for name in names:
            saved_cam = np.load(Path(session) / "npy" / f"{name}.npy", allow_pickle=True).item()
            out[f"{name}_image"] = images[name]
            out[f"{name}_labels"] = labels_of(name)
            out[f"{name}_keys"] = saved_cam["keys"]
            out[f"{name}_IS_CAM"] = saved_cam["IS_CAM"].astype(np.float32)
            out[f"{name}_seed"] = saved_cam["keys"][np.argmax(saved_cam["IS_CAM"], axis=0)].astype(np.uint8)
    return out


def generate(upstream: Path, out: Path) -> list[Path]:
    torch.manual_seed(0)
    checkout = authors_code(upstream, marker="network/resnet50_SIPE.py", what="SIPE", modules=("cv2", "scipy"))
    with checkout, _no_download():
        import network.resnet50_SIPE as sipe
        from tool import torchutils

        _write_layout(sipe.Net(num_cls=21).state_dict())
        network, step = _network_and_step(sipe, torchutils)
        counts = _step_counts(upstream)
        cams = _cams(upstream, sipe)
    written = [LAYOUT, ALIASES]
    for name, arrays in (("sipe_network.npz", network), ("sipe_step.npz", step), ("sipe_cams.npz", cams)):
        np.savez_compressed(out / name, **arrays)
        written.append(out / name)
    (out / "sipe_steps.json").write_text(json.dumps(counts, indent=2) + "\n")
    return [*written, out / "sipe_steps.json"]
