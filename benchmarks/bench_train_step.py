#!/usr/bin/env python
"""Benchmark: images/s of one FSAE training step, with FSAE on and off, and where the step time goes.

Each row builds the real training modules from a config (``--config``, default
``recipes/configs/toy_fsae.yaml``, with ``--set key=value`` overrides as in the
recipes) and times the optimizer step of :func:`fsae.engine.trainer.train`, with
the same calls in the same order:

==============  =======================================================================
part            what it times
==============  =======================================================================
data+aug        the loader's uint8 batch and labels to the device, ``TrainingViews`` of the
                config (the weak view and, FSAE on, the strong view: jitter over the whole
                image on its canvas, crop, blur, RandAugment), ImageNet normalisation
student         ``method(weak, labels, generator=...)``: the base method's training step, its
                base losses included
teacher         ``EMATeacher(weak, labels, cam_only=True)`` (no gradient; FSAE on only)
FSAE loss       ``method(strong, labels, cam_only=True)`` (the student's CAM logits), then
                ``fsae.weight * FSAELoss(strong_logits, teacher_logits, labels)`` (FSAE on only)
backward        the finite check of the loss terms, their sum, ``backward`` (through the
                GradScaler with fp16)
optim+EMA       ``optimizer.step``, ``zero_grad``, the LR scheduler step, then
                ``teacher.update(method)`` (the trainer updates the teacher with FSAE off too)
==============  =======================================================================

"FSAE on" and "FSAE off" are the same config with ``fsae.enabled`` true / false.
The input is synthetic, in the layout of the config's ``data.geometry``: ``authors``,
``(B, 3, L, L)`` uint8 canvases (``L`` = the largest long side) holding an image of a
random long side in ``data.long_side`` and aspect 3:4 to 1, with a random
``data.crop_size`` crop box; ``crop``, ``(B, 3, S, S)`` crops (smooth noise: random values
at 1/8 resolution, bilinearly upsampled), made on the CPU like the loader's batches, and random multi-hot labels
with 1-3 of the dataset's classes (20 for VOC, 80 for COCO); a few such batches
rotate.  No dataset and no weights are needed: the weights are random
(``method.pretrained`` is ignored, ``method.pretrained_path`` is loaded when set),
which does not change the work of a step.  The batch is ``train.batch_size``
(``--batch`` overrides it) as one micro-batch on one device: the step of a
1-process run without gradient accumulation.  Mixed precision
(``--mixed-precision``, default ``train.mixed_precision``, ``no`` when the config leaves it
to the launcher) wraps the student, teacher and FSAE loss in ``torch.autocast`` as Accelerate does; fp16 adds a
GradScaler and needs CUDA.

Timing: ``--warmup`` untimed steps, then ``--steps`` timed steps; figures are
medians.  Part times come from ``time.perf_counter`` around each part, with
``torch.cuda.synchronize()`` at every part boundary on CUDA; the shares are each
part's median over the sum of the part medians.  On CUDA those syncs stop the
host from queueing work ahead of the device, so ms/step and images/s there come
from separate steps synchronised only at their end (one after every part-timed
step); the sum of the parts is printed under the table.  On the CPU the steps
are timed once (a sync is a no-op there).  With ``--order interleaved`` (the
CPU default) both rows are built first and their steps alternate, so both see
the same load on a shared machine; ``sequential`` (the CUDA default) measures
one row, frees it, then the next, so that the peak memory
(``torch.cuda.max_memory_allocated``, reset before each row; weights, teacher,
optimizer state and activations) belongs to one row only.

``--compile`` adds a compiled twin of each row ("on+compile", "off+compile"), built from the same
seed and timed in the same run and order as the eager rows: ``nn.Module.compile`` (in place, so the
modules, their ``state_dict`` keys and ``EMATeacher.update`` stay as they are) of the method
(``fullgraph=False``: a method's own graph breaks are allowed, e.g. PPC's data-dependent contrast
sampling), the EMA teacher and ``FSAELoss`` (both ``fullgraph=True``), with ``--compile-backend``
(default inductor).  The compiled rows' columns are the same parts (the student's base pass, the
teacher, the student's strong pass + FSAE loss, the backward of their compiled graphs); the notes give
each compiled row's step time over its eager twin's and its first (compiling) step's time.  The
optimizer step and the EMA update are not compiled.  Warm-up steps absorb the compilation (and the
recompilations of a method's dynamic shapes): give a few.

Exit status: 0, 1 when a step fails (e.g. a non-finite loss or out of memory),
2 on bad arguments or a bad config (one line on stderr).

Examples::

    python benchmarks/bench_train_step.py                                  # toy config, CPU
    python benchmarks/bench_train_step.py --steps 3 --warmup 1 --threads 2
    python benchmarks/bench_train_step.py --compile --batch 4 --set data.crop_size=64 --warmup 3 --steps 5
    python benchmarks/bench_train_step.py --device cuda --config recipes/configs/voc_ppc_fsae.yaml \\
        --set data.crop_size=448 --mixed-precision bf16 --json bench_train_step_cuda.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from bench_ops import device_name, git_commit  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from fsae.augment import TrainingViews, imagenet_normalize  # noqa: E402
from fsae.data import COCOSegmentation, VOCSegmentation  # noqa: E402
from fsae.engine.config import ConfigError, load_config  # noqa: E402
from fsae.engine.loop import check_finite  # noqa: E402
from fsae.engine.schedule import build_optimizer, lr_factor  # noqa: E402
from fsae.engine.trainer import build_components  # noqa: E402
from fsae.losses import EMATeacher, FSAELoss  # noqa: E402

DEFAULT_CONFIG = REPO_ROOT / "recipes" / "configs" / "toy_fsae.yaml"
PARTS = ("data+aug", "student", "teacher", "fsae_loss", "backward", "optimizer", "ema")
# Table columns: (header, parts summed into it).
COLUMNS = (
    ("data+aug %", ("data+aug",)),
    ("teacher %", ("teacher",)),
    ("student %", ("student",)),
    ("FSAE loss %", ("fsae_loss",)),
    ("backward %", ("backward",)),
    ("optim+EMA %", ("optimizer", "ema")),
)
AMP_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILED = "+compile"  # suffix of the compiled rows' names
POOL = 4  # distinct synthetic batches, used in turn


class _Parser(argparse.ArgumentParser):
    """Argument parser that reports errors on one line."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2."""
    print(f"bench_train_step.py: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- inputs


Batch = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]


def _noise(batch: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """``(B, 3, side, side)`` uint8 smooth noise: random values at 1/8 resolution, bilinearly upsampled."""
    low = torch.rand(batch, 3, max(2, side // 8), max(2, side // 8), generator=gen)
    images = F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)
    return images.mul_(255).round_().clamp_(0, 255).to(torch.uint8).contiguous()


def _offsets(lengths: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    """Crop starts as the loader draws them: inside the image, or negative (padding) when it is smaller."""
    space = lengths - crop
    u = torch.rand(len(lengths), generator=gen)
    return torch.where(space >= 0, (u * (space + 1)).floor(), -(u * (1 - space)).floor()).long()


def make_batches(count: int, batch: int, data: dict[str, Any], classes: int, seed: int) -> list[Batch]:
    """``count`` CPU batches as the loader gives them (``data``: the config's ``data`` section): uint8 images
    (canvases or crops, by ``data.geometry``), the geometry (``resized_h, resized_w, crop_y, crop_x``), ``(B, C)``
    float labels."""
    gen = torch.Generator().manual_seed(seed)
    crop, (lo, hi) = data["crop_size"], data["long_side"]
    batches = []
    for _ in range(count):
        if data["geometry"] == "authors":
            images = _noise(batch, hi, gen)
            long = torch.randint(lo, hi + 1, (batch,), generator=gen)
            short = (long * (0.75 + 0.25 * torch.rand(batch, generator=gen))).round().long()
            for b in range(batch):  # zeros outside each image, as the loader's canvas
                images[b, :, long[b] :] = 0
                images[b, :, :, short[b] :] = 0
            geometry = {"resized_h": long, "resized_w": short}
            geometry["crop_y"], geometry["crop_x"] = _offsets(long, crop, gen), _offsets(short, crop, gen)
        else:
            images = _noise(batch, crop, gen)
            full = torch.full((batch,), crop)
            geometry = {"resized_h": full, "resized_w": full, "crop_y": full * 0, "crop_x": full * 0}
        labels = torch.zeros(batch, classes)
        for b in range(batch):
            k = min(classes, int(torch.randint(1, 4, (1,), generator=gen)))
            labels[b, torch.randperm(classes, generator=gen)[:k]] = 1.0
        batches.append((images, geometry, labels))
    return batches


# --------------------------------------------------------------------------- the step


@dataclass
class Setup:
    """The modules of one row (FSAE on or off) and its timings."""

    name: str
    config: dict[str, Any]
    method: torch.nn.Module
    teacher: EMATeacher
    criterion: FSAELoss
    views: TrainingViews
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generators: dict[str, torch.Generator]
    params: int
    fsae_enabled: bool = True
    compiled: bool = False
    steps_done: int = 0
    parts: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PARTS})
    parts_total: list[float] = field(default_factory=list)
    plain_total: list[float] = field(default_factory=list)
    first_step_s: float | None = None
    peak_bytes: int | None = None


def build_setup(
    name: str,
    config: dict[str, Any],
    num_classes: int,
    device: torch.device,
    amp: str,
    seed: int,
    compile_backend: str | None = None,
) -> Setup:
    """Build method, EMA teacher, FSAE loss, perturbations, optimizer and scheduler as the trainer does.

    ``compile_backend``: compile the method (graph breaks allowed), the teacher and the loss (``fullgraph=True``)
    in place with that ``torch.compile`` backend (None: eager).
    """
    torch.manual_seed(seed)  # every row starts from the same weights
    method, teacher, criterion, views = build_components(config, num_classes, pretrained=False)
    method.to(device).train()
    teacher.to(device)
    if compile_backend is not None:
        # in place: the modules stay the trainer's (state_dict keys, EMATeacher.update, unwrap_model)
        method.compile(backend=compile_backend)
        teacher.compile(backend=compile_backend, fullgraph=True)
        criterion.compile(backend=compile_backend, fullgraph=True)
    optimizer = build_optimizer(method, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    generators = {
        part: torch.Generator().manual_seed(seed * 1000 + offset)
        for offset, part in enumerate(("weak", "strong", "method"))
    }
    params = sum(p.numel() for p in method.parameters())
    return Setup(
        name,
        config,
        method,
        teacher,
        criterion,
        views,
        optimizer,
        scheduler,
        scaler,
        generators,
        params,
        fsae_enabled=config["fsae"]["enabled"],
        compiled=compile_backend is not None,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    setup: Setup,
    batch: Batch,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    sync_parts: bool,
) -> tuple[dict[str, float], float]:
    """One optimizer step of the trainer; returns (seconds per part, seconds of the whole step).

    With ``sync_parts`` the device is synchronised at every part boundary (exact part times); without,
    only at the end (the part times are then host times and meaningless on CUDA).
    """
    fsae_cfg = setup.config["fsae"]
    gens = setup.generators
    times: dict[str, float] = {}
    sync(device)
    start = last = time.perf_counter()

    def mark(part: str) -> None:
        nonlocal last
        if sync_parts:
            sync(device)
        now = time.perf_counter()
        times[part] = now - last
        last = now

    images, geometry, labels = batch
    labels = labels.to(device)
    crop = setup.config["data"]["crop_size"]
    weak01, strong01 = setup.views(images.to(device), geometry, crop, gens, strong=fsae_cfg["enabled"])
    weak = imagenet_normalize(weak01)
    strong = imagenet_normalize(strong01) if strong01 is not None else None
    mark("data+aug")
    # the calls of fsae.engine.trainer.step_terms, in its order, timed one by one
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        terms = dict(setup.method(weak, labels, generator=gens["method"]).losses)
        mark("student")
        if strong is not None:
            teacher_logits = setup.teacher(weak, labels, cam_only=True)
            mark("teacher")
            student_logits = setup.method(strong, labels, cam_only=True)
            terms["fsae"] = fsae_cfg["weight"] * setup.criterion(student_logits.float(), teacher_logits.float(), labels)
            mark("fsae_loss")
        else:
            times["teacher"] = times["fsae_loss"] = 0.0
    check_finite(setup.steps_done, terms)
    loss = sum(terms.values())
    setup.scaler.scale(loss).backward()
    mark("backward")
    setup.scaler.step(setup.optimizer)
    setup.scaler.update()
    setup.optimizer.zero_grad(set_to_none=True)
    setup.scheduler.step()
    mark("optimizer")
    setup.teacher.update(setup.method)
    mark("ema")
    sync(device)
    setup.steps_done += 1
    return times, time.perf_counter() - start


def run_steps(
    setup: Setup,
    batches: list[Batch],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    timed: bool,
) -> None:
    """One (warm-up or timed) round of ``setup``: a part-timed step, plus a plain step on CUDA."""
    batch = batches[setup.steps_done % len(batches)]
    parts, total = train_step(setup, batch, device, amp_dtype, sync_parts=True)
    if setup.first_step_s is None:
        setup.first_step_s = total  # with --compile: mostly the compilation
    if timed:
        for part in PARTS:
            setup.parts[part].append(parts[part])
        setup.parts_total.append(total)
    if device.type == "cuda":
        batch = batches[setup.steps_done % len(batches)]
        _, total = train_step(setup, batch, device, amp_dtype, sync_parts=False)
        if timed:
            setup.plain_total.append(total)


def summarize(setup: Setup, batch: int) -> dict[str, Any]:
    """The row of ``setup``: medians, shares, spread."""
    parts_ms = {part: 1e3 * statistics.median(setup.parts[part]) for part in PARTS}
    parts_sum = sum(parts_ms.values())
    step_times = setup.plain_total or setup.parts_total
    step_ms = 1e3 * statistics.median(step_times)
    return {
        "fsae": setup.name,
        "fsae_enabled": setup.fsae_enabled,
        "compiled": setup.compiled,
        "first_step_s": setup.first_step_s,
        "images_per_s": batch / (step_ms / 1e3),
        "ms_per_step": step_ms,
        "ms_per_step_min": 1e3 * min(step_times),
        "ms_per_step_max": 1e3 * max(step_times),
        "step_times_from": "plain steps (sync at the end)" if setup.plain_total else "part-timed steps",
        "parts_ms": parts_ms,
        "parts_sum_ms": parts_sum,
        "parts_pct": {part: 100.0 * ms / parts_sum for part, ms in parts_ms.items()},
        "columns_pct": {header: sum(100.0 * parts_ms[p] / parts_sum for p in members) for header, members in COLUMNS},
        "step_s": step_times,
        "parts_s": setup.parts,
        "peak_memory_bytes": setup.peak_bytes,
        "params": setup.params,
    }


# --------------------------------------------------------------------------- metadata and output


def metadata(args: argparse.Namespace, config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    try:
        config_name = str(args.config.resolve().relative_to(REPO_ROOT))
    except ValueError:
        config_name = str(args.config)
    meta: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "git": git_commit(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "config": config_name,
        "overrides": args.overrides,
        "method": config["method"]["name"],
        "backbone": config["method"]["backbone"],
        "dataset": config["data"]["dataset"],
        "crop": config["data"]["crop_size"],
        "batch": args.batch,
        "mixed_precision": args.mixed_precision,
        "teacher_mode": config["fsae"]["teacher_mode"],
        "optimizer": config["optim"]["name"],
        "warmup": args.warmup,
        "steps": args.steps,
        "order": args.order,
        "compile_backend": args.compile_backend if args.compile else None,
        "complete": False,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta["capability"] = f"{props.major}.{props.minor}"
        meta["total_memory_bytes"] = props.total_memory
    return meta


def header_lines(meta: dict[str, Any]) -> list[str]:
    overrides = " ".join(f"--set {o}" for o in meta["overrides"])
    return [
        f"# train-step benchmark: {meta['device_name']} ({meta['device']}), torch {meta['torch']}, "
        f"{meta['threads']} threads ({meta['cpu_count']} CPUs)",
        f"# config {meta['config']}{' ' + overrides if overrides else ''}: {meta['method']} / {meta['backbone']}, "
        f"{meta['dataset']}, crop {meta['crop']}, batch {meta['batch']}, mixed precision {meta['mixed_precision']}, "
        f"{meta['optimizer']}, teacher mode {meta['teacher_mode']}",
        f"# warm-up {meta['warmup']}, median of {meta['steps']} steps, rows {meta['order']}; git {meta['git']}; "
        f"{meta['date']}",
        *([f"# compiled rows: torch.compile backend {meta['compile_backend']}"] if meta["compile_backend"] else []),
    ]


def markdown_table(rows: list[dict[str, Any]], with_memory: bool) -> str:
    header = ["FSAE", "images/s", "ms/step", *(h for h, _ in COLUMNS)]
    if with_memory:
        header.append("peak GiB")
    lines = [header]
    for r in rows:
        line = [r["fsae"], f"{r['images_per_s']:.2f}", f"{r['ms_per_step']:.1f}"]
        line += [f"{r['columns_pct'][h]:.1f}" for h, _ in COLUMNS]
        if with_memory:
            peak = r["peak_memory_bytes"]
            line.append(f"{peak / 2**30:.2f}" if peak is not None else "n/a")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * w if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return "\n".join([render(lines[0]), "| " + " | ".join(rule) + " |", *(render(line) for line in lines[1:])])


def notes(rows: list[dict[str, Any]], device: torch.device) -> list[str]:
    out = []
    for r in rows:
        line = (
            f"FSAE {r['fsae']}: ms/step min {r['ms_per_step_min']:.1f}, max {r['ms_per_step_max']:.1f}; "
            f"parts (median ms) "
            + ", ".join(f"{p} {ms:.1f}" for p, ms in r["parts_ms"].items() if r["fsae_enabled"] or ms > 0)
            + f"; {r['params'] / 1e6:.1f} M parameters"
        )
        if device.type == "cuda":
            line += (
                f"; sum of synchronised parts {r['parts_sum_ms']:.1f} ms vs {r['ms_per_step']:.1f} ms per plain step"
            )
        out.append(line)
    by_name = {r["fsae"]: r for r in rows}
    for suffix in ("", COMPILED):
        on, off = by_name.get("on" + suffix), by_name.get("off" + suffix)
        if on is not None and off is not None:
            out.append(
                f"FSAE {on['fsae']} takes {on['ms_per_step'] / off['ms_per_step']:.2f}x the step time of FSAE "
                f"{off['fsae']} ({on['images_per_s']:.2f} vs {off['images_per_s']:.2f} images/s)"
            )
    for r in rows:
        eager = by_name.get(r["fsae"].removesuffix(COMPILED)) if r["compiled"] else None
        if eager is not None:
            out.append(
                f"compiled / eager step time, FSAE {eager['fsae']}: {r['ms_per_step'] / eager['ms_per_step']:.2f}x "
                f"({r['images_per_s']:.2f} vs {eager['images_per_s']:.2f} images/s; of the fastest steps "
                f"{r['ms_per_step_min'] / eager['ms_per_step_min']:.2f}x); "
                f"first step {r['first_step_s']:.1f} s compiled vs {eager['first_step_s']:.1f} s eager"
            )
    return out


def write_json(path: Path | None, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """(Re)write the JSON report; called after every row so a killed run leaves its partial results."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict[str, Any]]:
    parser = _Parser(
        description="Time a training step (FSAE on and off) and the share of its parts.",
        epilog="See the module docstring for the parts, the inputs and the timing.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (default: toy_fsae.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override (repeat)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: train.batch_size)")
    parser.add_argument(
        "--mixed-precision", choices=tuple(AMP_DTYPES), default=None, help="default: train.mixed_precision, else no"
    )
    parser.add_argument("--fsae", choices=("both", "on", "off"), default="both", help="which rows to run")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (10 CPU, 20 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (2 CPU, 5 CUDA)")
    parser.add_argument(
        "--order",
        choices=("interleaved", "sequential"),
        default=None,
        help="alternate the rows' steps or run one row after the other (default: CPU interleaved, CUDA sequential)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time each row compiled (method, teacher and FSAE loss; see the module docstring)",
    )
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend of --compile (default inductor)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write rows + metadata as JSON")
    args = parser.parse_args(argv)

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        fail("--device cuda but torch.cuda.is_available() is False (no GPU or a CPU-only torch)")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        fail(f"config: {err}")
    if args.batch is None:
        args.batch = config["train"]["batch_size"]
    if args.mixed_precision is None:
        args.mixed_precision = config["train"]["mixed_precision"] or "no"  # None: the launcher's, here none
    if args.steps is None:
        args.steps = 20 if cuda else 10
    if args.warmup is None:
        args.warmup = 5 if cuda else 2
    if args.order is None:
        args.order = "sequential" if cuda else "interleaved"
    if args.batch < 1:
        fail(f"--batch must be >= 1, got {args.batch}")
    if args.steps < 1 or args.warmup < 0:
        fail(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if args.threads is not None and args.threads < 1:
        fail(f"--threads must be >= 1, got {args.threads}")
    if config["data"]["crop_size"] < 16:
        fail(f"data.crop_size must be >= 16, got {config['data']['crop_size']}")
    if args.mixed_precision == "fp16" and not cuda:
        fail("--mixed-precision fp16 needs --device cuda (use bf16 on the CPU)")
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            fail(f"cannot create the folder of --json {args.json}: {err}")
    return args, config


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    args, config = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp_dtype = AMP_DTYPES[args.mixed_precision]
    num_classes = (VOCSegmentation if config["data"]["dataset"] == "voc" else COCOSegmentation).num_classes
    meta = metadata(args, config, device)
    print("\n".join(header_lines(meta)), flush=True)

    batches = make_batches(POOL, args.batch, config["data"], num_classes, args.seed)
    names = ["on", "off"] if args.fsae == "both" else [args.fsae]
    if args.compile:
        names += [name + COMPILED for name in names]

    def make(name: str) -> Setup:
        row_config = {**config, "fsae": {**config["fsae"], "enabled": name.removesuffix(COMPILED) == "on"}}
        backend = args.compile_backend if name.endswith(COMPILED) else None
        try:
            return build_setup(name, row_config, num_classes, device, args.mixed_precision, args.seed, backend)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - unknown backbone, bad option, missing weights: status 2
            fail(f"cannot build the training step of {config['method']['name']}: {type(err).__name__}: {err}")

    def measure(group: list[Setup]) -> None:
        for i in range(args.warmup + args.steps):
            for setup in group:
                run_steps(setup, batches, device, amp_dtype, timed=i >= args.warmup)
            if i == args.warmup - 1:
                print(f"  warm-up done ({', '.join(s.name for s in group)})", file=sys.stderr, flush=True)

    rows: list[dict[str, Any]] = []
    write_json(args.json, meta, rows)
    t0 = time.perf_counter()
    try:
        if args.order == "interleaved":
            group = [make(name) for name in names]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            measure(group)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            for setup in group:
                setup.peak_bytes = peak  # both rows together
                rows.append(summarize(setup, args.batch))
            write_json(args.json, meta, rows)
        else:
            for name in names:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                setup = make(name)
                measure([setup])
                if device.type == "cuda":
                    setup.peak_bytes = torch.cuda.max_memory_allocated(device)
                rows.append(summarize(setup, args.batch))
                write_json(args.json, meta, rows)
                del setup
    except Exception as err:  # noqa: BLE001 - e.g. out of memory or a non-finite loss: one line, status 1
        write_json(args.json, meta, rows)
        print(f"bench_train_step.py: a step failed: {type(err).__name__}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"  measured in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if args.compile:
        from torch._dynamo.utils import counters

        meta["dynamo_unique_graphs"] = counters["stats"]["unique_graphs"]
        meta["dynamo_graph_breaks"] = {reason.splitlines()[0]: n for reason, n in counters["graph_break"].items()}

    meta["complete"] = True
    meta["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    write_json(args.json, meta, rows)
    print()
    print(markdown_table(rows, with_memory=device.type == "cuda"))
    print()
    extra = notes(rows, device)
    if device.type == "cuda" and args.order == "interleaved":
        extra.append("peak memory: both rows resident together (use --order sequential for one row's peak)")
    if meta["load_average"] is not None:
        extra.append(
            f"load average (1 min) {meta['load_average'][0]:.2f} at the start, "
            f"{meta['load_average_end'][0]:.2f} at the end, on {meta['cpu_count']} CPUs"
        )
    if args.compile:
        breaks = meta["dynamo_graph_breaks"]
        extra.append(
            f"torch.compile: {meta['dynamo_unique_graphs']} graphs, {sum(breaks.values())} graph breaks"
            + (": " + "; ".join(f"{n}x {reason}" for reason, n in breaks.items()) if breaks else "")
        )
    print("\n".join(f"- {n}" for n in extra))
    if args.json is not None:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
