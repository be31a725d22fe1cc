#!/usr/bin/env python
"""Benchmark: images/s of dense-CRF pseudo-mask generation with :func:`fsae.infer.crf_masks`, 1 vs N workers.

Every item is what ``recipes/make_pseudo_labels.py`` hands to ``crf_masks``: an ``(H, W, 3)`` uint8 image,
``(C=20, H, W)`` float32 normalised CAMs and the image's present classes; each mask is :func:`crf_mask` at the
docs/method.md §6 defaults (background ``(1 - max cam)^8``, Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13
compat 10, 5 iterations).

Inputs: the images of a toy dataset (:func:`fsae.data.make_toy_dataset`; ``--toy-root``, default
``/tmp/fsae_toy``, written with the default arguments when missing) resized to VOC's size (500 px on the
long side: 500x375 landscape, 375x500 portrait, 500x500 square), images cycled when ``--images`` exceeds
the dataset.  CAMs are random but structured, like a trained network's: for each class present in the
ground-truth mask, the class's region at 1/8 resolution (a CAM's output stride) blurred, mixed with smooth
noise that spills outside the object and dims parts of it, upsampled bilinearly to the image size and
divided by its maximum; absent classes are all zero.  All items are built before the timing (about 15 MB
each); the parent then only iterates over them, so the timing is that of ``crf_masks`` itself: the pool's
start-up, sending the items to the workers, the CRFs and the results coming back.

Timing: for each of ``--repeats`` rounds every worker count in ``--workers`` runs once over the same items
(alternating, so all see the same machine load); the table shows each count's median seconds, its
images/s and the speed-up over 1 worker.  The masks of every run are checked to equal those of the first.
The load average is printed before and after: on a shared machine, rerun when it was high.

Exit status: 0; 2 on bad arguments (one line on stderr).

Examples::

    python benchmarks/bench_crf.py                             # 40 images, 1 and 2 workers, 3 rounds
    python benchmarks/bench_crf.py --images 8 --repeats 1      # a quick look
    python benchmarks/bench_crf.py --workers 1,2,4 --json bench_crf.json
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
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from bench_ops import device_name, git_commit  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from fsae.data import make_toy_dataset  # noqa: E402
from fsae.infer import crf_masks  # noqa: E402

NUM_CLASSES = 20
LONG_SIDE = 500  # VOC images are at most 500 px on a side, most 500x375
STRIDE = 8  # CAM output stride


class _Parser(argparse.ArgumentParser):
    """Argument parser that reports errors on one line."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2."""
    print(f"bench_crf.py: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- inputs


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> torch.Tensor:
    """``(h, w)`` float32 noise in about [0, 1], smooth at the scale of ``h / cells``."""
    grid = torch.from_numpy(rng.random((1, 1, cells, cells), dtype=np.float32))
    return F.interpolate(grid, shape, mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)


def structured_cams(gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """CAMs like a trained network's for the ground truth ``gt`` (``(H, W)`` uint8, 0 background, 1..20, 255).

    Returns:
        ``(C, H, W)`` float32 CAMs in [0, 1] (max 1 for every present class, all-zero maps for the others)
        and the present classes as 0-based channel indices.
    """
    height, width = gt.shape
    small = (max(1, -(-height // STRIDE)), max(1, -(-width // STRIDE)))
    present = sorted(int(c) - 1 for c in np.unique(gt) if 0 < c <= NUM_CLASSES)
    cams = np.zeros((NUM_CLASSES, height, width), np.float32)
    for c in present:
        region = torch.from_numpy((gt == c + 1).astype(np.float32))[None, None]
        region = F.adaptive_avg_pool2d(region, small)
        region = F.avg_pool2d(region, 3, stride=1, padding=1, count_include_pad=False)  # blurred at 1/8
        dim = 0.4 + 0.6 * _smooth_noise(rng, small, 4)  # strong on parts of the object, weak elsewhere
        spill = 0.35 * _smooth_noise(rng, small, 6) ** 3  # false activations in the background
        cam = (region[0, 0] * dim + spill)[None, None]
        cam = F.interpolate(cam, (height, width), mode="bilinear", align_corners=False)[0, 0]
        cams[c] = (cam / cam.max().clamp(min=1e-5)).numpy()
    return cams, present


def voc_sized(image: Image.Image, mask: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The image (bilinear) and its mask (nearest) resized to 500 px on the long side, as numpy arrays."""
    scale = LONG_SIDE / max(image.size)
    size = (round(image.size[0] * scale), round(image.size[1] * scale))
    return (
        np.asarray(image.convert("RGB").resize(size, Image.BILINEAR)),
        np.asarray(mask.resize(size, Image.NEAREST)),
    )


def make_items(root: Path, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    """``count`` ``(image, cams, label_ids)`` items from the toy dataset at ``root`` (written if missing)."""
    if not (root / ".fsae_toy.json").exists():
        make_toy_dataset(root)
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        image_id = ids[i % len(ids)]
        with (
            Image.open(root / "JPEGImages" / f"{image_id}.jpg") as im,
            Image.open(root / "SegmentationClassAug" / f"{image_id}.png") as mask,
        ):
            image, gt = voc_sized(im, mask)
        cams, present = structured_cams(gt, rng)
        items.append((np.ascontiguousarray(image), cams, present))
    return items


# --------------------------------------------------------------------------- timing


def run_once(items: list, workers: int) -> tuple[float, list[np.ndarray]]:
    """Seconds to produce every mask of ``items`` with ``crf_masks(workers=workers)``, and the masks."""
    start = time.perf_counter()
    masks = list(crf_masks(iter(items), workers=workers))
    return time.perf_counter() - start, masks


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="images per run (default 40)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the table shows medians (default 3)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts, 1 first (default 1,2)")
    parser.add_argument("--toy-root", type=Path, default=Path("/tmp/fsae_toy"), help="toy dataset folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the CAMs (default 0)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        fail("--images and --repeats must be >= 1")
    try:
        args.workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        fail(f"--workers must be comma-separated integers, got {args.workers!r}")
    if args.workers[0] != 1 or any(w < 1 for w in args.workers):
        fail(f"--workers must start with 1 (the baseline) and be >= 1, got {args.workers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"building {args.images} items from {args.toy_root} ...", flush=True)
    items = make_items(args.toy_root, args.images, args.seed)
    shapes = sorted({item[0].shape[:2] for item in items})
    classes = [len(item[2]) for item in items]
    print(f"image sizes (H, W): {shapes}; present classes per image: mean {np.mean(classes):.2f}", flush=True)
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)

    times: dict[int, list[float]] = {w: [] for w in args.workers}
    reference = None
    for round_ in range(args.repeats):
        for workers in args.workers:
            seconds, masks = run_once(items, workers)
            if reference is None:
                reference = masks
            elif not all(np.array_equal(a, b) for a, b in zip(reference, masks, strict=True)):
                raise SystemExit(f"bench_crf.py: the masks of {workers} workers differ from those of 1 worker")
            times[workers].append(seconds)
            print(f"  round {round_ + 1}: {workers} worker(s) {seconds:.2f} s", flush=True)
    load_after = load_average()

    base = statistics.median(times[1])
    rows = []
    for workers in args.workers:
        seconds = statistics.median(times[workers])
        rows.append(
            {
                "workers": workers,
                "images": args.images,
                "seconds": round(seconds, 3),
                "images_per_s": round(args.images / seconds, 3),
                "speedup": round(base / seconds, 3),
                "all_seconds": [round(t, 3) for t in times[workers]],
            }
        )
    print()
    print("| workers | images | seconds | images/s | speed-up vs 1 |")
    print("| ------: | -----: | ------: | -------: | ------------: |")
    for row in rows:
        print(
            f"| {row['workers']:7d} | {row['images']:6d} | {row['seconds']:7.2f} | {row['images_per_s']:8.2f} "
            f"| {row['speedup']:12.2f}x |"
        )
    print(f"\nload average after: {load_after}")
    # a sanity check that the masks are not trivial: share of foreground pixels, and of the present classes
    fg = np.mean([np.mean(m > 0) for m in reference])
    print(f"foreground share of the masks: {fg:.3f}")

    if args.json is not None:
        meta: dict[str, Any] = {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv]),
            "git": git_commit(),
            "hostname": platform.node(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "device_name": device_name(torch.device("cpu")),
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "image_sizes": [list(s) for s in shapes],
            "mean_present_classes": float(np.mean(classes)),
            "crf": "crf_mask defaults: alpha 8, gaussian (3, 3), bilateral (80, 13, 10), 5 iterations",
        }
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
