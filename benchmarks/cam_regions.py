#!/usr/bin/env python
"""Diagnostic: where do a network's CAMs sit on the toy set -- the discriminative part, the body, or background?

The toy dataset (``fsae.data.toy``) knows, for every object, which pixels are its discriminative part (the glyph
disc) and which are its plain body.  For each checkpoint (a training run's ``--output-dir`` or one of its
``checkpoints/step_*`` folders) this runs the seeds' CAM inference (``--scales`` x flips, softmax over the C+1
channels, averaged over the passes) on the images of ``--split`` and reports, over the objects (percent):

* ``class@part`` / ``class@body``: mean softmax probability of the object's class on its part / its body;
* ``bg@part`` / ``bg@body``: mean background probability there;
* ``norm@body``: mean normalised CAM of the object's class on its body (the seeds' input: each class map divided by
  its maximum, so a sharper peak on the part lowers it);
* ``seed@part`` / ``seed@body``: share of the part / body pixels whose seed (background threshold ``--threshold``)
  is the object's class;

and over the background pixels: ``bg@bg`` (mean background probability) and ``seed fp@bg`` (share labelled as an
object by the seeds), the latter also split into ``fp@near`` (background within ``--near`` pixels of an object:
CAMs spread past the object's border) and ``fp@far`` (the rest: activations in the clutter).  The ignore band is
left out everywhere.

Example (the branch point and both ends of the demo's comparison)::

    python benchmarks/cam_regions.py --checkpoint outputs/demo/baseline/run/checkpoints/step_00000200 \\
        --checkpoint outputs/demo/baseline/run --checkpoint outputs/demo/fsae/run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from fsae.augment import imagenet_normalize
from fsae.data.toy import load_toy_sample
from fsae.data.voc import VOCSegmentation
from fsae.infer._scales import summed_scale_probs
from fsae.infer.checkpoint import load_cam_model
from fsae.ops import cam_normalize, cams_to_labels

OBJECT_KEYS = ("class@part", "class@body", "bg@part", "bg@body", "norm@body", "seed@part", "seed@body")
BACKGROUND_KEYS = ("bg@bg", "seed fp@bg", "fp@near", "fp@far")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", dest="checkpoints", action="append", required=True, type=Path,
                        help="a run folder or checkpoints/step_* folder (repeatable)")  # fmt: skip
    parser.add_argument("--weights", choices=("model", "teacher"), default="model")
    parser.add_argument("--data-root", type=Path, help="the toy VOC2012 folder (default: the first run's data.root)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--scales", default="0.5,0.75", help="CAM input scales, comma-separated")
    parser.add_argument("--threshold", type=float, default=0.3, help="seed background threshold")
    parser.add_argument("--near", type=int, default=8, help="fp@near: background within this many pixels")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    return parser


def _check_logits(logits: torch.Tensor, inputs: torch.Tensor) -> None:
    if logits.dim() != 4 or logits.shape[0] != inputs.shape[0]:
        raise ValueError(f"CAM logits must be (N, C+1, h, w), got {tuple(logits.shape)}")


@torch.no_grad()
def measure(model: torch.nn.Module, args: argparse.Namespace, root: Path) -> dict[str, float]:
    """The region statistics of one CAM network (fractions in [0, 1], averaged over objects / images)."""
    scales = tuple(float(s) for s in args.scales.split(","))
    dataset = VOCSegmentation(root, args.split)
    sums = dict.fromkeys(OBJECT_KEYS + BACKGROUND_KEYS, 0.0)
    counts = dict.fromkeys(OBJECT_KEYS + BACKGROUND_KEYS, 0)

    def add(key: str, values: torch.Tensor) -> None:  # the mean over one region; empty regions do not count
        if values.numel():
            sums[key] += float(values.float().mean())
            counts[key] += 1

    for index in range(len(dataset) if args.limit is None else min(args.limit, len(dataset))):
        item = dataset[index]
        sample = load_toy_sample(root, item["id"])
        image = imagenet_normalize(item["image"].float().unsqueeze(0) / 255)
        probs = summed_scale_probs(model, image, scales, True, _check_logits)[0] / (2 * len(scales))
        labels = item["labels"].unsqueeze(0)
        norm = cam_normalize(probs[1:].unsqueeze(0), labels)
        seeds = cams_to_labels(norm, labels, bg_threshold=args.threshold)[0]
        valid = item["mask"] != 255
        parts, instances = torch.from_numpy(sample.parts), torch.from_numpy(sample.instances)
        for k, cls in enumerate(sample.classes, start=1):
            part = parts == k
            body = (instances == k) & ~part & valid
            if not body.any():
                continue
            for key, plane, region in (
                ("class@part", probs[cls], part), ("class@body", probs[cls], body), ("bg@part", probs[0], part),
                ("bg@body", probs[0], body), ("norm@body", norm[0, cls - 1], body),
                ("seed@part", (seeds == cls).float(), part), ("seed@body", (seeds == cls).float(), body),
            ):  # fmt: skip
                add(key, plane[region])
        background = (item["mask"] == 0) & valid
        width = 2 * args.near + 1
        near = F.max_pool2d((instances > 0).float()[None, None], width, stride=1, padding=args.near)[0, 0] > 0
        add("bg@bg", probs[0][background])
        add("seed fp@bg", seeds[background] > 0)
        add("fp@near", seeds[background & near] > 0)
        add("fp@far", seeds[background & ~near] > 0)
    return {key: value / max(counts[key], 1) for key, value in sums.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for checkpoint in args.checkpoints:
        if not checkpoint.exists():
            print(f"error: checkpoint not found: {checkpoint}", file=sys.stderr)
            return 1
    rows, root = {}, args.data_root
    for checkpoint in args.checkpoints:
        model, config = load_cam_model(checkpoint, args.weights)
        root = root or Path(config["data"]["root"])  # the first run's data unless --data-root
        rows[str(checkpoint)] = measure(model, args, root)
    keys = OBJECT_KEYS + BACKGROUND_KEYS
    print(f"CAM regions on {root} ({args.split}, scales {args.scales} + flips, seeds at t={args.threshold}); percent")
    print("| checkpoint | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * row[k]:.1f}" for k in keys) + " |")
    if args.json:
        args.json.write_text(json.dumps({"root": str(root), "split": args.split, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
