"""A method and a dataset registered from a module outside fsae (tests/methods/external/toy_wsss.py) train with
``recipes/voc_fsae.py`` and make pseudo-labels with ``recipes/make_pseudo_labels.py``, by config keys alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsae.data import make_toy_dataset

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL = Path(__file__).parent / "external"
TOY_CONFIG = ROOT / "recipes" / "configs" / "toy_fsae.yaml"


def run(args: list[str], pythonpath: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:  # the user's module is importable: installed, or on PYTHONPATH as here
        env["PYTHONPATH"] = str(EXTERNAL)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "VOC2012", num_train=8, num_val=2, image_size=64)


EXTERNAL_SETTINGS = ["--set", "method.module=toy_wsss", "--set", "method.name=toy_cam", "--set",
                     "data.dataset=toy_voc", "--set", "method.options={width: 8}"]  # fmt: skip
SMALL = ["--set", "data.crop_size=64", "--set", "data.long_side=[64, 80]", "--set", "data.num_workers=0",
         "--set", "data.saliency_dir=null", "--set", "train.batch_size=4", "--set", "train.max_steps=6",
         "--set", "fsae.start_step=2", "--set", "train.log_every=2", "--no-progress"]  # fmt: skip


def test_trains_and_makes_pseudo_labels_without_editing_fsae(toy_root, tmp_path):
    run_dir, labels_dir = tmp_path / "run", tmp_path / "labels"
    trained = run(["recipes/voc_fsae.py", "--config", str(TOY_CONFIG), "--data-root", str(toy_root),
                   "--output-dir", str(run_dir), *EXTERNAL_SETTINGS, *SMALL])  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["method"]["module"] == "toy_wsss" and config["method"]["name"] == "toy_cam"
    assert config["data"]["dataset"] == "toy_voc"
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [2, 4, 6]
    assert "fsae" in log[-1] and "fsae" not in log[0]  # FSAE from step 2 on, through attach_background
    made = run(["recipes/make_pseudo_labels.py", "--checkpoint", str(run_dir), "--split", "train", "--eval",
                "--scales", "1.0", "--no-progress", "--output-dir", str(labels_dir)])  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    train_ids = (toy_root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert sorted(p.stem for p in (labels_dir / "seeds").glob("*.png")) == sorted(train_ids)
    metrics = json.loads((labels_dir / "metrics.json").read_text())
    assert 0 <= metrics["seed"]["miou"] <= 1


def test_an_unimportable_module_is_one_line(toy_root, tmp_path):
    result = run(["recipes/voc_fsae.py", "--config", str(TOY_CONFIG), "--data-root", str(toy_root),
                  "--output-dir", str(tmp_path / "run"), *EXTERNAL_SETTINGS, *SMALL], pythonpath=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: method.module: cannot import 'toy_wsss'"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()
