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
