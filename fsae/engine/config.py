"""Training configuration: YAML files with defaults, ``--set key=value`` overrides, early validation.

A config is a nested dict.  :data:`DEFAULTS` holds every key with its default (the paper's PPC + FSAE
setting on VOC, docs/method.md §2-§4); a YAML file overrides part of it, ``--set a.b=value`` overrides one
key (the value is parsed as YAML: ``--set optim.lr=0.02``, ``--set fsae.enabled=false``,
``--set data.long_side=[256,448]``).  Unknown keys and wrong types are :class:`ConfigError` before any
heavy work starts.

The loader is generic: a :class:`ConfigSchema` (defaults, choices, typed optional keys, free-form mappings,
fixed-length numeric lists, extra value checks, a hint for unknown keys) drives :func:`load_config`;
:data:`CAM_SCHEMA` is the CAM stage's, :mod:`fsae.engine.seg_config` defines the segmentation stage's.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsae.errors import ConfigError

__all__ = [
    "CAM_SCHEMA",
    "DEFAULTS",
    "ConfigError",
    "ConfigSchema",
    "accepted_options",
    "check_backbone",
    "check_options",
    "check_registered",
    "did_you_mean",
    "load_config",
    "set_key",
]


DEFAULTS: dict[str, Any] = {
    "method": {
        "name": "ppc",  # a registered method (fsae.methods.list_methods(): ppc | sipe | mctformer | yours)
        # a module imported before method.name and data.dataset are looked up: yours, registering a method
        # (fsae.methods.register_method) or a dataset (fsae.data.register_dataset), e.g. mypkg.toco
        "module": None,
        "backbone": "resnet38d",
        "pretrained": False,  # timm's published weights (needs internet)
        "pretrained_path": None,  # local state dict / safetensors (see fsae.models.pretrained)
        "options": {},  # extra keyword arguments of the method class
    },
    "data": {
        "dataset": "voc",  # a registered dataset (fsae.data.list_datasets(): voc | coco | yours)
        "root": None,  # the VOC2012 / COCO2014 folder (--data-root)
        "split": "train_aug",
        "crop_size": 448,
        "long_side": [448, 768],
        "flip": 0.5,
        # loader worker processes per training process; None: the CPUs this process may use, at most 4
        "num_workers": None,
        # an unreadable image / mask / saliency map: raise (stop with the file's name) | skip (log it, train on the
        # next sample; the dataset counts the skipped files: fsae.data.SegmentationDataset.skipped)
        "on_error": "raise",
        # folder of off-the-shelf saliency maps under data.root (VOC: e.g. SALImages; COCO: inside the split's
        # folder): PPC's EPS term L_sal (docs/method.md §4). None: no saliency ("PPC on SEAM").
        "saliency_dir": None,
        # where the views are cut (fsae.augment.views): authors = the loader delivers the resized, flipped image
        # on a (3, max_long, max_long) canvas plus the crop box, and each view is ColorJittered over the whole
        # image before the crop, as the authors' PIL pipeline; crop (ours) = the loader crops, views jitter the crop;
        # timm = MCTformer's view from timm's create_transform (random-resized crop, flip, RandAugment
        # augment.auto_augment, random erasing augment.random_erasing), FSAE's views made from it as in crop
        "geometry": "authors",
        # crop pixels outside a smaller image: black (the authors' zero container) | mean (ImageNet mean, 0 after
        # normalisation; ours)
        "crop_fill": "black",
        # saliency map resampling with the image: bicubic (the authors' RandomResizeLong) | bilinear (ours)
        "saliency_resize": "bicubic",
    },
    "fsae": {
        "enabled": True,
        "weight": 1.0,
        "start_step": 0,  # FSAE term from this optimizer step on (the EMA teacher is updated from step 0)
        "conf_threshold": 0.95,
        "ring_threshold": 0.8,
        "ring_kernel": 3,
        "absent": "zero",
        "boundary_weight": None,
        "mask_student": True,  # False: the student's CE over its raw logits (absent classes lowered too)
        "ema_decay": 0.999,
        "teacher_mode": "train",  # train (dropout on, the original) | eval
    },
    "augment": {
        "weak_color_jitter": [0.3, 0.3, 0.3, 0.1],
        "strong_color_jitter": [0.3, 0.3, 0.3, 0.1],
        "n_ops": 5,
        "blur_sigma": [0.1, 2.0],
        "p_blur": 1.0,  # strong-view blur probability: 1.0 the authors (always) | 0.5 ours
        # uint8 = every op on 8-bit levels with PIL's / torchvision's rounding, as the authors' PIL pipeline
        # (fsae.augment.levels) | float = continuous ops on [0, 1] values (ours, fsae.augment.functional)
        "arithmetic": "uint8",
        # torchvision = the authors' GaussianBlur(k): k x k kernel, reflect border | wide = ours: 2*ceil(3 sigma_max)+1
        # taps, replicate border
        "blur": "torchvision",
        # k of the torchvision blur: 0 = drawn once per run from train.seed as the authors (1, 3, 5 with
        # P .40/.40/.19; 1 = no blur) | a fixed odd k
        "blur_kernel_size": 0,
        # RandAugment Solarize threshold ~ U[0, solarize_max) levels: 256.0 the authors | 255.0 ours (U[0, 1])
        "solarize_max": 256.0,
        # data.geometry timm only: timm's auto_augment string ("" = none) and random-erasing probability
        # (pixel mode, one box, after the normalisation: the weak view only)
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "random_erasing": 0.25,
    },
    "optim": {
        "name": "sgd",  # sgd | adamw
        "lr": 0.01,
        "weight_decay": 0.0005,
        "momentum": 0.9,
        "original_momentum_quirk": False,  # the original passed weight decay as SGD's momentum
        # poly | cosine (per step, to 0 at the end) | cosine_epoch (MCTformer's timm CosineLRScheduler, stepped
        # once per epoch of len(dataset) // train.batch_size steps, with the absolute lrs below)
        "schedule": "poly",
        "poly_power": 0.9,
        "warmup_steps": 0,
        # the optimizer steps the schedule spans (the authors' PolyOptimizer max_step); past it the lr stays at
        # its last value. None: train.max_steps (the lr reaches 0 at the end)
        "schedule_steps": None,
        # cosine_epoch only: warm-up epochs from warmup_lr (absolute, every group), the floor min_lr (absolute),
        # the cosine's length in epochs (None: ceil(train.max_steps / steps per epoch)), and epoch_lag = the
        # authors' DeiT loop (epoch e trains at the schedule's value for e - 1; epochs 0 and 1 at warmup_lr) |
        # false: timm's own stepping (epoch e at value e)
        "warmup_epochs": 0,
        "warmup_lr": 0.0,
        "min_lr": 0.0,
        "cosine_epochs": None,
        "epoch_lag": True,
        # clip the gradient norm (over all parameters, after unscaling under fp16) at this value before every
        # optimizer step, as SIPE's loop (clip_grad_norm_(model.parameters(), max_norm=1)); None: no clipping
        "clip_grad_norm": None,
    },
    "train": {
        "batch_size": 8,  # global: split over processes and accumulation steps
        "gradient_accumulation_steps": 1,
        "max_steps": 20000,  # optimizer steps
        # no | fp16 | bf16 | None: the launcher's (accelerate launch --mixed_precision / its config file, else no)
        "mixed_precision": None,
        "seed": 0,
        "log_every": 20,
        "checkpoint_every": 1000,
        "keep_checkpoints": 2,
        # Accelerate trackers, comma-separated (tensorboard, wandb, mlflow, ...), under OUTPUT/logs; None: none
        "log_with": None,
    },
}

CHOICES = {
    "data.geometry": ("authors", "crop", "timm"),
    "data.crop_fill": ("black", "mean"),
    "data.saliency_resize": ("bicubic", "bilinear"),
    "data.on_error": ("raise", "skip"),
    "augment.arithmetic": ("uint8", "float"),
    "augment.blur": ("torchvision", "wide"),
    "fsae.absent": ("zero", "exclude"),
    "fsae.teacher_mode": ("train", "eval"),
    "optim.name": ("sgd", "adamw"),
    "optim.schedule": ("poly", "cosine", "cosine_epoch"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
}
# Keys whose default is None, with the type they take when set.
OPTIONAL = {
    "method.pretrained_path": str,
    "method.module": str,
    "data.root": str,
    "data.saliency_dir": str,
    "fsae.boundary_weight": float,
    "optim.schedule_steps": int,
    "optim.cosine_epochs": int,
    "optim.clip_grad_norm": float,
    "train.mixed_precision": str,
    "train.log_with": str,
    "data.num_workers": int,
}
FREE_FORM = {"method.options"}
# Fixed-length lists of numbers.
LISTS = {"data.long_side": 2, "augment.weak_color_jitter": 4, "augment.strong_color_jitter": 4, "augment.blur_sigma": 2}
# The ranges of the optimizer and loop keys both stages share (seg_config.SEG_RANGES too).
TRAINING_RANGES = {
    "optim.lr": "> 0",
    "optim.weight_decay": ">= 0",
    "optim.momentum": "[0, 1)",
    "optim.poly_power": "> 0",
    "optim.warmup_steps": ">= 0",
    "train.batch_size": ">= 1",
    "train.gradient_accumulation_steps": ">= 1",
    "train.max_steps": ">= 1",
    "train.seed": ">= 0",
    "train.log_every": ">= 1",
    "train.checkpoint_every": ">= 1",
    "train.keep_checkpoints": ">= 1",
}
# The allowed range of every numeric key (of each number of a list); see ConfigSchema.ranges.
RANGES = {
    **TRAINING_RANGES,
    "optim.warmup_epochs": ">= 0",
    "optim.warmup_lr": ">= 0",
    "optim.min_lr": ">= 0",
    "optim.cosine_epochs": ">= 1",
    "optim.clip_grad_norm": "> 0",
    "data.crop_size": ">= 1",
    "data.long_side": ">= 1",
    "data.flip": "[0, 1]",
    "data.num_workers": ">= 0",
    "fsae.weight": ">= 0",
    "fsae.start_step": ">= 0",
    "fsae.conf_threshold": "[0, 1]",
    "fsae.ring_threshold": "[0, 1]",
    "fsae.ring_kernel": ">= 1",
    "fsae.boundary_weight": ">= 0",
    "fsae.ema_decay": "[0, 1)",
    "augment.weak_color_jitter": ">= 0",
    "augment.strong_color_jitter": ">= 0",
    "augment.n_ops": ">= 0",
    "augment.blur_sigma": "> 0",
    "augment.p_blur": "[0, 1]",
    "augment.solarize_max": "(0, 256]",
    "augment.random_erasing": "[0, 1]",
}


def did_you_mean(dotted: str, known: Collection[str]) -> str:
    """Default unknown-key hint: ``" (did you mean a.b?)"`` for a known key with the same last part, else ``""``."""
    close = [k for k in known if k.split(".")[-1] == dotted.split(".")[-1]]
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True)
class ConfigSchema:
    """What :func:`load_config` validates against.

    Attributes:
        defaults: the nested dict of every key with its default value; a key's type is its default's type.
        choices: dotted key -> the values allowed.
        optional: dotted key whose default is None -> the type it takes when set.
        free_form: dotted keys whose value is a free mapping (its inner keys are not checked).
        lists: dotted key -> the required length of its list of numbers.
        extra_check: ``config -> None`` run after the per-key checks; raises :class:`ConfigError`.
        unknown_hint: ``(dotted key, known dotted keys) -> str`` appended to the unknown-key error.
        ranges: dotted numeric key -> its allowed range, ``"> 0"``, ``">= 1"`` or an interval ``"[0, 1)"``
            (for a list key: of each of its numbers); an optional key's None is always allowed.
    """

    defaults: Mapping[str, Any]
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    optional: Mapping[str, type] = field(default_factory=dict)
    free_form: Collection[str] = frozenset()
    lists: Mapping[str, int] = field(default_factory=dict)
    extra_check: Callable[[dict[str, Any]], None] | None = None
    unknown_hint: Callable[[str, Collection[str]], str] = did_you_mean
    ranges: Mapping[str, str] = field(default_factory=dict)

    def known(self) -> dict[str, Any]:
        """The flat ``{dotted key: default}`` of :attr:`defaults`."""
        return _flatten(self.defaults, self.free_form)


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
    """The CAM stage's value checks beyond types and :data:`RANGES` (checked first)."""
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


CAM_SCHEMA = ConfigSchema(
    defaults=DEFAULTS,
    choices=CHOICES,
    optional=OPTIONAL,
    free_form=FREE_FORM,
    lists=LISTS,
    extra_check=_check_cam,
    ranges=RANGES,
)


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


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str | tuple[str, Any]] = (),
    schema: ConfigSchema = CAM_SCHEMA,
) -> dict[str, Any]:
    """``schema.defaults`` <- YAML file <- ``key=value`` overrides (values parsed as YAML), validated.

    Args:
        path: a YAML file whose top level is a mapping (sections may be nested mappings or dotted keys), or None.
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
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML{_yaml_where(err)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        for key, value in loaded.items():
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
