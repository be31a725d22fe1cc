"""recipes/write_report.py: the demo report from two pseudo-label runs (and the segmentation run)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fsae.data import VOC_CLASSES

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("write_report_recipe", ROOT / "recipes" / "write_report.py")
write_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(write_report)


def _iou(values: dict[int, float]) -> list[float | None]:
    return [values.get(c) for c in range(21)]


def _variant(folder: Path, seed_miou: float, completeness: float, fsae: bool, picture_height: int) -> None:
    curve = [{"threshold": round(0.01 * i, 2), "miou": seed_miou - abs(i - 30) * 0.001} for i in range(61)]
    metrics = {
        "split": "train",
        "dataset": "voc",
        "num_images": 12,
        "scales": [1.0, 1.5],
        "flip": True,
        "threshold": 0.3,
        "class_names": list(VOC_CLASSES),
        "seed": {"miou": seed_miou, "iou": _iou({0: 0.8, 1: seed_miou, 5: 0.1})},
        "mask": {"miou": seed_miou + 0.05, "iou": _iou({0: 0.85, 1: seed_miou + 0.05, 5: 0.2})},
        "curve": curve,
        "best": {"threshold": 0.3, "miou": seed_miou},
        "completeness": completeness,
    }
    (folder / "labels" / "pictures").mkdir(parents=True)
    (folder / "labels" / "metrics.json").write_text(json.dumps(metrics))
    Image.fromarray(np.full((picture_height, 50, 3), 90, np.uint8)).save(folder / "labels" / "pictures" / "a.png")
    (folder / "run").mkdir()
    config = {
        "data": {"root": "/toy"},
        "method": {"name": "ppc", "backbone": "resnet10t"},
        "fsae": {"enabled": fsae, "start_step": 100, "conf_threshold": 0.95, "ring_threshold": 0.8, "ema_decay": 0.99},
        "train": {"max_steps": 200, "batch_size": 8},
    }
    (folder / "run" / "config.yaml").write_text(yaml.safe_dump(config))
    log = [{"step": 100, "loss": 1.0, "images_per_s": 4.0}, {"step": 200, "loss": 0.5, "images_per_s": 8.0}]
    (folder / "run" / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in log))


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    _variant(tmp_path / "baseline", 0.40, 0.50, False, 30)
    _variant(tmp_path / "fsae", 0.45, 0.62, True, 40)
    (tmp_path / "seg" / "eval").mkdir(parents=True)
    (tmp_path / "seg" / "eval" / "metrics.json").write_text(json.dumps({"miou": 0.512, "pixel_acc": 0.9}))
    return tmp_path


def test_report_compares_the_two_runs(demo: Path) -> None:
    out = demo / "OUTPUT"
    code = write_report.main(["--baseline", str(demo / "baseline"), "--fsae", str(demo / "fsae"),
                              "--seg", str(demo / "seg"), "--output", str(out)])  # fmt: skip
    assert code == 0
    report = (out / "report.md").read_text()
    assert "| seed mIoU @ t=0.30 | 40.0 | 45.0 | +5.0 |" in report
    assert "| mask mIoU (CRF) | 45.0 | 50.0 | +5.0 |" in report
    assert "| CAM completeness @ t=0.30 | 50.0 | 62.0 | +12.0 |" in report
    assert "val mIoU **51.2**" in report
    # per-class rows only for classes that occur somewhere; others (outside the toy pool) are left out
    assert "| aeroplane | 40.0 | 45.0 | 45.0 | 50.0 |" in report and "| bottle | 10.0 | 10.0 | 20.0 | 20.0 |" in report
    assert "| cat |" not in report
    assert "| baseline (PPC) | 200 | 8.00 | 1.00 | 0.500 |" in report  # 8 images per step at 8 images/s
    curve = Image.open(out / "threshold_curves.png")
    assert curve.width > 400 and curve.height > 200
    stacked = Image.open(out / "pictures" / "a.png")
    assert stacked.height == 30 + 40 + 2 * 22 and "![a.png](pictures/a.png)" in report


def test_missing_input_is_one_line_and_exit_1(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (demo / "fsae" / "labels" / "metrics.json").unlink()
    code = write_report.main(["--baseline", str(demo / "baseline"), "--fsae", str(demo / "fsae"),
                              "--output", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "metrics.json" in err[0]
    assert not (tmp_path / "out" / "report.md").exists()


def test_verdict_is_computed_from_the_metrics(demo: Path, tmp_path: Path) -> None:
    out = demo / "OUTPUT"
    assert write_report.main(["--baseline", str(demo / "baseline"), "--fsae", str(demo / "fsae"),
                              "--seg", str(demo / "seg"), "--output", str(out)]) == 0  # fmt: skip
    report = (out / "report.md").read_text()
    verdict = report.split("## Verdict\n\n", 1)[1].split("\n", 1)[0]
    assert "raised seed mIoU at t=0.30 by 5.0 points (40.0 -> 45.0)" in verdict
    assert "raised CRF mask mIoU by 5.0 points (45.0 -> 50.0)" in verdict
    assert "raised CAM completeness by 12.0 points (50.0 -> 62.0)" in verdict
    assert "FSAE gave better pseudo-labels than the baseline" in verdict
    # where the analysis is: a link that resolves from the report's folder, and the section's name
    link = verdict.split("](", 1)[1].split(")", 1)[0]
    target, anchor = link.split("#")
    assert (out / target).resolve() == (ROOT / "benchmarks" / "RESULTS.md").resolve()
    assert anchor == "fsae-on-the-toy-dataset"
    assert "## FSAE on the toy dataset" in (ROOT / "benchmarks" / "RESULTS.md").read_text()
    # why the second stage has no baseline network
    assert "on FSAE's masks only" in report and "double the demo's second-stage time" in report

    # swap the runs: the same figures, the other way round
    swapped = tmp_path / "swapped"
    assert write_report.main(["--baseline", str(demo / "fsae"), "--fsae", str(demo / "baseline"),
                              "--output", str(swapped)]) == 0  # fmt: skip
    verdict = (swapped / "report.md").read_text().split("## Verdict\n\n", 1)[1].split("\n", 1)[0]
    assert "lowered seed mIoU at t=0.30 by 5.0 points (45.0 -> 40.0)" in verdict
    assert "lowered CRF mask mIoU by 5.0 points (50.0 -> 45.0)" in verdict
    assert "FSAE gave worse pseudo-labels than the baseline" in verdict and "raised" not in verdict


def _legend_strip(path: Path, panel_height: int) -> np.ndarray:
    with Image.open(path) as picture:
        rgb = np.asarray(picture.convert("RGB"))
    return rgb[panel_height + 30 :]  # below the titles and panels


def test_picture_legend_shows_ignore_and_tells_close_colours_apart(tmp_path: Path) -> None:
    from fsae.infer.report import side_by_side

    height, width = 60, 80
    image = np.full((height, width, 3), 120, np.uint8)
    gt = np.zeros((height, width), np.uint8)
    gt[5:25, 5:35], gt[30:55, 40:75], gt[27:29, :] = 1, 9, 255  # aeroplane, chair, an ignore band
    path = tmp_path / "p.png"
    side_by_side(path, image, None, gt, gt, gt, class_names=VOC_CLASSES)
    strip = _legend_strip(path, height)
    assert strip.shape[0] > 10  # there is a legend

    def swatch_has_ink(colour: tuple[int, int, int], ink: str) -> bool:
        ys, xs = np.nonzero((strip == colour).all(-1))
        assert len(ys), f"no swatch of colour {colour} in the legend"
        box = strip[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(int)
        # the class id written in the swatch (anti-aliased): near-white or near-black pixels inside it
        return bool((box.min(-1) > 200).any() if ink == "white" else (box.max(-1) < 60).any())

    # the VOC colours of aeroplane and chair differ only in the red channel's second bit
    assert (128, 0, 0) != (192, 0, 0)
    assert swatch_has_ink((128, 0, 0), "white") and swatch_has_ink((192, 0, 0), "white")
    assert swatch_has_ink((224, 224, 192), "black")  # 255 = ignore, cream in the VOC palette
    # without ignore pixels, no ignore swatch
    gt[27:29, :] = 0
    side_by_side(path, image, None, gt, gt, gt, class_names=VOC_CLASSES)
    assert not (_legend_strip(path, height) == (224, 224, 192)).all(-1).any()


def test_curve_markers_take_their_curves_colour(tmp_path: Path) -> None:
    from fsae.infer.report import LINE_COLOURS, MARKER_COLOURS, plot_curve

    ts = [0.01 * i for i in range(50)]
    curves = {"baseline (PPC)": [(t, 0.3 + 0.2 * t) for t in ts], "PPC + FSAE": [(t, 0.4 - 0.1 * t) for t in ts]}
    marked = {"baseline (PPC): best t=0.49": (0.49, 0.398), "PPC + FSAE: best t=0.00": (0.0, 0.4)}
    path = tmp_path / "c.png"
    plot_curve(path, curves, marked=marked)
    with Image.open(path) as picture:
        colours = {tuple(p) for p in np.asarray(picture.convert("RGB")).reshape(-1, 3).tolist()}
    assert LINE_COLOURS[0] in colours and LINE_COLOURS[1] in colours
    assert MARKER_COLOURS[1] not in colours  # a marker of its own colour would be the second marker colour
    # one curve: every marked point in the curve's colour (told apart by shape)
    plot_curve(path, {"seed": curves["PPC + FSAE"]}, marked={"best": (0.0, 0.4), "used": (0.3, 0.37)})
    with Image.open(path) as picture:
        colours = {tuple(p) for p in np.asarray(picture.convert("RGB")).reshape(-1, 3).tolist()}
    assert LINE_COLOURS[0] in colours and MARKER_COLOURS[1] not in colours
