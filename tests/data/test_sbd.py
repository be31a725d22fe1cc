"""SBD .mat -> SegmentationClassAug conversion on a hand-made SBD tree."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from data_trees import make_voc_tree

from fsae.data import DatasetError, VOCSegmentation, convert_sbd
from fsae.data.palette import read_label_png

scipy_io = pytest.importorskip("scipy.io")


def write_sbd(root, entries):
    (root / "cls").mkdir(parents=True)
    for sample_id, segmentation in entries.items():
        struct = {"Segmentation": segmentation, "Boundaries": np.zeros(1), "CategoriesPresent": np.unique(segmentation)}
        scipy_io.savemat(root / "cls" / f"{sample_id}.mat", {"GTcls": struct})


def test_conversion_writes_palette_pngs_and_prefers_voc_masks(tmp_path):
    voc = make_voc_tree(tmp_path / "VOC2012")
    for png in (voc / "SegmentationClassAug").glob("*.png"):
        png.unlink()
    sbd_only = np.zeros((21, 30), dtype=np.uint8)
    sbd_only[5:10, 5:10] = 12
    overlap = np.full((22, 22), 3, dtype=np.uint8)  # VOC has its own mask for this id
    write_sbd(tmp_path / "sbd" / "dataset", {"2009_000001": sbd_only, "2007_000001": overlap})

    count = convert_sbd(tmp_path / "sbd", voc)
    assert count == 1 + 4  # one SBD-only id + VOC's four train/val masks (one of them also in SBD)
    assert np.array_equal(read_label_png(voc / "SegmentationClassAug" / "2009_000001.png"), sbd_only)
    voc_mask = read_label_png(voc / "SegmentationClass" / "2007_000001.png")
    assert np.array_equal(read_label_png(voc / "SegmentationClassAug" / "2007_000001.png"), voc_mask)
    train_aug = VOCSegmentation(voc, "train_aug")
    assert sorted(train_aug.ids) == ["2007_000001", "2007_000002", "2009_000001"]
    assert train_aug.labels["2009_000001"] == [12]


def test_command_line(tmp_path):
    voc = make_voc_tree(tmp_path / "VOC2012")
    write_sbd(tmp_path / "sbd", {"2011_000001": np.ones((4, 4), dtype=np.uint8)})
    result = subprocess.run(
        [sys.executable, "-m", "fsae.data.sbd", str(tmp_path / "sbd"), str(voc)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (voc / "SegmentationClassAug" / "2011_000001.png").exists()
    bad = subprocess.run([sys.executable, "-m", "fsae.data.sbd", str(tmp_path / "nope"), str(voc)], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.startswith("error: no SBD cls/ folder")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_bad_mat_file(tmp_path):
    voc = make_voc_tree(tmp_path / "VOC2012")
    (tmp_path / "sbd" / "cls").mkdir(parents=True)
    scipy_io.savemat(tmp_path / "sbd" / "cls" / "x.mat", {"other": np.zeros(3)})
    with pytest.raises(DatasetError, match="not an SBD class file"):
        convert_sbd(tmp_path / "sbd", voc)
