#!/usr/bin/env python
"""Microbenchmark of the fused CAM ops: ``fsae.ops`` vs the PyTorch reference.

For every (shape, row) it times three implementations of the same op:

* **ext**: the public op ``fsae.ops.X``, i.e. the fused kernel of the compiled
  extension ``fsae._C`` when it is loaded and has kernels for the device, else
  the reference fallback (a loud note at the top of the output says so);
* **eager**: ``fsae.ops.reference.X`` run eagerly;
* **compiled**: ``torch.compile(fsae.ops.reference.X, dynamic=False)``
  (inductor; "n/a" when compiling fails, skipped with ``--no-compile``).

Rows (the names ``--ops`` takes: an op name selects all its rows, ``op:mode``
one row; ``chain`` is short for ``cam_normalize+cams_to_labels``):

==================================  =======  ======================================
op                                  mode     call
==================================  =======  ======================================
cam_normalize                       fwd      ``cam_normalize(cams, labels, mode="max")``
cams_to_labels                      fwd      ``cams_to_labels(norm_cams, labels, bg_power=8)``
cam_normalize+cams_to_labels        fwd      the two above chained (an acceptance target)
expansion_masks                     fwd      ``expansion_masks(teacher, labels)`` (defaults)
expansion_loss                      fwd      ``expansion_loss(student, teacher, labels)``
expansion_loss                      fwd+bwd  same, student requires grad, then ``autograd.grad``
==================================  =======  ======================================

Shapes (``--shapes``): ``train`` (B=8, C+1=21, 56x56), ``coco`` (B=16, C+1=81,
41x41), ``infer`` (B=8 passes, C+1=21, 375x500).  The CAM rows take cams of
shape (B, C, H, W) with C = channels - 1, standard normal; ``cams_to_labels``
takes them normalised by the reference.  The expansion rows take realistic
logits: smooth noise (standard normal at 1/8 resolution, upsampled, times 4),
Gaussian blobs adding +12 to each present class (1-3 per image, drawn at
random), the background raised outside the blobs, a little per-pixel noise;
the student is the teacher plus N(0, 0.5^2) noise.  The fraction of confident
and ring pixels is printed under the table.

Timing: ``--warmup`` calls, then the median wall time of ``--repeats`` calls.
On CUDA each call is bracketed by CUDA events after a ``synchronize`` (so the
figure includes the op's own launch overhead but no host sync cost).  On CUDA
the inputs rotate over several copies (together about 4x the L2 cache, see
``--rotate-mb``) so the timings read device memory, not a warm L2.

Effective bandwidth (columns "ext GB/s" and "% copy"): the fewest bytes the
op must move, over the ext time.  Counting rule: every input tensor that the
op reads in full (cams or logits; student and teacher for the loss) counts
once at its dtype's size, every output it returns counts once (int64 labels =
8 B/pixel; the five masks = 8 + 4 + 1 + 1 + 1 = 15 B/pixel with float32
confidence; the gradient at the student's size for fwd+bwd); the (B, C)
labels, the 0-d loss and any intermediate or saved tensors are not counted.
The figure is therefore a lower bound on the traffic actually moved (a chained
or two-pass kernel reads more).  "% copy" divides it by the measured copy
bandwidth: ``dst.copy_(src)`` on a large float32 tensor (1 GiB), counting bytes
read + written.  Both columns are shown on CUDA; on the CPU the inputs do not
rotate and small shapes sit in the caches, so the copy is skipped unless
``--copy-mb`` is given (use ``--rotate-mb`` too); "ext GB/s" is always in the JSON.

Each row also checks the ext outputs against the eager ones (column "check":
"ok" or "DIFF"); the script exits 1 when a row differs or fails, 2 on bad
arguments, else 0.

Examples::

    python benchmarks/bench_ops.py --quick                 # make demo: train shape, few repeats
    python benchmarks/bench_ops.py --shapes train          # CPU, with torch.compile
    python benchmarks/bench_ops.py --device cuda --json bench_ops_cuda.json
    python benchmarks/bench_ops.py --table-from bench_ops_cuda.json   # re-print a saved (even partial) run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

import fsae.ops as ops  # noqa: E402
from fsae.ops import reference  # noqa: E402

SHAPES: dict[str, tuple[int, int, int, int]] = {
    "train": (8, 21, 56, 56),
    "coco": (16, 81, 41, 41),
    "infer": (8, 21, 375, 500),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
BG_POWER = 8.0
MAX_SETS = 64


@dataclass(frozen=True)
class Row:
    """One benchmark row: an op in a mode, on the cam or the expansion inputs."""

    op: str
    mode: str  # "fwd" or "fwd+bwd"
    family: str  # "cam" or "expansion"

    @property
    def key(self) -> str:
        return f"{self.op}:{self.mode}"


ROWS: tuple[Row, ...] = (
    Row("cam_normalize", "fwd", "cam"),
    Row("cams_to_labels", "fwd", "cam"),
    Row("cam_normalize+cams_to_labels", "fwd", "cam"),
    Row("expansion_masks", "fwd", "expansion"),
    Row("expansion_loss", "fwd", "expansion"),
    Row("expansion_loss", "fwd+bwd", "expansion"),
)
ALIASES = {"chain": "cam_normalize+cams_to_labels"}


class _Parser(argparse.ArgumentParser):
    """Argument parser that reports errors on one line."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2."""
    print(f"bench_ops.py: error: {message}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- inputs


def make_labels(batch: int, classes: int, gen: torch.Generator) -> torch.Tensor:
    """``(B, C)`` float multi-hot with 1-3 present classes per image."""
    labels = torch.zeros(batch, classes)
    for b in range(batch):
        k = min(classes, int(torch.randint(1, 4, (1,), generator=gen)))
        labels[b, torch.randperm(classes, generator=gen)[:k]] = 1.0
    return labels


def make_logits(labels: torch.Tensor, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Realistic teacher CAM logits ``(B, C+1, H, W)`` (float32, CPU) for ``labels``.

    Smooth noise, a Gaussian blob per present class (+12 at its centre), the
    background raised where no blob is, and some per-pixel noise: a good part
    of the pixels is confident, with rings of moderate confidence around blobs.
    """
    batch, classes = labels.shape
    coarse = torch.randn(batch, classes + 1, max(2, height // 8), max(2, width // 8), generator=gen)
    logits = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) * 4.0
    logits += torch.randn(batch, classes + 1, height, width, generator=gen)
    yy = torch.linspace(0.0, 1.0, height)[:, None]
    xx = torch.linspace(0.0, 1.0, width)[None, :]
    for b in range(batch):
        cover = torch.zeros(height, width)
        for c in labels[b].nonzero().flatten().tolist():
            cy, cx = (0.15 + 0.7 * torch.rand(2, generator=gen)).tolist()
            radius = 0.12 + 0.23 * float(torch.rand((), generator=gen))
            blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
            logits[b, c + 1] += 12.0 * blob
            cover = torch.maximum(cover, blob)
        logits[b, 0] += 8.0 * (1.0 - cover) - 2.0
    return logits


def make_input_sets(
    row: Row, dims: tuple[int, int, int, int], n_sets: int, dtype: torch.dtype, device: torch.device, seed: int
) -> list[tuple[torch.Tensor, ...]]:
    """``n_sets`` independent argument tuples for ``row`` (distinct seeds per set)."""
    batch, channels, height, width = dims
    sets = []
    for i in range(n_sets):
        gen = torch.Generator().manual_seed(seed + 1000 * i)
        labels = make_labels(batch, channels - 1, gen)
        if row.family == "cam":
            cams = torch.randn(batch, channels - 1, height, width, generator=gen)
            if row.op == "cams_to_labels":
                cams = reference.cam_normalize(cams, labels)
            sets.append((cams.to(device, dtype), labels.to(device)))
        else:
            teacher = make_logits(labels, height, width, gen)
            student = teacher + 0.5 * torch.randn(teacher.shape, generator=gen)
            student = student.to(device, dtype).requires_grad_(row.mode == "fwd+bwd")
            sets.append((student, teacher.to(device, dtype), labels.to(device)))
    return sets


def set_bytes(row: Row, dims: tuple[int, int, int, int], dtype: torch.dtype) -> int:
    """Bytes of one argument tuple (for sizing the rotation)."""
    batch, channels, height, width = dims
    elt = torch.empty((), dtype=dtype).element_size()
    if row.family == "cam":
        return batch * (channels - 1) * height * width * elt
    return 2 * batch * channels * height * width * elt


def min_bytes(row: Row, dims: tuple[int, int, int, int], dtype: torch.dtype) -> int:
    """Fewest bytes the op must move (the counting rule of the module docstring)."""
    batch, channels, height, width = dims
    pixels = batch * height * width
    elt = torch.empty((), dtype=dtype).element_size()
    mask_bytes = pixels * (8 + (8 if dtype == torch.float64 else 4) + 3)
    if row.op == "cam_normalize":
        return 2 * pixels * (channels - 1) * elt
    if row.family == "cam":  # cams_to_labels and the chain: cams in, int64 labels out
        return pixels * (channels - 1) * elt + pixels * 8
    if row.op == "expansion_masks":
        return pixels * channels * elt + mask_bytes
    total = 2 * pixels * channels * elt + mask_bytes
    if row.mode == "fwd+bwd":
        total += pixels * channels * elt
    return total


# --------------------------------------------------------------------------- the callables


def forward_fn(row: Row, ns: Any) -> Callable[..., Any]:
    """The forward of ``row`` built from namespace ``ns`` (``fsae.ops`` or the reference); tensors only in."""
    if row.op == "cam_normalize":

        def cam_normalize(cams: torch.Tensor, labels: torch.Tensor) -> Any:
            return ns.cam_normalize(cams, labels, mode="max")

        return cam_normalize
    if row.op == "cams_to_labels":

        def cams_to_labels(norm: torch.Tensor, labels: torch.Tensor) -> Any:
            return ns.cams_to_labels(norm, labels, bg_power=BG_POWER)

        return cams_to_labels
    if row.op == "cam_normalize+cams_to_labels":

        def chain(cams: torch.Tensor, labels: torch.Tensor) -> Any:
            return ns.cams_to_labels(ns.cam_normalize(cams, labels, mode="max"), labels, bg_power=BG_POWER)

        return chain
    if row.op == "expansion_masks":

        def masks(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> Any:
            return tuple(ns.expansion_masks(teacher, labels))

        return masks

    def loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> Any:
        value, masks = ns.expansion_loss(student, teacher, labels)
        return (value, *masks)

    return loss


def step_fn(row: Row, forward: Callable[..., Any]) -> Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]:
    """One timed call of ``row``: the forward, plus ``autograd.grad`` of the loss for fwd+bwd."""
    if row.mode == "fwd+bwd":

        def step(args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            out = forward(*args)
            (grad,) = torch.autograd.grad(out[0], args[0])
            return (out[0].detach(), grad, *out[1:])

        return step

    def step_fwd(args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        out = forward(*args)
        return out if isinstance(out, tuple) else (out,)

    return step_fwd


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[tuple[torch.Tensor, ...]], Any],
    sets: list[tuple[torch.Tensor, ...]],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> list[float]:
    """Per-call times in ms of ``fn`` over the rotating ``sets`` (after ``warmup`` calls)."""
    for i in range(warmup):
        fn(sets[i % len(sets)])
    synchronize(device)
    times = []
    for i in range(repeats):
        args = sets[(warmup + i) % len(sets)]
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn(args)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(args)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    """Median, min and the 20th / 80th percentiles (ms)."""
    ordered = sorted(times)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    n = len(ordered)
    median = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return {"median_ms": median, "min_ms": ordered[0], "p20_ms": pct(0.2), "p80_ms": pct(0.8), "n": n}


def copy_bandwidth(device: torch.device, nbytes: int, warmup: int, repeats: int) -> dict[str, float]:
    """Copy bandwidth of ``dst.copy_(src)`` in GB/s, counting bytes read + written."""
    src = torch.arange(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)

    def copy(_: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return dst.copy_(src)

    stats = summarize(time_calls(copy, [()], device, warmup, repeats))
    moved = 2 * src.numel() * 4
    return {"bytes": moved, **stats, "gbps": moved / (stats["median_ms"] * 1e-3) / 1e9}


# --------------------------------------------------------------------------- checks


def output_names(row: Row) -> list[str]:
    """Names of the tensors a row's step returns (for the check report)."""
    masks = ["pseudo_label", "confidence", "conf_mask", "ring_mask", "mask"]
    if row.op == "cam_normalize":
        return ["norm_cams"]
    if row.family == "cam":
        return ["seeds"]
    if row.op == "expansion_masks":
        return masks
    return ["loss", "grad", *masks] if row.mode == "fwd+bwd" else ["loss", *masks]


def compare(
    ext: tuple[torch.Tensor, ...], ref: tuple[torch.Tensor, ...], dtype: torch.dtype, names: list[str]
) -> dict[str, Any]:
    """Agreement of the ext outputs with the eager ones.

    Per output, the fraction of elements that are not close (``isclose`` with
    ``rtol = tol`` and ``atol = tol * max|ref|``, ``tol`` = 1e-3, 1e-2 for half
    types; exact equality for int and bool); a row is ok when every fraction is
    at most 1e-3 (a few pixels may flip at a threshold through rounding) and
    the 0-d loss is close.
    """
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3
    fractions: dict[str, float] = {}
    if len(ext) != len(ref):
        return {"ok": False, "mismatch_fraction": 1.0, "note": f"{len(ext)} outputs vs {len(ref)}"}
    names = names if len(names) == len(ext) else [f"out{i}" for i in range(len(ext))]
    for name, a, b in zip(names, ext, ref, strict=True):
        a = a.detach()
        b = b.detach()
        if a.shape != b.shape:
            return {"ok": False, "mismatch_fraction": 1.0, "note": f"shape {tuple(a.shape)} vs {tuple(b.shape)}"}
        if a.is_floating_point() or b.is_floating_point():
            a64, b64 = a.double(), b.double()
            finite = b64[torch.isfinite(b64)]
            scale = float(finite.abs().max()) if finite.numel() else 1.0
            close = torch.isclose(a64, b64, rtol=tol, atol=tol * max(scale, 1e-30), equal_nan=True)
        else:
            close = a == b.to(a.dtype)
        frac = 1.0 - float(close.double().mean()) if close.numel() else 0.0
        if a.dim() == 0 and frac > 0:
            frac = 1.0
        fractions[name] = frac
    worst = max(fractions.values(), default=0.0)
    differ = [name for name, frac in fractions.items() if frac > 1e-3]
    return {"ok": not differ, "mismatch_fraction": worst, "differ": differ, "fractions": fractions}


def mask_stats(dims: tuple[int, int, int, int], seed: int) -> dict[str, float]:
    """Fractions of confident / ring pixels of the expansion inputs (float32, reference)."""
    batch, channels, height, width = dims
    gen = torch.Generator().manual_seed(seed)
    labels = make_labels(batch, channels - 1, gen)
    masks = reference.expansion_masks(make_logits(labels, height, width, gen), labels)
    return {
        "conf_fraction": float(masks.conf_mask.float().mean()),
        "ring_fraction": float(masks.ring_mask.float().mean()),
        "mean_confidence": float(masks.confidence.mean()),
    }


# --------------------------------------------------------------------------- metadata and output


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ext_in_use(device: torch.device) -> bool:
    """Whether ``fsae.ops`` runs the compiled kernels on ``device``."""
    info = ops.build_info()
    return bool(info["extension"]) and (device.type == "cpu" or bool(info["cuda_compiled"]))


def metadata(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "git": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "dtype": args.dtype,
        "build_info": ops.build_info(),
        "ext_in_use": ext_in_use(device),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "compile": not args.no_compile,
        "complete": False,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta["sm_count"] = props.multi_processor_count
        meta["capability"] = f"{props.major}.{props.minor}"
        meta["l2_bytes"] = int(getattr(props, "L2_cache_size", 0))
    return meta


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], with_bandwidth: bool) -> str:
    header = ["shape", "op", "mode", "ext ms", "eager ms", "compiled ms", "eager/ext", "compiled/ext"]
    if with_bandwidth:
        header += ["ext GB/s", "% copy"]
    header.append("check")
    lines = [header]
    for r in rows:
        line = [
            r["shape"],
            r["op"],
            r["mode"],
            fmt(r["ext"]["median_ms"]) if r["ext"] else "error",
            fmt(r["eager"]["median_ms"]) if r["eager"] else "error",
            fmt(r["compiled"]["median_ms"]) if r["compiled"] else "n/a",
            fmt(r["eager_over_ext"], 2) + "x" if r["eager_over_ext"] else "n/a",
            fmt(r["compiled_over_ext"], 2) + "x" if r["compiled_over_ext"] else "n/a",
        ]
        if with_bandwidth:
            line += [fmt(r["ext_gbps"], 1), fmt(r["pct_copy"], 1) + "%" if r["pct_copy"] is not None else "n/a"]
        line.append("ok" if r["check"].get("ok") else ("DIFF" if "mismatch_fraction" in r["check"] else "n/a"))
        lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    right = {i for i, h in enumerate(header) if h not in ("shape", "op", "mode", "check")}

    def render(cells: list[str]) -> str:
        padded = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([render(lines[0]), "| " + " | ".join(rule) + " |", *(render(line) for line in lines[1:])])


def write_json(path: Path | None, meta: dict[str, Any], extra: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """(Re)write the JSON report; called after every row so a killed run leaves its partial results."""
    if path is None:
        return
    doc = {"meta": meta, **extra, "rows": rows}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(
        description="Time fsae.ops (fused extension) against the PyTorch reference, eager and compiled.",
        epilog="See the module docstring for the rows, inputs, timing and bandwidth counting rule.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--shapes", default=None, help=f"comma list of {','.join(SHAPES)} (default: all; --quick: train)"
    )
    parser.add_argument("--ops", default=None, help="comma list of op names or op:mode keys (default: all rows)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (20 CPU, 100 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (3 CPU, 10 CUDA)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up, no compile, train shape by default")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="dtype of cams and logits")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--rotate-mb", type=float, default=None, help="rotate inputs over this many MB (CUDA: 4x L2)")
    parser.add_argument(
        "--copy-mb", type=float, default=None, help="copy-bandwidth tensor size (CUDA: 1024, CPU: 0 = skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write rows + metadata as JSON")
    parser.add_argument(
        "--table-from", type=Path, default=None, metavar="PATH", help="only print the table of a saved --json report"
    )
    args = parser.parse_args(argv)
    if args.table_from is not None:
        return args

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but torch.cuda.is_available() is False (no GPU or a CPU-only torch)")
    shape_list = args.shapes.split(",") if args.shapes else (["train"] if args.quick else list(SHAPES))
    shape_list = [s.strip() for s in shape_list if s.strip()]
    unknown = [s for s in shape_list if s not in SHAPES]
    if unknown or not shape_list:
        fail(f"unknown shape(s) {unknown or shape_list}; choose from {','.join(SHAPES)}")
    args.shape_list = shape_list

    selected = list(ROWS)
    if args.ops:
        names = [ALIASES.get(n.strip(), n.strip()) for n in args.ops.split(",") if n.strip()]
        valid = {r.op for r in ROWS} | {r.key for r in ROWS}
        bad = [n for n in names if n not in valid]
        if bad or not names:
            fail(f"unknown op(s) {bad or names}; choose from {', '.join(sorted(valid | set(ALIASES)))}")
        selected = [r for r in ROWS if r.op in names or r.key in names]
    args.rows = selected

    cuda = args.device == "cuda"
    if args.quick:
        args.no_compile = True
    if args.repeats is None:
        args.repeats = 3 if args.quick else (100 if cuda else 20)
    if args.warmup is None:
        args.warmup = 1 if args.quick else (10 if cuda else 3)
    if args.repeats < 1 or args.warmup < 0:
        fail(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    if args.threads is not None and args.threads < 1:
        fail(f"--threads must be >= 1, got {args.threads}")
    if args.rotate_mb is not None and args.rotate_mb < 0:
        fail(f"--rotate-mb must be >= 0, got {args.rotate_mb}")
    if args.copy_mb is None:
        args.copy_mb = 1024.0 if cuda else 0.0
    if args.copy_mb < 0:
        fail(f"--copy-mb must be >= 0 (0 skips it), got {args.copy_mb}")
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            fail(f"cannot create the folder of --json {args.json}: {err}")
    return args


def bench_row(
    row: Row,
    shape: str,
    args: argparse.Namespace,
    device: torch.device,
    dtype: torch.dtype,
    rotate_bytes: int,
    copy_gbps: float | None,
) -> dict[str, Any]:
    """Time one row on one shape: ext, eager and (optionally) compiled."""
    dims = SHAPES[shape]
    n_sets = max(1, min(MAX_SETS, math.ceil(rotate_bytes / set_bytes(row, dims, dtype)))) if rotate_bytes else 1
    sets = make_input_sets(row, dims, n_sets, dtype, device, args.seed)
    result: dict[str, Any] = {
        "shape": shape,
        "dims": list(dims),
        "op": row.op,
        "mode": row.mode,
        "key": row.key,
        "input_sets": n_sets,
        "min_bytes": min_bytes(row, dims, dtype),
        "ext": None,
        "eager": None,
        "compiled": None,
        "errors": {},
        "check": {},
    }
    ext_step = step_fn(row, forward_fn(row, ops))
    eager_step = step_fn(row, forward_fn(row, reference))
    outputs: dict[str, tuple[torch.Tensor, ...]] = {}
    for name, step in (("ext", ext_step), ("eager", eager_step)):
        try:
            outputs[name] = step(sets[0])
            result[name] = summarize(time_calls(step, sets, device, args.warmup, args.repeats))
        except Exception as err:  # noqa: BLE001 - report and go on with the next column
            result["errors"][name] = f"{type(err).__name__}: {err}"
    if "ext" in outputs and "eager" in outputs:
        result["check"] = compare(outputs["ext"], outputs["eager"], dtype, output_names(row))
    outputs.clear()

    if not args.no_compile:
        torch._dynamo.reset()
        try:
            compiled = torch.compile(forward_fn(row, reference), dynamic=False)
            step = step_fn(row, compiled)
            t0 = time.perf_counter()
            step(sets[0])
            synchronize(device)
            result["compile_s"] = time.perf_counter() - t0
            result["compiled"] = summarize(time_calls(step, sets, device, args.warmup, args.repeats))
        except Exception as err:  # noqa: BLE001 - compile is best effort: "n/a"
            result["errors"]["compiled"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"

    ext_ms = result["ext"]["median_ms"] if result["ext"] else None
    result["eager_over_ext"] = result["eager"]["median_ms"] / ext_ms if ext_ms and result["eager"] else None
    result["compiled_over_ext"] = result["compiled"]["median_ms"] / ext_ms if ext_ms and result["compiled"] else None
    result["ext_gbps"] = result["min_bytes"] / (ext_ms * 1e-3) / 1e9 if ext_ms else None
    result["pct_copy"] = 100.0 * result["ext_gbps"] / copy_gbps if result["ext_gbps"] and copy_gbps else None
    del sets
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def header_lines(meta: dict[str, Any]) -> list[str]:
    """The lines printed above the table (with the loud note when the extension is not in use)."""
    lines = [
        f"# fsae.ops benchmark: {meta['device_name']} ({meta['device']}), torch {meta['torch']}, "
        f"{meta['threads']} threads, {meta['dtype']}",
        f"# build_info: {meta['build_info']}",
        f"# warm-up {meta['warmup']}, median of {meta['repeats']}; compile: {'yes' if meta['compile'] else 'no'}; "
        f"git {meta['git']}; {meta['date']}",
    ]
    if not meta["ext_in_use"]:
        info = meta["build_info"]
        lines = [
            "!" * 100,
            f"!!! NOTE: the fsae._C extension is NOT in use on {meta['device']} (status: {info['status']}, "
            f"cuda_compiled={info['cuda_compiled']}).",
            '!!! The "ext" column times the pure-PyTorch reference fallback, so its ratios are ~1.',
            "!" * 100,
            *lines,
        ]
    return lines


def report(meta: dict[str, Any], extra: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows`` and the notes under it."""
    copy = extra.get("copy") or {}
    copy_gbps = copy.get("gbps")
    parts = [markdown_table(rows, with_bandwidth=copy_gbps is not None)]
    notes = []
    if copy_gbps is not None:
        notes.append(
            f"copy bandwidth: {copy_gbps:.1f} GB/s (dst.copy_(src), {copy['bytes'] / 2 / 2**20:.0f} MiB float32, "
            f"read + write, median {copy['median_ms']:.3f} ms)"
        )
    elif "error" in copy:
        notes.append(f"copy bandwidth: {copy['error'][:200]}")
    for shape, stats in extra.get("mask_stats", {}).items():
        notes.append(
            f"{shape} inputs: {100 * stats['conf_fraction']:.1f}% confident, {100 * stats['ring_fraction']:.1f}% ring "
            f"pixels, mean confidence {stats['mean_confidence']:.3f}"
        )
    if meta.get("rotate_bytes"):
        notes.append(f"inputs rotate over ~{meta['rotate_bytes'] / 2**20:.0f} MiB of copies per row (cold L2)")
    for r in rows:
        for name, err in r["errors"].items():
            notes.append(f"{r['shape']} {r['key']} {name}: {err[:200]}")
        if r["check"] and not r["check"].get("ok"):
            detail = ", ".join(f"{n} {100 * r['check']['fractions'][n]:.2f}%" for n in r["check"].get("differ", []))
            notes.append(f"{r['shape']} {r['key']}: DIFF from the reference ({detail or r['check'].get('note')})")
    if not meta.get("complete", True):
        notes.append("INCOMPLETE: the run stopped before the last row")
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)


def table_from(path: Path) -> int:
    """Print the header and table of a JSON report written by ``--json`` (also a partial one)."""
    try:
        doc = json.loads(path.read_text())
        meta, rows = doc["meta"], doc["rows"]
    except (OSError, ValueError, KeyError) as err:
        fail(f"cannot read a bench_ops JSON report from {path}: {err}")
    print("\n".join(header_lines(meta)))
    print()
    print(report(meta, doc, rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    args = parse_args(argv)
    if args.table_from is not None:
        return table_from(args.table_from)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    meta = metadata(args, device)

    if args.rotate_mb is not None:
        rotate_bytes = int(args.rotate_mb * 2**20)
    elif device.type == "cuda":
        rotate_bytes = 4 * (meta.get("l2_bytes") or 50 * 2**20)
    else:
        rotate_bytes = 0
    meta["rotate_bytes"] = rotate_bytes
    print("\n".join(header_lines(meta)), flush=True)

    extra: dict[str, Any] = {"copy": None, "mask_stats": {}}
    copy_gbps = None
    if args.copy_mb > 0:
        try:
            extra["copy"] = copy_bandwidth(device, int(args.copy_mb * 2**20), max(1, args.warmup), args.repeats)
            copy_gbps = extra["copy"]["gbps"]
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: go on without it
            extra["copy"] = {"error": f"{type(err).__name__}: {err}"}
    if any(r.family == "expansion" for r in args.rows):
        for shape in args.shape_list:
            extra["mask_stats"][shape] = mask_stats(SHAPES[shape], args.seed)

    rows: list[dict[str, Any]] = []
    write_json(args.json, meta, extra, rows)
    for shape in args.shape_list:
        for row in args.rows:
            t0 = time.perf_counter()
            result = bench_row(row, shape, args, device, dtype, rotate_bytes, copy_gbps)
            rows.append(result)
            write_json(args.json, meta, extra, rows)
            status = "; ".join(f"{k}: {v}" for k, v in result["errors"].items()) or "done"
            print(
                f"  [{time.perf_counter() - t0:6.1f} s] {shape:5s} {row.key:36s} {status}", file=sys.stderr, flush=True
            )

    meta["complete"] = True
    write_json(args.json, meta, extra, rows)
    print()
    print(report(meta, extra, rows))
    if args.json is not None:
        print(f"\nwrote {args.json}")
    failed = [r for r in rows if "ext" in r["errors"] or "eager" in r["errors"]]
    differ = [r for r in rows if r["check"] and not r["check"]["ok"]]
    if failed or differ:
        print(
            f"bench_ops.py: {len(failed)} row(s) failed, {len(differ)} row(s) differ from the reference",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
