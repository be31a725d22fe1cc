#!/usr/bin/env python
"""Benchmark: batched ``fsae.augment.StrongPerturbation`` vs the per-sample PIL loop of the original code.

Both sides run the *same* views: every repeat draws one set of parameters with
``StrongPerturbation.generate_parameters`` (inside both timed regions) and

* **batched**: ``strong.apply(images, params)`` on ``--device`` (images already there);
* **PIL loop**: what the original research code ran per image in its data
  loader: tensor -> PIL (``to_pil_image``), torchvision ColorJitter on PIL with
  the sample's factors in the sample's order (``adjust_brightness`` /
  ``adjust_contrast`` / ``adjust_saturation`` / ``adjust_hue``), PIL
  ``ImageFilter.GaussianBlur(sigma)`` where the sample blurs, the sample's 5
  RandAugment ops via ``ImageEnhance`` / ``ImageOps``, PIL -> tensor
  (``to_tensor``), and ``torch.stack`` of the batch.  Always on the CPU, one thread
  of Python (as one loader worker).

Timing: ``--warmup`` untimed repeats, then the median wall time of ``--repeats``
repeats, the sides interleaved so that all see the same load on a shared
machine; the per-repeat ratios are printed too.  ``--threads 1`` pins torch to
one thread, the fair per-core comparison with the single-threaded PIL loop; on
a machine whose cores are busy with other work, torch's multi-threaded ops
can stall waiting for a descheduled worker thread, so use it there.
``--with-kornia`` adds the same pipeline with kornia's out-of-place functions
in place of ``fsae.augment.functional`` (same grouping, same views).  On CUDA
the batched sides are bracketed by ``torch.cuda.synchronize()``.  The input is
a smooth random batch (noise at 1/8 resolution, bilinearly upsampled) in
[0, 1], float32.

A third row times ``StrongPerturbation.authors()`` (the authors' recipe: 8-bit levels with PIL's rounding
after every op, torchvision's blur, blur always; on the input quantised to 8 bits), and the script prints its
difference from the authors' own per-sample chain (torchvision ColorJitter calls and ``gaussian_blur`` on PIL,
the PIL ops) with the same parameters: 0 levels expected.

Also printed: the difference between the two outputs of the last repeat, in
8-bit levels (PIL truncates to uint8 after every op, approximates the Gaussian
by box blurs and quantises HSV for the hue, so a level or two is expected; a
quantising op after a low-contrast one can turn that into many levels on a
few images).

Examples::

    python benchmarks/bench_augment.py                              # CPU, batch 8, 448x448
    python benchmarks/bench_augment.py --threads 1 --with-kornia    # per core, plus the kornia-ops row
    python benchmarks/bench_augment.py --device cuda --json bench_augment_cuda.json
    python benchmarks/bench_augment.py --batch 16 --size 321 --repeats 20
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:  # the script runs from a checkout without installing the package
    import fsae  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsae.augment import JITTER_COMPONENTS, RANDAUGMENT_OPS, StrongPerturbation


def _pil_ops(solarize_scale: float = 255.0):
    from PIL import ImageEnhance, ImageOps

    return {
        "autocontrast": lambda img, v: ImageOps.autocontrast(img),
        "brightness": lambda img, v: ImageEnhance.Brightness(img).enhance(v),
        "color": lambda img, v: ImageEnhance.Color(img).enhance(v),
        "contrast": lambda img, v: ImageEnhance.Contrast(img).enhance(v),
        "sharpness": lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
        "equalize": lambda img, v: ImageOps.equalize(img),
        "identity": lambda img, v: img,
        "posterize": lambda img, v: ImageOps.posterize(img, int(v)),
        "solarize": lambda img, v: ImageOps.solarize(img, solarize_scale * v),
    }


def authors_loop(images: torch.Tensor, params: dict[str, torch.Tensor], kernel_size: int) -> torch.Tensor:
    """The authors' per-sample chain for ``StrongPerturbation.authors()`` parameters (CPU): torchvision's
    ColorJitter functions on PIL in the drawn order, ``gaussian_blur`` on PIL (window ``kernel_size``), the PIL
    RandAugment ops (solarize thresholds are levels)."""
    import torchvision.transforms.functional as TF

    ops = _pil_ops(solarize_scale=1.0)
    jitter = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    outputs = []
    for i in range(images.shape[0]):
        img = TF.to_pil_image(images[i])
        for component in params["jitter_order"][i].tolist():
            img = jitter[component](img, float(params[JITTER_COMPONENTS[component]][i]))
        if kernel_size > 1 and bool(params["blur"][i]):
            img = TF.gaussian_blur(img, kernel_size, [float(params["sigma"][i])] * 2)
        for op, magnitude in zip(params["ops"][i].tolist(), params["magnitudes"][i].tolist(), strict=True):
            img = ops[RANDAUGMENT_OPS[op]](img, magnitude)
        outputs.append(TF.to_tensor(img))
    return torch.stack(outputs)


def pil_loop(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The per-sample PIL/torchvision version of ``StrongPerturbation.apply(images, params)`` (CPU)."""
    import torchvision.transforms.functional as TF
    from PIL import ImageFilter

    ops = _pil_ops()
    jitter = {
        "brightness": TF.adjust_brightness,
        "contrast": TF.adjust_contrast,
        "saturation": TF.adjust_saturation,
        "hue": TF.adjust_hue,
    }
    outputs = []
    for i in range(images.shape[0]):
        img = TF.to_pil_image(images[i])
        for component in params["jitter_order"][i].tolist():
            name = JITTER_COMPONENTS[component]
            img = jitter[name](img, float(params[name][i]))
        if bool(params["blur"][i]):
            img = img.filter(ImageFilter.GaussianBlur(radius=float(params["sigma"][i])))
        for op, magnitude in zip(params["ops"][i].tolist(), params["magnitudes"][i].tolist(), strict=True):
            img = ops[RANDAUGMENT_OPS[op]](img, magnitude)
        outputs.append(TF.to_tensor(img))
    return torch.stack(outputs)


class KorniaOpsStrong(StrongPerturbation):
    """``StrongPerturbation`` with every op replaced by its ``kornia.enhance`` / ``kornia.filters`` function
    (out of place, copied back into the slice); same grouping, same parameters.  ``--with-kornia`` times it,
    to show what the in-place ops of ``fsae.augment.functional`` buy."""

    def _table(self, height, width):
        import kornia.enhance as KE
        from kornia.filters import gaussian_blur2d

        from fsae.augment import functional as AF

        size = AF.blur_kernel_size(self.blur_sigma[1], height, width)

        def wrap(fn):
            return lambda x, m: x.copy_(fn(x, m))

        return (
            None,
            wrap(lambda x, m: KE.normalize_min_max(x)),
            wrap(KE.adjust_brightness_accumulative),
            wrap(KE.adjust_saturation_with_gray_subtraction),
            wrap(KE.adjust_contrast_with_mean_subtraction),
            wrap(KE.sharpness),
            wrap(lambda x, m: KE.equalize(x)),
            wrap(lambda x, m: KE.posterize(x, m.long())),
            wrap(KE.solarize),
            wrap(lambda x, m: KE.adjust_hue(x, 2 * math.pi * m)),
            wrap(lambda x, m: gaussian_blur2d(x, size, torch.stack([m, m], 1), border_type="replicate")),
        )


def make_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random RGB images in [0, 1]: noise at 1/8 resolution, bilinearly upsampled."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, max(1, size // 8), max(1, size // 8), generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)


def _machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import kornia
    import PIL
    import torchvision

    info: dict[str, object] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "kornia": kornia.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per side (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--n-ops", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-kornia", action="store_true", help="also time the pipeline with kornia's ops")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.batch < 1 or args.size < 3 or args.repeats < 1:
        print("error: need --batch >= 1, --size >= 3, --repeats >= 1", file=sys.stderr)
        return 2

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images_cpu = make_images(args.batch, args.size, args.seed)
    images = images_cpu.to(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def batched(module: StrongPerturbation):
        def run() -> torch.Tensor:
            out = module.apply(images, module.generate_parameters(args.batch))
            sync()
            return out

        return run

    # Every side draws from its own module with the same seed, so all of them compute the same views.
    loop_module = StrongPerturbation(n_ops=args.n_ops, seed=args.seed)
    sides = {
        "PIL loop (per sample)": ("cpu", lambda: pil_loop(images_cpu, loop_module.generate_parameters(args.batch))),
        "StrongPerturbation (batched)": (args.device, batched(StrongPerturbation(n_ops=args.n_ops, seed=args.seed))),
    }
    if args.with_kornia:
        sides["same, kornia.enhance ops"] = (args.device, batched(KorniaOpsStrong(n_ops=args.n_ops, seed=args.seed)))
    # the authors' recipe on 8-bit input (its own views: other semantics), window 5 (the costliest of 1, 3, 5)
    authors = StrongPerturbation.authors(n_ops=args.n_ops, seed=args.seed, blur_kernel_size=5)
    quantised = images.mul(255).round_().div_(255)
    authors_params: dict[str, torch.Tensor] = {}

    def authors_run() -> torch.Tensor:
        authors_params.update(authors.generate_parameters(args.batch))
        out = authors.apply(quantised, authors_params)
        sync()
        return out

    authors_name = "StrongPerturbation.authors (uint8, batched)"
    sides[authors_name] = (args.device, authors_run)

    # Interleaved, so that every side sees the same load on a shared machine.
    times: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, torch.Tensor] = {}
    sync()
    for repeat in range(args.warmup + args.repeats):
        for name, (_, fn) in sides.items():
            start = time.perf_counter()
            outputs[name] = fn()
            elapsed = time.perf_counter() - start
            if repeat >= args.warmup:
                times[name].append(elapsed)
    loop_name, batched_name = "PIL loop (per sample)", "StrongPerturbation (batched)"
    t_loop, t_batched = statistics.median(times[loop_name]), statistics.median(times[batched_name])
    ratios = [lo / ba for lo, ba in zip(times[loop_name], times[batched_name], strict=True)]
    diff = (outputs[batched_name].float().cpu() - outputs[loop_name]).abs() * 255.0
    theirs = authors_loop(quantised.cpu(), authors_params, authors.blur_kernel_size)
    authors_diff = ((outputs[authors_name].float().cpu() - theirs).abs() * 255.0).round()
    rows = []
    for name, (device, _) in sides.items():
        t = statistics.median(times[name])
        rows.append({"impl": name, "device": device, "ms": t * 1e3, "ips": args.batch / t, "speedup": t_loop / t})
    machine = _machine()
    print(f"# bench_augment: StrongPerturbation(n_ops={args.n_ops}) vs the per-sample PIL loop")
    print(
        f"batch {args.batch}, {args.size}x{args.size}, float32 in [0, 1]; median of {args.repeats} interleaved repeats"
    )
    print(", ".join(f"{k} {v}" for k, v in machine.items()))
    print()
    print("| implementation | device | ms / batch | images / s | speed-up |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['impl']} | {r['device']} | {r['ms']:.1f} | {r['ips']:.1f} | {r['speedup']:.2f}x |")
    print()
    print(
        f"speed-up (ratio of medians) {t_loop / t_batched:.2f}x; per-repeat ratios: median "
        f"{statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, max {max(ratios):.2f}x"
    )
    print(
        f"same views, outputs compared in 8-bit levels (last repeat): median {diff.median():.2f}, mean "
        f"{diff.mean():.2f}.  PIL truncates to uint8 after every op, so quantising ops (posterize, equalize, "
        "solarize) occasionally amplify a rounding difference into a large one on some pixels."
    )
    print(
        f"authors' recipe vs their per-sample PIL / torchvision chain, same parameters (last repeat): max "
        f"{authors_diff.max():.0f} levels, 99th percentile {authors_diff.quantile(0.99):.0f}, "
        f"{(authors_diff == 0).float().mean() * 100:.3f} % of values equal."
    )
    if args.json is not None:
        payload = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine,
            "rows": rows,
            "speedup": t_loop / t_batched,
            "per_repeat_ratios": ratios,
            "times_s": times,
            "diff_levels": {"median": float(diff.median()), "mean": float(diff.mean())},
            "authors_diff_levels": {"max": float(authors_diff.max()), "p99": float(authors_diff.quantile(0.99))},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
