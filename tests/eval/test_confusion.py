"""ConfusionMatrix against a direct per-class numpy computation, and its reduction across 2 processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fsae.eval import ConfusionMatrix

K = 6  # classes 0..5; 4 is absent from both maps, 5 occurs only in the prediction, 3 only in the ground truth
IGNORE = 255


def make_maps(seed: int, shape: tuple[int, ...] = (4, 23, 31)) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(pred, gt)`` uint8 maps of ``shape``: gt in {0, 1, 2, 3, 255}, pred in {0, 1, 2, 5}.

    The prediction agrees with the ground truth on about half of the pixels so that every present class
    has a non-trivial IoU; about 10 % of the ground truth is ``IGNORE``.
    """
    rng = np.random.default_rng(seed)
    gt = rng.choice(np.array([0, 1, 2, 3], np.uint8), size=shape, p=[0.4, 0.25, 0.25, 0.1])
    pred = rng.choice(np.array([0, 1, 2, 5], np.uint8), size=shape, p=[0.4, 0.25, 0.25, 0.1])
    agree = (rng.random(shape) < 0.5) & (gt != 3)
    pred[agree] = gt[agree]
    gt[rng.random(shape) < 0.1] = IGNORE
    return pred, gt


def reference(pred: np.ndarray, gt: np.ndarray, k: int = K) -> dict:
    """Metrics by per-class masks (TP / FP / FN counted directly), independent of any confusion matrix."""
    valid = gt != IGNORE
    mat = np.zeros((k, k), np.int64)
    for i in range(k):
        for j in range(k):
            mat[i, j] = np.count_nonzero(valid & (gt == i) & (pred == j))
    iou, recall = [], []
    for c in range(k):
        tp = np.count_nonzero(valid & (pred == c) & (gt == c))
        fp = np.count_nonzero(valid & (pred == c) & (gt != c))
        fn = np.count_nonzero(valid & (pred != c) & (gt == c))
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        if np.count_nonzero(valid & (gt == c)):
            recall.append(tp / (tp + fn))
    correct = np.count_nonzero(valid & (pred == gt))
    return {
        "mat": mat,
        "iou": iou,
        "miou": float(np.nanmean(iou)),
        "pixel_acc": correct / np.count_nonzero(valid),
        "mean_acc": float(np.mean(recall)),
    }


def assert_metrics(result: dict, expected: dict) -> None:
    np.testing.assert_allclose(result["iou"], expected["iou"], rtol=1e-12, equal_nan=True)
    for key in ("miou", "pixel_acc", "mean_acc"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12), key


def test_matches_the_direct_computation_with_absent_and_pred_only_classes(device):
    pred, gt = make_maps(0)
    expected = reference(pred, gt)
    cm = ConfusionMatrix(K, device=device)
    cm.update(torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device))
    assert cm.mat.dtype == torch.int64 and cm.mat.device.type == device
    np.testing.assert_array_equal(cm.mat.cpu().numpy(), expected["mat"])
    result = cm.compute()
    assert_metrics(result, expected)
    # Class 4 (in neither map) has no IoU and is left out of the mean; class 5 (prediction only) has IoU 0
    # and counts; class 3 (ground truth only, never predicted) has IoU 0 and counts too.
    assert math.isnan(result["iou"][4])
    assert result["iou"][5] == 0.0 and result["iou"][3] == 0.0
    assert result["present"] == [True, True, True, True, False, True]
    present = [result["iou"][c] for c in (0, 1, 2, 3, 5)]
    assert result["miou"] == pytest.approx(sum(present) / 5, rel=1e-12)
    assert result["miou"] != pytest.approx(sum(present) / 6)  # absent class not counted as 0 ...
    assert result["miou"] != pytest.approx((sum(present) + 1) / 6)  # ... nor as 1
    # mean_acc averages recall over the ground-truth classes only (0..3): class 5 has no recall.
    assert 0 < result["mean_acc"] < 1 and 0 < result["pixel_acc"] < 1
    assert all(isinstance(result[key], float) for key in ("miou", "pixel_acc", "mean_acc"))


def test_numpy_and_torch_inputs_of_any_integer_dtype_agree(device):
    pred, gt = make_maps(1)
    results = []
    for p, g in [
        (pred, gt),  # numpy uint8
        (pred.astype(np.int64), gt.astype(np.int32)),
        (torch.from_numpy(pred).to(device), torch.from_numpy(gt.astype(np.int64)).to(device)),
        (torch.from_numpy(pred.astype(np.int32)), gt),  # torch and numpy mixed, CPU tensor into a `device` matrix
    ]:
        cm = ConfusionMatrix(K, device=device)
        cm.update(p, g)
        results.append(cm.mat.cpu().numpy())
    for mat in results:
        np.testing.assert_array_equal(mat, reference(pred, gt)["mat"])


def test_many_updates_equal_one_big_update_and_any_leading_dims():
    pred, gt = make_maps(2, (6, 17, 19))
    whole = ConfusionMatrix(K)
    whole.update(pred, gt)
    parts = ConfusionMatrix(K)
    parts.update(pred[:1], gt[:1])  # (1, H, W)
    parts.update(pred[1], gt[1])  # (H, W)
    parts.update(pred[2:4, None], gt[2:4, None])  # (2, 1, H, W)
    parts.update(pred[4:].reshape(-1), gt[4:].reshape(-1))  # flat
    torch.testing.assert_close(parts.mat, whole.mat, rtol=0, atol=0)
    assert int(whole.mat.sum()) == np.count_nonzero(gt != IGNORE)


def test_custom_ignore_index():
    pred, gt = make_maps(3)
    gt = np.where(gt == IGNORE, 0, gt).astype(np.int64)
    gt[:, :5] = -1
    cm = ConfusionMatrix(K, ignore_index=-1)
    cm.update(pred, gt)
    assert int(cm.mat.sum()) == np.count_nonzero(gt != -1)
    assert int(cm.mat[0].sum()) == np.count_nonzero(gt == 0)


def test_errors_leave_the_matrix_unchanged(device):
    pred, gt = make_maps(4)
    cm = ConfusionMatrix(K, device=device)
    cm.update(pred, gt)
    before = cm.mat.clone()
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(pred[:, :-1], gt)
    bad = pred.astype(np.int64)
    bad[0, 0, 0] = K  # one pixel out of range (its ground truth is not ignored)
    gt_ok = np.where(gt == IGNORE, 0, gt)
    with pytest.raises(ValueError, match=f"prediction values must be in 0..{K - 1}"):
        cm.update(bad, gt_ok)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="prediction values"):
        cm.update(bad, gt_ok)
    bad_gt = gt_ok.copy()
    bad_gt[1, 2, 3] = K  # neither a class nor the ignore index
    with pytest.raises(ValueError, match="ground-truth values"):
        cm.update(pred, bad_gt)
    torch.testing.assert_close(cm.mat, before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


def test_all_ignored_input_adds_nothing_and_empty_metrics_are_nan(device):
    cm = ConfusionMatrix(K, device=device)
    gt = np.full((2, 8, 9), IGNORE, np.uint8)
    cm.update(np.zeros_like(gt), gt)
    assert int(cm.mat.abs().sum()) == 0
    result = cm.compute()
    assert math.isnan(result["miou"]) and math.isnan(result["pixel_acc"]) and math.isnan(result["mean_acc"])
    assert all(math.isnan(v) for v in result["iou"]) and result["present"] == [False] * K


def test_reset_starts_over():
    pred, gt = make_maps(5)
    other_pred, other_gt = make_maps(6)
    cm = ConfusionMatrix(K)
    cm.update(other_pred, other_gt)
    cm.reset()
    assert int(cm.mat.abs().sum()) == 0
    cm.update(pred, gt)
    np.testing.assert_array_equal(cm.mat.numpy(), reference(pred, gt)["mat"])


class _FakeAccelerator:
    """Records the reduce call; sums the matrix as if a second process held a copy of it."""

    def __init__(self, num_processes: int) -> None:
        self.num_processes, self.device, self.calls = num_processes, torch.device("cpu"), []

    def reduce(self, tensor: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        self.calls.append(reduction)
        return tensor * self.num_processes


def test_reduce_asks_the_accelerator_for_a_sum_and_is_a_no_op_alone():
    pred, gt = make_maps(7)
    cm = ConfusionMatrix(K)
    cm.update(pred, gt)
    single = cm.mat.clone()
    alone = _FakeAccelerator(1)
    assert cm.reduce(alone) is cm and alone.calls == []
    assert cm.reduce() is cm  # torch.distributed is not initialised in the test process
    torch.testing.assert_close(cm.mat, single, rtol=0, atol=0)
    two = _FakeAccelerator(2)
    cm.reduce(two)
    assert two.calls == ["sum"]
    torch.testing.assert_close(cm.mat, 2 * single, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["accelerate", "torch"])
def test_two_processes_reduce_to_the_single_process_result(tmp_path, backend):
    pred, gt = make_maps(8, (7, 21, 26))  # an odd number of images: the ranks get different amounts of data
    np.savez(tmp_path / "data.npz", pred=pred, gt=gt)
    worker = Path(__file__).parent / "confusion_worker.py"
    # --standalone: torchrun's own rendezvous on a port it binds itself (no free port probed, closed and raced for)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*launch, str(worker), str(tmp_path / "data.npz"), str(tmp_path), str(K), backend],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    single = ConfusionMatrix(K)
    single.update(pred, gt)
    expected = single.compute()
    out = json.loads((tmp_path / "metrics.json").read_text())
    assert out["world_size"] == 2 and out["backend"] == backend
    np.testing.assert_array_equal(np.array(out["mat"]), single.mat.numpy())
    # Rank 0 alone saw only part of the data: the reduction is what made the totals match.
    assert np.array(out["local_mat"]).sum() < single.mat.sum()
    np.testing.assert_allclose(out["iou"], expected["iou"], rtol=0, atol=0, equal_nan=True)
    for key in ("miou", "pixel_acc", "mean_acc", "present"):
        assert out[key] == expected[key], key
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank1["mat"] == out["mat"]  # every process holds the total


def authors_miou(pred: np.ndarray, gt: np.ndarray, k: int = K) -> float:
    """The authors' eval.py formula: per class TP / (T + P - TP + 1e-10) over non-ignored pixels, mean over all k."""
    valid = gt < IGNORE
    iou = []
    for c in range(k):
        p, t = np.sum((pred == c) * valid), np.sum((gt == c) * valid)
        tp = np.sum((gt == c) * ((pred == gt) * valid))
        iou.append(tp / (t + p - tp + 1e-10))
    return float(np.mean(iou))


def test_the_all_classes_mean_counts_an_absent_class_as_0_and_keeps_the_present_mean():
    pred, gt = make_maps(7)
    cm = ConfusionMatrix(K)
    cm.update(pred, gt)
    result, paper = cm.compute(), cm.compute(mean="all")
    present = [result["iou"][c] for c in (0, 1, 2, 3, 5)]  # class 4 is in neither map
    assert paper["miou_all"] == result["miou_all"] == paper["miou"]
    assert paper["miou"] == pytest.approx(sum(present) / K, rel=1e-12)  # class 4 counts as 0 over all 6
    assert paper["miou"] == pytest.approx(authors_miou(pred, gt), rel=1e-9)
    assert result["miou"] == result["miou_present"] == paper["miou_present"] == pytest.approx(sum(present) / 5)
    assert paper["miou"] < result["miou"]
    assert math.isnan(paper["iou"][4])  # the per-class list is the same for both means
    # One class only (everything background in both maps): 1 over one class present, 1/K over all of them.
    single = ConfusionMatrix(K)
    single.update(np.zeros((3, 4), np.uint8), np.zeros((3, 4), np.uint8))
    assert single.compute()["miou"] == 1.0 and single.compute("all")["miou"] == pytest.approx(1 / K)
    # Nothing counted: no class is present (nan), the all-classes mean is 0 as the authors' (0 / 1e-10 per class).
    empty = ConfusionMatrix(K).compute("all")
    assert empty["miou"] == 0.0 and math.isnan(empty["miou_present"])
    with pytest.raises(ValueError, match="mean must be one of"):
        cm.compute(mean="some")
