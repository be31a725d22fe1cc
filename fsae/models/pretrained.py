"""Backbones from timm with pretrained weights from timm's hub or from a local file.

:func:`create_backbone` wraps ``timm.create_model`` for any timm model (``resnet38d`` included once
:mod:`fsae.models` is imported):

* ``pretrained=True``: timm's published weights (downloaded by timm; needs internet or timm's cache);
* ``pretrained_path=FILE``: a local state dict, loaded by :func:`load_pretrained`, which reports what did not load.
  ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``. The state
  dict may sit under ``"state_dict"``, ``"model"`` or ``"net"`` (nested any number of times) and carry a DDP ``module.``
  prefix. Keys are the model's own ``state_dict()`` names, before any ``features_only`` wrapping: a
  ``features_only=True`` backbone loads the same file as the full model.

Reporting (one message per load): shape conflicts, or a file that matches nothing, raise ``ValueError``; otherwise
missing keys (left at their initial values) and unexpected keys (ignored) give one :class:`PretrainedLoadWarning`
with the counts and the first names; ``strict=True`` turns those into a ``ValueError`` too, before the model is
touched. The file's classifier (timm's ``pretrained_cfg["classifier"]``, e.g. ``fc``) is dropped quietly when the
model's head differs (other ``num_classes``, or none), and the model keeps its fresh head, as timm does; a file
without a classifier loaded into a model with one reports the head as missing. BatchNorm ``num_batches_tracked``
counters are bookkeeping and never reported.

ResNet-38 (``resnet38d``) key layout, the one PSA / SEAM / PPC use (PSA's ``convert_mxnet_to_torch`` of the MXNet
ImageNet model ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``; ``python -m fsae.models.convert_resnet38`` writes
it)::

    conv1a.weight                                   (64, 3, 3, 3)
    b{2,3,4,5}[_k].bn_branch2a.{weight,bias,running_mean,running_var}
    b{2,3,4,5}[_k].conv_branch2a.weight             3x3, (mid, in, 3, 3)
    b{2,3,4,5}[_k].bn_branch2b1.{...}
    b{2,3,4,5}[_k].conv_branch2b1.weight            3x3, (out, mid, 3, 3)
    b{2,3,4,5}.conv_branch1.weight                  1x1 shortcut of each stage's first block, (out, in, 1, 1)
    b{6,7}.bn_branch2a / bn_branch2b1 / bn_branch2b2.{...}
    b{6,7}.conv_branch2a (1x1) / conv_branch2b1 (3x3) / conv_branch2b2 (1x1) / conv_branch1 (1x1) .weight
    bn7.{weight,bias,running_mean,running_var}      (4096,)
    fc.weight (1000, 4096), fc.bias (1000,)         optional ImageNet classifier

with ``_k`` in ``_1, _2`` for stages 2, 3, 5 and ``_1 .. _5`` for stage 4; no conv has a bias. MXNet's
``gamma / beta / moving_mean / moving_var`` are ``weight / bias / running_mean / running_var``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn

__all__ = ["LoadReport", "PretrainedLoadWarning", "create_backbone", "load_pretrained", "read_state_dict"]

_NESTED_KEYS = ("state_dict", "model", "net")  # "net": SIPE's checkpoints
_BOOKKEEPING = ("num_batches_tracked",)
_FEATURE_KWARGS = ("features_only", "out_indices", "feature_cls")
_SHOW = 5  # names listed per category in messages


class PretrainedLoadWarning(UserWarning):
    """Some tensors of a pretrained file did not load (missing or unexpected keys)."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with a file.

    Attributes:
        source: the file (or ``"<state dict>"``).
        loaded: model keys that received a tensor from the file.
        missing: model keys the file lacks (left as initialised).
        unexpected: file keys the model lacks (ignored).
        skipped_classifier: classifier keys of the file dropped because the model's head differs.
        mismatched: ``(key, file shape, model shape)`` for shape conflicts (only set on the raised path).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped_classifier: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every model tensor came from the file and every file tensor was used (classifier aside)."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line: counts and the first names of each category."""
        total = len(self.loaded) + len(self.missing)
        parts = [f"loaded {len(self.loaded)}/{total} model tensors from {self.source}"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (left as initialised): {_names(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (ignored): {_names(self.unexpected)}")
        if self.skipped_classifier:
            parts.append(f"classifier skipped (head differs): {_names(self.skipped_classifier)}")
        if self.mismatched:
            shapes = [f"{k} file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} with conflicting shapes: {_names(shapes)}")
        return "; ".join(parts)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f", ... (+{len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def _is_bookkeeping(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _BOOKKEEPING


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``), on the CPU.

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"net": ...}`` nesting and a common ``module.`` prefix
    (DDP checkpoints).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle / zip errors come in many types
            raise ValueError(f"cannot read {path} as a torch state dict (torch.load, weights_only=True): {e}") from e
    while isinstance(obj, Mapping):
        nested = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = obj[nested]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path} holds no state dict (got {type(obj).__name__})")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path} is not a state dict: entries {_names(not_tensors)} are not tensors "
            f"(a checkpoint should hold the weights under one of {', '.join(map(repr, _NESTED_KEYS))})"
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    if not classifier:
        return ()
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    strict: bool = False,
) -> LoadReport:
    """Load a state dict file (or mapping) into ``model``, report what did not load, in one message.

    Args:
        model: the model (keys as in ``model.state_dict()``).
        path: ``.safetensors`` / ``.pth`` / ``.pt`` file (see :func:`read_state_dict`) or an in-memory mapping.
        strict: raise on any missing or unexpected key instead of warning (a classifier for another head is still
            dropped quietly).

    Returns:
        The :class:`LoadReport`; when it is not complete a :class:`PretrainedLoadWarning` has been issued.

    Raises:
        ValueError: shapes conflict, no file tensor matches a model tensor, or ``strict`` and keys differ. The model
            is left untouched in all these cases.
    """
    if isinstance(path, Mapping):
        source, state = "<state dict>", dict(path)
    else:
        source, state = str(path), read_state_dict(path)
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    expected = {k: v for k, v in model.state_dict().items() if not _is_bookkeeping(k)}
    state = {k: v for k, v in state.items() if not _is_bookkeeping(k)}
    report = LoadReport(source=source)

    # a different head (other num_classes, or none): drop the file's classifier and keep the model's, as timm does
    new_head: list[str] = []
    for prefix in _classifier_prefixes(model):
        in_file = [k for k in state if k.startswith(prefix + ".")]
        if any(k not in expected or expected[k].shape != state[k].shape for k in in_file):
            report.skipped_classifier += in_file
            new_head += [k for k in expected if k.startswith(prefix + ".")]
            for key in in_file:
                del state[key]

    report.mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    report.loaded = [k for k in expected if k in state]
    report.missing = [k for k in expected if k not in state and k not in new_head]
    report.unexpected = [k for k in state if k not in expected]

    if report.mismatched:
        raise ValueError(f"{name}: cannot load pretrained weights, shapes conflict. {report.summary()}")
    if not report.loaded:
        raise ValueError(
            f"{name}: none of the {len(state)} tensors in {source} matches the model's names "
            f"(file: {_names(list(state))}; model: {_names(list(expected))}). Weights for another architecture, "
            "or a layout that needs converting (resnet38d MXNet weights: python -m fsae.models.convert_resnet38)?"
        )
    if strict and not report.complete:
        raise ValueError(f"{name}: strict loading failed. {report.summary()}")

    result = model.load_state_dict(state, strict=False)
    # the model's own load hooks have the last word (they may consume or add keys)
    report.missing = [k for k in result.missing_keys if not _is_bookkeeping(k) and k not in new_head]
    report.unexpected = [k for k in result.unexpected_keys if not _is_bookkeeping(k)]
    report.loaded = [k for k in expected if k in state and k not in result.missing_keys]
    if report.missing or report.unexpected:
        warnings.warn(f"{name}: {report.summary()}", PretrainedLoadWarning, stacklevel=2)
    return report


def _feature_key(key: str, base: nn.Module, targets: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the full model's tensor ``key`` inside a timm features_only wrapper, or None when pruned away.

    timm's wrappers keep the names (FeatureListNet/DictNet, FeatureGraphNet), put the model under ``model.``
    (FeatureGetterNet) or ``body.`` (FeatureHookNet), and may flatten top-level Sequentials (``layer1.0`` ->
    ``layer1_0``).
    """
    variants = [key]
    parts = key.split(".")
    if len(parts) > 2 and isinstance(base.get_submodule(parts[0]), nn.Sequential):
        variants.append("_".join(parts[:2]) + "." + ".".join(parts[2:]))
    for prefix in ("", "model.", "body."):
        for variant in variants:
            if prefix + variant in targets:
                return prefix + variant
    return None


def _copy_into_features(base: nn.Module, features: nn.Module) -> None:
    targets = features.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        target = _feature_key(key, base, targets)
        if target is not None:
            mapped[target] = value
    left = [k for k in targets if k not in mapped and not _is_bookkeeping(k)]
    if left:
        raise RuntimeError(
            f"could not match {len(left)} tensors of the features_only model to the full model ({_names(left)}); "
            "load the weights into the model created without features_only instead"
        )
    features.load_state_dict(mapped, strict=False)


def create_backbone(
    name: str,
    pretrained: bool = False,
    pretrained_path: str | os.PathLike[str] | None = None,
    strict: bool = False,
    **kwargs: object,
) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with weights from timm (``pretrained``) or a file (``pretrained_path``).

    Args:
        name: any timm model name (``"resnet38d"`` after ``import fsae.models``, ``"resnet50"``, ...).
        pretrained: timm's published weights (for users with internet); a ValueError when timm has none.
        pretrained_path: local state dict (``.safetensors`` / ``.pth`` / ``.pt``) with the full model's key names,
            loaded by :func:`load_pretrained` (one warning listing missing / unexpected keys, errors on conflicts).
        strict: with ``pretrained_path``: every key must match.
        **kwargs: passed to ``timm.create_model`` (``num_classes``, ``features_only``, ``out_indices``, ...).

    Returns:
        The model; with ``features_only=True`` timm's feature wrapper (``feature_info``, list of NCHW maps).
    """
    if pretrained and pretrained_path is not None:
        raise ValueError("give pretrained=True (timm's weights) or pretrained_path=FILE (local weights), not both")
    if pretrained_path is None:
        if pretrained and timm.is_model(name) and not timm.is_model_pretrained(name):
            hint = " (convert the MXNet model with python -m fsae.models.convert_resnet38)" if "38d" in name else ""
            raise ValueError(f"timm publishes no weights for {name!r}; pass pretrained_path=FILE{hint}")
        return timm.create_model(name, pretrained=pretrained, **kwargs)

    if not kwargs.get("features_only", False):
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_pretrained(model, pretrained_path, strict=strict)
        return model
    # features_only wrappers rename (and prune) the model's modules: load into the full model, then copy across
    base_kwargs = {k: v for k, v in kwargs.items() if k not in _FEATURE_KWARGS}
    base_kwargs.setdefault("num_classes", 0)  # the features model has no head: do not report one as missing
    base = timm.create_model(name, pretrained=False, **base_kwargs)
    load_pretrained(base, pretrained_path, strict=strict)
    features = timm.create_model(name, pretrained=False, **kwargs)
    _copy_into_features(base, features)
    return features
