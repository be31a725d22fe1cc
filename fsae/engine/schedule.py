"""The optimizer and learning-rate schedule of both training stages (their ``optim`` sections share the keys).

* :func:`build_optimizer`: SGD (with the authors' momentum quirk as a switch) or AdamW over a model's
  ``parameter_groups()`` (new layers at ``lr_mult`` x the base lr).
* :func:`lr_factor` / :func:`make_scheduler`: linear warm-up, then poly or cosine per optimizer step, or
  MCTformer's per-epoch cosine (:func:`epoch_lr`, timm's ``CosineLRScheduler`` semantics).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["build_optimizer", "cosine_epochs", "epoch_lr", "lr_factor", "make_scheduler", "steps_per_epoch"]


def build_optimizer(method: torch.nn.Module, config: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD or AdamW over the method's parameter groups (new layers at ``lr_mult`` x the base lr)."""
    optim = config["optim"]
    groups = [
        {**g, "lr": optim["lr"] * g["lr_mult"]}  # a group's own weight_decay (e.g. 0 for norms) is kept
        for g in method.parameter_groups()
        if g["params"]
    ]
    if optim["name"] == "adamw":
        return torch.optim.AdamW(groups, lr=optim["lr"], weight_decay=optim["weight_decay"])
    # The original PPC/SEAM code passed weight_decay into SGD's momentum slot: momentum ~ 5e-4.
    momentum = optim["weight_decay"] if optim["original_momentum_quirk"] else optim["momentum"]
    return torch.optim.SGD(groups, lr=optim["lr"], momentum=momentum, weight_decay=optim["weight_decay"])


def steps_per_epoch(dataset_size: int, config: dict[str, Any]) -> int:
    """Optimizer steps per pass over ``dataset_size`` images: ``dataset_size // train.batch_size`` (the loader
    drops the last partial batch, as the authors' ``drop_last=True``); at least 1."""
    return max(1, dataset_size // config["train"]["batch_size"])


def cosine_epochs(config: dict[str, Any], epoch_steps: int) -> int:
    """The cosine's length in epochs: ``optim.cosine_epochs``, or ``ceil(train.max_steps / epoch_steps)``."""
    epochs = config["optim"].get("cosine_epochs")
    return epochs if epochs is not None else max(1, math.ceil(config["train"]["max_steps"] / epoch_steps))


def epoch_lr(epoch: int, base_lr: float, config: dict[str, Any], epochs: int) -> float:
    """The ``cosine_epoch`` schedule's absolute lr in ``epoch`` (0-based) for a group whose peak lr is ``base_lr``.

    timm's ``CosineLRScheduler(t_initial=epochs, lr_min=optim.min_lr, warmup_t=optim.warmup_epochs,
    warmup_lr_init=optim.warmup_lr, cycle_limit=1)`` value at ``t``: ``warmup_lr + t (base_lr - warmup_lr) /
    warmup_epochs`` for ``t < warmup_epochs``, then ``min_lr + (base_lr - min_lr) (1 + cos(pi t / epochs)) / 2``
    (the cosine counts from 0, not from the warm-up's end: timm's ``warmup_prefix=False``), ``min_lr`` from
    ``t = epochs`` on. With ``optim.epoch_lag`` (the authors' DeiT loop: ``lr_scheduler.step(epoch)`` after each
    epoch, the initial value being the warm-up lr) epoch ``e`` trains at ``t = max(e - 1, 0)``, so epochs 0 and 1
    share the first value; without it (timm's own ``step(epoch + 1)``) at ``t = e``.
    """
    optim = config["optim"]
    t = max(epoch - 1, 0) if optim.get("epoch_lag", True) else epoch
    warmup, warmup_lr, min_lr = optim.get("warmup_epochs", 0), optim.get("warmup_lr", 0.0), optim.get("min_lr", 0.0)
    if t < warmup:
        return warmup_lr + t * (base_lr - warmup_lr) / warmup
    if t >= epochs:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t / epochs))


def lr_factor(step: int, config: dict[str, Any], base_lr: float | None = None, epoch_steps: int | None = None) -> float:
    """Multiplier of a group's lr after ``step`` optimizer steps: linear warm-up, then poly or cosine over
    ``optim.schedule_steps`` (default ``train.max_steps``); or ``optim.schedule: cosine_epoch``.

    With ``optim.schedule_steps`` set, the factor stops changing after that many steps, as the authors'
    ``PolyOptimizer`` stops updating the lr at its ``max_step``: step ``s`` uses ``min(s, schedule_steps - 1)``.

    ``cosine_epoch`` (MCTformer's timm scheduler, stepped once per epoch): the lr is constant within an epoch of
    ``epoch_steps`` optimizer steps and equals :func:`epoch_lr` there; its warm-up and floor lrs are absolute, so
    the factor is ``epoch_lr / base_lr`` with ``base_lr`` the group's own peak lr (``optim.lr`` x its
    ``lr_mult``): both are needed for this schedule.
    """
    optim, total = config["optim"], config["train"]["max_steps"]
    if optim["schedule"] == "cosine_epoch":
        if base_lr is None or epoch_steps is None:
            raise ValueError("the cosine_epoch schedule needs the group's base_lr and the steps per epoch")
        return epoch_lr(step // epoch_steps, base_lr, config, cosine_epochs(config, epoch_steps)) / base_lr
    if step < optim["warmup_steps"]:
        return (step + 1) / optim["warmup_steps"]
    horizon = optim.get("schedule_steps")
    if horizon is not None:
        step, total = min(step, horizon - 1), horizon
    progress = min(step / total, 1.0)
    if optim["schedule"] == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return (1 - progress) ** optim["poly_power"]


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: dict[str, Any], dataset_size: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimizer step: :func:`lr_factor` per parameter group (each group's own
    base lr, for the absolute warm-up / floor lrs of ``cosine_epoch``)."""
    epoch_steps = steps_per_epoch(dataset_size, config)
    lambdas = [
        (lambda step, base=group["lr"]: lr_factor(step, config, base_lr=base, epoch_steps=epoch_steps))
        for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
