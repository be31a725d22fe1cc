"""Configuration of the segmentation stage (``recipes/train_seg.py``): defaults, YAML, ``--set`` overrides.

Same conventions as :mod:`fsae.engine.config` (the CAM stage): a nested dict, :data:`SEG_DEFAULTS` holds every
key with its default -- docs/method.md §6: DeepLab-v2 ResNet-101 on the pseudo-masks of train_aug, crop 448, scale
0.5-1.5, batch 10, lr 1e-3 (head x10), poly 0.9, weight decay 5e-4, 20k iterations; test at scales 0.5-1.75 with
flips (+ CRF) -- a YAML file overrides part of it and ``--set a.b=value`` one key (value parsed as YAML).  Unknown
keys, wrong types and impossible values are a :class:`~fsae.engine.config.ConfigError` before any heavy work.

The ``optim`` section has the CAM stage's keys, so :func:`fsae.engine.schedule.build_optimizer` and
:func:`fsae.engine.schedule.lr_factor` serve both stages.  The loading and type checks are
:func:`fsae.engine.config.load_config`'s, driven by :data:`SEG_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from fsae.engine.config import (
    TRAINING_RANGES,
    ConfigError,
    ConfigSchema,
    check_backbone,
    check_options,
    did_you_mean,
    load_config,
)

__all__ = ["SEG_DEFAULTS", "SEG_SCHEMA", "load_seg_config"]

SEG_DEFAULTS: dict[str, Any] = {
    "model": {
        "name": "deeplabv2",  # deeplabv2 | deeplabv3plus
        "backbone": "resnet101",
        "pretrained": False,  # timm's published weights (needs internet)
        "pretrained_path": None,  # local ImageNet / COCO state dict (the original used COCO-pretrained ResNet-101)
        "output_stride": 8,
        "freeze_bn": True,  # backbone BatchNorm frozen (the original; needs pretrained statistics)
        "sync_bn": False,  # head BatchNorm synchronised across processes (DeepLab-v3+)
        "options": {},  # extra keyword arguments of the model class (dilations, dropout, ...)
    },
    "data": {
        "dataset": "voc",
        "root": None,  # the VOC2012 folder (--data-root)
        "pseudo_labels": None,  # folder of <id>.png pseudo-masks, or its parent with masks/ (--pseudo-labels);
        # None trains on gt_mask_dir (the fully supervised reference)
        "gt_mask_dir": "SegmentationClassAug",  # ground truth for evaluation (SegmentationClass without SBD)
        "split": "train_aug",
        "crop_size": 448,
        "scale": [0.5, 1.5],
        "flip": 0.5,
        # loader worker processes per training process; None: the CPUs this process may use, at most 4
        "num_workers": None,
        # an unreadable image / mask: raise (stop with the file's name) | skip (log it, train on the next sample;
        # the dataset counts the skipped files: fsae.data.SegmentationDataset.skipped)
        "on_error": "raise",
    },
    "optim": {
        "name": "sgd",  # sgd | adamw
        "lr": 0.001,
        "weight_decay": 0.0005,
        "momentum": 0.9,
        "original_momentum_quirk": False,  # shared key with the CAM stage; keep False
        "schedule": "poly",  # poly | cosine
        "poly_power": 0.9,
        "warmup_steps": 0,
    },
    "train": {
        "batch_size": 10,  # global: split over processes and accumulation steps
        "gradient_accumulation_steps": 1,
        "max_steps": 20000,
        # no | fp16 | bf16 | None: the launcher's (accelerate launch --mixed_precision / its config file, else no)
        "mixed_precision": None,
        "seed": 0,
        "log_every": 20,
        "checkpoint_every": 1000,
        "keep_checkpoints": 2,
        # Accelerate trackers, comma-separated (tensorboard, wandb, mlflow, ...), under OUTPUT/logs; None: none
        "log_with": None,
    },
    "eval": {
        "after_training": True,  # evaluate eval.split when training ends
        "split": "val",  # scored against data.gt_mask_dir
        "predict_split": None,  # also write palette PNG predictions of this split (test: the server layout)
        "scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75],
        "flip": True,
        "crf": False,
        "crf_workers": 1,  # CRF processes per training process
        # deeplab-pytorch's test-time CRF (used by the WSSS second stages): 10 iterations,
        # Gaussian (sxy 1, compat 3), bilateral (sxy 67, srgb 3, compat 4)
        "crf_iterations": 10,
        "crf_gaussian": [1.0, 3.0],
        "crf_bilateral": [67.0, 3.0, 4.0],
    },
}


def _hint(dotted: str, known: Collection[str]) -> str:
    """Unknown-key hint: a CAM-stage key, a close key, or the list of sections."""
    section = dotted.split(".")[0]
    if section in ("method", "fsae", "augment"):
        return " (a CAM-stage key: this is a segmentation config, see recipes/configs/voc_seg_deeplabv2.yaml)"
    hint = did_you_mean(dotted, known)
    sections = {k.split(".")[0] for k in known}
    if not hint and section not in sections:
        hint = f" (sections: {', '.join(sorted(sections))})"
    return hint


def _check(config: dict[str, Any]) -> None:
    """The segmentation stage's value checks beyond types and :data:`SEG_RANGES` (checked first)."""
    data, ev = config["data"], config["eval"]
    low, high = data["scale"]
    if not 0 < low <= high:
        raise ConfigError(f"data.scale must be [min, max] with 0 < min <= max, got {data['scale']}")
    if not ev["scales"] or not all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in ev["scales"]
    ):
        raise ConfigError(f"eval.scales must be a non-empty list of positive numbers, got {ev['scales']!r}")
    # the expensive checks last (they import timm and the model module)
    from fsae.models.deeplab import SEGMENTERS

    model = config["model"]
    check_backbone("model.backbone", model["backbone"])
    check_options("model.options", model["options"], SEGMENTERS[model["name"]], MODEL_FIXED, model["backbone"])


# the segmenter's arguments set from their own keys (build_segmenter), not from model.options
MODEL_FIXED = {
    "num_classes": "the dataset",
    "backbone": "model.backbone",
    "pretrained": "model.pretrained",
    "pretrained_path": "model.pretrained_path",
    "output_stride": "model.output_stride",
    "freeze_bn": "model.freeze_bn",
}
# the allowed range of every numeric key (of each number of a list); see ConfigSchema.ranges
SEG_RANGES = {
    **TRAINING_RANGES,
    "data.crop_size": ">= 8",
    "data.flip": "[0, 1]",
    "data.num_workers": ">= 0",
    "eval.crf_workers": ">= 0",
    "eval.crf_iterations": ">= 0",
    "eval.crf_gaussian": "> 0",
    "eval.crf_bilateral": "> 0",
}


SEG_SCHEMA = ConfigSchema(
    defaults=SEG_DEFAULTS,
    choices={
        "model.name": ("deeplabv2", "deeplabv3plus"),
        "model.output_stride": (8, 16, 32),
        "data.on_error": ("raise", "skip"),
        "data.dataset": ("voc",),
        "data.split": ("train_aug", "train", "trainval"),
        "eval.split": ("val", "train", "trainval", "train_aug"),
        "eval.predict_split": ("val", "test", "train", "trainval", "train_aug"),
        "optim.name": ("sgd", "adamw"),
        "optim.schedule": ("poly", "cosine"),
        "train.mixed_precision": ("no", "fp16", "bf16"),
    },
    # keys whose default is None, with the type they take when set
    optional={
        "model.pretrained_path": str,
        "data.root": str,
        "data.pseudo_labels": str,
        "eval.split": str,
        "eval.predict_split": str,
        "train.mixed_precision": str,
        "train.log_with": str,
        "data.num_workers": int,
    },
    free_form=frozenset({"model.options"}),
    lists={"data.scale": 2, "eval.crf_gaussian": 2, "eval.crf_bilateral": 3},
    extra_check=_check,
    unknown_hint=_hint,
    ranges=SEG_RANGES,
)


def load_seg_config(path: str | Path | None = None, overrides: Iterable[str | tuple[str, Any]] = ()) -> dict[str, Any]:
    """:data:`SEG_DEFAULTS` <- YAML file <- ``key=value`` overrides, validated (:class:`ConfigError` otherwise)."""
    return load_config(path, overrides, SEG_SCHEMA)
