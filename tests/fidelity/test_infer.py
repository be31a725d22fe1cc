"""Pseudo-label inference and evaluation against the authors' ``contrast_infer.py`` / ``eval.py`` (``infer.npz``).

The authors' network with the deterministic weights (``fidelity_weights``, seed 0) is converted by
``fsae.models.import_checkpoint`` into a run folder and loaded with ``fsae.infer.load_cam_model``, as a user's
checkpoint would be; our inference then runs with its defaults (scales, PIL-bicubic resizing, seed threshold,
CRF settings, threshold grid, all-classes mIoU) on the two photos of ``gen_infer.py``.  Run with ``-s`` to see
the agreement figures.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from fidelity_weights import FIXTURES, authors_state_dict

from fsae.engine.import_run import import_checkpoint
from fsae.eval import ConfusionMatrix
from fsae.infer import ThresholdCurve, crf_mask, dense_crf, load_cam_model, make_pseudo_labels, multiscale_cams
from fsae.infer.pseudo_labels import DEFAULT_SCALES, DEFAULT_THRESHOLD, DEFAULT_THRESHOLDS
from fsae.ops import cams_to_labels


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "infer.npz"))


def _theirs_cams(fixture: dict[str, np.ndarray], photo: str) -> np.ndarray:
    """Their normalised CAMs ``(C, H, W)`` float64 (absent classes 0), from the uint16 quantisation."""
    cams = np.zeros((20, *fixture[f"{photo}_gt"].shape))
    cams[fixture[f"{photo}_label_ids"]] = fixture[f"{photo}_cams"] / 65535.0
    return cams


@pytest.fixture(scope="module")
def ours(fixture, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """Our CAMs, seeds and CRF masks per photo, with every default; and the threshold curve over both photos."""
    folder = tmp_path_factory.mktemp("ppc_import")
    torch.save(authors_state_dict(0), folder / "checkpoint.pth")
    run_dir = import_checkpoint("ppc", folder / "checkpoint.pth", folder / "run")
    (folder / "checkpoint.pth").unlink()
    model, _ = load_cam_model(run_dir)
    out: dict[str, dict[str, np.ndarray]] = {}
    curve = ThresholdCurve(21)
    seed_cm, mask_cm = ConfusionMatrix(21), ConfusionMatrix(21)
    for photo in [str(p) for p in fixture["ids"]]:
        image = fixture[f"{photo}_image"]
        labels = torch.from_numpy(fixture[f"{photo}_labels"])[None]
        gt = torch.from_numpy(fixture[f"{photo}_gt"].astype(np.int64))
        cams = multiscale_cams(model, torch.from_numpy(image).permute(2, 0, 1)[None], labels)
        seed = cams_to_labels(cams, labels, bg_threshold=DEFAULT_THRESHOLD)[0]
        mask = crf_mask(image, cams[0].numpy(), fixture[f"{photo}_label_ids"].tolist())
        curve.update(cams, gt[None], labels)
        seed_cm.update(seed, gt)
        mask_cm.update(mask, gt)
        out[photo] = {"cams": cams[0].double().numpy(), "seed": seed.numpy(), "mask": mask}
    out["_metrics"] = {"curve": curve, "seed": seed_cm, "mask": mask_cm}
    return out


def test_the_defaults_are_the_authors_settings(fixture):
    # scales of their contrast_infer.py; --thr, --crf_t, --crf_alpha of their script; eval.py --max_th 50
    assert tuple(fixture["scales"]) == DEFAULT_SCALES
    assert inspect.signature(multiscale_cams).parameters["scales"].default == DEFAULT_SCALES
    assert float(fixture["thr"]) == DEFAULT_THRESHOLD
    assert inspect.signature(make_pseudo_labels).parameters["threshold"].default == DEFAULT_THRESHOLD
    assert int(fixture["crf_t"]) == inspect.signature(dense_crf).parameters["iterations"].default
    assert float(fixture["crf_alpha"]) == inspect.signature(crf_mask).parameters["alpha"].default
    assert float(fixture["crf_alpha"]) == inspect.signature(make_pseudo_labels).parameters["alpha"].default
    assert list(DEFAULT_THRESHOLDS) == fixture["thresholds"].tolist()  # 0.00, 0.01, ..., 0.49, bit for bit
    assert DEFAULT_THRESHOLDS[0] == 0.0 and DEFAULT_THRESHOLDS[-1] == 0.49 and len(DEFAULT_THRESHOLDS) == 50


@pytest.mark.parametrize("photo", ["chelsea", "coffee"])
def test_cams_match(fixture, ours, photo):
    theirs, mine = _theirs_cams(fixture, photo), ours[photo]["cams"]
    diff = np.abs(theirs - mine)
    print(f"\n{photo}: CAMs max |ours - theirs| = {diff.max():.2e} (mean {diff.mean():.1e})")
    assert mine.shape == theirs.shape
    assert diff.max() <= 1e-4  # their values are stored to 7.7e-6; the networks agree to ~1e-6 relative
    assert not mine[np.setdiff1d(np.arange(20), fixture[f"{photo}_label_ids"])].any()  # absent classes 0


@pytest.mark.parametrize("photo", ["chelsea", "coffee"])
def test_seeds_and_crf_masks_match(fixture, ours, photo):
    for key in ("seed", "mask"):
        theirs, mine = fixture[f"{photo}_{key}"], ours[photo][key]
        differ = int((theirs != mine).sum())
        print(f"\n{photo}: {key} pixels that differ: {differ} of {theirs.size}")
        assert mine.shape == theirs.shape
        # A pixel could only flip where the CAMs sit within the two codes' ~1e-6 float differences of the
        # threshold (seed) or of a class tie; there are none on these photos.
        assert differ == 0, key
    assert len(np.unique(fixture[f"{photo}_seed"])) >= 2  # the photos are not trivially one class


def test_curve_and_miou_match_their_eval(fixture, ours):
    metrics = ours["_metrics"]
    points = metrics["curve"].curve()
    assert [t for t, _ in points] == fixture["thresholds"].tolist()
    mine = 100 * np.array([m for _, m in points])
    theirs = fixture["curve_miou"]
    print(f"\ncurve: max |ours - theirs| = {np.abs(mine - theirs).max():.1e} mIoU points over {len(points)} t")
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-9)
    assert np.ptp(theirs) > 1  # the curve is not flat
    # their png-mode evaluation of the seed PNGs (t = 0.22) and of the CRF masks
    assert 100 * metrics["seed"].compute("all")["miou"] == pytest.approx(float(fixture["seed_miou"]), abs=1e-9)
    assert 100 * metrics["mask"].compute("all")["miou"] == pytest.approx(float(fixture["mask_miou"]), abs=1e-9)
    # the present-classes mean is a different figure here (17 of the 21 VOC classes are absent)
    assert metrics["seed"].compute("present")["miou"] > 5 * metrics["seed"].compute("all")["miou"]
