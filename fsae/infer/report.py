"""Pictures and Markdown for pseudo-label runs (Pillow only, no plotting library).

* :func:`plot_curve`: mIoU against the background threshold, one line per curve (e.g. a baseline and
  FSAE on one plot), with axes, ticks, grid, legend and marked points.
* :func:`heatmap_overlay`: a CAM blended over its image with a jet-like colour map.
* :func:`side_by_side`: image | CAM overlay | seed | CRF mask | ground truth, titled, in one PNG.
* :func:`metrics_markdown`: the summary and per-class tables of a ``metrics.json`` dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fsae.data.palette import IGNORE_INDEX, voc_palette

__all__ = ["colorize_labels", "heatmap_overlay", "metrics_markdown", "plot_curve", "side_by_side"]

# Distinguishable line colours (the "tab10" set).
LINE_COLOURS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
MARKER_COLOURS = ((0, 0, 0), (214, 39, 40), (44, 160, 44), (148, 103, 189))
MARKER_SHAPES = ("ring", "square", "diamond", "triangle")
UNDEFINED = "—"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _nice_step(span: float, target_ticks: int = 6) -> float:
    """A 1 / 2 / 2.5 / 5 x 10^k tick step giving about ``target_ticks`` ticks over ``span``."""
    raw = max(span, 1e-12) / target_ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power  # pragma: no cover - the loop always returns


def _ticks(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """Axis limits widened to whole tick steps, and the ticks between them."""
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    step = _nice_step(hi - lo)
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    count = round((hi - lo) / step)
    return lo, hi, [lo + i * step for i in range(count + 1)]


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step < 1 and round(step * 10**decimals, 6) % 1:
        decimals += 1  # 0.25 steps need two decimals
    return f"{value:.{decimals}f}"


def plot_curve(
    path: str | Path,
    curves: Mapping[str, Sequence[tuple[float, float]]],
    marked: Mapping[str, tuple[float, float]] | None = None,
    title: str = "Seed mIoU against the background threshold",
    xlabel: str = "background threshold t",
    ylabel: str = "mIoU (%)",
    percent: bool = True,
    size: tuple[int, int] = (820, 460),
) -> None:
    """Draw a line plot of one or more ``(x, y)`` curves into the PNG ``path``.

    Args:
        path: output PNG.
        curves: legend label -> points ``[(threshold, miou), ...]`` (``miou`` as a fraction when ``percent``);
            non-finite ``y`` values break the line.
        marked: legend label -> one point to mark (a ring on the plot, listed in the legend), e.g. the best
            threshold and the threshold used.
        title, xlabel, ylabel: texts.
        percent: show ``y`` multiplied by 100.
        size: ``(width, height)`` of the picture in pixels.
    """
    marked = dict(marked or {})
    scale = 100.0 if percent else 1.0
    series = {
        label: [(float(x), float(y) * scale) for x, y in points if math.isfinite(float(y))]
        for label, points in curves.items()
    }
    points_marked = {label: (float(x), float(y) * scale) for label, (x, y) in marked.items()}
    xs = [x for pts in series.values() for x, _ in pts] + [x for x, _ in points_marked.values()]
    ys = [y for pts in series.values() for _, y in pts] + [y for _, y in points_marked.values()]
    if not xs:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    x_lo, x_hi, x_ticks = _ticks(min(xs), max(xs))
    y_lo, y_hi, y_ticks = _ticks(min(ys), max(ys))

    width, height = size
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small, big = _font(14), _font(12), _font(16)
    # Each curve has its colour; a marked point takes the colour of its curve (the curve whose label its own label
    # starts with, or the only curve) and a shape of its own, so two points of one curve stay apart.
    curve_colours = {label: LINE_COLOURS[i % len(LINE_COLOURS)] for i, label in enumerate(series)}
    legend_entries = [(label, "line", colour) for label, colour in curve_colours.items()]
    uses: dict[str | None, int] = {}
    for i, label in enumerate(points_marked):
        owners = [curve for curve in series if label.startswith(curve)]
        owner = max(owners, key=len) if owners else (next(iter(series)) if len(series) == 1 else None)
        colour = curve_colours[owner] if owner is not None else MARKER_COLOURS[i % len(MARKER_COLOURS)]
        shape = MARKER_SHAPES[uses.get(owner, 0) % len(MARKER_SHAPES)]
        uses[owner] = uses.get(owner, 0) + 1
        legend_entries.append((label, shape, colour))
    legend_width = max((_text_size(draw, label, small)[0] for label, _, _ in legend_entries), default=0) + 44

    def marker(u: float, v: float, shape: str, colour: tuple[int, int, int], r: float = 6) -> None:
        if shape == "square":
            draw.rectangle([u - r + 1, v - r + 1, u + r - 1, v + r - 1], outline=colour, width=2)
        elif shape == "diamond":
            draw.polygon([(u, v - r), (u + r, v), (u, v + r), (u - r, v)], outline=colour, width=2)
        elif shape == "triangle":
            draw.polygon([(u, v - r), (u + r, v + r - 1), (u - r, v + r - 1)], outline=colour, width=2)
        else:
            draw.ellipse([u - r, v - r, u + r, v + r], outline=colour, width=2)

    y_step = y_ticks[1] - y_ticks[0]
    widest_tick = max(_text_size(draw, _tick_label(y, y_step), small)[0] for y in y_ticks)
    left = 6 + _text_size(draw, ylabel, font)[1] + 8 + widest_tick + 10  # y label, gap, tick labels, tick marks
    top, bottom = 40, 52
    right = width - min(legend_width + 16, width // 2)
    plot_w, plot_h = right - left, height - top - bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * plot_w, top + (y_hi - y) / (y_hi - y_lo) * plot_h)

    tw, _ = _text_size(draw, title, big)
    draw.text(((left + right - tw) / 2, 10), title, fill="black", font=big)
    x_step = x_ticks[1] - x_ticks[0]
    for x in x_ticks:
        u, _ = px(x, y_lo)
        draw.line([(u, top), (u, top + plot_h)], fill=(228, 228, 228))
        draw.line([(u, top + plot_h), (u, top + plot_h + 5)], fill="black")
        label = _tick_label(x, x_step)
        lw, _ = _text_size(draw, label, small)
        draw.text((u - lw / 2, top + plot_h + 8), label, fill="black", font=small)
    for y in y_ticks:
        _, v = px(x_lo, y)
        draw.line([(left, v), (left + plot_w, v)], fill=(228, 228, 228))
        draw.line([(left - 5, v), (left, v)], fill="black")
        label = _tick_label(y, y_step)
        lw, lh = _text_size(draw, label, small)
        draw.text((left - 8 - lw, v - lh / 2 - 2), label, fill="black", font=small)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    xw, _ = _text_size(draw, xlabel, font)
    draw.text((left + (plot_w - xw) / 2, height - 22), xlabel, fill="black", font=font)
    # The y label, rotated onto the left margin.
    yw, yh = _text_size(draw, ylabel, font)
    label_image = Image.new("RGB", (yw + 4, yh + 6), "white")
    ImageDraw.Draw(label_image).text((2, 0), ylabel, fill="black", font=font)
    label_image = label_image.rotate(90, expand=True)
    image.paste(label_image, (4, int(top + (plot_h - label_image.height) / 2)))

    for (_, _, colour), pts in zip(legend_entries, series.values(), strict=False):
        coords = [px(x, y) for x, y in sorted(pts)]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2, joint="curve")
        elif coords:
            u, v = coords[0]
            draw.ellipse([u - 2, v - 2, u + 2, v + 2], fill=colour)
    for (_, shape, colour), (x, y) in zip(legend_entries[len(series) :], points_marked.values(), strict=True):
        marker(*px(x, y), shape, colour)

    # Legend, right of the plot.
    lx, ly = right + 16, top
    for label, kind, colour in legend_entries:
        _, lh = _text_size(draw, label, small)
        mid = ly + 8
        if kind == "line":
            draw.line([(lx, mid), (lx + 28, mid)], fill=colour, width=3)
        else:
            marker(lx + 14, mid, kind, colour)
        draw.text((lx + 36, mid - lh / 2 - 2), label, fill="black", font=small)
        ly += 22
    image.save(path)


def heatmap_overlay(image_uint8_hwc: np.ndarray, cam_hw: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a jet-coloured CAM over an image.

    Args:
        image_uint8_hwc: ``(H, W, 3)`` uint8 RGB.
        cam_hw: ``(H, W)`` float activations, clipped to [0, 1] (0 = dark blue, 0.5 = green, 1 = dark red).
        alpha: weight of the colour map (0 = the image alone, 1 = the colour map alone).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    image = np.asarray(image_uint8_hwc)
    cam = np.clip(np.nan_to_num(np.asarray(cam_hw, dtype=np.float32)), 0.0, 1.0)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if cam.shape != image.shape[:2]:
        raise ValueError(f"cam must be (H, W) = {image.shape[:2]}, got {cam.shape}")
    # Piecewise-linear jet: each channel is a tent of half-width 0.5 (clipped to [0, 1]).
    colour = np.stack([np.clip(1.5 - np.abs(4 * cam - offset), 0, 1) for offset in (3, 2, 1)], axis=-1)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * 255.0 * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def colorize_labels(label_hw: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids (0..255) -> ``(H, W, 3)`` uint8 RGB in the VOC palette (255 = cream)."""
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    label = np.asarray(label_hw)
    if label.ndim != 2:
        raise ValueError(f"label map must be (H, W), got {label.shape}")
    return palette[np.clip(label, 0, 255).astype(np.uint8)]


def side_by_side(
    path: str | Path,
    image: np.ndarray,
    cams: np.ndarray | None,
    seed: np.ndarray | None,
    mask: np.ndarray | None,
    gt: np.ndarray | None,
    titles: Sequence[str] = ("image", "CAM (max over classes)", "seed", "CRF mask", "ground truth"),
    class_names: Sequence[str] | None = None,
) -> None:
    """Write the panels image | CAM overlay | seed | CRF mask | ground truth next to each other, titled.

    Args:
        path: output PNG.
        image: ``(H, W, 3)`` uint8 RGB.
        cams: ``(K, H, W)`` (or ``(H, W)``) float CAMs in [0, 1]; the panel shows their maximum over the
            classes (absent classes are zero) over the image.
        seed, mask, gt: ``(H, W)`` integer label maps (0..C, 255 = ignore), drawn in the VOC palette.
        titles: one title per panel slot (5); a panel whose array is None is left out with its title.
        class_names: C+1 names; when given, a legend (wrapped into rows) shows every class id that occurs in the
            label panels, 255 = ignore included, as a swatch with the id in it and "id name" beside it.
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    panels: list[tuple[str, np.ndarray]] = [(titles[0], image)]
    if cams is not None:
        cams = np.asarray(cams, dtype=np.float32)
        cam = cams if cams.ndim == 2 else (cams.max(0) if cams.shape[0] else np.zeros((height, width), np.float32))
        panels.append((titles[1], heatmap_overlay(image, cam)))
    label_maps = [m for m in (seed, mask, gt) if m is not None]
    for title, label in zip(titles[2:], (seed, mask, gt), strict=False):
        if label is not None:
            label = np.asarray(label)
            if label.shape != (height, width):
                raise ValueError(f"label map {title!r} is {label.shape}, image is {(height, width)}")
            panels.append((title, colorize_labels(label)))

    font = _font(max(11, min(18, width // 14)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_h = max(_text_size(probe, title, font)[1] for title, _ in panels) + 10
    gap = 6
    # Legend: one swatch per class id that occurs in the label panels (255 = ignore included), each with its id
    # written in the swatch and before its name, so classes of near-identical colours (aeroplane 1 (128, 0, 0)
    # and chair 9 (192, 0, 0), bottle 5 and horse 13 in the VOC palette) stay apart.
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    legend: list[tuple[int, str]] = []
    if class_names is not None and label_maps:
        present = sorted(set(np.unique(np.concatenate([np.asarray(m).ravel() for m in label_maps])).tolist()))
        legend = [(c, f"{c} {class_names[c]}") for c in present if 0 <= c < len(class_names)]
        if IGNORE_INDEX in present and len(class_names) <= IGNORE_INDEX:
            legend.append((IGNORE_INDEX, f"{IGNORE_INDEX} ignore"))
    canvas_w = len(panels) * width + (len(panels) + 1) * gap
    swatch = max(12, title_h - 8)
    small = _font(max(10, swatch - 3))
    entries = []  # (class id, text, x, row, swatch width)
    x, row = gap, 0
    for class_id, text in legend:
        box_w = max(swatch, _text_size(probe, str(class_id), small)[0] + 6)
        entry_w = box_w + 4 + _text_size(probe, text, font)[0] + 14
        if x > gap and x + entry_w > canvas_w:
            x, row = gap, row + 1
        entries.append((class_id, text, x, row, box_w))
        x += entry_w
    row_h = swatch + 6
    legend_h = (row + 1) * row_h + 4 if legend else 0
    canvas = Image.new("RGB", (canvas_w, height + title_h + legend_h + 2 * gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, array) in enumerate(panels):
        x = gap + i * (width + gap)
        tw, _ = _text_size(draw, title, font)
        draw.text((x + max(0, (width - tw) / 2), gap), title, fill="black", font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(array)), (x, gap + title_h))
    top = gap + title_h + height + 6
    for class_id, text, x, row, box_w in entries:
        y = top + row * row_h
        colour = tuple(int(v) for v in palette[class_id])
        draw.rectangle([x, y, x + box_w, y + swatch], fill=colour, outline="black")
        ink = "black" if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140 else "white"
        iw, ih = _text_size(draw, str(class_id), small)
        draw.text((x + (box_w - iw) / 2, y + (swatch - ih) / 2 - 2), str(class_id), fill=ink, font=small)
        draw.text((x + box_w + 4, y - 1), text, fill="black", font=font)
    canvas.save(path)


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return UNDEFINED
    return f"{100 * value:.1f}"


def metrics_markdown(metrics: Mapping[str, Any]) -> str:
    """A Markdown report of a pseudo-label ``metrics`` dict (as written to ``metrics.json``).

    A summary table (seed mIoU at the threshold used, the best threshold of the curve -- labelled as chosen on
    the evaluated split --, the CRF mask mIoU, CAM completeness) and a per-class IoU table (seed, mask), all in
    percent; ``—`` marks undefined values (a class absent from both ground truth and prediction).
    """
    lines = [f"# Pseudo-labels: {metrics.get('dataset', '?')} {metrics['split']} ({metrics['num_images']} images)", ""]
    scales = ", ".join(f"{s:g}" for s in metrics["scales"]) if metrics.get("scales") else "?"
    flip = {True: "with flip", False: "no flip"}.get(metrics.get("flip"), "flip ?")
    authors = metrics.get("cams") == "authors"
    how = "the method's own CAMs (authors_cams: seed = argmax with its background map, no threshold)"
    lines += [
        f"Checkpoint `{metrics.get('checkpoint')}` ({metrics.get('weights')} weights); "
        + (how if authors else f"CAMs over scales {scales}, {flip}")
        + (f" (read from `{metrics['from_cams']}`)" if metrics.get("from_cams") else "")
        + ".",
        "",
    ]
    if "seed" not in metrics:
        lines += ["No evaluation (run with `--eval` on a split with ground-truth masks)."]
        return "\n".join(lines) + "\n"
    t = metrics["threshold"]
    best = metrics["best"]
    lines += ["| measure | value |", "|---|---|"]
    used = "argmax" if authors else f"t={t:.2f}"
    note = "; a constant threshold on the foreground maps" if authors else ""
    lines.append(f"| seed mIoU @ {used} | {_percent(metrics['seed']['miou'])} |")
    lines.append(
        f"| best seed mIoU over t in {metrics['curve'][0]['threshold']:.2f}..{metrics['curve'][-1]['threshold']:.2f} "
        f"(t={best['threshold']:.2f}, chosen on this split{note}) | {_percent(best['miou'])} |"
    )
    if "mask" in metrics:
        lines.append(f"| mask mIoU (CRF, alpha={metrics.get('alpha', 8):g}) | {_percent(metrics['mask']['miou'])} |")
    lines.append(f"| CAM completeness (seed @ {used}) | {_percent(metrics['completeness'])} |")
    lines += [
        "",
        f"The best threshold is chosen on `{metrics['split']}` itself, the split it is reported on, as the original "
        "code does when it sweeps the threshold and reports the best value: an optimistic number, not a held-out one. "
        + (
            "The seed is the argmax over the background map and the present classes' maps (no threshold)."
            if authors
            else f"The seed mIoU at t={t:.2f} uses a threshold fixed in advance."
        ),
        "",
        "Completeness: the mean over images (with ground-truth foreground) of the fraction of ground-truth "
        "foreground pixels that the seed labels as any foreground class.",
        "",
        "| class | seed IoU | mask IoU |" if "mask" in metrics else "| class | seed IoU |",
        "|---|---|---|" if "mask" in metrics else "|---|---|",
    ]
    for c, name in enumerate(metrics["class_names"]):
        row = f"| {name} | {_percent(metrics['seed']['iou'][c])} |"
        if "mask" in metrics:
            row += f" {_percent(metrics['mask']['iou'][c])} |"
        lines.append(row)
    return "\n".join(lines) + "\n"
