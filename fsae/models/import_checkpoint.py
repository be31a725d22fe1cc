"""Import a checkpoint saved by the authors' code as an fsae run folder: the converters.

The run folder itself is written by :mod:`fsae.engine.import_run` (this module's command line runs it).

Usage::

    python -m fsae.models.import_checkpoint --method ppc checkpoint_last.pth RUN_DIR [--dataset voc]
    python -m fsae.models.import_checkpoint --method mctformer checkpoint.pth RUN_DIR
    python -m fsae.models.import_checkpoint --method sipe final.pth RUN_DIR
    python recipes/make_pseudo_labels.py --checkpoint RUN_DIR ...        # or fsae.infer.load_cam_model(RUN_DIR)

``--method`` takes a ``method.name``; ``ppc`` reads the ResNet-38 checkpoints of the authors' PPC / SEAM / EPS /
FSAE training code (``torch.save(model.module.state_dict())`` of ``network.resnet38_contrast.Net``: a
``module.`` prefix from DataParallel is accepted too); ``mctformer`` reads the MCTformer-V2 checkpoints of the
authors' ``main.py`` (``checkpoint.pth`` / ``checkpoint_best.pth``: ``{"model": state_dict}`` of
``deit_small_MCTformerV2_patch16_224``, their released VOC / COCO weights included); ``sipe`` reads the ResNet-50
checkpoints of the SIPE authors' ``train_resnet50_SIPE.py`` (``torch.save({'net': model.module.state_dict()},
...)`` of ``network.resnet50_SIPE.Net``: ``final.pth``, ``best.pth``, ``iter_*.pth``).  ``RUN_DIR`` gets what a
finished fsae run has for inference: ``model.safetensors`` (the converted weights) and ``config.yaml`` (the
method, its options and the dataset, with ``_run.imported_from``); an existing non-empty ``RUN_DIR`` is refused
unless ``--overwrite``.

The PPC conversion (every tensor is checked against fsae's network, names and shapes, before anything is
written; a tensor the mapping does not know is an error that names it):

* backbone ``conv1a``, ``b2`` .. ``b7``, ``bn7`` (PSA's ResNet-38 names) -> ``net.backbone`` (same names);
* ``fc8.weight (C+1, 4096, 1, 1)`` -> ``net.fc8.weight`` with the last row (background there) moved to row 0
  (background here);
* ``proj_fc.weight`` -> ``net.proj.weight``; ``f8_3``, ``f8_4``, ``f9`` (PCM) -> ``net.f8_3`` / ``net.f8_4`` /
  ``net.f9``;
* BatchNorm ``num_batches_tracked`` counters are dropped.

The MCTformer-V2 conversion (checked the same way; C from ``head.weight``): every tensor keeps its name under
``net.`` (``cls_token (1, C, 384)``, ``pos_embed (1, C + 196, 384)``, ``patch_embed.proj``, ``blocks.*``,
``head (C, 384, 3, 3)``: their layout is fsae's, no background channel to move); their final ``norm.weight`` /
``norm.bias`` are dropped (their ``forward_features`` never applies that LayerNorm; fsae's net has none). The run
uses the method's defaults, the authors' ``pos_resample`` among them.

The SIPE conversion (same checks; the run gets ``method.backbone: resnet50`` and SIPE's default options, so the
authors' stride-1 last stage):

* ``resnet50.*`` (torchvision's ResNet names) -> ``net.backbone.*`` (timm's, the same names);
* ``side1`` .. ``side4`` -> ``net.side.0`` .. ``net.side.3``; ``classifier`` -> ``net.classifier`` (no background
  row: SIPE's classifier has the C foreground classes);
* the aliases their ``state_dict()`` also holds (``stage0..4.*``, ``backbone.*``, ``newly_added.*``: the same
  modules registered twice) are dropped, each after checking it equals the tensor it aliases.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

__all__ = ["CONVERTERS", "convert_mctformer", "convert_ppc", "convert_sipe", "read_checkpoint", "strip_prefix"]

_PPC_HEADS = {"fc8": "fc8", "proj_fc": "proj", "f8_3": "f8_3", "f8_4": "f8_4", "f9": "f9"}

_SIPE_STAGES = {"0": ("conv1", "bn1", "relu", "maxpool"), "1": ("layer1",), "2": ("layer2",), "3": ("layer3",),
                "4": ("layer4",)}  # fmt: skip


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop BatchNorm counters and a DataParallel ``module.`` prefix."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        out[key[len("module.") :] if key.startswith("module.") else key] = value
    return out


def _assemble(
    method: torch.nn.Module, network: str, named: list[tuple[str, str | None, torch.Tensor]], unknown: list[str]
) -> dict[str, torch.Tensor]:
    """The converted state dict from ``(checkpoint key, fsae name or None, tensor)`` triples: every name must be one
    of ``method``'s (else the key is unknown) with the same shape, and every tensor of ``method`` (BatchNorm counters
    aside, which are kept as they are) must be given.

    Raises:
        ValueError: unknown keys (with those already in ``unknown``), a shape mismatch, or missing tensors.
    """
    targets = {k: v for k, v in method.state_dict().items() if not k.endswith("num_batches_tracked")}
    out: dict[str, torch.Tensor] = {}
    for key, name, value in named:
        if name is None or name not in targets:
            unknown.append(key)
            continue
        if tuple(value.shape) != tuple(targets[name].shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)} in the checkpoint, fsae's {name} is "
                             f"{tuple(targets[name].shape)}")  # fmt: skip
        out[name] = value.detach().to(torch.float32).contiguous()
    if unknown:
        raise ValueError(f"{len(unknown)} tensors of the checkpoint are not in the {network} network: {unknown[:5]}")
    missing = [k for k in targets if k not in out]
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} tensors of the {network} network: {missing[:5]}")
    for key, value in method.state_dict().items():  # the counters fsae keeps: as after loading
        out.setdefault(key, value)
    return out


def convert_ppc(state: Mapping[str, torch.Tensor], method: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The authors' ``resnet38_contrast`` state dict -> the state dict of fsae's :class:`~fsae.methods.PPCMethod`.

    Args:
        state: their tensors (background last in ``fc8``).
        method: a freshly built PPC method (``backbone="resnet38d"``) whose names and shapes the result must fill.

    Returns:
        ``method.state_dict()``-shaped tensors (float32, contiguous), every key of ``method`` present.

    Raises:
        ValueError: a tensor of ``state`` is unknown, missing, or has another shape than fsae's.
    """
    from fsae.models.pretrained import _feature_key

    state = strip_prefix(state)
    backbone = method.net.backbone
    backbone_targets = {k[len("net.backbone.") :]: v for k, v in method.state_dict().items()
                        if k.startswith("net.backbone.") and not k.endswith("num_batches_tracked")}  # fmt: skip
    named = []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in _PPC_HEADS:
            name = f"net.{_PPC_HEADS[head]}.{rest}"
            if head == "fc8":
                value = torch.cat([value[-1:], value[:-1]])  # background: last row there, row 0 here
        else:
            inner = _feature_key(key, getattr(backbone, "model", backbone), backbone_targets)
            name = f"net.backbone.{inner}" if inner is not None else None
        named.append((key, name, value))
    return _assemble(method, "PPC", named, [])


def convert_mctformer(state: Mapping[str, torch.Tensor], method: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The authors' MCTformer-V2 state dict -> the state dict of fsae's :class:`~fsae.methods.MCTformerMethod`.

    Args:
        state: their tensors (``model.state_dict()`` of ``deit_small_MCTformerV2_patch16_224``).
        method: a freshly built MCTformer method (``backbone="deit_small_patch16_224"``).

    Returns:
        ``method.state_dict()``-shaped float32 contiguous tensors, every key of ``method`` present.

    Raises:
        ValueError: a tensor of ``state`` is unknown, missing, or has another shape than fsae's.
    """
    # their final LayerNorm (norm.weight / norm.bias) is never applied by MCTformerV2: dropped
    named = [(k, f"net.{k}", v) for k, v in strip_prefix(state).items() if k not in ("norm.weight", "norm.bias")]
    return _assemble(method, "MCTformer-V2", named, [])


def _sipe_alias(key: str) -> str | None:
    """The canonical name of a SIPE alias (``stage3.0.1.conv1.weight`` -> ``resnet50.layer3.1.conv1.weight``,
    ``newly_added.2.weight`` -> ``side2.weight``), None for a canonical name."""
    head, _, rest = key.partition(".")
    if head.startswith("stage") or head == "backbone":
        stage, rest = (head[len("stage") :], rest) if head.startswith("stage") else rest.split(".", 1)
        index, _, inner = rest.partition(".")
        modules = _SIPE_STAGES.get(stage)
        if modules is None or not index.isdigit() or int(index) >= len(modules):
            return key  # unknown: reported by the caller
        return f"resnet50.{modules[int(index)]}.{inner}"
    if head == "newly_added":
        index, _, inner = rest.partition(".")
        names = ("classifier", "side1", "side2", "side3", "side4")
        return f"{names[int(index)]}.{inner}" if index.isdigit() and int(index) < len(names) else key
    return None


def convert_sipe(state: Mapping[str, torch.Tensor], method: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The SIPE authors' ``network.resnet50_SIPE.Net`` state dict -> the state dict of fsae's
    :class:`~fsae.methods.SIPEMethod` (``backbone="resnet50"``); arguments, result and errors as
    :func:`convert_ppc`."""
    state = strip_prefix(state)
    named, unknown = [], []
    for key, value in state.items():
        canonical = _sipe_alias(key)
        if canonical is not None:
            if canonical not in state or not torch.equal(state[canonical], value):
                unknown.append(key)  # an alias of nothing, or not equal to what it aliases
            continue
        head, _, rest = key.partition(".")
        if head == "resnet50":
            name = f"net.backbone.{rest}"
        elif head in ("side1", "side2", "side3", "side4"):
            name = f"net.side.{int(head[-1]) - 1}.{rest}"
        elif head == "classifier":
            name = f"net.classifier.{rest}"
        else:
            name = None
        named.append((key, name, value))
    return _assemble(method, "SIPE", named, unknown)


def _ppc_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    fc8 = state.get("fc8.weight")
    return None if fc8 is None else fc8.shape[0] - 1


def _sipe_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    classifier = state.get("classifier.weight")
    return None if classifier is None else classifier.shape[0]


def _mctformer_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    head = state.get("head.weight")
    return None if head is None or head.dim() != 4 else head.shape[0]


#: ``method.name`` -> (converter, ``method.backbone`` it needs, C from the stripped state dict, the tensor it reads)
CONVERTERS: dict[
    str,
    tuple[Callable[[Mapping[str, torch.Tensor], torch.nn.Module], dict], str, Callable[[Mapping], int | None], str],
] = {
    "ppc": (convert_ppc, "resnet38d", _ppc_classes, "fc8.weight"),
    "mctformer": (convert_mctformer, "deit_small_patch16_224", _mctformer_classes, "head.weight (C, D, 3, 3)"),
    "sipe": (convert_sipe, "resnet50", _sipe_classes, "classifier.weight"),
}


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of the authors' file (``.pth``, any nesting :func:`~fsae.models.pretrained.read_state_dict`
    knows); ``ValueError`` with one line when it is missing or unreadable."""
    from fsae.models.pretrained import read_state_dict

    try:
        return read_state_dict(path)
    except FileNotFoundError:
        raise ValueError(f"checkpoint not found: {path}") from None
    except (RuntimeError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read {path}: {first}") from None


if __name__ == "__main__":
    # The command line writes a run folder with an effective config: the engine's job (fsae.engine.import_run); the
    # converters above stay here, with the networks they fill. Only this entry point reaches up.
    from fsae.engine.import_run import main

    sys.exit(main())
