"""The training loop: base method + FSAE + EMA teacher + device-side perturbations, on Accelerate.

One optimizer step (docs/method.md §2-§3)::

    uint8 canvases + crop boxes from the loader (or crops: data.geometry=crop), on the device
    weak, strong = TrainingViews(...)     (each jittered over the whole image, then cropped: pixel aligned)
    base   = method(normalise(weak), labels, saliency=saliency)                 (base losses)
    teacher_logits = teacher(normalise(weak), labels, cam_only=True)            (EMA, no gradient)
    student_logits = method(normalise(strong), labels, cam_only=True)           (the student's CAM logits)
    loss   = sum(base.losses) + w * FSAELoss(student_logits, teacher_logits, labels)
    backward, optimizer step, LR schedule step, teacher.update(method)

``saliency`` is the batch's ``float32 (B, 1, H, W)`` saliency maps in [0, 1] (geometry-aligned with the crops)
when ``data.saliency_dir`` is set (PPC's EPS term ``sal``; methods without one ignore it), else None.

Accelerate does device placement, DDP, mixed precision, gradient accumulation, checkpoint state and
trackers; this module adds the data order that resumes mid-epoch, atomic checkpoints, the EMA
teacher and the non-finite-loss guard.  The batch size in the config is global: each process gets
``batch_size / (processes * accumulation)`` crops, so a run means the same on 1 or N GPUs.

This module is the CAM stage: its dataset, components (method, EMA teacher, FSAE loss, views), the loss terms of
one step (:func:`step_terms`) and :func:`train`.  The loop it runs is :mod:`fsae.engine.loop`'s, shared with the
segmentation stage (:mod:`fsae.engine.seg_trainer`); the optimizer and schedule are :mod:`fsae.engine.schedule`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fsae.augment import TrainingViews, imagenet_normalize
from fsae.augment.views import crop_valid_mask, random_erase
from fsae.data import get_dataset, train_geometry
from fsae.engine.loop import (
    TrainState,
    check_data,
    check_finite,
    find_checkpoint,
    make_accelerator,
    make_loader,
    report_skipped,
    run_steps,
    split_batch,
    start_run,
    with_precision,
)
from fsae.engine.rundir import prepare_run_dir
from fsae.engine.schedule import build_optimizer, make_scheduler
from fsae.errors import ConfigError
from fsae.losses import EMATeacher, FSAELoss
from fsae.methods import build_method

__all__ = ["build_components", "build_dataset", "compile_components", "step_terms", "train"]


def build_dataset(config: dict[str, Any]):
    """The training dataset of ``config["data"]`` with the training geometry (and saliency maps when
    ``data.saliency_dir`` is set)."""
    data = config["data"]
    if data["root"] is None:
        raise ConfigError("data.root is not set (give --data-root)")
    geometry = train_geometry(
        data["crop_size"],
        tuple(data["long_side"]),
        data["flip"],
        mode=data["geometry"],
        crop_fill=data["crop_fill"],
        saliency_resize=data["saliency_resize"],
        auto_augment=config["augment"].get("auto_augment") or None,
        re_prob=config["augment"].get("random_erasing", 0.0),
    )
    return get_dataset(data["dataset"])(
        data["root"],
        data["split"],
        transform=geometry,
        seed=config["train"]["seed"],
        saliency_dir=data.get("saliency_dir"),
        on_error=data.get("on_error", "raise"),
    )


def build_components(
    config: dict[str, Any], num_classes: int, pretrained: bool | None = None
) -> tuple[torch.nn.Module, EMATeacher, FSAELoss, TrainingViews]:
    """The method, its EMA teacher, the FSAE loss and the weak / strong training views of ``config``.

    ``pretrained`` overrides ``method.pretrained`` (benchmarks build without downloading weights).
    """
    method_cfg, fsae_cfg = config["method"], config["fsae"]
    method = build_method(
        method_cfg["name"],
        num_classes=num_classes,
        backbone=method_cfg["backbone"],
        pretrained=method_cfg["pretrained"] if pretrained is None else pretrained,
        pretrained_path=method_cfg["pretrained_path"],
        **method_cfg["options"],
    )
    teacher = EMATeacher(method, decay=fsae_cfg["ema_decay"], mode=fsae_cfg["teacher_mode"])
    criterion = FSAELoss(
        conf_threshold=fsae_cfg["conf_threshold"],
        ring_threshold=fsae_cfg["ring_threshold"],
        ring_kernel=fsae_cfg["ring_kernel"],
        absent=fsae_cfg["absent"],
        boundary_weight=fsae_cfg["boundary_weight"],
        mask_student=fsae_cfg["mask_student"],
    )
    return method, teacher, criterion, TrainingViews.from_config(config)


def compile_components(
    method: torch.nn.Module, teacher: EMATeacher, criterion: FSAELoss, backend: str = "inductor"
) -> None:
    """``train.compile``: ``torch.compile`` the three modules of a step in place (``nn.Module.compile``, so the
    state-dict keys, checkpoints, resume and the EMA update stay as they are).

    The FSAE loss and the teacher's CAM logits compile whole (``fullgraph=True``: the fused ops have fake kernels and
    registered autograd); the method allows graph breaks, as PPC's contrast term samples its anchors with
    data-dependent counts (SIPE and MCTformer compile whole).  The optimizer step and the EMA update stay eager.
    """
    method.compile(backend=backend)
    teacher.compile(fullgraph=True, backend=backend)
    criterion.compile(fullgraph=True, backend=backend)


def step_terms(
    method: torch.nn.Module,
    teacher: EMATeacher,
    criterion: FSAELoss,
    weight: float,
    weak: torch.Tensor,
    strong: torch.Tensor | None,
    labels: torch.Tensor,
    saliency: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    valid_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one training step: the base method's, plus ``"fsae"`` when ``strong`` is given.

    In the authors' order (so that the dropout masks drawn from torch's RNG are the same, call for call): the
    student's base passes on ``weak`` (and its own second view), the EMA teacher on ``weak``, then the student's
    CAM logits on ``strong``; ``fsae = weight * criterion(student_strong, teacher_weak, labels)``.

    Args:
        method: the student (possibly wrapped by Accelerate / DDP: it is called, never unwrapped).
        weak, strong: ``(B, 3, H, W)`` ImageNet-normalised views (``strong`` None: no FSAE term this step).
        labels: ``(B, C)`` multi-hot; saliency: ``(B, 1, H, W)`` in [0, 1] or None; generator: the method's.
        valid_mask: ``(B, 1, H, W)`` 1 on image pixels, 0 on the crop padding, passed as ``valid_mask=`` to the
            method when given (only for methods with ``uses_valid_mask``: SIPE).

    Returns:
        ``{name: 0-d tensor}`` whose sum is the step's loss.
    """
    extra = {} if valid_mask is None else {"valid_mask": valid_mask}
    terms = dict(method(weak, labels, saliency=saliency, generator=generator, **extra).losses)
    if strong is not None:
        # both know the labels: a background-free method builds its background from the present classes
        teacher_logits = teacher(weak, labels, cam_only=True)
        student_logits = method(strong, labels, cam_only=True)  # train mode, through the wrapper's forward
        terms["fsae"] = weight * criterion(student_logits.float(), teacher_logits.float(), labels)
    return terms


def _save_weights(accelerator, method, teacher, output_dir: Path) -> None:
    from safetensors.torch import save_file

    if not accelerator.is_main_process:
        return
    student = accelerator.unwrap_model(method).state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in student.items()}, output_dir / "model.safetensors")
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in teacher.module.state_dict().items()},
        output_dir / "teacher.safetensors",
    )


def train(
    config: dict[str, Any],
    output_dir: str | Path,
    resume: str | None = None,
    accelerator=None,
    progress: bool = True,
    overwrite: bool = False,
    check: bool = False,
) -> dict[str, Any]:
    """Train ``config`` into ``output_dir``; returns a summary (steps, last losses, images/s).

    Writes ``config.yaml`` (the effective config with the run facts; ``train.mixed_precision`` the precision
    used), ``log.jsonl``, checkpoints under ``checkpoints/step_*`` every ``train.checkpoint_every`` steps and at
    the end, and the final ``model.safetensors`` / ``teacher.safetensors``.  ``output_dir`` must be empty unless
    ``resume`` continues a run (its log keeps each step once) or ``overwrite`` replaces the run in it
    (:func:`fsae.engine.rundir.prepare_run_dir`).  ``check`` reads every training file first (:func:`check_data`).
    """
    from accelerate.utils import set_seed

    output_dir = Path(output_dir)
    if accelerator is None:
        accelerator = make_accelerator(config["train"], output_dir)
    config = with_precision(config, accelerator)
    train_cfg, fsae_cfg = config["train"], config["fsae"]
    processes, _, per_process = split_batch(accelerator, train_cfg)
    # config and folder errors before heavy work
    prepare_run_dir(output_dir, resume=bool(resume), overwrite=overwrite, main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    checkpoint = find_checkpoint(output_dir, resume) if resume else None

    set_seed(train_cfg["seed"], device_specific=False)
    dataset = build_dataset(config)
    if check:
        check_data(dataset, accelerator)
    loader = make_loader(dataset, per_process, processes, config)
    method, teacher, criterion, views = build_components(config, dataset.num_classes)
    if train_cfg.get("compile"):
        compile_components(method, teacher, criterion)
    optimizer = build_optimizer(method, config)
    scheduler = make_scheduler(optimizer, config, len(dataset))
    state = TrainState(train_cfg["seed"], accelerator.process_index)

    method, optimizer, loader = accelerator.prepare(method, optimizer, loader)
    teacher.to(accelerator.device)
    # The scheduler is stepped by hand once per optimizer step (max_steps counts global steps).
    for extra in (teacher, scheduler, state):
        accelerator.register_for_checkpointing(extra)
    start_run(accelerator, config, output_dir, dataset, checkpoint, state, "fsae")
    uses_valid = bool(getattr(accelerator.unwrap_model(method), "uses_valid_mask", False))

    def step(batch: dict[str, Any]) -> tuple[torch.Tensor, int, Callable[[], dict[str, float]]]:
        labels = batch["labels"]
        # FSAE from fsae.start_step on (a warm-up lets the EMA teacher become worth copying first)
        expanding = fsae_cfg["enabled"] and state.step >= fsae_cfg["start_step"]
        weak01, strong01 = views(batch["image"], batch["geometry"], config["data"]["crop_size"], state.generators,
                                 strong=expanding)  # fmt: skip
        saliency = batch["saliency"].float().to(weak01.device) if "saliency" in batch else None
        # SIPE's valid mask: 0 on the crop padding (from the loader's geometry)
        valid = crop_valid_mask(batch["geometry"], config["data"]["crop_size"], weak01.device) if uses_valid else None
        weak = random_erase(imagenet_normalize(weak01), batch["geometry"])  # data.geometry timm only: its erasing boxes
        strong = imagenet_normalize(strong01) if expanding else None
        with accelerator.autocast():
            terms = step_terms(method, teacher, criterion, fsae_cfg["weight"], weak, strong, labels, saliency,
                               state.generators["method"], valid)  # fmt: skip
        check_finite(state.step, terms)
        loss = sum(terms.values())

        def logs() -> dict[str, float]:
            values = {name: value.item() for name, value in terms.items()}
            values["loss"] = loss.item()
            if expanding:
                values.update({k: v.item() for k, v in criterion.last_stats.items()})
            return values

        return loss, weak01.shape[0], logs

    # The teacher follows the student also without FSAE (cheap): the first fsae.start_step steps of an FSAE
    # run are then exactly a baseline run's, so a baseline checkpoint can start an FSAE run (--resume PATH).
    last = run_steps(
        accelerator, method, loader, optimizer, scheduler, state, config, output_dir, step,
        desc="train", progress=progress, after_step=lambda: teacher.update(accelerator.unwrap_model(method)),
    )  # fmt: skip
    _save_weights(accelerator, method, teacher, output_dir)
    accelerator.end_training()
    skipped = report_skipped(dataset, accelerator)
    return {"steps": state.step, "epoch": state.epoch, **last, **({"skipped": skipped} if skipped else {})}
