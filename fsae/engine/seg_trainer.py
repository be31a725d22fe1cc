"""The second stage: train a segmentation network on pseudo-masks, evaluate it, write server predictions.

One optimizer step (docs/method.md §6)::

    crops (uint8, scale U[0.5, 1.5] + flip + crop from the loader) -> float, ImageNet-normalised on the device
    logits = model(crops)                              (B, K, h, w) at output stride 8 (v2) / 4 (v3+)
    loss   = cross_entropy(upsample(logits), pseudo_mask, ignore_index=255)
    backward, SGD step (backbone lr, head 10 x lr), poly schedule step

The machinery is the CAM trainer's (:mod:`fsae.engine.trainer`): :class:`EpochSampler` data order that resumes
mid-epoch, :class:`TrainState` registered for checkpointing, atomic ``checkpoints/step_*``, ``build_optimizer`` with
``lr_mult`` groups, ``lr_factor``, the non-finite-loss guard, ``log.jsonl`` and ``config.yaml`` with the run facts.
The batch size in the config is global.  After training (or with ``--eval-only``) the network is evaluated with
:func:`fsae.infer.segment.segment_dataset`: multi-scale + flip (+ CRF), ids sharded over processes, confusion
matrix summed; ``eval/metrics.json`` / ``eval/metrics.md``; ``--predict-split test`` writes the PNGs of
``results/VOC2012/Segmentation/comp6_test_cls`` for the evaluation server.

Command line (:func:`main`, run by ``recipes/train_seg.py`` with ``python`` or ``accelerate launch``)::

    python recipes/train_seg.py --data-root VOC2012 --pseudo-labels runs/pseudo --output-dir runs/seg
    python recipes/train_seg.py --data-root VOC2012 --output-dir runs/seg --eval-only --crf --predict-split test
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from fsae.augment import imagenet_normalize
from fsae.data import IGNORE_INDEX, DatasetError, VOCSegmentation
from fsae.data.transforms import seg_train_geometry
from fsae.engine.cli import run_job
from fsae.engine.loop import (
    TrainState,
    check_data,
    check_finite,
    find_checkpoint,
    loader_workers,
    make_accelerator,
    make_loader,
    report_skipped,
    run_steps,
    split_batch,
    start_run,
    with_precision,
)
from fsae.engine.rundir import prepare_run_dir
from fsae.engine.schedule import build_optimizer, lr_factor
from fsae.engine.seg_config import load_seg_config
from fsae.errors import ConfigError

__all__ = [
    "build_parser",
    "build_seg_model",
    "build_train_dataset",
    "evaluate_segmenter",
    "main",
    "resolve_pseudo_labels",
    "segmentation_loss",
    "train_segmenter",
    "training_function",
]


def resolve_pseudo_labels(path: str | Path) -> Path:
    """The folder of ``<id>.png`` pseudo-masks: ``path/masks`` when it exists (``make_pseudo_labels.py``'s output
    folder), else ``path`` itself, as an absolute path (the dataset joins a relative mask folder to its root).
    :class:`ConfigError` when ``path`` is not a folder."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise ConfigError(f"pseudo-label folder not found: {path}")
    masks = path / "masks"
    return masks if masks.is_dir() else path


def _data_root(config: dict[str, Any]) -> Path:
    if config["data"]["root"] is None:
        raise ConfigError("data.root is not set (give --data-root)")
    root = Path(config["data"]["root"])
    if not root.is_dir():
        raise ConfigError(f"data root not found: {root}")
    return root


def _check_mask_sizes(dataset: VOCSegmentation) -> None:
    """Every mask has its image's size (PNG / JPEG headers only), so a wrong folder fails before training."""
    from PIL import Image

    if dataset.mask_paths is None:
        return
    for sample_id in dataset.ids:
        image_path, mask_path = dataset.image_paths[sample_id], dataset.mask_paths[sample_id]
        try:
            with Image.open(image_path) as image, Image.open(mask_path) as mask:
                image_size, mask_size = image.size, mask.size
        except (OSError, SyntaxError) as err:  # PIL's UnidentifiedImageError is an OSError
            if dataset.on_error == "skip":  # the loader skips (and counts) it
                continue
            raise DatasetError(f"unreadable image or mask for {sample_id}: {err}") from None
        if image_size != mask_size:
            raise DatasetError(
                f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {image_path} is "
                f"{image_size[0]}x{image_size[1]}"
            )


def build_train_dataset(config: dict[str, Any], output_dir: str | Path) -> VOCSegmentation:
    """Real images of ``data.split`` with the pseudo-masks of ``data.pseudo_labels`` (or ``data.gt_mask_dir``),
    the :func:`~fsae.data.transforms.seg_train_geometry` transform; masks checked against the image sizes."""
    data = config["data"]
    root = _data_root(config)
    mask_dir = str(resolve_pseudo_labels(data["pseudo_labels"])) if data["pseudo_labels"] else data["gt_mask_dir"]
    geometry = seg_train_geometry(data["crop_size"], tuple(data["scale"]), data["flip"])
    dataset = VOCSegmentation(
        root,
        data["split"],
        transform=geometry,
        mask_dir=mask_dir,
        cache_dir=output_dir,
        seed=config["train"]["seed"],
        on_error=data.get("on_error", "raise"),
    )
    _check_mask_sizes(dataset)
    return dataset


def build_seg_model(config: dict[str, Any], num_classes: int) -> torch.nn.Module:
    """The ``model`` section's network with ``num_classes + 1`` outputs (C foreground classes + background)."""
    import timm

    from fsae.models.deeplab import build_segmenter

    model_cfg = config["model"]
    if not timm.is_model(model_cfg["backbone"]):
        raise ConfigError(f"model.backbone: timm has no model {model_cfg['backbone']!r}")
    path = model_cfg["pretrained_path"]
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"model.pretrained_path: file not found: {path}")
    return build_segmenter(
        model_cfg["name"],
        num_classes + 1,
        backbone=model_cfg["backbone"],
        pretrained=model_cfg["pretrained"],
        pretrained_path=path,
        output_stride=model_cfg["output_stride"],
        freeze_bn=model_cfg["freeze_bn"],
        **model_cfg["options"],
    )


def _save_model(accelerator, model: torch.nn.Module, output_dir: Path) -> None:
    from safetensors.torch import save_file

    if accelerator.is_main_process:
        state = accelerator.unwrap_model(model).state_dict()
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, output_dir / "model.safetensors")
    accelerator.wait_for_everyone()


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits (B, K, h, w)`` upsampled bilinearly to ``masks (B, H, W)`` int64, 255 ignored.

    The mean over the labelled pixels (0, not NaN, when a batch has none).
    """
    logits = F.interpolate(logits.float(), masks.shape[-2:], mode="bilinear", align_corners=False)
    total = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (masks != IGNORE_INDEX).sum().clamp(min=1)


def train_segmenter(
    config: dict[str, Any],
    output_dir: str | Path,
    resume: str | None = None,
    accelerator=None,
    progress: bool = True,
    overwrite: bool = False,
    check: bool = False,
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train ``config`` into ``output_dir``; returns (summary, the trained network unwrapped).

    Writes ``config.yaml`` (effective config + ``_run`` facts), ``log.jsonl``, ``checkpoints/step_*`` every
    ``train.checkpoint_every`` steps and at the end, and ``model.safetensors``.  With ``resume`` (``"latest"`` or a
    checkpoint folder) it continues bit-identically.  ``output_dir`` must be empty unless resuming or
    ``overwrite`` (:func:`fsae.engine.rundir.prepare_run_dir`).  The caller ends the accelerator (``end_training``).
    """
    from accelerate.utils import set_seed

    output_dir = Path(output_dir)
    if accelerator is None:
        accelerator = make_accelerator(config["train"], output_dir)
    config = with_precision(config, accelerator)
    train_cfg = config["train"]
    processes, _, per_process = split_batch(accelerator, train_cfg)
    # config and folder errors before heavy work (deriving the labels of the pseudo-masks)
    prepare_run_dir(output_dir, resume=bool(resume), overwrite=overwrite, main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    checkpoint = find_checkpoint(output_dir, resume) if resume else None

    set_seed(train_cfg["seed"], device_specific=False)
    dataset = build_train_dataset(config, output_dir)
    if check:
        check_data(dataset, accelerator)
    loader = make_loader(dataset, per_process, processes, config)
    model = build_seg_model(config, dataset.num_classes)
    if config["model"]["sync_bn"] and processes > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    state = TrainState(train_cfg["seed"], accelerator.process_index)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for extra in (scheduler, state):  # the scheduler is stepped by hand, once per optimizer step
        accelerator.register_for_checkpointing(extra)
    masks = str(dataset.mask_paths[dataset.ids[0]].parent)
    start_run(
        accelerator, config, output_dir, dataset, checkpoint, state, "fsae_seg", stage="segmentation", train_masks=masks
    )

    def step(batch: dict[str, Any]) -> tuple[torch.Tensor, int, Callable[[], dict[str, float]]]:
        images = imagenet_normalize(batch["image"].float().div_(255))
        with accelerator.autocast():
            logits = model(images)
        loss = segmentation_loss(logits, batch["mask"])
        check_finite(state.step, {"ce": loss})
        return loss, images.shape[0], lambda: {"loss": loss.item()}

    model.train()
    last = run_steps(
        accelerator, model, loader, optimizer, scheduler, state, config, output_dir, step,
        desc="train seg", progress=progress,
    )  # fmt: skip
    _save_model(accelerator, model, output_dir)
    skipped = report_skipped(dataset, accelerator)
    summary = {"steps": state.step, "epoch": state.epoch, **last, **({"skipped": skipped} if skipped else {})}
    return summary, accelerator.unwrap_model(model)


def evaluate_segmenter(
    config: dict[str, Any],
    model: torch.nn.Module,
    output_dir: str | Path,
    accelerator=None,
    progress: bool = True,
    checkpoint: str | None = None,
    datasets: dict[str, VOCSegmentation] | None = None,
) -> dict[str, Any] | None:
    """Score ``model`` on ``eval.split`` (``eval/metrics.json`` + ``eval/metrics.md``) and write the palette PNGs of
    ``eval.predict_split`` (``results/VOC2012/Segmentation/comp6_<split>_cls/<id>.png``).

    Multi-scale (``eval.scales``) + flip (``eval.flip``) + optional dense CRF (``eval.crf``), ids sharded over the
    accelerator's processes.  ``datasets``: :func:`eval_datasets` of the config, built before any work by the
    caller (else here).  Returns the metrics payload (None when ``eval.split`` is null).
    """
    from fsae.infer.segment import prediction_dir, segment_dataset, write_metrics

    output_dir = Path(output_dir)
    ev = config["eval"]
    if accelerator is None:
        accelerator = make_accelerator(config["train"], output_dir)
    crf = None
    if ev["crf"]:
        crf = {
            "iterations": ev["crf_iterations"],
            "gaussian": tuple(ev["crf_gaussian"]),
            "bilateral": tuple(ev["crf_bilateral"]),
        }
    options = {
        "scales": tuple(ev["scales"]),
        "flip": ev["flip"],
        "crf": crf,
        "crf_workers": ev["crf_workers"],
        "accelerator": accelerator,
        "num_workers": loader_workers(config),
        "progress": progress,
    }
    model = model.to(accelerator.device)
    if datasets is None:
        datasets = eval_datasets(config, output_dir)
    payload = None
    if ev["split"] is not None:
        dataset = datasets[ev["split"]]
        predictions = prediction_dir(output_dir, ev["split"]) if ev["predict_split"] == ev["split"] else None
        metrics = segment_dataset(model, dataset, evaluate=True, predictions=predictions, **options)
        extra = {
            "split": ev["split"],
            "checkpoint": checkpoint,
            "model": f"{config['model']['name']} / {config['model']['backbone']}",
            "scales": list(ev["scales"]),
            "flip": ev["flip"],
            "crf": ev["crf"],
        }
        if accelerator.is_main_process:
            payload = write_metrics(metrics, dataset.class_names, output_dir / "eval", extra)
            accelerator.print(f"{ev['split']} mIoU {100 * metrics['miou']:.2f} over {metrics['num_images']} images")
        else:
            payload = {**extra, "miou": metrics["miou"]}
    if ev["predict_split"] is not None and ev["predict_split"] != ev["split"]:
        split = ev["predict_split"]
        dataset = datasets[split]
        segment_dataset(model, dataset, evaluate=False, predictions=prediction_dir(output_dir, split), **options)
        accelerator.print(f"wrote {len(dataset)} predictions to {prediction_dir(output_dir, split)}")
    accelerator.wait_for_everyone()
    return payload


def eval_datasets(config: dict[str, Any], output_dir: str | Path) -> dict[str, VOCSegmentation]:
    """The datasets of ``eval.split`` and ``eval.predict_split`` (those set), keyed by split: built before any
    work, so that a missing split file, mask or image, or an empty split, stops a command at its start.

    Raises:
        DatasetError: a split cannot be read, or lists no images.
    """
    data, ev = config["data"], config["eval"]
    root = _data_root(config)
    splits = [split for split in (ev["split"], ev["predict_split"]) if split is not None]
    datasets = {}
    for split in dict.fromkeys(splits):
        dataset = VOCSegmentation(root, split, mask_dir=data["gt_mask_dir"], cache_dir=output_dir)
        if len(dataset) == 0:
            raise DatasetError(f"split {split!r} of {root} lists no images")
        datasets[split] = dataset
    return datasets


def build_parser(description: str = "", default_config: Path | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=default_config, help=f"YAML config (default {default_config})")
    parser.add_argument("--data-root", type=Path, help="the VOC2012 folder (sets data.root)")
    parser.add_argument("--pseudo-labels", type=Path, help="pseudo-mask folder, or its parent holding masks/")
    parser.add_argument("--output-dir", type=Path, required=True, help="where config, logs, checkpoints, eval go")
    parser.add_argument("--resume", help="'latest' or a checkpoint folder (output-dir/checkpoints/step_*)")
    parser.add_argument("--check-data", action="store_true",
                        help="read every training image and pseudo-mask first; list every bad file")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run (or the --eval-only results) already in --output-dir")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.lr=0.002 (repeatable)")  # fmt: skip
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="sets train.mixed_precision")
    parser.add_argument("--max-steps", type=int, help="sets train.max_steps")
    parser.add_argument("--eval-only", action="store_true", help="no training: evaluate --checkpoint")
    parser.add_argument("--checkpoint", type=Path,
                        help="with --eval-only: a run folder, checkpoints/step_* folder or .safetensors "
                        "(default: the run in --output-dir; its results then go to OUTPUT/eval_only)")  # fmt: skip
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    parser.add_argument("--crf", action="store_true", help="dense CRF on the test-time probabilities (sets eval.crf)")
    parser.add_argument("--crf-workers", type=int, help="CRF processes per training process (eval.crf_workers)")
    parser.add_argument("--predict-split", help="write palette PNG predictions of this split, e.g. test")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _overrides(args: argparse.Namespace) -> list[str | tuple[str, Any]]:
    """``--set`` strings, then the flags as ``(key, value)`` pairs (values as given: never re-read as YAML)."""
    overrides: list[str | tuple[str, Any]] = list(args.overrides)
    if args.data_root is not None:
        if not args.data_root.is_dir():
            raise ConfigError(f"data root not found: {args.data_root}")
        overrides.append(("data.root", str(args.data_root)))
    if args.pseudo_labels is not None:
        resolve_pseudo_labels(args.pseudo_labels)
        overrides.append(("data.pseudo_labels", str(args.pseudo_labels)))
    flags = {
        "train.mixed_precision": args.mixed_precision,
        "train.max_steps": args.max_steps,
        "eval.crf": True if args.crf else None,
        "eval.crf_workers": args.crf_workers,
        "eval.predict_split": args.predict_split,
        "eval.after_training": False if args.no_eval else None,
    }
    overrides += [(key, value) for key, value in flags.items() if value is not None]
    return overrides


def training_function(config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train (unless ``args.eval_only``) then evaluate, as the config and arguments say; returns a summary."""
    from fsae.infer.segment import load_segmenter

    output_dir = Path(args.output_dir)
    progress = not args.no_progress
    overwrite = bool(getattr(args, "overwrite", False))
    if args.eval_only:
        source = Path(args.checkpoint) if args.checkpoint is not None else output_dir
        # never over another run's eval/: the run's own folder gets its eval-only results in eval_only/
        inside = source.resolve() == output_dir.resolve() or output_dir.resolve() in source.resolve().parents
        results = output_dir / "eval_only" if inside else output_dir
        accelerator = make_accelerator(config["train"], results)
        config = with_precision(config, accelerator)
        prepare_run_dir(results, resume=False, overwrite=overwrite, main_process=accelerator.is_main_process)
        accelerator.wait_for_everyone()
        datasets = eval_datasets(config, results)  # every split the command needs, before the model
        model, run_config = load_segmenter(source, device=accelerator.device)
        config = {**config, "model": run_config["model"]}
        if accelerator.is_main_process:
            (results / "eval").mkdir(parents=True, exist_ok=True)
            (results / "eval" / "config.yaml").write_text(
                yaml.safe_dump({**config, "_run": {"checkpoint": str(source)}}, sort_keys=False)
            )
        metrics = evaluate_segmenter(
            config, model, results, accelerator, progress, checkpoint=str(source), datasets=datasets
        )
        accelerator.end_training()
        return {"eval": metrics and {k: metrics[k] for k in ("split", "miou") if k in metrics}}
    accelerator = make_accelerator(config["train"], output_dir)
    evaluate = config["eval"]["after_training"] and (config["eval"]["split"] or config["eval"]["predict_split"])
    datasets = eval_datasets(config, output_dir) if evaluate else None  # a missing split stops before training
    check = bool(getattr(args, "check_data", False))
    summary, model = train_segmenter(config, output_dir, args.resume, accelerator, progress, overwrite, check)
    if evaluate:
        metrics = evaluate_segmenter(
            config, model, output_dir, accelerator, progress, checkpoint=str(output_dir), datasets=datasets
        )
        if metrics is not None:
            summary["val_miou" if metrics.get("split") == "val" else "eval_miou"] = metrics["miou"]
    accelerator.end_training()
    return summary


def main(argv: list[str] | None = None, description: str = "", default_config: Path | None = None) -> int:
    """Parse ``argv``, validate (one-line ``error: ...`` and exit code 1 on bad input), run; returns the exit code."""
    args = build_parser(description, default_config).parse_args(argv)

    def job() -> dict[str, Any]:
        if args.checkpoint is not None and not args.eval_only:
            raise ConfigError("--checkpoint needs --eval-only (to continue training use --resume)")
        if args.eval_only and args.resume:
            raise ConfigError("--eval-only and --resume exclude each other")
        if args.resume and args.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        config = load_seg_config(args.config, _overrides(args))
        _data_root(config)
        return training_function(config, args)

    return run_job(job)
