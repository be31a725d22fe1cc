"""Exponential-moving-average teacher (docs/method.md §2)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["EMATeacher", "unwrap_model"]

TEACHER_MODES = ("train", "eval")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``accelerator.prepare`` / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


class EMATeacher(nn.Module):
    """A frozen copy of a model whose weights follow it by exponential moving average.

    After every optimizer step, :meth:`update` sets, for each trainable parameter,
    ``teacher = decay * teacher + (1 - decay) * student``; parameters the student
    does not train and all buffers (e.g. BatchNorm statistics) are copied.

    Args:
        model: the student; wrappers (DDP, ``accelerator.prepare``, ``torch.compile``)
            are unwrapped, so the teacher is always a plain module on the student's device.
        decay: EMA decay in [0, 1) (0.999 in the paper).
        mode: ``"train"`` runs the teacher in train mode (dropout active, as the
            original code does) or ``"eval"``.

    Calling the teacher runs ``self.module`` without gradient, switched to ``mode``
    at every call (so a parent's ``.train()`` / ``.eval()`` does not change it).
    ``state_dict()`` / ``load_state_dict()`` carry the weights and the update count,
    so checkpoints resume exactly.

    >>> student = torch.nn.Linear(3, 2)
    >>> teacher = EMATeacher(student, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = student.weight.add_(1.0)
    >>> teacher.update(student)
    >>> torch.allclose(teacher.module.weight, student.weight - 0.5)
    True
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, mode: str = "train") -> None:
        super().__init__()
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        if mode not in TEACHER_MODES:
            raise ValueError(f"mode must be one of {TEACHER_MODES}, got {mode!r}")
        self.module = copy.deepcopy(unwrap_model(model))
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.mode = mode
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.module.train(self.mode == "train")
        with torch.no_grad():
            return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model`` (the student, wrapped or not)."""
        student = unwrap_model(model)
        averaged, targets, copied, sources = [], [], [], []
        for (name, t), (student_name, s) in zip(
            self.module.named_parameters(), student.named_parameters(), strict=True
        ):
            if name != student_name or t.shape != s.shape:
                raise ValueError(f"teacher and student differ at parameter {name!r} / {student_name!r}")
            if s.requires_grad:
                averaged.append(t)
                targets.append(s.detach().to(t.dtype))
            else:
                copied.append(t)
                sources.append(s.detach())
        for (name, t), (student_name, s) in zip(self.module.named_buffers(), student.named_buffers(), strict=True):
            if name != student_name:
                raise ValueError(f"teacher and student differ at buffer {name!r} / {student_name!r}")
            copied.append(t)
            sources.append(s.detach())
        if averaged:
            torch._foreach_lerp_(averaged, targets, 1.0 - self.decay)
        for t, s in zip(copied, sources, strict=True):
            t.copy_(s)
        self.num_updates += 1

    def extra_repr(self) -> str:
        return f"decay={self.decay}, mode={self.mode!r}"
