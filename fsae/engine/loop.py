"""The optimisation loop both training stages share, on Accelerate.

Accelerate does device placement, DDP, mixed precision, gradient accumulation, checkpoint state and trackers; this
module adds what a stage's trainer is made of: :func:`make_accelerator` (checked against the launcher),
:func:`split_batch` (the global batch over processes and accumulation), :func:`make_loader` (an epoch order that
resumes mid-epoch, :class:`EpochSampler`, and the :class:`TrainState` saved with every checkpoint),
:func:`start_run` (the run folder's ``config.yaml``, trackers, resume), :func:`run_steps` (the loop: accumulation,
clipping, schedule, logging, atomic checkpoints with :func:`save_checkpoint`) and the non-finite-loss guard
(:func:`check_finite`).  The CAM stage (:mod:`fsae.engine.trainer`) and the segmentation stage
(:mod:`fsae.engine.seg_trainer`) each supply their own ``step``; the optimizer and LR schedule are
:mod:`fsae.engine.schedule`'s.
"""

from __future__ import annotations

import json
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

from fsae.engine.rundir import trim_log
from fsae.errors import ConfigError

__all__ = [
    "CHECKPOINT_PREFIX",
    "EpochSampler",
    "NonFiniteLossError",
    "TrainState",
    "check_data",
    "check_finite",
    "find_checkpoint",
    "flat_hyperparameters",
    "format_values",
    "loader_workers",
    "make_accelerator",
    "make_loader",
    "mean_over_processes",
    "report_skipped",
    "run_steps",
    "save_checkpoint",
    "split_batch",
    "start_run",
    "trackers",
    "with_precision",
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


def save_checkpoint(accelerator, output_dir: Path, state: TrainState, keep: int) -> Path:
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
                save_checkpoint(accelerator, output_dir, state, train_cfg["keep_checkpoints"])
            if state.step >= max_steps:
                break
        else:
            state.epoch += 1
            state.batches = 0
    if bar is not None:
        bar.close()
    save_checkpoint(accelerator, output_dir, state, train_cfg["keep_checkpoints"])
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
