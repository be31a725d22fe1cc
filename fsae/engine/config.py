"""Training configuration: typed sections with defaults, YAML files (with ``_base_`` inheritance), ``--set
key=value`` overrides, early validation.

A config is a nested dict of sections (``config["optim"]["lr"]``).  Its keys are declared once, as the fields of
one dataclass per section (:class:`MethodSection`, :class:`CamDataSection`, :class:`FsaeSection`,
:class:`AugmentSection`, :class:`CamOptimSection`, :class:`CamTrainSection`, gathered by :class:`CamConfig`):
each field holds its default, its type -- ``Literal[...]`` for a choice, ``X | None`` for a key that may be
unset, ``list[float]`` (with a fixed ``length``) for a list of numbers, ``dict[str, Any]`` for a free-form mapping
-- and, in its metadata (:func:`setting`), its allowed range and a one-line comment.  The sections both stages
have are shared classes (:class:`OptimSection`, :class:`TrainSection`), so :mod:`fsae.engine.seg_config` declares
only what differs.  :meth:`ConfigSchema.of` compiles such a dataclass into the schema :func:`load_config`
validates against (:data:`CAM_SCHEMA` here, :data:`fsae.engine.seg_config.SEG_SCHEMA`); :data:`DEFAULTS` is
:class:`CamConfig`'s defaults as the nested dict (the paper's PPC + FSAE setting on VOC, docs/method.md §2-§4).

A YAML file overrides part of the defaults; it may start from other files with ``_base_: other.yaml`` (a path
relative to the file, or a list of them merged in order): :func:`read_config_file` deep-merges the file's own keys
over its bases (a mapping merges into the base's, anything else replaces it).  ``--set a.b=value`` overrides one
key last (the value is parsed as YAML: ``--set optim.lr=0.02``, ``--set fsae.enabled=false``,
``--set data.long_side=[256,448]``).  Unknown keys, wrong types and values out of range are a
:class:`ConfigError` before any heavy work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import os
import types
import typing
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fsae.errors import ConfigError

__all__ = [
    "CAM_SCHEMA",
    "DEFAULTS",
    "AugmentSection",
    "CamConfig",
    "CamDataSection",
    "CamOptimSection",
    "CamTrainSection",
    "ConfigError",
    "ConfigSchema",
    "FsaeSection",
    "MethodSection",
    "OptimSection",
    "TrainSection",
    "accepted_options",
    "check_backbone",
    "check_options",
    "check_registered",
    "did_you_mean",
    "like",
    "load_config",
    "read_config_file",
    "set_key",
    "setting",
]


# --- declaring keys -----------------------------------------------------------------------------------------------


def setting(default: Any, doc: str, *, allowed: str | None = None, length: int | None = None) -> Any:
    """One config key, as a dataclass field: ``lr: float = setting(0.01, "the base lr", allowed="> 0")``.

    Args:
        default: the key's default (a list or dict is copied for every instance).
        doc: its one-line comment (what it is, where the default comes from).
        allowed: the range of a number (of each number of a list): ``"> 0"``, ``">= 1"``, ``"<= 1"`` or an interval
            ``"[0, 1)"``; an optional key's None is always allowed.
        length: a ``list[float]`` key's required length.
    """
    metadata = {"doc": doc, "allowed": allowed, "length": length}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def like(section: type, name: str, default: Any) -> Any:
    """The field ``name`` of the dataclass ``section`` with another default (a stage's own value of a shared key)."""
    base = section.__dataclass_fields__[name]
    return setting(default, base.metadata["doc"], allowed=base.metadata["allowed"], length=base.metadata["length"])


# --- the CAM stage's sections ---------------------------------------------------------------------------------------


@dataclass
class MethodSection:
    """``method``: the CAM method and its network."""

    name: str = setting("ppc", "a registered method (fsae.methods.list_methods(): ppc | sipe | mctformer | yours)")
    module: str | None = setting(
        None,
        "a module imported before method.name and data.dataset are looked up: yours, registering a method "
        "(fsae.methods.register_method) or a dataset (fsae.data.register_dataset), e.g. mypkg.toco",
    )
    backbone: str = setting("resnet38d", "a timm model name (fsae's resnet38d included; a .tag allowed)")
    pretrained: bool = setting(False, "timm's published weights (needs internet)")
    pretrained_path: str | None = setting(None, "local state dict / safetensors (see fsae.models.pretrained)")
    options: dict[str, Any] = setting(
        {}, "extra keyword arguments of the method class (checked against what it and its network accept)"
    )


@dataclass
class CamDataSection:
    """``data``: the CAM stage's training images and the geometry of their views."""

    dataset: str = setting("voc", "a registered dataset (fsae.data.list_datasets(): voc | coco | yours)")
    root: str | None = setting(None, "the VOC2012 / COCO2014 folder (--data-root)")
    split: str = setting("train_aug", "the split trained on")
    crop_size: int = setting(448, "side of the square training crop, in pixels", allowed=">= 1")
    long_side: list[float] = setting(
        [448, 768], "[min, max]: the long side is resized to a random length in it", allowed=">= 1", length=2
    )
    flip: float = setting(0.5, "horizontal-flip probability", allowed="[0, 1]")
    num_workers: int | None = setting(
        None, "loader worker processes per training process; None: the CPUs this process may use, at most 4",
        allowed=">= 0",
    )  # fmt: skip
    on_error: Literal["raise", "skip"] = setting(
        "raise",
        "an unreadable image / mask / saliency map: raise (stop with the file's name) | skip (log it, train on the "
        "next sample; the dataset counts the skipped files: fsae.data.SegmentationDataset.skipped)",
    )
    saliency_dir: str | None = setting(
        None,
        "folder of off-the-shelf saliency maps under data.root (VOC: e.g. SALImages; COCO: inside the split's "
        'folder): PPC\'s EPS term L_sal (docs/method.md §4). None: no saliency ("PPC on SEAM")',
    )
    geometry: Literal["authors", "crop", "timm"] = setting(
        "authors",
        "where the views are cut (fsae.augment.views): authors = the loader delivers the resized, flipped image on "
        "a (3, max_long, max_long) canvas plus the crop box, and each view is ColorJittered over the whole image "
        "before the crop, as the authors' PIL pipeline; crop (ours) = the loader crops, views jitter the crop; "
        "timm = MCTformer's view from timm's create_transform (random-resized crop, flip, RandAugment "
        "augment.auto_augment, random erasing augment.random_erasing), FSAE's views made from it as in crop",
    )
    crop_fill: Literal["black", "mean"] = setting(
        "black",
        "crop pixels outside a smaller image: black (the authors' zero container) | mean (ImageNet mean, 0 after "
        "normalisation; ours)",
    )
    saliency_resize: Literal["bicubic", "bilinear"] = setting(
        "bicubic", "saliency map resampling with the image: bicubic (the authors' RandomResizeLong) | bilinear (ours)"
    )


@dataclass
class FsaeSection:
    """``fsae``: the FSAE expansion term and its EMA teacher (docs/method.md §2, fsae.losses.FSAELoss)."""

    enabled: bool = setting(True, "the FSAE term on (false: the method alone, the baseline)")
    weight: float = setting(1.0, "weight of the FSAE term in the loss", allowed=">= 0")
    start_step: int = setting(
        0, "FSAE term from this optimizer step on (the EMA teacher is updated from step 0)", allowed=">= 0"
    )
    conf_threshold: float = setting(
        0.95, "tau_conf: the teacher confidence a pixel needs to be supervised", allowed="[0, 1]"
    )
    ring_threshold: float = setting(
        0.8, "tau_ring: the teacher confidence a pixel of the ring around the confident foreground needs",
        allowed="[0, 1]",
    )  # fmt: skip
    ring_kernel: int = setting(3, "odd window of the dilation that makes the ring (3 = one pixel)", allowed=">= 1")
    absent: Literal["zero", "exclude"] = setting(
        "zero", "absent classes' logits: zero (logit 0, the original) | exclude (-inf)"
    )
    boundary_weight: float | None = setting(
        None,
        "None: one CE over the union of both masks; lambda_b: mean(CE * M_conf) + lambda_b * mean(CE * M_ring)",
        allowed=">= 0",
    )
    mask_student: bool = setting(
        True, "label-mask the student's logits as the teacher's; False: the student's CE over its raw logits "
        "(absent classes lowered too)",
    )  # fmt: skip
    ema_decay: float = setting(0.999, "decay of the EMA teacher", allowed="[0, 1)")
    teacher_mode: Literal["train", "eval"] = setting("train", "train (dropout on, the original) | eval")


@dataclass
class AugmentSection:
    """``augment``: the weak and strong views' photometric perturbations (fsae.augment)."""

    weak_color_jitter: list[float] = setting(
        [0.3, 0.3, 0.3, 0.1], "the weak view's ColorJitter: brightness, contrast, saturation, hue",
        allowed=">= 0", length=4,
    )  # fmt: skip
    strong_color_jitter: list[float] = setting(
        [0.3, 0.3, 0.3, 0.1], "the strong view's ColorJitter: brightness, contrast, saturation, hue",
        allowed=">= 0", length=4,
    )  # fmt: skip
    n_ops: int = setting(5, "RandAugment ops of the strong view", allowed=">= 0")
    blur_sigma: list[float] = setting(
        [0.1, 2.0], "[min, max] of the strong view's Gaussian blur sigma", allowed="> 0", length=2
    )
    p_blur: float = setting(1.0, "strong-view blur probability: 1.0 the authors (always) | 0.5 ours", allowed="[0, 1]")
    arithmetic: Literal["uint8", "float"] = setting(
        "uint8",
        "uint8 = every op on 8-bit levels with PIL's / torchvision's rounding, as the authors' PIL pipeline "
        "(fsae.augment.levels) | float = continuous ops on [0, 1] values (ours, fsae.augment.functional)",
    )
    blur: Literal["torchvision", "wide"] = setting(
        "torchvision",
        "torchvision = the authors' GaussianBlur(k): k x k kernel, reflect border | wide = ours: 2*ceil(3 sigma_max)+1 "
        "taps, replicate border",
    )
    blur_kernel_size: int = setting(
        0,
        "k of the torchvision blur: 0 = drawn once per run from train.seed as the authors (1, 3, 5 with "
        "P .40/.40/.19; 1 = no blur) | a fixed odd k",
    )
    solarize_max: float = setting(
        256.0,
        "RandAugment Solarize threshold ~ U[0, solarize_max) levels: 256.0 the authors | 255.0 ours (U[0, 1])",
        allowed="(0, 256]",
    )
    auto_augment: str = setting(
        "rand-m9-mstd0.5-inc1", 'data.geometry timm only: timm\'s auto_augment string ("" = none)'
    )
    random_erasing: float = setting(
        0.25,
        "data.geometry timm only: random-erasing probability (pixel mode, one box, after the normalisation: the weak "
        "view only)",
        allowed="[0, 1]",
    )


# --- the sections both stages have ----------------------------------------------------------------------------------


@dataclass
class OptimSection:
    """``optim``: the optimizer and its per-step schedule (fsae.engine.schedule.build_optimizer / lr_factor)."""

    name: Literal["sgd", "adamw"] = setting("sgd", "the optimizer (new layers at their lr_mult x optim.lr)")
    lr: float = setting(0.01, "the base learning rate", allowed="> 0")
    weight_decay: float = setting(0.0005, "weight decay", allowed=">= 0")
    momentum: float = setting(0.9, "SGD's momentum", allowed="[0, 1)")
    original_momentum_quirk: bool = setting(
        False, "the original passed weight decay as SGD's momentum (a CAM-stage quirk of the authors' code)"
    )
    schedule: Literal["poly", "cosine"] = setting("poly", "poly | cosine (per step, to 0 at the end)")
    poly_power: float = setting(0.9, "the poly schedule's power: lr x (1 - step / steps) ** poly_power", allowed="> 0")
    warmup_steps: int = setting(0, "linear warm-up steps", allowed=">= 0")


@dataclass
class TrainSection:
    """``train``: the training loop (fsae.engine.trainer.run_steps)."""

    batch_size: int = setting(8, "global: split over processes and accumulation steps", allowed=">= 1")
    gradient_accumulation_steps: int = setting(1, "batches accumulated into one optimizer step", allowed=">= 1")
    max_steps: int = setting(20000, "optimizer steps", allowed=">= 1")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = setting(
        None, "no | fp16 | bf16 | None: the launcher's (accelerate launch --mixed_precision / its config file, else no)"
    )
    seed: int = setting(0, "the run's random seed", allowed=">= 0")
    log_every: int = setting(20, "log every this many optimizer steps", allowed=">= 1")
    checkpoint_every: int = setting(1000, "checkpoint every this many optimizer steps", allowed=">= 1")
    keep_checkpoints: int = setting(2, "the newest checkpoints kept", allowed=">= 1")
    log_with: str | None = setting(
        None, "Accelerate trackers, comma-separated (tensorboard, wandb, mlflow, ...), under OUTPUT/logs; None: none"
    )


@dataclass
class CamOptimSection(OptimSection):
    """``optim`` of the CAM stage: :class:`OptimSection` plus the authors' schedule variants and clipping."""

    schedule: Literal["poly", "cosine", "cosine_epoch"] = setting(
        "poly",
        "poly | cosine (per step, to 0 at the end) | cosine_epoch (MCTformer's timm CosineLRScheduler, stepped once "
        "per epoch of len(dataset) // train.batch_size steps, with the absolute lrs below)",
    )
    schedule_steps: int | None = setting(
        None,
        "the optimizer steps the schedule spans (the authors' PolyOptimizer max_step); past it the lr stays at its "
        "last value. None: train.max_steps (the lr reaches 0 at the end)",
    )
    warmup_epochs: int = setting(0, "cosine_epoch only: warm-up epochs from optim.warmup_lr", allowed=">= 0")
    warmup_lr: float = setting(0.0, "cosine_epoch only: the warm-up's start lr (absolute, every group)", allowed=">= 0")
    min_lr: float = setting(0.0, "cosine_epoch only: the cosine's floor lr (absolute, every group)", allowed=">= 0")
    cosine_epochs: int | None = setting(
        None, "cosine_epoch only: the cosine's length in epochs (None: ceil(train.max_steps / steps per epoch))",
        allowed=">= 1",
    )  # fmt: skip
    epoch_lag: bool = setting(
        True,
        "cosine_epoch only: the authors' DeiT loop (epoch e trains at the schedule's value for e - 1; epochs 0 and 1 "
        "at warmup_lr) | false: timm's own stepping (epoch e at value e)",
    )
    clip_grad_norm: float | None = setting(
        None,
        "clip the gradient norm (over all parameters, after unscaling under fp16) at this value before every "
        "optimizer step, as SIPE's loop (clip_grad_norm_(model.parameters(), max_norm=1)); None: no clipping",
        allowed="> 0",
    )


@dataclass
class CamTrainSection(TrainSection):
    """``train`` of the CAM stage: :class:`TrainSection` plus its own switches."""

    compile: bool = setting(
        False,
        "torch.compile the method, the EMA teacher and the FSAE loss in place (nn.Module.compile; the loss and "
        "teacher with fullgraph): the first step and the step at fsae.start_step compile (seconds to minutes); "
        "benchmarks/bench_train_step.py --compile measures it",
    )


@dataclass
class CamConfig:
    """The CAM stage's config (``recipes/voc_fsae.py``, ``recipes/coco_fsae.py``): its defaults are :data:`DEFAULTS`."""

    method: MethodSection = field(default_factory=MethodSection)
    data: CamDataSection = field(default_factory=CamDataSection)
    fsae: FsaeSection = field(default_factory=FsaeSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: CamOptimSection = field(default_factory=CamOptimSection)
    train: CamTrainSection = field(default_factory=CamTrainSection)


# --- the schema -----------------------------------------------------------------------------------------------------


def did_you_mean(dotted: str, known: Collection[str]) -> str:
    """Default unknown-key hint: ``" (did you mean a.b?)"`` for a known key with the same last part, else ``""``."""
    close = [k for k in known if k.split(".")[-1] == dotted.split(".")[-1]]
    return f" (did you mean {close[0]}?)" if close else ""


def _fields(root: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, resolved type)`` of every key of the config dataclass ``root`` (sections recursed)."""
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _fields(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hint


def _type_text(annotation: Any) -> str:
    """An annotation as written: ``"int | None"`` (a string under ``from __future__ import annotations``), ``float``."""
    if isinstance(annotation, str):
        return annotation
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _key_type(hint: Any) -> tuple[type, tuple[Any, ...] | None, bool]:
    """``(type, choices or None, optional)`` of a key's annotation: ``Literal["a", "b"] | None`` -> ``(str, ("a",
    "b"), True)``; ``list[float]`` -> ``list``; ``dict[str, Any]`` -> ``dict``."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(hint)) != 2:
            raise TypeError(f"a config key is one type or that type | None, got {hint}")
        hint, optional = args[0], True
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        kinds = {type(c) for c in choices}
        if len(kinds) != 1:
            raise TypeError(f"the choices of a config key have one type, got {hint}")
        return kinds.pop(), choices, optional
    origin = typing.get_origin(hint) or hint
    if origin not in (bool, int, float, str, list, dict):
        raise TypeError(f"a config key is bool, int, float, str, a Literal, a list or a dict, got {hint}")
    return origin, None, optional


@dataclass(frozen=True)
class ConfigSchema:
    """What :func:`load_config` validates against: the tables :meth:`of` compiles from a config dataclass.

    Attributes:
        defaults: the nested dict of every key with its default value; a key's type is its default's type.
        choices: dotted key -> the values allowed.
        optional: dotted key that may be None -> the type it takes when set.
        free_form: dotted keys whose value is a free mapping (its inner keys are not checked).
        lists: dotted key -> the required length of its list of numbers.
        extra_check: ``config -> None`` run after the per-key checks; raises :class:`ConfigError`.
        unknown_hint: ``(dotted key, known dotted keys) -> str`` appended to the unknown-key error.
        ranges: dotted numeric key -> its allowed range, ``"> 0"``, ``">= 1"`` or an interval ``"[0, 1)"``
            (for a list key: of each of its numbers); an optional key's None is always allowed.
        root: the config dataclass the tables were compiled from (None: written as tables).
    """

    defaults: Mapping[str, Any]
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    optional: Mapping[str, type] = field(default_factory=dict)
    free_form: Collection[str] = frozenset()
    lists: Mapping[str, int] = field(default_factory=dict)
    extra_check: Callable[[dict[str, Any]], None] | None = None
    unknown_hint: Callable[[str, Collection[str]], str] = did_you_mean
    ranges: Mapping[str, str] = field(default_factory=dict)
    root: type | None = None

    @classmethod
    def of(
        cls,
        root: type,
        extra_check: Callable[[dict[str, Any]], None] | None = None,
        unknown_hint: Callable[[str, Collection[str]], str] = did_you_mean,
    ) -> ConfigSchema:
        """The schema of the config dataclass ``root``: one field per section, a dataclass whose fields (written
        with :func:`setting`) are the keys; each key's default must have its annotated type (TypeError otherwise).
        """
        choices: dict[str, tuple[Any, ...]] = {}
        optional: dict[str, type] = {}
        free_form: set[str] = set()
        lists: dict[str, int] = {}
        ranges: dict[str, str] = {}
        defaults = dataclasses.asdict(root())
        for key, f, hint in _fields(root):
            kind, allowed_values, may_be_none = _key_type(hint)
            default = _lookup(defaults, key)
            if not (type(default) is kind or (default is None and may_be_none)):
                raise TypeError(f"{key}: the default {default!r} is not {_type_text(f.type)}")
            if allowed_values is not None:
                if default not in allowed_values and default is not None:
                    raise TypeError(f"{key}: the default {default!r} is not one of {allowed_values}")
                choices[key] = allowed_values
            if may_be_none:
                optional[key] = kind
            if kind is dict:
                free_form.add(key)
            length = f.metadata.get("length")
            if length is not None:
                if kind is not list or len(default) != length:
                    raise TypeError(f"{key}: length {length} is for a list default of that length, got {default!r}")
                lists[key] = length
            spec = f.metadata.get("allowed")
            if spec is not None:
                if kind not in (int, float, list):
                    raise TypeError(f"{key}: a range is for a number or a list of numbers, not {_type_text(f.type)}")
                try:
                    _check_range(key, default, spec)
                except ConfigError as err:  # the default out of its own range
                    raise TypeError(f"{err} (its default)") from None
                ranges[key] = spec
        return cls(
            defaults=defaults,
            choices=choices,
            optional=optional,
            free_form=frozenset(free_form),
            lists=lists,
            extra_check=extra_check,
            unknown_hint=unknown_hint,
            ranges=ranges,
            root=root,
        )

    def known(self) -> dict[str, Any]:
        """The flat ``{dotted key: default}`` of :attr:`defaults`."""
        return _flatten(self.defaults, self.free_form)

    def docs(self) -> dict[str, str]:
        """``{dotted key: its one-line comment}`` (empty for a schema written as tables)."""
        return {} if self.root is None else {key: f.metadata.get("doc", "") for key, f, _ in _fields(self.root)}

    def reference(self) -> str:
        """One line per key: ``optim.lr: float = 0.01 (> 0) -- the base learning rate``."""
        if self.root is None:
            return "\n".join(f"{key} = {value!r}" for key, value in self.known().items())
        known, lines = self.known(), []
        for key, f, _ in _fields(self.root):
            meta = f.metadata
            length = f", {meta['length']} numbers" if meta.get("length") else ""
            allowed = f" ({meta['allowed']})" if meta.get("allowed") else ""
            lines.append(f"{key}: {_type_text(f.type)}{length} = {known[key]!r}{allowed} -- {meta.get('doc', '')}")
        return "\n".join(lines)


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    """``tree[a][b]`` for ``dotted = "a.b"``."""
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _flatten(tree: Mapping[str, Any], free_form: Collection[str], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; the mappings at ``free_form`` keys stay whole."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in free_form:
            flat.update(_flatten(value, free_form, path + "."))
        else:
            flat[path] = value
    return flat


def _set(config: dict[str, Any], dotted: str, value: Any, schema: ConfigSchema) -> None:
    """``config[a][b] = value`` for ``dotted = "a.b"``, a key of ``schema`` (or inside one of its free-form keys).

    A mapping given for a section (``dotted`` a prefix of known keys) is merged into it key by key.
    """
    known = schema.known()
    inside_free_form = any(dotted.startswith(f + ".") for f in schema.free_form)
    if dotted not in known and not inside_free_form:
        if isinstance(value, dict) and any(k.startswith(dotted + ".") for k in known):
            for key, inner in value.items():
                _set(config, f"{dotted}.{key}", inner, schema)
            return
        raise ConfigError(f"unknown config key {dotted!r}{schema.unknown_hint(dotted, known)}")
    if isinstance(value, dict) and dotted in known and dotted not in schema.free_form:  # a mapping for a plain key
        expected = schema.optional.get(dotted, type(known[dotted]))
        raise ConfigError(f"{dotted} must be {expected.__name__}, got {value!r}")
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_types(config: dict[str, Any], schema: ConfigSchema) -> None:
    """Every key's type, choices and list length, then ``schema.extra_check``; :class:`ConfigError` otherwise."""
    defaults = schema.known()
    for key, value in _flatten(config, schema.free_form).items():
        if key in schema.free_form:
            if not isinstance(value, dict):
                raise ConfigError(f"{key} must be a mapping, got {value!r}")
            continue
        if value is None and key in schema.optional:
            continue
        expected = schema.optional.get(key, type(defaults.get(key)))
        ok = isinstance(value, expected) or (expected is float and _is_number(value))
        if expected is int and isinstance(value, bool):
            ok = False
        if not ok:
            raise ConfigError(f"{key} must be {expected.__name__}, got {value!r}")
        if key in schema.choices and value not in schema.choices[key]:
            raise ConfigError(f"{key} must be one of {schema.choices[key]}, got {value!r}")
        length = schema.lists.get(key)
        if length is not None and (len(value) != length or not all(_is_number(v) for v in value)):
            raise ConfigError(f"{key} must be a list of {length} numbers, got {value!r}")
        if key in schema.ranges:
            _check_range(key, value, schema.ranges[key])
    if schema.extra_check is not None:
        schema.extra_check(config)


def _in_range(value: float, spec: str) -> bool:
    """Whether ``value`` lies in ``spec``: ``"> a"``, ``">= a"``, ``"< a"``, ``"<= a"`` or an interval ``"[a, b)"``."""
    spec = spec.strip()
    for op, test in ((">=", float.__ge__), ("<=", float.__le__), (">", float.__gt__), ("<", float.__lt__)):
        if spec.startswith(op):
            return test(float(value), float(spec[len(op) :]))
    low, high = (float(x) for x in spec[1:-1].split(","))
    above = value >= low if spec[0] == "[" else value > low
    below = value <= high if spec[-1] == "]" else value < high
    return above and below


def _check_range(key: str, value: Any, spec: str) -> None:
    """:class:`ConfigError` ``"optim.lr must be > 0, got -1"`` unless ``value`` (each number of a list) is in range."""
    allowed = spec if spec[0] in "<>" else f"in {spec}"
    if isinstance(value, list):
        if not all(_is_number(v) and _in_range(v, spec) for v in value):
            raise ConfigError(f"{key} must be a list of numbers {allowed}, got {value!r}")
    elif value is not None and not _in_range(value, spec):
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def check_backbone(key: str, name: str) -> None:
    """:class:`ConfigError` ``"method.backbone: unknown backbone 'resnet1888' (timm or fsae; did you mean
    resnet18?)"`` unless ``name`` is a timm model (fsae's ``resnet38d`` included; a ``.tag`` allowed).

    ``hf-hub:`` / ``local-dir:`` names are left to timm (they are resolved when the model is built).
    """
    import timm

    import fsae.models  # noqa: F401  (registers resnet38d in timm's registry)

    if ":" in name or timm.is_model(name):
        return
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"{key}: unknown backbone {name!r} (timm or fsae{hint})")


# Where a constructor's ``**kwargs`` go: "module:class" -> ("module:class" of the receiver or "timm", the
# receiver's arguments the forwarding class sets itself).  A ``**kwargs`` not listed here is not checked.
_FORWARDS = {
    "fsae.methods.sipe:SIPEMethod": ("fsae.models.sipe_net:SIPENet", ()),
    "fsae.methods.mctformer:MCTformerMethod": ("fsae.models.mctformer_net:MCTformerV2Net", ()),
    "fsae.models.sipe_net:SIPENet": ("timm", ("features_only", "out_indices")),
    "fsae.models.mctformer_net:MCTformerV2Net": ("timm", ("features_only", "dynamic_img_size")),
}
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _import(target: str) -> Any:
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _timm_arguments(backbone: str) -> set[str] | None:
    """The keyword arguments ``timm.create_model(backbone, ...)`` takes: its own plus those of the model classes
    of the backbone's timm module (the classes taking ``num_classes``); None when they cannot be found."""
    import timm
    from torch import nn

    try:
        from timm.models._registry import model_entrypoint

        module = inspect.getmodule(model_entrypoint(backbone.split(".")[0]))
    except Exception:  # an hf-hub name, a timm without this helper: leave the check to timm
        return None
    names = {n for n, p in inspect.signature(timm.create_model).parameters.items() if p.kind in _NAMED}
    names |= {"features_only", "out_indices", "feature_cls", "feature_cfg", "output_stride"}
    found = False
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ != getattr(module, "__name__", None) or not issubclass(cls, nn.Module):
            continue
        for base in cls.__mro__:
            if base is nn.Module:
                break
            if "__init__" in vars(base):
                params = inspect.signature(base.__init__).parameters
                if "num_classes" in params:
                    found = True
                    names |= {n for n, p in params.items() if p.kind in _NAMED}
    return names - {"self", "model_name"} if found else None


def accepted_options(target: Any, backbone: str) -> set[str] | None:
    """The keyword arguments class ``target`` (or ``"module:class"``) accepts, following its ``**kwargs`` as
    :data:`_FORWARDS` says (down to timm's model for ``backbone``); None when some ``**kwargs`` is open-ended."""
    names: set[str] = set()
    taken: set[str] = set()
    while True:
        cls = _import(target) if isinstance(target, str) else target
        params = inspect.signature(cls).parameters
        names |= {n for n, p in params.items() if p.kind in _NAMED}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names - taken
        forward = _FORWARDS.get(f"{cls.__module__}:{cls.__qualname__}")
        if forward is None:
            return None
        target, fixed = forward
        taken |= set(fixed)
        if target == "timm":
            timm_names = _timm_arguments(backbone)
            return None if timm_names is None else (names | timm_names) - taken


def check_options(key: str, options: Mapping[str, Any], target: Any, fixed: Mapping[str, str], backbone: str) -> None:
    """:class:`ConfigError` naming ``key.<option>`` for an option the class ``target`` does not accept (with the
    accepted ones), or for one of ``fixed`` (``{argument: where it comes from}``: set by the trainer)."""
    for name in options:
        if name in fixed:
            raise ConfigError(f"{key}.{name}: not an option, it is set from {fixed[name]}")
    accepted = accepted_options(target, backbone)
    if accepted is None:
        return
    accepted -= set(fixed)
    for name, value in options.items():
        if name not in accepted:
            close = difflib.get_close_matches(str(name), accepted, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown option {key}.{name}={value!r}{hint}; accepted options: {', '.join(sorted(accepted))}"
            )


METHOD_FIXED = {
    "num_classes": "the dataset",
    "backbone": "method.backbone",
    "pretrained": "method.pretrained",
    "pretrained_path": "method.pretrained_path",
}


def _check_cam(config: dict[str, Any]) -> None:
    """The CAM stage's value checks beyond the types, choices and ranges of :class:`CamConfig` (checked first)."""
    schedule_steps = config["optim"]["schedule_steps"]
    if schedule_steps is not None and schedule_steps < 1:
        raise ConfigError(f"optim.schedule_steps must be >= 1 (or null), got {schedule_steps}")
    if config["data"]["geometry"] == "timm" and config["data"]["saliency_dir"] is not None:
        raise ConfigError("data.geometry=timm cannot carry saliency maps (RandAugment moves pixels): unset "
                          "data.saliency_dir or use another geometry")  # fmt: skip
    optim = config["optim"]
    if optim["schedule"] == "cosine_epoch":
        clash = [f"optim.{k}={optim[k]}" for k in ("warmup_steps", "schedule_steps") if optim[k]]
        if clash:
            raise ConfigError(f"optim.schedule=cosine_epoch counts in epochs: {', '.join(clash)} do not apply to it "
                              "(use optim.warmup_epochs / optim.cosine_epochs)")  # fmt: skip
        for key in ("warmup_lr", "min_lr"):
            if optim[key] > optim["lr"]:
                raise ConfigError(f"optim.{key}={optim[key]} is above optim.lr={optim['lr']}")
    else:
        clash = [f"optim.{k}={optim[k]}" for k in ("warmup_epochs", "warmup_lr", "min_lr", "cosine_epochs")
                 if optim[k]]  # fmt: skip
        if clash:
            raise ConfigError(f"{', '.join(clash)}: only the cosine_epoch schedule uses them "
                              f"(optim.schedule={optim['schedule']})")  # fmt: skip
    if len(config["data"]["long_side"]) != 2 or config["data"]["long_side"][0] > config["data"]["long_side"][1]:
        raise ConfigError(f"data.long_side must be [min, max], got {config['data']['long_side']}")
    aug = config["augment"]
    k = aug["blur_kernel_size"]
    if k < 0 or (k > 0 and k % 2 == 0):
        raise ConfigError(f"augment.blur_kernel_size must be 0 (drawn) or a positive odd k, got {k}")
    if aug["blur_sigma"][0] > aug["blur_sigma"][1]:
        raise ConfigError(f"augment.blur_sigma must be [min, max], got {aug['blur_sigma']}")
    for name in ("weak_color_jitter", "strong_color_jitter"):
        if aug[name][3] > 0.5:
            raise ConfigError(f"augment.{name}: its hue (the 4th number) must be in [0, 0.5], got {aug[name]}")
    # the expensive checks last (they import timm and the method's module)
    method = check_registered(config)
    check_backbone("method.backbone", config["method"]["backbone"])
    check_options("method.options", config["method"]["options"], method, METHOD_FIXED, config["method"]["backbone"])


def check_registered(config: dict[str, Any]) -> type:
    """Import ``method.module`` (when set), then look ``method.name`` and ``data.dataset`` up in the registries:
    the method's class, or :class:`ConfigError` listing the registered names."""
    from fsae.data import get_dataset
    from fsae.methods import get_method, import_method_module

    import_method_module(config["method"].get("module"))
    try:
        get_dataset(config["data"]["dataset"])
    except ValueError as err:
        raise ConfigError(f"data.dataset: {err}") from None
    try:
        return get_method(config["method"]["name"])
    except ValueError as err:
        raise ConfigError(f"method.name: {err}") from None


CAM_SCHEMA = ConfigSchema.of(CamConfig, extra_check=_check_cam)
#: Every key of the CAM stage with its default, as the nested dict :func:`load_config` returns.
DEFAULTS: dict[str, Any] = CAM_SCHEMA.defaults  # type: ignore[assignment]


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config[a][b] = value`` for ``dotted = "a.b"``; the key must exist in :data:`DEFAULTS`."""
    _set(config, dotted, value, CAM_SCHEMA)


def _yaml_where(err: yaml.YAMLError, one_line: bool = False) -> str:
    """``" at line 3, column 7: expected ',' or ']', but got '<scalar>'"`` from a PyYAML error (1-based, one line;
    ``one_line``: the column only)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    if mark is None:
        return f": {problem}"
    where = (
        f"column {mark.column + 1}"
        if one_line and mark.line == 0
        else f"line {mark.line + 1}, column {mark.column + 1}"
    )
    return f" at {where}: {problem}"


BASE_KEY = "_base_"


def _nest(loaded: Mapping[Any, Any]) -> dict[str, Any]:
    """A file's top level with its dotted keys as sections: ``{"optim.lr": 1}`` -> ``{"optim": {"lr": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in loaded.items():
        first, *rest = str(key).split(".")
        for part in reversed(rest):
            value = {part: value}
        nested = _merge(nested, {first: value})
    return nested


def _merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: a mapping over a mapping merges key by key, anything else replaces."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """:func:`read_config_file` of ``path``, reached through the files of ``chain`` (their ``_base_``)."""
    chain = (*chain, path)
    shown = " -> ".join(str(p) for p in chain)
    via = f" (_base_ chain: {shown})" if len(chain) > 1 else ""
    if any(path.resolve() == earlier.resolve() for earlier in chain[:-1]):
        raise ConfigError(f"_base_ cycle: {shown}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}{via}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML{_yaml_where(err)}{via}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping{via}")
    bases = loaded.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names, got {bases!r}{via}")
    merged: dict[str, Any] = {}
    for base in bases:  # relative to the file that names it; later bases over earlier ones
        merged = _merge(merged, _read(Path(os.path.normpath(path.parent / base)), chain))
    return _merge(merged, _nest(loaded))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The keys a YAML config file sets, without the defaults: its own keys deep-merged over those of its
    ``_base_`` files (each read the same way; a list merged in order, the later over the earlier).

    ``_base_`` is a path relative to the file (or a list of them); a mapping of the file merges into the base's
    mapping at the same key, any other value (a number, a string, a list) replaces it.  Dotted top-level keys are
    sections (``optim.lr: 0.1`` is ``optim: {lr: 0.1}``).

    Raises:
        ConfigError: a missing or invalid file, a bad ``_base_``, a ``_base_`` cycle (the message names the chain
            of files).
    """
    return _read(Path(path), ())


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str | tuple[str, Any]] = (),
    schema: ConfigSchema = CAM_SCHEMA,
) -> dict[str, Any]:
    """``schema.defaults`` <- YAML file (over its ``_base_`` files) <- ``key=value`` overrides, validated.

    Args:
        path: a YAML file whose top level is a mapping (sections may be nested mappings or dotted keys; ``_base_``:
            the files it starts from, see :func:`read_config_file`), or None.
        overrides: ``"a.b=value"`` strings (the value parsed as YAML), or ``("a.b", value)`` pairs (the value as
            is: paths and flags from a command line), applied in order after the file.
        schema: the keys, types and checks; :data:`CAM_SCHEMA` (the CAM stage) by default.

    Returns:
        A new nested dict with every key of ``schema.defaults``.

    Raises:
        ConfigError: a missing / invalid file, a malformed override, an unknown key, a wrong type or value.
    """
    config = copy.deepcopy(dict(schema.defaults))
    if path is not None:
        for key, value in read_config_file(path).items():
            _set(config, str(key), value, schema)
    for item in overrides:
        if isinstance(item, tuple):  # (key, value) from a command-line flag: the value as given, never YAML
            _set(config, item[0], item[1], schema)
            continue
        if "=" not in item:
            raise ConfigError(f"override must look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML{_yaml_where(err, one_line=True)}") from None
        _set(config, key.strip(), value, schema)
    _check_types(config, schema)
    return config
