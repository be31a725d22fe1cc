"""Seeds and CRF pseudo-masks from a trained CAM network, with their evaluation (docs/method.md §6).

    python recipes/make_pseudo_labels.py --checkpoint runs/voc_ppc_fsae --split train --eval --output-dir runs/pl
    accelerate launch recipes/make_pseudo_labels.py --checkpoint runs/voc_ppc_fsae --split train_aug \\
        --workers 4 --loader-workers 4 --output-dir runs/pl_train_aug

Writes ``seeds/<id>.png``, ``masks/<id>.png`` (VOC palette PNGs, the CRF masks being what the second stage
trains on), optionally ``cams/<id>.npz`` (``--save-cams``; ``--from-cams DIR`` re-runs seeds, CRF and
evaluation from them without the network), and with ``--eval``: ``metrics.json``, ``metrics.md``,
``threshold_curve.png``; ``pictures/<id>.png`` for the first ``--pictures`` ids.  ``--cams authors`` (the
default for a method with its own pseudo-label pipeline: SIPE) makes the seeds as the method's authors do
(SIPE: fused multi-scale IS-CAMs, argmax with their background map, no threshold); ``--cams fsae`` is fsae's
multi-scale CAMs with the ``--threshold`` background.  The ids are split over the
processes; the metrics are the same for any number of processes.  See ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fsae.engine.cli import run_job
from fsae.engine.config import ConfigError
from fsae.eval.confusion import MIOU_MEANS
from fsae.infer.cams import SCALE_RESIZES
from fsae.infer.pseudo_labels import CAM_SOURCES, DEFAULT_SCALES, DEFAULT_THRESHOLD, make_pseudo_labels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a training run's --output-dir (config.yaml + weights)")
    parser.add_argument("--weights", choices=("model", "teacher"), default="model",
                        help="the student (default, the paper's choice) or the EMA teacher")  # fmt: skip
    parser.add_argument("--data-root", type=Path, help="the VOC2012 / COCO2014 folder (default: the run's data.root)")
    parser.add_argument("--dataset", help="a registered dataset (voc, coco, ...); default: the run's data.dataset")
    parser.add_argument("--split", help="default: train")
    parser.add_argument("--output-dir", type=Path, required=True, help="where seeds/, masks/, metrics go")
    parser.add_argument("--cams", choices=CAM_SOURCES,
                        help="authors: the method's own pseudo-label CAMs (SIPE: its fused multi-scale IS-CAMs and "
                             "background map, seed = argmax, no threshold; --scales, --no-flip, --scale-resize and "
                             "--threshold then do not make the seed, the threshold curve is a diagnostic on the "
                             "foreground maps); fsae: multi-scale CAMs with a constant --threshold background. "
                             "Default: authors for a method that has them (SIPE), else fsae")  # fmt: skip
    parser.add_argument("--scales", default=",".join(f"{s:g}" for s in DEFAULT_SCALES),
                        help="CAM input scales, comma-separated (default %(default)s)")  # fmt: skip
    parser.add_argument("--no-flip", action="store_true", help="no horizontally flipped passes")
    parser.add_argument("--scale-resize", choices=SCALE_RESIZES, default="pil-bicubic",
                        help="how the image is brought to each scale: pil-bicubic (default, the authors': PIL "
                             "bicubic on the uint8 image, antialiased, then normalised) or tensor-bilinear "
                             "(the normalised tensor, F.interpolate without antialias)")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="seed background threshold (default %(default)s: the --thr of the authors' "
                             "script/voc_ppc0.sh)")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=8.0, help="CRF background (1 - max cam)^alpha (default 8)")
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=True, help="write CRF masks")
    parser.add_argument("--workers", type=int, default=1, help="CRF processes per process (default 1)")
    parser.add_argument("--loader-workers", type=int,
                        help="data-loader processes per process reading and decoding the images ahead of the "
                             "network (0: in the process itself; default min(4, CPUs / processes))")  # fmt: skip
    parser.add_argument("--save-cams", action="store_true",
                        help="write cams/<id>.npz (float16, present classes; seeds and masks are then made from "
                             "those rounded CAMs, so that --from-cams reproduces them)")  # fmt: skip
    parser.add_argument(
        "--from-cams", type=Path, metavar="DIR", help="read CAMs from DIR/<id>.npz (or DIR/cams/), not the network"
    )
    parser.add_argument("--eval", dest="evaluate", action="store_true", help="measure against the ground truth")
    parser.add_argument("--miou-over", choices=MIOU_MEANS, default="all",
                        help="classes the reported mIoU (and the curve's best t) averages over: all (default, the "
                             "authors' eval.py: every class, 0 when absent from ground truth and prediction) or "
                             "present (those that occur; both are in metrics.json)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="only the first N ids")
    parser.add_argument("--pictures", type=int, default=8, help="side-by-side pictures of the first N ids")
    parser.add_argument("--device", help="e.g. cpu, cuda (default: the process's accelerator device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--scales must be comma-separated numbers, got {text!r}") from None
    if not scales:
        raise ConfigError("--scales is empty")
    return scales


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> str:
        if args.checkpoint is not None and not args.checkpoint.exists():
            raise ConfigError(f"checkpoint not found: {args.checkpoint}")
        if args.data_root is not None and not args.data_root.is_dir():
            raise ConfigError(f"data root not found: {args.data_root}")
        metrics = make_pseudo_labels(
            args.output_dir,
            checkpoint=args.checkpoint,
            weights=args.weights,
            data_root=args.data_root,
            dataset=args.dataset,
            split=args.split,
            scales=parse_scales(args.scales),
            flip=not args.no_flip,
            scale_resize=args.scale_resize,
            threshold=args.threshold,
            alpha=args.alpha,
            crf=args.crf,
            workers=args.workers,
            loader_workers=args.loader_workers,
            save_cams=args.save_cams,
            from_cams=args.from_cams,
            evaluate=args.evaluate,
            miou_over=args.miou_over,
            limit=args.limit,
            pictures=args.pictures,
            device=args.device,
            progress=not args.no_progress,
            cams=args.cams,
        )
        return _summary(metrics, args.output_dir)

    return run_job(job)


def _summary(metrics: dict[str, Any], output_dir: Path) -> str:
    """The ``done:`` line: image count and, with ``--eval``, the headline metrics."""
    summary = f"{metrics['num_images']} images -> {output_dir}"
    if "seed" in metrics:
        pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
        summary += (
            f"; mIoU over {metrics['miou_over']} classes: seed {pct(metrics['seed']['miou'])} "
            + ("(argmax)" if metrics.get("cams") == "authors" else f"@ t={metrics['threshold']:.2f}")
            + ", best "
            f"{pct(metrics['best']['miou'])} @ t={metrics['best']['threshold']:.2f} (chosen on {metrics['split']})"
        )
        if "mask" in metrics:
            summary += f", mask mIoU {pct(metrics['mask']['miou'])}"
        summary += f", completeness {pct(metrics['completeness'])}"
    return summary


if __name__ == "__main__":
    sys.exit(main())
