#!/usr/bin/env python
"""Benchmark: does FSAE expand the CAMs on the toy dataset?  Baseline vs FSAE, same budget, several seeds.

For every seed and both configs (``--baseline``, default ``recipes/configs/toy_baseline.yaml``, and ``--fsae``,
default ``recipes/configs/toy_fsae.yaml``; they differ only in ``fsae.*``) this runs the two documented commands

    python recipes/voc_fsae.py --config CONFIG --data-root ROOT --output-dir OUT/<config>/seed<k>/run \\
        --set train.seed=<k>
    python recipes/make_pseudo_labels.py --checkpoint OUT/<config>/seed<k>/run --split train --eval \\
        --output-dir OUT/<config>/seed<k>/labels

(with ``--threshold 0.3 --miou-over present --scale-resize tensor-bilinear``: the settings of the results in
``benchmarks/RESULTS.md``; the toy dataset has 5 of the 20 VOC classes, so only the mean over the classes present
is meaningful there) and reads back, from ``metrics.json``: the seed mIoU at the fixed background threshold
(``--threshold``), the best seed mIoU over the threshold curve (chosen on the same split: an optimistic figure, as
in the original), the CRF mask mIoU, and the CAM completeness (mean fraction of ground-truth object pixels the
seeds reach);
from ``log.jsonl``: images/s.  It prints mean, standard deviation and range over the seeds, the per-seed
differences FSAE - baseline, and with ``--json`` writes everything.

The toy dataset (``python -m fsae.data.toy``) is written first when ``--data-root`` does not hold one:
``--classes`` picks its class pool (default the demo's five same-body classes, a task learnt from scratch on a
CPU in minutes).  Finished stages are kept: re-running continues where a previous run stopped (``--fresh``
starts over).  When the FSAE config warms up without the term (``fsae.start_step`` > 0), the FSAE run branches
from the baseline's checkpoint at that step (the runs are identical up to there), which saves that much work.

Examples::

    python benchmarks/toy_quality.py --output-dir outputs/toy_quality --json benchmarks/toy_quality.json
    python benchmarks/toy_quality.py --seeds 0 --set train.max_steps=100      # a quick look
    python benchmarks/toy_quality.py --jobs 3 --no-crf --image-size 384 --set data.crop_size=224 ...  # on a GPU

``--jobs`` trains and evaluates that many seeds at once (their runs are separate processes: worth it on a GPU);
``--no-crf`` leaves out the CRF masks (mask mIoU is then nan), for machines without pydensecrf.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_ops import device_name, git_commit  # noqa: E402

METRICS = (
    ("seed", "seed mIoU @t"),
    ("best", "best seed mIoU"),
    ("mask", "mask mIoU (CRF)"),
    ("completeness", "completeness"),
    ("images_per_s", "train img/s"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "toy_quality")
    parser.add_argument("--data-root", type=Path, help="toy VOC2012 folder (default OUTPUT_DIR/toy/VOC2012)")
    parser.add_argument("--classes", default="1,5,9,13,17", help="toy class pool when the dataset is written")
    parser.add_argument("--num-train", type=int, default=400, help="toy train_aug images when written")
    parser.add_argument("--image-size", type=int, default=192, help="toy images' long side when written")
    parser.add_argument("--baseline", type=Path, default=REPO / "recipes" / "configs" / "toy_baseline.yaml")
    parser.add_argument("--fsae", type=Path, default=REPO / "recipes" / "configs" / "toy_fsae.yaml")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to both configs (repeatable)")  # fmt: skip
    parser.add_argument("--split", default="train", help="split the seeds are evaluated on")
    parser.add_argument("--threshold", type=float, default=0.3, help="seed background threshold")
    parser.add_argument("--scales", default="0.5,1,1.5,2", help="CAM inference scales")
    parser.add_argument("--scale-resize", choices=("tensor-bilinear", "pil-bicubic"), default="tensor-bilinear",
                        help="input resizing per scale (default tensor-bilinear, as RESULTS.md's figures; "
                             "pil-bicubic: the authors')")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="CRF processes")
    parser.add_argument("--no-crf", dest="crf", action="store_false",
                        help="no CRF masks (mask mIoU reported as nan), e.g. without pydensecrf")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds trained and evaluated at once (e.g. 3 on a GPU with cores to spare)")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="delete earlier results in --output-dir first")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    return parser


def _run(command: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)


def _wait(jobs: list[tuple[subprocess.Popen, Path]]) -> None:
    for job, log in jobs:
        if job.wait() != 0:
            tail = log.read_text().strip().splitlines()[-3:]
            raise RuntimeError(f"{' '.join(map(str, job.args[:3]))} failed (see {log}): {' | '.join(tail)}")


def _train_command(config: Path, args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    command = [sys.executable, "recipes/voc_fsae.py", "--config", str(config), "--data-root", str(args.data_root)]
    command += ["--output-dir", str(out), "--no-progress", "--set", f"train.seed={seed}"]
    for item in args.overrides:
        command += ["--set", item]
    return command


def _labels_command(run: Path, args: argparse.Namespace, out: Path) -> list[str]:
    command = [sys.executable, "recipes/make_pseudo_labels.py", "--checkpoint", str(run), "--split", args.split]
    command += ["--eval", "--output-dir", str(out), "--threshold", str(args.threshold), "--scales", args.scales]
    command += ["--scale-resize", args.scale_resize, "--miou-over", "present"]
    command += ["--workers", str(args.workers), "--pictures", "4", "--no-progress"]
    return command if args.crf else [*command, "--no-crf"]


def _images_per_s(run: Path) -> float:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return float(lines[-1]["images_per_s"]) if lines else float("nan")


def _summary(run: Path, labels: Path) -> dict[str, float]:
    metrics = json.loads((labels / "metrics.json").read_text())
    return {
        "seed": metrics["seed"]["miou"],
        "best": metrics["best"]["miou"],
        "best_threshold": metrics["best"]["threshold"],
        "mask": metrics["mask"]["miou"] if "mask" in metrics else float("nan"),
        "completeness": metrics["completeness"],
        "images_per_s": _images_per_s(run),
    }


def _start_step(args: argparse.Namespace) -> int:
    from fsae.engine.config import load_config

    return int(load_config(args.fsae, args.overrides)["fsae"]["start_step"])


def run_seed(args: argparse.Namespace, seed: int, configs: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Train (where not done) and evaluate both configs for one seed.

    With ``fsae.start_step = S > 0`` the FSAE run's first S steps are exactly the baseline's (same seed, no FSAE
    term, the EMA teacher updated in both), so the FSAE run resumes from the baseline's step-S checkpoint instead
    of computing them again.
    """
    folders = {name: args.output_dir / name / f"seed{seed}" for name in configs}
    start = _start_step(args)
    for name in configs:
        run = folders[name] / "run"
        if (run / "model.safetensors").is_file():
            continue
        shutil.rmtree(run, ignore_errors=True)  # an unfinished run starts over
        command = _train_command(configs[name], args, seed, run)
        if name == "baseline" and start > 0:  # keep the checkpoint the FSAE run branches from
            command += ["--set", f"train.checkpoint_every={start}", "--set", "train.keep_checkpoints=1000"]
        if name == "fsae" and start > 0:
            command += ["--resume", str(folders["baseline"] / "run" / "checkpoints" / f"step_{start:08d}")]
        print(f"  seed {seed}: training {name}", flush=True)
        log = folders[name] / "train.log"
        _wait([(_run(command, log), log)])
    results = {}
    for name in configs:
        labels = folders[name] / "labels"
        if not (labels / "metrics.json").is_file():
            print(f"  seed {seed}: pseudo-labels of {name}", flush=True)
            log = folders[name] / "labels.log"
            _wait([(_run(_labels_command(folders[name] / "run", args, labels), log), log)])
        results[name] = _summary(folders[name] / "run", labels)
    return results


def _machine() -> str:
    """The device the runs train on (the recipes take the accelerator when there is one) and the CPU cores."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return f"{device_name(device)}, {os.cpu_count()} CPU cores"


def _stats(values: list[float]) -> dict[str, float]:
    if any(math.isnan(v) for v in values):  # a metric that was not measured (mask mIoU with --no-crf)
        return dict.fromkeys(("mean", "std", "min", "max"), math.nan)
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def aggregate(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean / std / range per config and metric, and of the per-seed differences FSAE - baseline."""
    seeds = sorted(per_seed)
    out: dict[str, Any] = {}
    for name in ("baseline", "fsae"):
        out[name] = {key: _stats([per_seed[s][name][key] for s in seeds]) for key, _ in METRICS}
    out["difference"] = {
        key: _stats([per_seed[s]["fsae"][key] - per_seed[s]["baseline"][key] for s in seeds]) for key, _ in METRICS
    }
    return out


def format_table(per_seed: dict[int, dict[str, dict[str, float]]], summary: dict[str, Any]) -> str:
    def cell(stats: dict[str, float], key: str) -> str:
        scale = 1.0 if key == "images_per_s" else 100.0
        return f"{stats['mean'] * scale:6.1f} ± {stats['std'] * scale:4.1f}"

    lines = [
        "| metric | baseline | FSAE | FSAE - baseline | per seed (baseline / FSAE) |",
        "|---|---|---|---|---|",
    ]
    for key, label in METRICS:
        scale = 1.0 if key == "images_per_s" else 100.0
        seeds = " · ".join(
            f"{per_seed[s]['baseline'][key] * scale:.1f} / {per_seed[s]['fsae'][key] * scale:.1f}" for s in per_seed
        )
        lines.append(
            f"| {label} | {cell(summary['baseline'][key], key)} | {cell(summary['fsae'][key], key)} "
            f"| {cell(summary['difference'][key], key)} | {seeds} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"toy_quality.py: error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"toy_quality.py: error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    for config in (args.baseline, args.fsae):
        if not config.is_file():
            print(f"toy_quality.py: error: config not found: {config}", file=sys.stderr)
            return 2
    if args.fresh:
        shutil.rmtree(args.output_dir, ignore_errors=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.data_root is None:
        args.data_root = args.output_dir / "toy" / "VOC2012"
    args.data_root = args.data_root.resolve()
    if not (args.data_root / "JPEGImages").is_dir():
        command = [sys.executable, "-m", "fsae.data.toy", "--root", str(args.data_root), "--classes", args.classes]
        command += ["--num-train", str(args.num_train), "--image-size", str(args.image_size)]
        subprocess.run(command, check=True, cwd=REPO)

    started = time.perf_counter()
    configs = {"baseline": args.baseline, "fsae": args.fsae}
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each seed's runs are subprocesses
            for seed, result in zip(seeds, pool.map(lambda s: run_seed(args, s, configs), seeds), strict=True):
                per_seed[seed] = result
    except RuntimeError as err:
        print(f"toy_quality.py: error: {err}", file=sys.stderr)
        return 1
    summary = aggregate(per_seed)
    print(f"\nToy dataset {args.data_root} ({args.split} split), seeds {seeds}; mean ± std over seeds:\n")
    print(format_table(per_seed, summary))
    if args.json is not None:
        record = {
            "benchmark": "toy_quality",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": _machine(),
            "git_commit": git_commit(),
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "configs": {name: str(path) for name, path in configs.items()},
            "overrides": args.overrides,
            "seeds": seeds,
            "per_seed": {str(s): v for s, v in per_seed.items()},
            "summary": summary,
            "seconds": time.perf_counter() - started,
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
