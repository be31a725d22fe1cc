"""Command line of the training recipes (``recipes/voc_fsae.py``, ``recipes/coco_fsae.py``).

Accelerate-example style: :func:`training_function` (config, args) does the work, :func:`main` parses
arguments, loads and validates the config (errors before any heavy work: one line, exit code 1) and
calls it.  Run with ``python`` or ``accelerate launch`` alike.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsae.data import DatasetError
from fsae.engine.config import ConfigError, load_config
from fsae.engine.loop import NonFiniteLossError
from fsae.engine.trainer import train

__all__ = ["build_parser", "main", "training_function"]


def build_parser(description: str, default_config: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=default_config, help=f"YAML config (default {default_config})")
    parser.add_argument("--data-root", type=Path, help="the VOC2012 / COCO2014 folder (sets data.root)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where config, logs, checkpoints go")
    parser.add_argument("--resume", help="'latest' or a checkpoint folder (output-dir/checkpoints/step_*)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --output-dir")
    parser.add_argument("--check-data", action="store_true",
                        help="read every training image, mask and saliency map first; list every bad file")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.lr=0.02 (repeatable)")  # fmt: skip
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="sets train.mixed_precision")
    parser.add_argument("--max-steps", type=int, help="sets train.max_steps")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: a plain line every train.log_every steps (the default off a terminal)",
    )
    return parser


def training_function(config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train ``config`` into ``args.output_dir`` (resuming from ``args.resume``)."""
    return train(
        config,
        args.output_dir,
        resume=args.resume,
        progress=not args.no_progress,
        overwrite=bool(getattr(args, "overwrite", False)),
        check=bool(getattr(args, "check_data", False)),
    )


def one_line(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a data-loader worker, its original last line."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1]
        head, sep, tail = text.partition(": ")
        if sep and head.rsplit(".", 1)[-1].endswith("Error"):
            text = tail
    return text.splitlines()[0] if text else type(err).__name__


def _is_main_process() -> bool:
    """Rank 0 of a launched job (torchrun / ``accelerate launch`` set ``RANK``), or a plain process."""
    return os.environ.get("RANK", "0") == "0"


def format_summary(summary: Any) -> str:
    """``"steps 300, epoch 6, loss 0.5321, lr 1.000e-05, images/s 9.81"``: a run's summary for people."""
    from fsae.engine.loop import format_values

    if not isinstance(summary, dict):
        return str(summary)
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value is not None:
            flat[key] = value
    return format_values(flat, sep=", ")


def run_job(job: Callable[[], Any]) -> int:
    """Run a recipe's ``job`` (validate, then work; returns its summary) and give the exit code: on bad input (a
    config, dataset or non-finite-loss error, also one raised in a loader worker) one line ``error: ...`` on stderr
    (from the main process only: every process of a launched job meets the same error) and 1; else
    ``done: <summary>`` from the main process and 0."""
    try:
        summary = job()
    except (ConfigError, DatasetError, NonFiniteLossError) as err:
        if _is_main_process():
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    if _is_main_process():  # one line per run, not per process
        print(f"done: {format_summary(summary)}")
    return 0


def main(argv: list[str] | None = None, description: str = "", default_config: Path | None = None) -> int:
    args = build_parser(description, default_config).parse_args(argv)

    def job() -> dict[str, Any]:
        # --set strings are YAML; the flags' values go in as given, (key, value): a path is never re-parsed
        overrides: list[str | tuple[str, Any]] = list(args.overrides)
        if args.data_root is not None:
            if not args.data_root.is_dir():
                raise ConfigError(f"data root not found: {args.data_root}")
            overrides.append(("data.root", str(args.data_root)))
        if args.mixed_precision is not None:
            overrides.append(("train.mixed_precision", args.mixed_precision))
        if args.max_steps is not None:
            overrides.append(("train.max_steps", args.max_steps))
        if args.resume and args.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        return training_function(load_config(args.config, overrides), args)

    return run_job(job)
