"""The pseudo-label pipeline (fsae.infer.pseudo_labels, recipes/make_pseudo_labels.py) end to end on toy data."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsae.data import DatasetError, VOCSegmentation, make_toy_dataset
from fsae.data.palette import read_label_png
from fsae.engine.config import load_config
from fsae.engine.trainer import train
from fsae.eval import ConfusionMatrix
from fsae.infer import load_cam_model, multiscale_cams
from fsae.infer.pseudo_labels import (
    DEFAULT_THRESHOLD,
    DEFAULT_THRESHOLDS,
    ThresholdCurve,
    make_pseudo_labels,
    seed_curve_counts,
)
from fsae.infer.report import heatmap_overlay, metrics_markdown, plot_curve
from fsae.ops import cams_to_labels
from fsae.ops import reference as ops_reference

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "make_pseudo_labels.py"
TOY_CONFIG = ROOT / "recipes" / "configs" / "toy_fsae.yaml"
C = 20
# One scale with flip, two pictures, CRF on: what the 1- and 2-process runs share.
COMMON = ["--split", "train", "--scales", "1", "--eval", "--pictures", "2", "--no-progress"]


def load_recipe():
    spec = importlib.util.spec_from_file_location("make_pseudo_labels_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recipe = load_recipe()


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    # 15 training ids, 6 of them in train.txt (the split evaluated here); 64 px images.
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "VOC2012", num_train=15, num_val=2, image_size=64)


@pytest.fixture(scope="module")
def run_dir(toy_root, tmp_path_factory):
    """A training run folder (config.yaml + model/teacher.safetensors) after 2 steps."""
    overrides = [f"data.root={toy_root}", "data.crop_size=64", "data.long_side=[64, 80]", "data.num_workers=0",
                 "method.options.small_size=32", "train.batch_size=2", "train.max_steps=2",
                 "train.checkpoint_every=100"]  # fmt: skip
    out = tmp_path_factory.mktemp("run")
    train(load_config(TOY_CONFIG, overrides), out, progress=False)
    return out


@pytest.fixture(scope="module")
def first_run(run_dir, tmp_path_factory):
    """One process, the data root from the run's config, CAMs saved, a 2-process CRF pool."""
    out = tmp_path_factory.mktemp("pl_one")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the torchrun processes, so the CAMs are bit-identical
    try:
        code = recipe.main(["--checkpoint", str(run_dir), "--output-dir", str(out), "--save-cams", "--workers", "2",
                            *COMMON])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def same_nan(a, b) -> bool:
    """Equal lists of floats where None (JSON) matches NaN."""
    fix = [None if (v is None or math.isnan(v)) else v for v in a]
    return fix == [None if (v is None or math.isnan(v)) else v for v in b]


# ---------------------------------------------------------------------------------------------------------------
# The threshold curve accumulator.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_curve_counts_equal_cams_to_labels_per_threshold(dtype):
    # CAMs on a 0.01 grid: exact ties with the thresholds and between classes.
    b, c, h, w = 3, 5, 17, 13
    cams = (torch.randint(0, 101, (b, c, h, w)).to(dtype) / 100).to(dtype)
    cams[0, :, :2] = 0.3  # a tie of every class with t = 0.3
    labels = (torch.rand(b, c) < 0.6).float()
    labels[2] = 0  # an image without labels: all background
    gt = torch.randint(0, c + 1, (b, h, w))
    gt[torch.rand(b, h, w) < 0.1] = 255
    thresholds = [0.3, 0.0, 0.55, 0.05, 1.0, 0.3, 0.99]  # unsorted, repeated, at the ends
    counts = seed_curve_counts(cams, gt, thresholds, labels)
    assert counts.shape == (len(thresholds), c + 1, c + 1) and counts.dtype == torch.int64
    for i, t in enumerate(thresholds):
        for oracle in (cams_to_labels, ops_reference.cams_to_labels):
            cm = ConfusionMatrix(c + 1)
            cm.update(oracle(cams, labels, bg_threshold=t), gt)
            assert torch.equal(counts[i], cm.mat), (t, oracle)
    # Unbatched input gives the first image's counts.
    single = seed_curve_counts(cams[0], gt[0], thresholds, labels[0])
    assert torch.equal(single, seed_curve_counts(cams[:1], gt[:1], thresholds, labels[:1]))


def test_threshold_curve_accumulates_and_picks_the_first_best():
    c = 4
    curve = ThresholdCurve(c + 1)
    per_t = [ConfusionMatrix(c + 1) for _ in DEFAULT_THRESHOLDS]
    for _ in range(3):
        cams = torch.rand(2, c, 9, 11)
        labels = (torch.rand(2, c) < 0.7).float()
        gt = torch.randint(0, c + 1, (2, 9, 11))
        curve.update(cams, gt, labels)
        for cm, t in zip(per_t, DEFAULT_THRESHOLDS, strict=True):
            cm.update(cams_to_labels(cams, labels, bg_threshold=t), gt)
    points = curve.curve()  # the mean over all C+1 classes by default (the authors' eval.py)
    assert [t for t, _ in points] == list(DEFAULT_THRESHOLDS)
    assert [m for _, m in points] == [cm.compute("all")["miou"] for cm in per_t]
    assert [m for _, m in curve.curve("present")] == [cm.compute("present")["miou"] for cm in per_t]
    assert all(math.isnan(m) for _, m in ThresholdCurve(c + 1, mean="present").curve())  # nothing counted yet
    best_miou = max(m for _, m in points)
    assert curve.best() == next((t, m) for t, m in points if m == best_miou)
    assert torch.equal(curve.confusion(30).mat, per_t[30].mat)
    with pytest.raises(ValueError, match="mean must be one of"):
        ThresholdCurve(c + 1, mean="classes")


def test_the_default_grid_is_the_authors_0_to_0_49():
    # eval.py --curve --max_th 50: t = i / 100.0 for i in range(50)
    assert tuple(i / 100.0 for i in range(50)) == DEFAULT_THRESHOLDS
    assert DEFAULT_THRESHOLD == 0.22 and DEFAULT_THRESHOLD in DEFAULT_THRESHOLDS  # their script's --thr


def test_an_absent_class_counts_0_in_the_curve_and_ties_go_to_background():
    # C = 3; class 3 is in neither the ground truth nor the seeds: the all-classes mean counts it as 0 over 4
    cams = torch.tensor([[[[0.5, 0.2, 0.9]], [[0.5, 0.1, 0.0]], [[0.0, 0.0, 0.0]]]])  # (1, 3, 1, 3)
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    gt = torch.tensor([[[1, 0, 1]]])
    curve = ThresholdCurve(4, thresholds=[0.2, 0.5])
    curve.update(cams, gt, labels)
    # t = 0.2: pixel 1 ties with the background (0.2): background wins, as the argmax over [t, cams] of the
    # authors; pixel 0 ties between classes 1 and 2: the first (1).  Seeds [1, 0, 1] = gt: IoU 1, 1, nan, nan.
    # t = 0.5: pixel 0 ties with the background too: seeds [0, 0, 1]; IoU bg 1/2, class 1 1/2.
    assert curve.curve("present") == [(0.2, 1.0), (0.5, 0.5)]
    assert curve.curve() == [(0.2, 0.5), (0.5, 0.25)]


# ---------------------------------------------------------------------------------------------------------------
# End to end.


def test_outputs_for_every_id(first_run, toy_root, run_dir):
    data = VOCSegmentation(toy_root, "train")
    assert len(data) == 6
    model, _ = load_cam_model(run_dir)
    for index, image_id in enumerate(data.ids):
        sample = data[index]
        size = tuple(sample["image"].shape[1:])
        allowed = {0} | {int(k) + 1 for k in torch.nonzero(sample["labels"]).flatten()}
        with np.load(first_run / "cams" / f"{image_id}.npz") as saved:
            cams16, label_ids = saved["cams"], saved["label_ids"]
        assert cams16.dtype == np.float16 and cams16.shape == (len(allowed) - 1, *size)
        assert sorted(int(k) + 1 for k in label_ids) == sorted(allowed - {0})
        for folder in ("seeds", "masks"):
            with Image.open(first_run / folder / f"{image_id}.png") as png:
                assert png.mode == "P"
            label = read_label_png(first_run / folder / f"{image_id}.png")
            assert label.shape == size
            assert set(np.unique(label).tolist()) <= allowed, (folder, image_id)
        # The saved CAMs are the network's (ImageNet-normalised input, one scale + flip) ...
        full = multiscale_cams(model, sample["image"][None], sample["labels"][None], (1.0,))[0]
        torch.testing.assert_close(torch.from_numpy(cams16.astype(np.float32)), full[label_ids], atol=2e-3, rtol=0)
        # ... and the seed is cams_to_labels of exactly those CAMs.
        cams = torch.zeros(C, *size)
        cams[label_ids] = torch.from_numpy(cams16.astype(np.float32))
        seed = cams_to_labels(cams[None], sample["labels"][None], bg_threshold=DEFAULT_THRESHOLD)[0]
        assert np.array_equal(seed.numpy(), read_label_png(first_run / "seeds" / f"{image_id}.png"))
    assert sorted(p.stem for p in (first_run / "pictures").glob("*.png")) == sorted(data.ids[:2])
    with Image.open(first_run / "threshold_curve.png") as plot:
        assert plot.size[0] > 400 and plot.size[1] > 300
    args = json.loads((first_run / "args.json").read_text())
    assert args["data_root"] == str(toy_root) and args["split"] == "train" and args["num_processes"] == 1


def test_metrics_match_a_recomputation_from_the_written_pngs(first_run, toy_root):
    metrics = metrics_of(first_run)
    data = VOCSegmentation(toy_root, "train")
    seed_cm, mask_cm = ConfusionMatrix(C + 1), ConfusionMatrix(C + 1)
    fractions = []
    for index, image_id in enumerate(data.ids):
        gt = data[index]["mask"]
        seed = torch.from_numpy(read_label_png(first_run / "seeds" / f"{image_id}.png").astype(np.int64))
        seed_cm.update(seed, gt)
        mask_cm.update(torch.from_numpy(read_label_png(first_run / "masks" / f"{image_id}.png").astype(np.int64)), gt)
        foreground = (gt >= 1) & (gt <= C)
        if foreground.any():
            fractions.append(float((foreground & (seed > 0)).sum()) / float(foreground.sum()))
    assert metrics["miou_over"] == "all"
    for key, cm in (("seed", seed_cm), ("mask", mask_cm)):
        expected = cm.compute("all")
        assert metrics[key]["miou"] == metrics[key]["miou_all"] == pytest.approx(expected["miou"], abs=1e-12)
        assert metrics[key]["miou_present"] == pytest.approx(cm.compute("present")["miou"], abs=1e-12)
        assert metrics[key]["miou_present"] > metrics[key]["miou"]  # the toy data have 5 of the 20 classes
        assert same_nan(metrics[key]["iou"], expected["iou"])
        assert metrics[key]["pixel_acc"] == pytest.approx(expected["pixel_acc"], abs=1e-12)
        assert metrics[key]["confusion"] == cm.mat.tolist()  # rows ground truth, columns prediction
    assert metrics["completeness"] == pytest.approx(float(np.mean(fractions)), abs=1e-12)
    assert metrics["completeness_images"] == len(fractions)
    assert metrics["num_images"] == 6 and metrics["split"] == "train" and metrics["scales"] == [1.0]
    assert metrics["class_names"][0] == "background" and len(metrics["class_names"]) == C + 1
    # The curve: t = 0.00..0.49; its value at the threshold used is the seed mIoU; best is its maximum.
    curve = {round(p["threshold"], 2): p["miou"] for p in metrics["curve"]}
    assert list(curve) == [round(0.01 * i, 2) for i in range(50)]
    assert metrics["threshold"] == 0.22 and curve[0.22] == metrics["seed"]["miou"]
    present = {round(p["threshold"], 2): p["miou_present"] for p in metrics["curve"]}
    assert present[0.22] == metrics["seed"]["miou_present"]
    assert all(p["miou_all"] == p["miou"] for p in metrics["curve"])
    assert metrics["best"]["miou"] == max(curve.values())
    assert curve[round(metrics["best"]["threshold"], 2)] == metrics["best"]["miou"]
    markdown = (first_run / "metrics.md").read_text()
    assert markdown == metrics_markdown(metrics)
    assert "chosen on this split" in markdown and f"| {100 * metrics['seed']['miou']:.1f} |" in markdown
    assert "| bicycle |" in markdown


def test_from_cams_reproduces_the_run(first_run, tmp_path):
    # No checkpoint: data root and split come from the saved run's args.json; no network is loaded.  The run's
    # output folder stands for its cams/ folder.
    code = recipe.main(["--from-cams", str(first_run), "--output-dir", str(tmp_path), "--eval",
                        "--pictures", "0", "--no-progress"])  # fmt: skip
    assert code == 0
    again, original = metrics_of(tmp_path), metrics_of(first_run)
    assert again.pop("from_cams") == str(first_run / "cams") and original.pop("from_cams") is None
    assert again == original  # including checkpoint / scales / flip, taken from the saved run's args.json
    for folder in ("seeds", "masks"):
        for png in sorted((first_run / folder).glob("*.png")):
            assert np.array_equal(read_label_png(png), read_label_png(tmp_path / folder / png.name)), png.name


def test_the_clean_alternatives_are_named_options(first_run, run_dir, tmp_path):
    # tensor-bilinear resizing, the present-classes mean, another threshold: recorded, and used for the metrics
    code = recipe.main(["--checkpoint", str(run_dir), "--output-dir", str(tmp_path), "--split", "train",
                        "--scales", "0.5,1", "--scale-resize", "tensor-bilinear", "--miou-over", "present",
                        "--threshold", "0.3", "--eval", "--no-crf", "--pictures", "0", "--no-progress"])  # fmt: skip
    assert code == 0
    metrics, args = metrics_of(tmp_path), json.loads((tmp_path / "args.json").read_text())
    assert args["scale_resize"] == metrics["scale_resize"] == "tensor-bilinear" and args["miou_over"] == "present"
    assert metrics["miou_over"] == "present" and metrics["threshold"] == 0.3
    assert metrics["seed"]["miou"] == metrics["seed"]["miou_present"] > metrics["seed"]["miou_all"]
    curve = {round(p["threshold"], 2): p for p in metrics["curve"]}
    assert curve[0.3]["miou"] == curve[0.3]["miou_present"] == metrics["seed"]["miou"]
    assert metrics["best"]["miou"] == max(p["miou_present"] for p in metrics["curve"])
    assert metrics_of(first_run)["scale_resize"] == "pil-bicubic"  # the default


def script_env() -> dict[str, str]:
    """The environment of a recipe run as a script: one thread (bit-identical CAMs) and this checkout's fsae
    first on the path (a script's own folder, recipes/, is its sys.path[0], not the checkout)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def test_two_processes_give_the_same_metrics_and_files(first_run, run_dir, tmp_path):
    # --standalone: torchrun picks a free rendezvous port itself (a port probed and closed here could be taken)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out = tmp_path / "two"
    args = [str(RECIPE), "--checkpoint", str(run_dir), "--output-dir", str(out), "--save-cams", *COMMON]
    result = subprocess.run([*launch, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=script_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done: 6 images") == 1, result.stdout  # the main process reports
    assert json.loads((out / "args.json").read_text())["num_processes"] == 2
    assert metrics_of(out) == metrics_of(first_run)
    for folder in ("seeds", "masks"):
        names = sorted(p.name for p in (first_run / folder).glob("*.png"))
        assert names == sorted(p.name for p in (out / folder).glob("*.png"))
        for name in names:
            assert np.array_equal(read_label_png(first_run / folder / name), read_label_png(out / folder / name))
    assert sorted(p.name for p in (out / "pictures").glob("*.png")) == sorted(
        p.name for p in (first_run / "pictures").glob("*.png")
    )


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but ``args.json`` (which records the settings): relative path -> bytes."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "args.json")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def test_loader_workers_change_no_byte_of_the_outputs(first_run, run_dir, tmp_path):
    # The images decoded in 2 data-loader processes or in this one, for the network's CAMs and for saved ones.
    trees = {}
    for workers in (0, 2):
        net, saved = tmp_path / f"net{workers}", tmp_path / f"saved{workers}"
        assert recipe.main(["--checkpoint", str(run_dir), "--output-dir", str(net), "--save-cams", "--workers", "2",
                            "--loader-workers", str(workers), *COMMON]) == 0  # fmt: skip
        assert recipe.main(["--from-cams", str(tmp_path / "net0"), "--output-dir", str(saved), "--eval",
                            "--pictures", "2", "--loader-workers", str(workers), "--no-progress"]) == 0  # fmt: skip
        for out in (net, saved):
            assert json.loads((out / "args.json").read_text())["loader_workers"] == workers
        trees[workers] = (tree_bytes(net), tree_bytes(saved))
    assert trees[0] == trees[2]
    files = trees[0][0]
    for folder, count in (("seeds", 6), ("masks", 6), ("cams", 6), ("pictures", 2)):
        assert sum(name.startswith(f"{folder}/") for name in files) == count, folder
    assert {"metrics.json", "metrics.md", "threshold_curve.png"} <= set(files)
    # the default: min(4, CPUs) loader processes for one process, at least 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert json.loads((first_run / "args.json").read_text())["loader_workers"] == max(1, min(4, cpus))


@pytest.fixture
def broken_later(toy_root, tmp_path):
    """A copy of the toy root whose 4th image of train.txt is unreadable (the three before it are fine)."""
    root = Path(shutil.copytree(toy_root, tmp_path / "VOC2012"))
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    (root / "JPEGImages" / f"{ids[3]}.jpg").write_bytes(b"not a jpeg")
    return root, ids


@pytest.mark.parametrize("loader_workers", [0, 2])
def test_an_unreadable_image_is_one_line_and_leaves_no_report_nor_partial_file(
    first_run, run_dir, broken_later, tmp_path, capsys, loader_workers
):
    root, ids = broken_later
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as first_run, so that the files written are byte-comparable with it
    try:
        code = recipe.main(["--checkpoint", str(run_dir), "--data-root", str(root), "--output-dir", str(out),
                            "--save-cams", "--workers", "2", "--loader-workers", str(loader_workers),
                            *COMMON])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith(f"error: unreadable image {root / 'JPEGImages' / ids[3]}.jpg"), err
    assert not [name for name in ("metrics.json", "metrics.md", "threshold_curve.png") if (out / name).exists()]
    # The images before the bad one are done, in order, each file whole (the same bytes as in a clean run);
    # nothing of the bad one or after it.  Their CRF masks may still have been in the pool: none or whole.
    assert sorted(p.stem for p in (out / "seeds").glob("*")) == sorted(ids[:3])
    assert sorted(p.stem for p in (out / "cams").glob("*")) == sorted(ids[:3])
    assert {p.stem for p in (out / "masks").glob("*")} <= set(ids[:3])
    for folder in ("seeds", "cams", "masks", "pictures"):
        for path in (out / folder).glob("*"):
            assert path.read_bytes() == (first_run / folder / path.name).read_bytes(), path


def test_a_loader_worker_error_is_the_same_one_line_dataset_error(run_dir, broken_later, tmp_path):
    # Raised in a loader process, an exception would come back wrapped in that process's traceback.
    root, ids = broken_later
    messages = []
    for workers in (0, 2):
        with pytest.raises(DatasetError) as caught:
            make_pseudo_labels(tmp_path / f"out{workers}", checkpoint=run_dir, data_root=root, split="train",
                               scales=(1.0,), crf=False, pictures=0, loader_workers=workers,
                               progress=False)  # fmt: skip
        messages.append(str(caught.value))
    assert messages[0] == messages[1], messages
    assert "\n" not in messages[0] and messages[0].startswith(f"unreadable image {root / 'JPEGImages' / ids[3]}.jpg")


# ---------------------------------------------------------------------------------------------------------------
# Bad input: exit code 1 and one line on stderr.


@pytest.fixture
def broken_root(toy_root, tmp_path):
    root = Path(shutil.copytree(toy_root, tmp_path / "VOC2012"))
    first = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    (root / "JPEGImages" / f"{first}.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoint", "/nonexistent/run"], "error: checkpoint not found: /nonexistent/run"),
        (["--checkpoint", "{run}", "--data-root", "/nonexistent/VOC2012"], "error: data root not found"),
        (["--checkpoint", "{run}", "--data-root", "{broken}"], "error: unreadable image"),
        (["--checkpoint", "{run}", "--scales", "1,big"], "error: --scales must be comma-separated numbers"),
        (["--checkpoint", "{run}", "--threshold", "1.5"], "error: threshold must be in [0, 1]"),
        (["--checkpoint", "{run}", "--loader-workers", "-1"], "error: loader_workers must be >= 0, got -1"),
        (["--checkpoint", "{run}", "--split", "nosuch"], "error: split must be one of"),
        (["--from-cams", "/nonexistent/cams"], "error: --from-cams folder not found"),
        ([], "error: give --checkpoint"),
    ],
)
def test_bad_input_exits_1_with_one_line(run_dir, broken_root, tmp_path, capsys, extra, message):
    extra = [a.format(run=run_dir, broken=broken_root) for a in extra]
    argv = [*extra, "--output-dir", str(tmp_path / "out"), "--no-progress", "--eval"]
    code = recipe.main(argv if "--scales" in extra else [*argv, "--scales", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert err.startswith(message), err
    assert len(err.splitlines()) == 1, err


def test_an_empty_split_or_a_file_as_output_is_one_line_before_work(run_dir, toy_root, tmp_path, capsys):
    root = Path(shutil.copytree(toy_root, tmp_path / "VOC2012"))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("")
    out = tmp_path / "out"
    assert recipe.main(["--checkpoint", str(run_dir), "--data-root", str(root), "--output-dir", str(out), "--eval",
                        "--no-progress", "--scales", "1"]) == 1  # fmt: skip
    assert capsys.readouterr().err.strip().splitlines() == [f"error: split 'train' of {root} lists no images"]
    assert not (out / "metrics.json").exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert recipe.main(["--checkpoint", str(run_dir), "--output-dir", str(a_file), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: --output-dir {a_file} is a file, not a folder"]


def test_the_script_reports_a_missing_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, str(RECIPE), "--checkpoint", str(tmp_path / "none"), "--output-dir", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=script_env(),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'none'}"


# ---------------------------------------------------------------------------------------------------------------
# Report pieces.


def test_plot_curve_draws_every_curve_in_its_colour(tmp_path):
    path = tmp_path / "curve.png"
    base = [(t, 0.3 + 0.2 * t) for t in DEFAULT_THRESHOLDS]
    fsae = [(t, 0.4 + 0.1 * t - t * t) for t in DEFAULT_THRESHOLDS]
    plot_curve(path, {"baseline": base, "FSAE": fsae}, marked={"best": (0.05, 0.4025)}, size=(700, 400))
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
        assert picture.size == (700, 400)
    colours = {tuple(p) for p in pixels.tolist()}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # the first two line colours


def test_heatmap_overlay_colours_and_blend():
    image = np.full((4, 5, 3), 100, np.uint8)
    cam = np.zeros((4, 5), np.float32)
    cam[:, 3:] = 1.0
    out = heatmap_overlay(image, cam, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert out[0, 0].tolist() == [0, 0, 128] and out[0, 4].tolist() == [128, 0, 0]  # dark blue .. dark red
    assert np.array_equal(heatmap_overlay(image, cam, alpha=0.0), image)
    with pytest.raises(ValueError, match="cam must be"):
        heatmap_overlay(image, cam[:2])


def test_metrics_markdown_marks_undefined_classes():
    metrics = {
        "split": "val", "dataset": "voc", "num_images": 2, "checkpoint": "run", "weights": "model",
        "scales": [1.0], "flip": True, "threshold": 0.3, "alpha": 8.0, "class_names": ["background", "cat", "dog"],
        "seed": {"miou": 0.5, "iou": [0.75, 0.25, None]}, "mask": {"miou": 0.6, "iou": [0.8, 0.4, None]},
        "curve": [{"threshold": 0.0, "miou": 0.4}, {"threshold": 0.3, "miou": 0.5}],
        "best": {"threshold": 0.3, "miou": 0.5}, "completeness": 0.875,
    }  # fmt: skip
    text = metrics_markdown(metrics)
    assert "| seed mIoU @ t=0.30 | 50.0 |" in text
    assert "(t=0.30, chosen on this split) | 50.0 |" in text
    assert "| mask mIoU (CRF, alpha=8) | 60.0 |" in text and "| 87.5 |" in text
    assert "| cat | 25.0 | 40.0 |" in text and "| dog | — | — |" in text


def test_no_progress_bar_off_a_terminal(run_dir, tmp_path, capsys):
    """Progress on (the default) but stderr is not a terminal (a cluster job's log): no bar, no carriage returns."""
    recipe = load_recipe()
    code = recipe.main(["--checkpoint", str(run_dir), "--output-dir", str(tmp_path), "--split", "train",
                        "--scales", "1", "--no-crf", "--pictures", "0"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out and "pseudo-labels:" not in captured.err
    assert "done: 6 images" in captured.out


@pytest.fixture(scope="module")
def sipe_run(toy_root, tmp_path_factory):
    """A SIPE run (resnet18, 2 steps): a method with its own pseudo-label CAMs (``authors_cams``)."""
    overrides = [f"data.root={toy_root}", "method.name=sipe", "method.backbone=resnet18", "method.options={}",
                 "data.crop_size=64", "data.long_side=[64, 80]", "data.num_workers=0", "data.saliency_dir=null",
                 "train.batch_size=2", "train.max_steps=2", "train.checkpoint_every=100"]  # fmt: skip
    out = tmp_path_factory.mktemp("sipe_run")
    train(load_config(TOY_CONFIG, overrides), out, progress=False)
    return out


def test_authors_cams_are_the_default_for_sipe_and_seed_by_argmax(sipe_run, toy_root, tmp_path):
    """``--cams`` defaults to ``authors`` for SIPE: seeds = argmax of ``authors_cams`` over background and present
    classes (no threshold); ``--cams fsae`` is the threshold pipeline; saved authors' CAMs replay exactly."""
    from fsae.infer.pseudo_labels import argmax_seed

    common = ["--split", "train", "--eval", "--pictures", "1", "--no-crf", "--no-progress", "--limit", "3"]
    assert recipe.main(["--checkpoint", str(sipe_run), "--output-dir", str(tmp_path / "a"), "--save-cams",
                        *common]) == 0  # fmt: skip
    metrics = metrics_of(tmp_path / "a")
    assert metrics["cams"] == "authors" and len(metrics["curve"]) == len(DEFAULT_THRESHOLDS)
    method, _ = load_cam_model(sipe_run)
    data = VOCSegmentation(toy_root, "train")
    for index in range(3):
        sample = data[index]
        maps = method.authors_cams(sample["image"][None], sample["labels"][None])[0]
        maps = maps.to(torch.float16).float()  # --save-cams: the stored precision
        present = (sample["labels"] != 0).float()[:, None, None]
        expected = argmax_seed(maps[0], maps[1:] * present, sample["labels"])
        seed = read_label_png(tmp_path / "a" / "seeds" / f"{sample['id']}.png")
        assert np.array_equal(seed, expected.numpy()), sample["id"]
        with np.load(tmp_path / "a" / "cams" / f"{sample['id']}.npz") as saved:
            assert saved["background"].shape == seed.shape
    assert "seed mIoU @ argmax" in (tmp_path / "a" / "metrics.md").read_text()
    # the saved maps (with their background) replay the run without the network
    assert recipe.main(["--from-cams", str(tmp_path / "a"), "--output-dir", str(tmp_path / "b"), *common]) == 0
    again, first = metrics_of(tmp_path / "b"), metrics_of(tmp_path / "a")
    assert again["cams"] == "authors" and again["seed"] == first["seed"]
    assert recipe.main(["--checkpoint", str(sipe_run), "--output-dir", str(tmp_path / "c"), "--cams", "fsae",
                        "--scales", "1", *common]) == 0  # fmt: skip
    fsae = metrics_of(tmp_path / "c")
    assert fsae["cams"] == "fsae" and fsae["seed"]["confusion"] != first["seed"]["confusion"]


def test_authors_cams_for_a_method_without_them_is_one_line(run_dir, tmp_path, capsys):
    code = recipe.main(["--checkpoint", str(run_dir), "--output-dir", str(tmp_path), "--cams", "authors",
                        "--scales", "1", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: --cams authors: the PPCMethod method has no authors_cams"), err
    assert metrics_of_default(run_dir, tmp_path / "d") == "fsae"


def metrics_of_default(run_dir: Path, out: Path) -> str:
    """The ``cams`` a run without ``--cams`` records (PPC: no authors_cams, so fsae)."""
    assert recipe.main(["--checkpoint", str(run_dir), "--output-dir", str(out), "--scales", "1", "--no-crf",
                        "--pictures", "0", "--limit", "1", "--no-progress"]) == 0  # fmt: skip
    return json.loads((out / "metrics.json").read_text())["cams"]
