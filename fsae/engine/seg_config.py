"""Configuration of the segmentation stage (``recipes/train_seg.py``): typed sections, YAML, ``--set`` overrides.

Same mechanism as :mod:`fsae.engine.config` (the CAM stage): one dataclass per section (:class:`ModelSection`,
:class:`SegDataSection`, :class:`SegOptimSection`, :class:`SegTrainSection`, :class:`EvalSection`, gathered by
:class:`SegConfig`), each field with its default, type, range and comment; :data:`SEG_SCHEMA` is compiled from
them and :data:`SEG_DEFAULTS` is their defaults as the nested dict -- docs/method.md §6: DeepLab-v2 ResNet-101 on the
pseudo-masks of train_aug, crop 448, scale 0.5-1.5, batch 10, lr 1e-3 (head x10), poly 0.9, weight decay 5e-4, 20k
iterations; test at scales 0.5-1.75 with flips (+ CRF).  A YAML file (over its ``_base_`` files, see
:func:`fsae.engine.config.read_config_file`) overrides part of it and ``--set a.b=value`` one key (value parsed as
YAML).  Unknown keys, wrong types and impossible values are a :class:`~fsae.engine.config.ConfigError` before any
heavy work.

The ``optim`` and ``train`` sections are built on the classes both stages share
(:class:`~fsae.engine.config.OptimSection`, :class:`~fsae.engine.config.TrainSection`) with this stage's defaults,
so :func:`fsae.engine.schedule.build_optimizer` and :func:`fsae.engine.schedule.lr_factor` serve both stages.  The
loading and type checks are :func:`fsae.engine.config.load_config`'s, driven by :data:`SEG_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fsae.engine.config import (
    ConfigError,
    ConfigSchema,
    OptimSection,
    TrainSection,
    check_backbone,
    check_options,
    did_you_mean,
    like,
    load_config,
    setting,
)

__all__ = [
    "SEG_DEFAULTS",
    "SEG_SCHEMA",
    "EvalSection",
    "ModelSection",
    "SegConfig",
    "SegDataSection",
    "SegOptimSection",
    "SegTrainSection",
    "load_seg_config",
]


@dataclass
class ModelSection:
    """``model``: the segmentation network (fsae.models.deeplab)."""

    name: Literal["deeplabv2", "deeplabv3plus"] = setting("deeplabv2", "the segmenter: deeplabv2 | deeplabv3plus")
    backbone: str = setting("resnet101", "a timm model name (a .tag allowed)")
    pretrained: bool = setting(False, "timm's published weights (needs internet)")
    pretrained_path: str | None = setting(
        None, "local ImageNet / COCO state dict (the original used COCO-pretrained ResNet-101)"
    )
    output_stride: Literal[8, 16, 32] = setting(8, "the backbone's output stride (dilated last stages)")
    freeze_bn: bool = setting(True, "backbone BatchNorm frozen (the original; needs pretrained statistics)")
    sync_bn: bool = setting(False, "head BatchNorm synchronised across processes (DeepLab-v3+)")
    options: dict[str, Any] = setting({}, "extra keyword arguments of the model class (dilations, dropout, ...)")


@dataclass
class SegDataSection:
    """``data``: the training images, their pseudo-masks and the ground truth for evaluation."""

    dataset: Literal["voc"] = setting("voc", "the dataset (VOC 2012)")
    root: str | None = setting(None, "the VOC2012 folder (--data-root)")
    pseudo_labels: str | None = setting(
        None,
        "folder of <id>.png pseudo-masks, or its parent with masks/ (--pseudo-labels); None trains on gt_mask_dir "
        "(the fully supervised reference)",
    )
    gt_mask_dir: str = setting("SegmentationClassAug", "ground truth for evaluation (SegmentationClass without SBD)")
    split: Literal["train_aug", "train", "trainval"] = setting("train_aug", "the split trained on")
    crop_size: int = setting(448, "side of the square training crop, in pixels", allowed=">= 8")
    scale: list[float] = setting([0.5, 1.5], "[min, max] of the random rescale factor", length=2)
    flip: float = setting(0.5, "horizontal-flip probability", allowed="[0, 1]")
    num_workers: int | None = setting(
        None, "loader worker processes per training process; None: the CPUs this process may use, at most 4",
        allowed=">= 0",
    )  # fmt: skip
    on_error: Literal["raise", "skip"] = setting(
        "raise",
        "an unreadable image / mask: raise (stop with the file's name) | skip (log it, train on the next sample; "
        "the dataset counts the skipped files: fsae.data.SegmentationDataset.skipped)",
    )


@dataclass
class SegOptimSection(OptimSection):
    """``optim`` of the segmentation stage: :class:`~fsae.engine.config.OptimSection` at lr 1e-3 (head x10)."""

    lr: float = like(OptimSection, "lr", 0.001)


@dataclass
class SegTrainSection(TrainSection):
    """``train`` of the segmentation stage: :class:`~fsae.engine.config.TrainSection` at batch 10."""

    batch_size: int = like(TrainSection, "batch_size", 10)


@dataclass
class EvalSection:
    """``eval``: the test-time evaluation and predictions (fsae.infer.segment)."""

    after_training: bool = setting(True, "evaluate eval.split when training ends")
    split: Literal["val", "train", "trainval", "train_aug"] | None = setting(
        "val", "the split scored against data.gt_mask_dir"
    )
    predict_split: Literal["val", "test", "train", "trainval", "train_aug"] | None = setting(
        None, "also write palette PNG predictions of this split (test: the server layout)"
    )
    scales: list[float] = setting([0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "test-time scales whose predictions are averaged")
    flip: bool = setting(True, "the flipped image's prediction averaged in too")
    crf: bool = setting(False, "dense CRF on the predictions (--crf)")
    crf_workers: int = setting(1, "CRF processes per training process", allowed=">= 0")
    # deeplab-pytorch's test-time CRF (used by the WSSS second stages)
    crf_iterations: int = setting(10, "mean-field iterations of the CRF (deeplab-pytorch's 10)", allowed=">= 0")
    crf_gaussian: list[float] = setting(
        [1.0, 3.0], "[sxy, compat] of the CRF's Gaussian kernel (deeplab-pytorch's 1, 3)", allowed="> 0", length=2
    )
    crf_bilateral: list[float] = setting(
        [67.0, 3.0, 4.0], "[sxy, srgb, compat] of the CRF's bilateral kernel (deeplab-pytorch's 67, 3, 4)",
        allowed="> 0", length=3,
    )  # fmt: skip


@dataclass
class SegConfig:
    """The segmentation stage's config: its defaults are :data:`SEG_DEFAULTS`."""

    model: ModelSection = field(default_factory=ModelSection)
    data: SegDataSection = field(default_factory=SegDataSection)
    optim: SegOptimSection = field(default_factory=SegOptimSection)
    train: SegTrainSection = field(default_factory=SegTrainSection)
    eval: EvalSection = field(default_factory=EvalSection)


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
    """The segmentation stage's value checks beyond the types, choices and ranges of :class:`SegConfig` (first)."""
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

SEG_SCHEMA = ConfigSchema.of(SegConfig, extra_check=_check, unknown_hint=_hint)
#: Every key of the segmentation stage with its default, as the nested dict :func:`load_seg_config` returns.
SEG_DEFAULTS: dict[str, Any] = SEG_SCHEMA.defaults  # type: ignore[assignment]


def load_seg_config(path: str | Path | None = None, overrides: Iterable[str | tuple[str, Any]] = ()) -> dict[str, Any]:
    """:data:`SEG_DEFAULTS` <- YAML file <- ``key=value`` overrides, validated (:class:`ConfigError` otherwise)."""
    return load_config(path, overrides, SEG_SCHEMA)
