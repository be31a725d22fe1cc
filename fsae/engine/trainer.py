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

The pieces a stage's trainer is made of (:func:`make_accelerator`, :func:`split_batch`, :func:`make_loader`,
:func:`start_run` and the loop, :func:`run_steps`) also run the segmentation stage
(:mod:`fsae.engine.seg_trainer`), which supplies its own ``step``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader, Sampler

from fsae.augment import TrainingViews, imagenet_normalize
from fsae.augment.views import crop_valid_mask, random_erase
from fsae.data import get_dataset, train_geometry
from fsae.engine.rundir import prepare_run_dir, trim_log
from fsae.errors import ConfigError
from fsae.losses import EMATeacher, FSAELoss
from fsae.methods import build_method

__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "build_components",
    "build_optimizer",
    "find_checkpoint",
    "make_scheduler",
    "step_terms",
    "train",
]

CHECKPOINT_PREFIX = "step_"


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; nothing was saved for that step."""


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``seed + epoch``: the same order on resume, any process count."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class TrainState:
    """Counters and random generators saved with every checkpoint (``accelerator.register_for_checkpointing``)."""

    def __init__(self, seed: int, rank: int) -> None:
        self.step = 0  # optimizer steps done
        self.batches = 0  # micro-batches consumed in the current epoch
        self.epoch = 0
        self.generators = {
            name: torch.Generator().manual_seed(seed * 1000 + rank * 10 + offset)
            for offset, name in enumerate(("weak", "strong", "method"))
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "batches": self.batches,
            "epoch": self.epoch,
            "generators": {name: g.get_state() for name, g in self.generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.batches, self.epoch = state["step"], state["batches"], state["epoch"]
        for name, g in self.generators.items():
            g.set_state(state["generators"][name])


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


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    """``resume`` = ``"latest"`` (newest complete checkpoint under ``output_dir/checkpoints``) or a path."""
    if resume != "latest":
        path = Path(resume)
        if not (path / "train_state.json").is_file():
            hint = ""
            if (path / "checkpoints").is_dir():  # a run folder: its newest checkpoint is probably meant
                hint = f" (a run folder: --output-dir {path} --resume latest continues it)"
            raise ConfigError(f"--resume {path}: not a checkpoint (no train_state.json){hint}")
        return path
    found = sorted((output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"))
    found = [p for p in found if (p / "train_state.json").is_file()]
    if not found:
        raise ConfigError(f"--resume latest: no checkpoint in {output_dir / 'checkpoints'}")
    return found[-1]


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_finite(step: int, terms: dict[str, torch.Tensor]) -> None:
    """:class:`NonFiniteLossError` naming the non-finite terms of optimizer step ``step``, before anything is saved."""
    total = sum(terms.values())
    if bool(torch.isfinite(total)):
        return
    bad = [name for name, value in terms.items() if not bool(torch.isfinite(value))]
    values = ", ".join(f"{name}={terms[name].item()}" for name in bad)
    raise NonFiniteLossError(f"non-finite loss at step {step}: {values}; stopped without saving this step")


def _save_checkpoint(accelerator, output_dir: Path, state: TrainState, keep: int) -> Path:
    """``accelerator.save_state`` into a temporary folder, then an atomic rename: resume never sees half a save."""
    folder = output_dir / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{state.step:08d}"
    tmp = folder / f".tmp_{CHECKPOINT_PREFIX}{state.step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "train_state.json").write_text(json.dumps({"step": state.step, "epoch": state.epoch}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        complete = sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / "train_state.json").is_file())
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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


def split_batch(accelerator, train_cfg: dict[str, Any]) -> tuple[int, int, int]:
    """``(processes, accumulation, per_process)``: ``train.batch_size`` is global, each process takes
    ``batch_size / (processes x accumulation)`` crops a micro-batch.

    Raises:
        ConfigError: the batch does not divide.
    """
    processes, accumulation = accelerator.num_processes, accelerator.gradient_accumulation_steps
    if train_cfg["batch_size"] % (processes * accumulation):
        raise ConfigError(
            f"train.batch_size={train_cfg['batch_size']} is not divisible by processes x accumulation "
            f"= {processes} x {accumulation}"
        )
    return processes, accumulation, train_cfg["batch_size"] // (processes * accumulation)


def loader_workers(config: dict[str, Any]) -> int:
    """``data.num_workers``, or when None the CPUs this process may use (at most 4: torch's suggested maximum
    is the CPU count, and more workers than that only compete with the training threads)."""
    workers = config["data"]["num_workers"]
    if workers is not None:
        return int(workers)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(4, cpus)


def make_loader(dataset, per_process: int, processes: int, config: dict[str, Any]) -> DataLoader:
    """The training loader: :class:`EpochSampler` order (resumable mid-epoch), whole micro-batches only.

    Raises:
        ConfigError: the dataset holds fewer images than one global batch.
    """
    if len(dataset) < per_process * processes:
        raise ConfigError(f"the dataset has {len(dataset)} images, fewer than one global batch")
    seed = config["train"]["seed"]
    return DataLoader(
        dataset,
        batch_size=per_process,
        sampler=EpochSampler(len(dataset), seed),
        num_workers=loader_workers(config),
        drop_last=True,
        # Its own generator: starting an epoch (or a resumed one) must not consume the global RNG,
        # whose state (dropout) a checkpoint restores.
        generator=torch.Generator().manual_seed(seed),
    )


def start_run(
    accelerator,
    config: dict[str, Any],
    output_dir: Path,
    dataset,
    checkpoint: Path | None,
    state: TrainState,
    tracker: str,
    **facts: Any,
) -> None:
    """Write ``output_dir/config.yaml`` (the effective config + ``_run`` facts: processes, batches, git commit,
    device, dataset, ``facts``), start the trackers, and when resuming load ``checkpoint`` into everything
    registered for checkpointing (``state`` among them): first, so that a checkpoint that does not fit ``config``
    stops the run (:class:`ConfigError`) before the folder's ``config.yaml`` is touched."""
    if checkpoint is not None:
        try:
            accelerator.load_state(str(checkpoint))
        except (KeyError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"--resume {checkpoint} does not fit this run's config (resume with the settings it was trained "
                f"with): {first}"
            ) from None
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        processes, accumulation, per_process = split_batch(accelerator, config["train"])
        run = {
            "processes": processes,
            "per_process_batch": per_process,
            "gradient_accumulation_steps": accumulation,
            "global_batch": per_process * processes * accumulation,
            "git_commit": _git_commit(),
            "torch": str(torch.__version__),
            "device": str(accelerator.device),
            "dataset_size": len(dataset),
            "num_classes": dataset.num_classes,
            **facts,
            "resumed_from": str(checkpoint) if checkpoint else None,
        }
        (output_dir / "config.yaml").write_text(yaml.safe_dump({**config, "_run": run}, sort_keys=False))
    if checkpoint is not None and accelerator.is_main_process:
        trim_log(output_dir / "log.jsonl", state.step)  # the steps after the checkpoint are logged again
    if trackers(config["train"]):
        accelerator.init_trackers(tracker, config=flat_hyperparameters(config))
    if checkpoint is not None:
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")


def flat_hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.01, ...}``: the config flattened for the trackers (lists and None as strings)."""
    flat: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}{key}.")
        else:
            ok = isinstance(node, (int, float, str, bool))
            flat[prefix[:-1]] = node if ok else str(node)

    visit(config, "")
    return flat


def run_steps(
    accelerator,
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    config: dict[str, Any],
    output_dir: Path,
    step: Callable[[dict[str, Any]], tuple[torch.Tensor, int, Callable[[], dict[str, float]]]],
    *,
    desc: str,
    progress: bool,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """The optimisation loop of both stages, from ``state`` to ``train.max_steps`` (global optimizer steps).

    Per micro-batch, inside ``accelerator.accumulate(model)``: ``loss, images, logs = step(batch)`` (the forward
    pass, its finite check; ``images`` this process's batch size, ``logs()`` the values to log), then backward
    and the optimizer step (the gradient norm clipped at ``optim.clip_grad_norm`` first, when set, over all the
    model's parameters, after unscaling under fp16).  Per optimizer step: the LR schedule, ``after_step()`` (the
    EMA teacher's update), every ``train.log_every`` steps a line of ``logs()`` + lr + images/s in
    ``output_dir/log.jsonl`` and the trackers, every ``train.checkpoint_every`` steps a checkpoint.  A resumed
    ``state`` continues mid-epoch with the same data order.  Ends with a checkpoint; returns the last logged
    values.
    """
    train_cfg = config["train"]
    processes, max_steps = accelerator.num_processes, train_cfg["max_steps"]
    clip = config["optim"].get("clip_grad_norm")
    log_file = output_dir / "log.jsonl"
    bar = None
    if progress and accelerator.is_main_process and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=max_steps, initial=state.step, desc=desc, dynamic_ncols=True)
    # without a bar (not a terminal: a cluster job's log; or --no-progress) one plain line per logged step
    plain = bar is None and accelerator.is_main_process
    last: dict[str, float] = {}
    images_seen, started, first_step = 0, time.perf_counter(), state.step
    while state.step < max_steps:
        batches = accelerator.skip_first_batches(loader, state.batches) if state.batches else loader
        # Accelerate's loaders set the epoch of the sampler and the dataset from their own iteration
        # counter when iterated: set it explicitly so a resumed (or skipping) loader agrees.
        batches.set_epoch(state.epoch)
        for batch in batches:
            state.batches += 1
            with accelerator.accumulate(model):
                loss, images, logs = step(batch)
                accelerator.backward(loss)
                if clip is not None and accelerator.sync_gradients:  # unscaled first under fp16 (Accelerate)
                    accelerator.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            images_seen += images * processes
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            if after_step is not None:
                after_step()
            state.step += 1
            if bar is not None:
                bar.update(1)
            if state.step % train_cfg["log_every"] == 0 or state.step == max_steps:
                elapsed = time.perf_counter() - started
                last = {
                    **mean_over_processes(accelerator, logs()),
                    "lr": optimizer.param_groups[0]["lr"],
                    "images_per_s": images_seen / max(elapsed, 1e-9),
                }
                accelerator.log(last, step=state.step)
                if accelerator.is_main_process:
                    with log_file.open("a") as f:
                        f.write(json.dumps({"step": state.step, **last}) + "\n")
                    if bar is not None:
                        bar.set_postfix(loss=f"{last['loss']:.3f}", ips=f"{last['images_per_s']:.1f}")
                    elif plain:
                        done = state.step - first_step
                        eta = elapsed / max(done, 1) * (max_steps - state.step)
                        print(f"{desc} step {state.step}/{max_steps}  {format_values(last)}  ETA {_clock(eta)}",
                              flush=True)  # fmt: skip
            if state.step % train_cfg["checkpoint_every"] == 0 and state.step < max_steps:
                _save_checkpoint(accelerator, output_dir, state, train_cfg["keep_checkpoints"])
            if state.step >= max_steps:
                break
        else:
            state.epoch += 1
            state.batches = 0
    if bar is not None:
        bar.close()
    _save_checkpoint(accelerator, output_dir, state, train_cfg["keep_checkpoints"])
    return last


def trackers(train_cfg: dict[str, Any]) -> list[str] | None:
    """``train.log_with`` (comma-separated Accelerate tracker names) as a list, None for none."""
    names = [name.strip() for name in (train_cfg.get("log_with") or "").split(",") if name.strip()]
    return names or None


def mean_over_processes(accelerator, values: dict[str, float]) -> dict[str, float]:
    """``values`` (this process's logged losses and mask fractions) averaged over the processes; every process
    calls it at the same step with the same keys."""
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    local = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    mean = accelerator.reduce(local, reduction="mean")
    return dict(zip(keys, mean.tolist(), strict=True))


def _number(value: Any) -> str:
    """A logged value for people: 4 significant digits, small / large ones in exponent form."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def format_values(values: dict[str, Any], sep: str = "  ") -> str:
    """``"loss 0.5321  cls 0.2104  lr 1.000e-04  images/s 9.81"``: a log line's values, readable."""
    names = {"images_per_s": "images/s"}
    return sep.join(f"{names.get(k, k)} {_number(v)}" for k, v in values.items())


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def make_accelerator(train_cfg: dict[str, Any], output_dir: Path) -> Any:
    """The ``accelerate.Accelerator`` of a training run (``train.mixed_precision``, ``gradient_accumulation_steps``,
    ``log_with``; logs under ``output_dir/logs``), checked against how the process was launched.

    ``train.mixed_precision`` None takes the launcher's precision (``accelerate launch --mixed_precision`` or its
    config file, via ``ACCELERATE_MIXED_PRECISION``; ``no`` without a launcher); a value in the config (or the
    recipe's ``--mixed-precision``) wins.  The precision in use is ``accelerator.mixed_precision``.

    Raises:
        ConfigError: the launcher started several processes (``WORLD_SIZE``) but Accelerate joined them into
            fewer (``accelerate launch --multi_gpu`` on a machine without GPUs does this): each process would
            train alone and overwrite the others' files in ``output_dir``; or fp16 was asked for on a CPU (where
            autocast has no float16 and the run would silently be float32).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    accelerator = Accelerator(
        mixed_precision=train_cfg["mixed_precision"],
        gradient_accumulation_steps=train_cfg["gradient_accumulation_steps"],
        log_with=trackers(train_cfg),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise ConfigError(
            f"launched as {launched} processes, but Accelerate runs {accelerator.num_processes} "
            f"({accelerator.distributed_type.value}): each would train alone into the same output folder "
            "(`accelerate launch --multi_gpu` without GPUs?). On CPUs, launch with "
            "`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N ...`"
        )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("mixed precision fp16 needs a CUDA GPU; on a CPU use bf16 or no")
    return accelerator


def check_data(dataset, accelerator) -> None:
    """``--check-data``: read every file of ``dataset`` once before training (:func:`fsae.data.check_dataset`).

    Raises:
        DatasetError: one message listing every bad file with its reason.
    """
    from fsae.data import DatasetError, check_dataset

    problems = check_dataset(dataset)
    if problems:
        raise DatasetError(f"{len(problems)} bad file(s) in the training set: " + "; ".join(problems))
    accelerator.print(f"checked the {len(dataset)} training samples: every file reads")


def report_skipped(dataset, accelerator) -> int:
    """With ``data.on_error: skip``, say at the end how many samples were skipped (and which); returns the count."""
    skipped = int(getattr(dataset, "skipped", 0))
    if skipped:
        ids = dataset.skipped_ids()
        shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        accelerator.print(f"skipped {skipped} unreadable sample(s) (data.on_error=skip): {shown}")
    return skipped


def with_precision(config: dict[str, Any], accelerator) -> dict[str, Any]:
    """``config`` with ``train.mixed_precision`` = the precision ``accelerator`` really runs (a new dict)."""
    return {**config, "train": {**config["train"], "mixed_precision": str(accelerator.mixed_precision)}}


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
