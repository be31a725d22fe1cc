"""Training configuration: YAML files with defaults, ``--set key=value`` overrides, early validation.

A config is a nested dict.  :data:`DEFAULTS` holds every key with its default (the paper's PPC + FSAE
setting on VOC, METHOD.md §2-§4); a YAML file overrides part of it, ``--set a.b=value`` overrides one
key (the value is parsed as YAML: ``--set optim.lr=0.02``, ``--set fsae.enabled=false``,
``--set data.long_side=[256,448]``).  Unknown keys and wrong types are :class:`ConfigError` before any
heavy work starts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULTS", "ConfigError", "load_config", "set_key"]


class ConfigError(ValueError):
    """A configuration problem, reported before training starts."""


DEFAULTS: dict[str, Any] = {
    "method": {
        "name": "ppc",  # ppc | sipe | mctformer
        "backbone": "resnet38d",
        "pretrained": False,  # timm's published weights (needs internet)
        "pretrained_path": None,  # local state dict / safetensors (see fsae.models.pretrained)
        "options": {},  # extra keyword arguments of the method class
    },
    "data": {
        "dataset": "voc",  # voc | coco
        "root": None,  # the VOC2012 / COCO2014 folder (--data-root)
        "split": "train_aug",
        "crop_size": 448,
        "long_side": [448, 768],
        "flip": 0.5,
        "num_workers": 4,
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
        "ema_decay": 0.999,
        "teacher_mode": "train",  # train (dropout on, the original) | eval
    },
    "augment": {
        "weak_color_jitter": [0.3, 0.3, 0.3, 0.1],
        "strong_color_jitter": [0.3, 0.3, 0.3, 0.1],
        "n_ops": 5,
        "blur_sigma": [0.1, 2.0],
        "p_blur": 0.5,
    },
    "optim": {
        "name": "sgd",  # sgd | adamw
        "lr": 0.01,
        "weight_decay": 0.0005,
        "momentum": 0.9,
        "original_momentum_quirk": False,  # the original passed weight decay as SGD's momentum
        "schedule": "poly",  # poly | cosine
        "poly_power": 0.9,
        "warmup_steps": 0,
    },
    "train": {
        "batch_size": 8,  # global: split over processes and accumulation steps
        "gradient_accumulation_steps": 1,
        "max_steps": 20000,  # optimizer steps
        "mixed_precision": "no",  # no | fp16 | bf16
        "seed": 0,
        "log_every": 20,
        "checkpoint_every": 1000,
        "keep_checkpoints": 2,
        "tensorboard": False,
    },
}

CHOICES = {
    "method.name": ("ppc", "sipe", "mctformer"),
    "data.dataset": ("voc", "coco"),
    "fsae.absent": ("zero", "exclude"),
    "fsae.teacher_mode": ("train", "eval"),
    "optim.name": ("sgd", "adamw"),
    "optim.schedule": ("poly", "cosine"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
}
# Keys whose default is None, with the type they take when set.
OPTIONAL = {"method.pretrained_path": str, "data.root": str, "fsae.boundary_weight": float}
FREE_FORM = {"method.options"}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in FREE_FORM:
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config[a][b] = value`` for ``dotted = "a.b"``; the key must exist in :data:`DEFAULTS`."""
    known = _flatten(DEFAULTS)
    inside_free_form = any(dotted.startswith(f + ".") for f in FREE_FORM)
    if dotted not in known and not inside_free_form:
        close = [k for k in known if k.split(".")[-1] == dotted.split(".")[-1]]
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown config key {dotted!r}{hint}")
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _default_at(path: str) -> Any:
    node: Any = DEFAULTS
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _merge(config: dict[str, Any], update: dict[str, Any], prefix: str = "") -> None:
    for key, value in update.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in FREE_FORM and isinstance(_default_at(path), dict):
            _merge(config, value, path + ".")
        else:
            set_key(config, path, value)


def _check_types(config: dict[str, Any]) -> None:
    defaults = _flatten(DEFAULTS)
    for key, value in _flatten(config).items():
        default = defaults.get(key)
        if key in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{key} must be a mapping, got {value!r}")
            continue
        if value is None and key in OPTIONAL:
            continue
        expected = OPTIONAL.get(key, type(default))
        ok = isinstance(value, expected) or (
            expected is float and isinstance(value, int) and not isinstance(value, bool)
        )
        if expected is int and isinstance(value, bool):
            ok = False
        if not ok:
            raise ConfigError(f"{key} must be {expected.__name__}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{key} must be one of {CHOICES[key]}, got {value!r}")
    train = config["train"]
    for key in ("batch_size", "gradient_accumulation_steps", "max_steps", "log_every", "checkpoint_every"):
        if train[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {train[key]}")
    if config["fsae"]["start_step"] < 0:
        raise ConfigError(f"fsae.start_step must be >= 0, got {config['fsae']['start_step']}")
    if not 0 <= config["fsae"]["ema_decay"] < 1:
        raise ConfigError(f"fsae.ema_decay must be in [0, 1), got {config['fsae']['ema_decay']}")
    if len(config["data"]["long_side"]) != 2 or config["data"]["long_side"][0] > config["data"]["long_side"][1]:
        raise ConfigError(f"data.long_side must be [min, max], got {config['data']['long_side']}")


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults <- YAML file <- ``key=value`` overrides, validated."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        _merge(config, loaded)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override must look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from None
        set_key(config, key.strip(), value)
    _check_types(config)
    return config
