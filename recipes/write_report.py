"""Write the demo's report: baseline vs FSAE pseudo-labels (and the segmentation network), for a person to read.

    python recipes/write_report.py --baseline outputs/demo/baseline --fsae outputs/demo/fsae \\
        --seg outputs/demo/seg --output OUTPUT

``--baseline`` / ``--fsae`` are folders holding a training run (``run/``: ``config.yaml``, ``log.jsonl``) and
its pseudo-labels (``labels/``: ``metrics.json`` and ``pictures/`` from ``recipes/make_pseudo_labels.py --eval``);
``--seg`` (optional) a ``recipes/train_seg.py`` output folder with ``eval/metrics.json``.  Writes
``OUTPUT/report.md``, ``OUTPUT/threshold_curves.png`` (both seed curves on one plot) and
``OUTPUT/pictures/<id>.png`` (the baseline's and FSAE's side-by-side pictures of the same image, one above the
other).  The report opens with a verdict in words computed from both runs' metrics (how many points FSAE moved
each figure against the baseline) and points at the toy set's analysis in ``benchmarks/RESULTS.md``.  Missing inputs
are a one-line error (exit 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from fsae.infer.report import plot_curve

ROWS = (("baseline", "baseline (PPC)"), ("fsae", "PPC + FSAE"))
# what an mIoU averages over (make_pseudo_labels.py --miou-over; metrics without the key are of the present mean)
_MEANS = {
    "present": "mIoU: the mean over the classes in the ground truth or the prediction (`--miou-over present`).",
    "all": "mIoU: the mean over all classes, 0 for one absent from both (`--miou-over all`, the authors' eval.py).",
}


class ReportError(ValueError):
    """A missing or unreadable input of the report."""


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ReportError(f"not found: {path}")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None


def _log(run: Path) -> list[dict[str, Any]]:
    path = run / "log.jsonl"
    if not path.is_file():
        raise ReportError(f"not found: {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def load_variant(folder: Path) -> dict[str, Any]:
    """``metrics`` (pseudo-labels), ``config`` (training run) and ``log`` of one demo variant."""
    import yaml

    config_path = folder / "run" / "config.yaml"
    if not config_path.is_file():
        raise ReportError(f"not found: {config_path}")
    return {
        "folder": folder,
        "metrics": _read_json(folder / "labels" / "metrics.json"),
        "config": yaml.safe_load(config_path.read_text()),
        "log": _log(folder / "run"),
    }


def stack_pictures(paths: list[tuple[str, Path]], out: Path) -> None:
    """Stack side-by-side pictures vertically, each under a caption."""
    images = [(caption, Image.open(path).convert("RGB")) for caption, path in paths]
    width = max(image.width for _, image in images)
    caption_h = 22
    canvas = Image.new("RGB", (width, sum(image.height + caption_h for _, image in images)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for caption, image in images:
        draw.text((6, y + 4), caption, fill=(0, 0, 0))
        canvas.paste(image, (0, y + caption_h))
        y += image.height + caption_h
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


def _summary_rows(variants: dict[str, dict[str, Any]]) -> list[str]:
    t = variants["baseline"]["metrics"]["threshold"]
    rows = [
        "| | " + " | ".join(label for _, label in ROWS) + " | FSAE - baseline |",
        "|---|" + "---|" * (len(ROWS) + 1),
    ]

    def row(name: str, values: list[float | None], scale_pct: bool = True) -> str:
        cells = [_pct(v) if scale_pct else f"{v:.2f}" for v in values]
        diff = "—"
        if all(v is not None and math.isfinite(v) for v in values):
            diff = f"{100 * (values[1] - values[0]):+.1f}" if scale_pct else f"{values[1] - values[0]:+.2f}"
        return f"| {name} | " + " | ".join(cells) + f" | {diff} |"

    m = {k: variants[k]["metrics"] for k, _ in ROWS}
    rows.append(row(f"seed mIoU @ t={t:.2f}", [m[k]["seed"]["miou"] for k, _ in ROWS]))
    rows.append(row("best seed mIoU (t chosen on this split)", [m[k]["best"]["miou"] for k, _ in ROWS]))
    rows.append(row("best threshold t", [m[k]["best"]["threshold"] for k, _ in ROWS], scale_pct=False))
    if all("mask" in m[k] for k, _ in ROWS):
        rows.append(row("mask mIoU (CRF)", [m[k]["mask"]["miou"] for k, _ in ROWS]))
    rows.append(row(f"CAM completeness @ t={t:.2f}", [m[k]["completeness"] for k, _ in ROWS]))
    return rows


def _per_class_rows(variants: dict[str, dict[str, Any]]) -> list[str]:
    names = variants["baseline"]["metrics"]["class_names"]
    has_mask = all("mask" in variants[k]["metrics"] for k, _ in ROWS)
    header = "| class | " + " | ".join(f"seed IoU {label}" for _, label in ROWS)
    header += (" | " + " | ".join(f"mask IoU {label}" for _, label in ROWS)) if has_mask else ""
    rows = [header + " |", "|---" * (1 + len(ROWS) * (2 if has_mask else 1)) + "|"]
    kinds = ("seed", "mask") if has_mask else ("seed",)
    for c, name in enumerate(names):
        values = [variants[k]["metrics"][kind]["iou"][c] for kind in kinds for k, _ in ROWS]
        if all(v is None for v in values):
            continue  # a class absent from ground truth and predictions everywhere (e.g. outside the toy's pool)
        rows.append(f"| {name} | " + " | ".join(_pct(v) for v in values) + " |")
    return rows


def _training_rows(variants: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| | steps | images/s | s/step | final loss |", "|---|---|---|---|---|"]
    for key, label in ROWS:
        log = variants[key]["log"]
        last = log[-1] if log else {}
        batch = variants[key]["config"]["train"]["batch_size"]
        ips = last.get("images_per_s", float("nan"))
        rows.append(
            f"| {label} | {last.get('step', '—')} | {ips:.2f} | {batch / ips if ips else float('nan'):.2f} "
            f"| {last.get('loss', float('nan')):.3f} |"
        )
    return rows


RESULTS_SECTION = "FSAE on the toy dataset"  # the section of benchmarks/RESULTS.md with the toy set's analysis
_ROOT = Path(__file__).resolve().parents[1]


def _points(before: float | None, after: float | None) -> float | None:
    """``after - before`` in mIoU points (the inputs are fractions), rounded as the tables show it."""
    if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
        return None
    return round(100 * after, 1) - round(100 * before, 1)


def _moved(what: str, before: float | None, after: float | None) -> str | None:
    diff = _points(before, after)
    if diff is None:
        return None
    span = f"({_pct(before)} -> {_pct(after)})"
    if abs(diff) < 0.05:
        return f"left {what} unchanged {span}"
    return f"{'raised' if diff > 0 else 'lowered'} {what} by {abs(diff):.1f} points {span}"


def verdict_lines(variants: dict[str, dict[str, Any]], output: Path) -> list[str]:
    """The report's verdict in words, from the measured metrics of both runs (nothing here is a fixed figure)."""
    base, fsae = variants["baseline"]["metrics"], variants["fsae"]["metrics"]
    t = base["threshold"]
    moves = [
        _moved(f"seed mIoU at t={t:.2f}", base["seed"]["miou"], fsae["seed"]["miou"]),
        _moved("the best seed mIoU over t", base["best"]["miou"], fsae["best"]["miou"]),
    ]
    if "mask" in base and "mask" in fsae:
        moves.append(_moved("CRF mask mIoU", base["mask"]["miou"], fsae["mask"]["miou"]))
    moves.append(_moved("CAM completeness", base.get("completeness"), fsae.get("completeness")))
    moves = [m for m in moves if m is not None]
    quality = [_points(base["seed"]["miou"], fsae["seed"]["miou"])]
    if "mask" in base and "mask" in fsae:
        quality.append(_points(base["mask"]["miou"], fsae["mask"]["miou"]))
    quality = [q for q in quality if q is not None]
    if quality and all(q >= 0.05 for q in quality):
        overall = "On this run FSAE gave better pseudo-labels than the baseline."
    elif quality and all(q <= -0.05 for q in quality):
        overall = "On this run FSAE gave worse pseudo-labels than the baseline."
    elif quality and all(abs(q) < 0.05 for q in quality):
        overall = "On this run FSAE and the baseline gave pseudo-labels of the same quality."
    else:
        overall = "On this run FSAE's effect on the pseudo-labels is mixed."
    said = (", ".join(moves[:-1]) + " and " if len(moves) > 1 else "") + moves[-1] if moves else "moved nothing"
    results = Path(os.path.relpath(_ROOT / "benchmarks" / "RESULTS.md", output.resolve())).as_posix()
    anchor = RESULTS_SECTION.lower().replace(" ", "-")
    return [
        "## Verdict",
        "",
        f"Against the baseline, FSAE {said}. {overall} This is one seed on one machine: the paper's gain "
        "(seed mask mIoU 73.3 -> 77.0 with PPC on VOC, docs/method.md §7) was measured after 30 epochs on VOC from "
        "ImageNet weights; "
        "what FSAE does and does not do on the toy set at CPU scale, measured over three seeds with the reasons, is "
        f'in [benchmarks/RESULTS.md]({results}#{anchor}), section "{RESULTS_SECTION}".',
        "",
    ]


def write_report(baseline: Path, fsae: Path, output: Path, seg: Path | None = None) -> Path:
    """Write ``output/report.md`` (+ PNGs) from the demo folders; returns the report's path."""
    variants = {"baseline": load_variant(baseline), "fsae": load_variant(fsae)}
    seg_metrics = _read_json(seg / "eval" / "metrics.json") if seg is not None else None
    output.mkdir(parents=True, exist_ok=True)

    curves = {label: [(p["threshold"], p["miou"]) for p in variants[k]["metrics"]["curve"]] for k, label in ROWS}
    best = {
        f"{label}: best t={variants[k]['metrics']['best']['threshold']:.2f}": (
            variants[k]["metrics"]["best"]["threshold"],
            variants[k]["metrics"]["best"]["miou"],
        )
        for k, label in ROWS
    }
    plot_curve(output / "threshold_curves.png", curves, marked=best)

    pictures = []
    base_pictures = variants["baseline"]["folder"] / "labels" / "pictures"
    for path in sorted(base_pictures.glob("*.png")) if base_pictures.is_dir() else []:
        other = variants["fsae"]["folder"] / "labels" / "pictures" / path.name
        if other.is_file():
            stack_pictures([(f"{path.stem} - {ROWS[0][1]}", path), (f"{path.stem} - {ROWS[1][1]}", other)],
                           output / "pictures" / path.name)  # fmt: skip
            pictures.append(path.name)

    m = variants["baseline"]["metrics"]
    cfg = variants["fsae"]["config"]
    lines = [
        "# fsae demo report",
        "",
        f"Toy dataset `{cfg['data']['root']}` ({m['dataset']} layout). Two CAM networks trained with the same "
        f"budget ({cfg['train']['max_steps']} steps, batch {cfg['train']['batch_size']}, {cfg['method']['name']} on "
        f"`{cfg['method']['backbone']}` from random weights): the baseline and the same config with FSAE "
        f"(from step {cfg['fsae'].get('start_step', 0)}, conf {cfg['fsae']['conf_threshold']}, "
        f"ring {cfg['fsae']['ring_threshold']}, EMA {cfg['fsae']['ema_decay']}). Pseudo-labels on "
        f"`{m['split']}` ({m['num_images']} images), CAMs over scales {', '.join(f'{s:g}' for s in m['scales'])}"
        f"{' with flips' if m['flip'] else ''}.",
        "",
        *verdict_lines(variants, output),
        "## Pseudo-label quality",
        "",
        *_summary_rows(variants),
        "",
        _MEANS[m.get("miou_over", "present")] + " Completeness: the mean over images of the fraction of "
        "ground-truth object pixels the seeds label as foreground (any class). The best threshold is chosen on the "
        "evaluated split itself, as the original does.",
        "",
        "![threshold curves](threshold_curves.png)",
        "",
        "## Per-class IoU (%)",
        "",
        *_per_class_rows(variants),
        "",
        "## Training",
        "",
        *_training_rows(variants),
        "",
        "images/s are each run's own steps (the FSAE run's: the steps after it branched from the baseline); on a "
        "shared machine they follow the load more than the method. `benchmarks/bench_train_step.py` compares the "
        "two step times side by side.",
        "",
    ]
    if seg_metrics is not None:
        lines += [
            "## Second stage: segmentation network trained on the FSAE pseudo-masks",
            "",
            f"val mIoU **{_pct(seg_metrics.get('miou'))}** (pixel accuracy {_pct(seg_metrics.get('pixel_acc'))}); "
            f"details in `{seg / 'eval' / 'metrics.md'}`.",
            "",
            "The demo trains the segmentation network on FSAE's masks only. Training a second one on the baseline's "
            "masks would double the demo's second-stage time; the CRF mask mIoU above compares the two sets of masks "
            "that the network would learn from.",
            "",
        ]
    if pictures:
        lines += [
            "## Pictures",
            "",
            "Image | CAM (max over present classes) | seed | CRF mask | ground truth; baseline above, FSAE below.",
            "",
        ]
        lines += [f"![{name}](pictures/{name})" for name in pictures]
        lines.append("")
    report = output / "report.md"
    report.write_text("\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="folder with run/ and labels/ of the baseline")
    parser.add_argument("--fsae", type=Path, required=True, help="folder with run/ and labels/ of the FSAE run")
    parser.add_argument("--seg", type=Path, help="recipes/train_seg.py output folder (with eval/metrics.json)")
    parser.add_argument("--output", type=Path, default=Path("OUTPUT"), help="report folder (default OUTPUT)")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.baseline, args.fsae, args.output, args.seg)
    except (ReportError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
