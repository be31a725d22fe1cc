#!/usr/bin/env python
"""Diagnostic: how good is the supervision FSAE's teacher would give?  Its masks scored against the ground truth.

For a trained CAM network (a training run's ``--output-dir`` or one of its ``checkpoints/step_*`` folders), every
image of ``--split`` is resized so its long side is ``--long-side`` (the middle of the training range: the teacher
sees training-sized crops), its CAM logits are computed and :func:`fsae.ops.expansion_masks` gives the teacher's
pseudo-labels, confident mask and ring (docs/method.md §2) with the chosen thresholds; the CAM logits get the image
labels, as the trainer's teacher does.  The ground-truth mask, reduced
to the CAM grid (nearest), scores them.  Printed, for each threshold setting:

* ``conf %`` / ``ring %``: share of the (non-ignored) pixels in the confident mask / the ring;
* ``precision``: share of those pixels whose pseudo-label is the ground truth (also for background- and
  foreground-labelled confident pixels separately);
* ``fg share``: share of the supervised pixels labelled foreground (an image is mostly background);
* ``object recall``: share of the ground-truth object pixels supervised with their right class;
* ``images with conf fg``: share of the images where the teacher is confident on at least one foreground pixel
  (``--by-classes`` gives it, and everything else, for single-class and multi-class images apart: a derived
  background needs one class to dominate a pixel, which two present classes can prevent).

Example (the toy comparison of ``benchmarks/toy_quality.py``)::

    python benchmarks/teacher_masks.py --checkpoint outputs/toy_quality/baseline/seed0/run/checkpoints/step_00000200 \\
        --long-side 136 --conf-thresholds 0.95,0.999 --absent zero,exclude
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from fsae.augment import imagenet_normalize
from fsae.data.voc import VOCSegmentation
from fsae.infer.checkpoint import load_cam_model
from fsae.ops import expansion_masks

COUNTS = ("pixels", "conf", "conf_ok", "conf_bg", "conf_bg_ok", "conf_fg", "conf_fg_ok", "ring", "ring_ok",
          "ring_fg", "objects", "objects_ok", "images", "images_fg")  # fmt: skip
GROUPS = ("all", "1 class", "2+ classes")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="a run folder or checkpoints/step_* folder")
    parser.add_argument("--weights", choices=("model", "teacher"), default="model")
    parser.add_argument("--data-root", type=Path, help="the VOC2012 folder (default: the run's data.root)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--long-side", type=int, default=136, help="images resized to this long side")
    parser.add_argument("--conf-thresholds", default="0.95", help="comma-separated tau_conf values")
    parser.add_argument("--ring-threshold", type=float, default=0.8)
    parser.add_argument("--absent", default="zero", help="comma-separated: zero, exclude")
    parser.add_argument("--mode", choices=("eval", "train"), default="eval", help="network mode (teacher: train)")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--by-classes", action="store_true",
                        help="also score images with one class and with several classes apart")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    return parser


def _score(counts: dict[str, int], pseudo: torch.Tensor, conf: torch.Tensor, ring: torch.Tensor, gt: torch.Tensor):
    valid = gt != 255
    right = (pseudo == gt) & valid
    conf, ring = conf & valid, ring & valid
    fg = pseudo > 0
    for name, mask in (
        ("pixels", valid), ("conf", conf), ("conf_ok", conf & right), ("conf_bg", conf & ~fg),
        ("conf_bg_ok", conf & right & ~fg), ("conf_fg", conf & fg), ("conf_fg_ok", conf & right & fg),
        ("ring", ring), ("ring_ok", ring & right), ("ring_fg", ring & fg), ("objects", valid & (gt > 0)),
        ("objects_ok", (conf | ring) & right & (gt > 0)),
    ):  # fmt: skip
        counts[name] += int(mask.sum())
    counts["images"] += 1
    counts["images_fg"] += int(bool((conf & fg).any()))


def _summary(c: dict[str, int]) -> dict[str, float]:
    def pct(a: str, b: str) -> float:
        return 100.0 * c[a] / max(c[b], 1)

    supervised = c["conf"] + c["ring"]
    return {
        "conf %": pct("conf", "pixels"),
        "precision": pct("conf_ok", "conf"),
        "bg precision": pct("conf_bg_ok", "conf_bg"),
        "fg precision": pct("conf_fg_ok", "conf_fg"),
        "ring %": pct("ring", "pixels"),
        "ring precision": pct("ring_ok", "ring"),
        "fg share": 100.0 * (c["conf_fg"] + c["ring_fg"]) / max(supervised, 1),
        "object recall": pct("objects_ok", "objects"),
        "images with conf fg": pct("images_fg", "images"),
    }


@torch.no_grad()
def measure(args: argparse.Namespace) -> list[dict]:
    model, config = load_cam_model(args.checkpoint, args.weights)
    model.train(args.mode == "train")
    root = args.data_root or config["data"]["root"]
    dataset = VOCSegmentation(root, args.split)
    settings = [(float(t), a) for t in args.conf_thresholds.split(",") for a in args.absent.split(",")]
    groups = GROUPS if args.by_classes else GROUPS[:1]
    counts = {(s, g): dict.fromkeys(COUNTS, 0) for s in settings for g in groups}
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    for index in range(count):
        item = dataset[index]
        image = item["image"].float().unsqueeze(0) / 255
        scale = args.long_side / max(image.shape[-2:])
        image = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        # with the image labels, as the trainer's teacher (a background-free method builds its background from them)
        logits = model.cam_logits(imagenet_normalize(image), item["labels"].unsqueeze(0))
        gt = F.interpolate(item["mask"][None, None].float(), size=logits.shape[-2:], mode="nearest")[0, 0].long()
        group = "1 class" if int((item["labels"] != 0).sum()) == 1 else "2+ classes"
        for setting in settings:
            conf_threshold, absent = setting
            masks = expansion_masks(
                logits,
                item["labels"].unsqueeze(0),
                conf_threshold=conf_threshold,
                ring_threshold=args.ring_threshold,
                absent=absent,
            )
            for g in {"all", group} & set(groups):
                _score(counts[setting, g], masks.pseudo_label[0], masks.conf_mask[0], masks.ring_mask[0], gt)
    return [
        {"conf_threshold": t, "absent": a, "images": g, "ring_threshold": args.ring_threshold,
         **_summary(counts[(t, a), g])}
        for t, a in settings for g in groups
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = measure(args)
    keys = [k for k in rows[0] if k not in ("conf_threshold", "absent", "images", "ring_threshold")]
    print(f"teacher masks of {args.checkpoint} ({args.weights}, {args.mode} mode) on {args.split}, long side "
          f"{args.long_side}, tau_ring {args.ring_threshold}; percentages")  # fmt: skip
    print("| tau_conf | absent | images | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---:|" * len(keys))
    for row in rows:
        values = " | ".join(f"{row[k]:.1f}" for k in keys)
        print(f"| {row['conf_threshold']} | {row['absent']} | {row['images']} | {values} |")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
