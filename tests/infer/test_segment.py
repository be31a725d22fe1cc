"""Segmentation inference: multi-scale + flip against a hand computation, dataset scoring, CRF, PNGs, metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fsae.data.palette import VOC_CLASSES, voc_palette
from fsae.infer.segment import multiscale_segment, prediction_dir, segment_dataset, write_metrics


class ColumnRamp(nn.Module):
    """Logits (N, 2, h, w) that ignore the pixel values: background 0, foreground ``a * column index``."""

    def __init__(self, a: float = 1.0) -> None:
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ramp = self.a * torch.arange(w, dtype=torch.float32).expand(n, 1, h, w)
        return torch.cat([torch.zeros_like(ramp), ramp], dim=1)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_multiscale_flip_equals_hand_computation():
    image = torch.randn(1, 3, 2, 4)
    model = ColumnRamp(1.0).train()
    probs = multiscale_segment(model, image, scales=(1.0, 0.5), flip=True)
    assert probs.shape == (1, 2, 2, 4) and model.training, "mode restored"
    # scale 1: foreground p = sigmoid(j); the flipped pass, un-flipped, gives sigmoid(3 - j).
    full = [sigmoid(j) for j in range(4)]
    full_flip = full[::-1]
    # scale 0.5: a 1 x 2 map [sigmoid(0), sigmoid(1)] upsampled to 4 columns (bilinear, align_corners=False):
    # source x = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1].
    v0, v1 = sigmoid(0), sigmoid(1)
    half = [v0, 0.75 * v0 + 0.25 * v1, 0.25 * v0 + 0.75 * v1, v1]
    half_flip = half[::-1]
    expected = [(a + b + c + d) / 4 for a, b, c, d in zip(full, full_flip, half, half_flip, strict=True)]
    for row in range(2):
        torch.testing.assert_close(probs[0, 1, row], torch.tensor(expected), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 2, 4))


def test_single_scale_without_flip_is_the_softmax():
    model = nn.Conv2d(3, 5, 1)
    image = torch.randn(2, 3, 6, 7)
    with torch.no_grad():
        expected = model(image).softmax(1)
    torch.testing.assert_close(multiscale_segment(model, image, scales=(1.0,), flip=False), expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        multiscale_segment(ColumnRamp(), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="scales"):
        multiscale_segment(ColumnRamp(), torch.zeros(1, 3, 4, 4), scales=())


class RedIsForeground(nn.Module):
    """Per pixel: class 1 where the (normalised) red channel is high, class 0 elsewhere; other classes never."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, :1] * 10
        others = torch.full_like(red, -100.0).expand(-1, 19, -1, -1)
        return torch.cat([-red, red, others], dim=1)


class HalfRed(torch.utils.data.Dataset):
    """Images whose left ``cut`` columns are red (class 1) and the rest black (class 0); masks say so."""

    num_classes = 20
    class_names = VOC_CLASSES

    def __init__(self, n: int = 3, with_masks: bool = True) -> None:
        self.items = []
        for i in range(n):
            h, w, cut = 12 + i, 16 + 2 * i, 5 + i
            image = torch.zeros(3, h, w, dtype=torch.uint8)
            image[0, :, :cut] = 255
            mask = torch.zeros(h, w, dtype=torch.int64)
            mask[:, :cut] = 1
            mask[0, 0] = 255  # ignored
            item = {"image": image, "id": f"img_{i}"}
            if with_masks:
                item["mask"] = mask
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


@pytest.mark.parametrize("crf", [None, {"iterations": 5}])
def test_segment_dataset_scores_and_writes_palette_pngs(tmp_path, crf):
    dataset = HalfRed(3)
    out = prediction_dir(tmp_path, "test")
    metrics = segment_dataset(RedIsForeground(), dataset, scales=(1.0,), flip=True, crf=crf, predictions=out,
                              progress=False)  # fmt: skip
    assert metrics["num_images"] == 3 and metrics["num_pixels"] == sum(i["mask"].numel() - 1 for i in dataset.items)
    assert metrics["miou"] == pytest.approx(1.0) and metrics["pixel_acc"] == pytest.approx(1.0)
    assert metrics["present"][:2] == [True, True] and not any(metrics["present"][2:])
    for item in dataset.items:
        with Image.open(out / f"{item['id']}.png") as png:
            assert png.mode == "P" and png.size == (item["image"].shape[2], item["image"].shape[1])
            assert png.getpalette()[:768] == voc_palette()
            labels = np.array(png)
        expected = item["mask"].numpy().copy()
        expected[0, 0] = 1  # the ignored pixel is red, so predicted 1
        np.testing.assert_array_equal(labels, expected)


def test_crf_pool_gives_the_same_labels_as_one_process(tmp_path):
    dataset = HalfRed(4)
    # a soft, noisy model so that the CRF has something to do
    torch.manual_seed(0)
    noisy = nn.Conv2d(3, 21, 1)
    for workers, folder in ((1, "one"), (2, "pool")):
        segment_dataset(noisy, dataset, scales=(1.0,), flip=False, crf={"iterations": 3}, crf_workers=workers,
                        evaluate=False, predictions=tmp_path / folder, progress=False)  # fmt: skip
    for item in dataset.items:
        a = np.array(Image.open(tmp_path / "one" / f"{item['id']}.png"))
        b = np.array(Image.open(tmp_path / "pool" / f"{item['id']}.png"))
        np.testing.assert_array_equal(a, b)


class FakeAccelerator:
    """Rank ``index`` of ``processes``: enough of Accelerate for sharding (no reduce across processes)."""

    def __init__(self, index: int, processes: int) -> None:
        self.process_index, self.num_processes, self.device = index, processes, torch.device("cpu")

    def autocast(self):
        return torch.autocast("cpu", enabled=False)


def test_ids_are_sharded_by_rank(tmp_path):
    dataset = HalfRed(5, with_masks=False)
    for rank in (0, 1):
        accelerator = FakeAccelerator(rank, 2)
        segment_dataset(RedIsForeground(), dataset, scales=(1.0,), flip=False, evaluate=False,
                        accelerator=accelerator, predictions=tmp_path / f"rank{rank}", progress=False)  # fmt: skip
    assert sorted(p.stem for p in (tmp_path / "rank0").iterdir()) == ["img_0", "img_2", "img_4"]
    assert sorted(p.stem for p in (tmp_path / "rank1").iterdir()) == ["img_1", "img_3"]


def test_evaluating_without_masks_is_an_error():
    with pytest.raises(ValueError, match="no mask for img_0"):
        segment_dataset(RedIsForeground(), HalfRed(1, with_masks=False), scales=(1.0,), progress=False)


def test_server_layout_path(tmp_path):
    assert prediction_dir(tmp_path, "test") == tmp_path / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"


def test_write_metrics_json_and_markdown(tmp_path):
    iou = [0.9, 0.5] + [float("nan")] * 19
    metrics = {"miou": 0.7, "iou": iou, "pixel_acc": 0.95, "mean_acc": 0.8, "num_images": 3, "num_pixels": 99}
    payload = write_metrics(metrics, VOC_CLASSES, tmp_path / "eval", {"split": "val", "crf": False})
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved == payload
    assert saved["split"] == "val" and saved["miou"] == 0.7 and saved["num_images"] == 3
    assert list(saved["iou"]) == list(VOC_CLASSES)
    assert saved["iou"]["aeroplane"] == 0.5 and saved["iou"]["tvmonitor"] is None
    table = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| mIoU | 70.00 |" in table and "| aeroplane | 50.00 |" in table and "| tvmonitor | n/a |" in table


def test_no_progress_bar_off_a_terminal(capsys):
    """progress=True with stderr not a terminal (a cluster job's log): no bar, no carriage returns."""
    segment_dataset(RedIsForeground(), HalfRed(2), scales=(1.0,), progress=True)
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out and "segment" not in captured.err
