"""Dense CRF (pydensecrf) post-processing: dense_crf, crf_mask, the process pool of crf_masks (ordered_pool_map)."""

from __future__ import annotations

import inspect
import os
import time

import numpy as np
import pytest

from fsae.infer import crf_mask, crf_masks, dense_crf
from fsae.infer.crf import ordered_pool_map

H, W = 48, 64


def rectangles_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A ``(H, W, 3)`` uint8 image of two flat rectangles on a flat background (mild pixel noise), and its
    ``(H, W)`` int64 ground truth (0 background, 1 red rectangle, 2 blue rectangle)."""
    gt = np.zeros((H, W), np.int64)
    gt[6:30, 5:28] = 1
    gt[20:44, 36:60] = 2
    colours = np.array([[90, 160, 90], [220, 40, 40], [40, 40, 220]], np.float64)
    image = colours[gt] + rng.normal(0, 3, (H, W, 3))
    return np.clip(image, 0, 255).astype(np.uint8), gt


def noisy_probs(gt: np.ndarray, rng: np.random.Generator, k: int = 3) -> np.ndarray:
    """``(K, H, W)`` float32 class probabilities: a softmax of a weak one-hot signal under strong noise."""
    logits = 0.8 * np.eye(k)[gt].transpose(2, 0, 1) + rng.normal(0, 1.0, (k, *gt.shape))
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def test_defaults_are_the_method_parameters():
    crf = inspect.signature(dense_crf).parameters
    assert crf["iterations"].default == 5
    assert tuple(crf["gaussian"].default) == (3, 3)  # sxy 3, compat 3
    assert tuple(crf["bilateral"].default) == (80, 13, 10)  # sxy 80, srgb 13, compat 10
    assert inspect.signature(crf_mask).parameters["alpha"].default == 8
    assert inspect.signature(crf_masks).parameters["alpha"].default == 8


def test_dense_crf_cleans_a_noisy_labelling_along_the_image_edges():
    rng = np.random.default_rng(0)
    image, gt = rectangles_scene(rng)
    probs = noisy_probs(gt, rng)
    before = np.mean(probs.argmax(0) == gt)
    marginals = dense_crf(image, probs)
    after = np.mean(marginals.argmax(0) == gt)
    assert 0.45 < before < 0.7, before  # the unary alone is a poor labelling ...
    assert after > 0.97, after  # ... which the pairwise terms repair
    assert after - before > 0.3
    assert marginals.shape == (3, H, W) and marginals.dtype == np.float32
    np.testing.assert_allclose(marginals.sum(0), 1.0, atol=1e-5)
    assert marginals.min() >= 0


def test_more_iterations_follow_the_image_and_zero_iterations_is_the_normalised_unary():
    rng = np.random.default_rng(1)
    image, gt = rectangles_scene(rng)
    probs = noisy_probs(gt, rng)
    probs[0, :3, :3] = 0.0  # clipped at 1e-5 before the log
    q0 = dense_crf(image, probs, iterations=0)
    clipped = np.clip(probs, 1e-5, 1.0)
    np.testing.assert_allclose(q0, clipped / clipped.sum(0), atol=1e-6)
    # Without the appearance kernel (compat 0) smoothing blurs across edges: worse than with it.
    appearance = np.mean(dense_crf(image, probs, iterations=5).argmax(0) == gt)
    smooth_only = np.mean(dense_crf(image, probs, iterations=5, bilateral=(80, 13, 0)).argmax(0) == gt)
    assert appearance > smooth_only + 0.05


def test_read_only_and_strided_images_are_accepted():
    # np.asarray(PIL image) is read-only; pydensecrf needs a writable buffer (the CRF must copy it).
    rng = np.random.default_rng(8)
    image, gt = rectangles_scene(rng)
    probs = noisy_probs(gt, rng)
    expected = dense_crf(image, probs)
    read_only = image.copy()
    read_only.setflags(write=False)
    np.testing.assert_array_equal(dense_crf(read_only, probs), expected)
    assert not read_only.flags.writeable  # the caller's array is left alone
    mirrored = image[:, ::-1]  # a negative-stride view
    np.testing.assert_array_equal(dense_crf(mirrored, probs[:, :, ::-1]), dense_crf(mirrored.copy(), probs[:, :, ::-1]))


def test_dense_crf_input_errors():
    rng = np.random.default_rng(2)
    image, gt = rectangles_scene(rng)
    probs = noisy_probs(gt, rng)
    with pytest.raises(ValueError, match=f"image is {H}x{W} but the probabilities are {H}x{W + 1}.*resize"):
        dense_crf(image, np.pad(probs, ((0, 0), (0, 0), (0, 1))))
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image[..., 0], probs)  # (H, W)
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(np.concatenate([image, image[..., :1]], -1), probs)  # RGBA
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        dense_crf(image, probs[0])
    with pytest.raises(ValueError, match="iterations"):
        dense_crf(image, probs, iterations=-1)


def scene_cams(gt: np.ndarray, rng: np.random.Generator, channels: dict[int, int], num_classes: int = 20) -> np.ndarray:
    """``(num_classes, H, W)`` float32 CAMs: channel ``channels[region]`` is a blurry noisy blob on ``region``."""
    cams = np.zeros((num_classes, *gt.shape), np.float32)
    for region, channel in channels.items():
        cams[channel] = np.clip(0.75 * (gt == region) + rng.normal(0.1, 0.2, gt.shape), 0, 1)
    return cams


def test_crf_mask_keeps_background_and_present_classes_and_maps_ids_back():
    rng = np.random.default_rng(3)
    image, gt = rectangles_scene(rng)
    cams = scene_cams(gt, rng, {1: 4, 2: 17})
    cams[0] = 1.0  # a strong map of an absent class: must never appear
    cams[9] = rng.random((H, W))
    mask = crf_mask(image, cams, [4, 17])
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 5, 18}
    expected = np.array([0, 5, 18])[gt]
    assert np.mean(mask == expected) > 0.97
    np.testing.assert_array_equal(crf_mask(image, cams, [17, 4]), mask)  # order of the ids does not matter
    np.testing.assert_array_equal(crf_mask(image, cams, np.array([4, 17])), mask)


def test_crf_mask_infers_present_classes_from_nonzero_maps():
    rng = np.random.default_rng(4)
    image, gt = rectangles_scene(rng)
    cams = scene_cams(gt, rng, {1: 2, 2: 11})
    np.testing.assert_array_equal(crf_mask(image, cams), crf_mask(image, cams, [2, 11]))
    assert set(np.unique(crf_mask(image, cams)).tolist()) == {0, 3, 12}


def test_crf_mask_background_score_is_one_minus_max_cam_to_the_alpha():
    # With 0 iterations the CRF returns the normalised unary: the mask is the argmax of the raw scores.
    rng = np.random.default_rng(5)
    image, _ = rectangles_scene(rng)
    cams = np.zeros((20, H, W), np.float32)
    cams[[1, 6]] = rng.random((2, H, W)) ** 2
    for alpha in (8.0, 2.0):
        scores = np.concatenate([(1 - cams[[1, 6]].max(0))[None] ** alpha, cams[[1, 6]]])
        expected = np.array([0, 2, 7])[np.clip(scores, 1e-5, 1).argmax(0)]
        np.testing.assert_array_equal(crf_mask(image, cams, [1, 6], alpha=alpha, iterations=0), expected)
    # alpha matters: a lower alpha gives the background more pixels
    assert np.count_nonzero(crf_mask(image, cams, [1, 6], alpha=2.0, iterations=0) == 0) > np.count_nonzero(
        crf_mask(image, cams, [1, 6], alpha=8.0, iterations=0) == 0
    )


def test_crf_mask_without_present_classes_is_all_background():
    rng = np.random.default_rng(6)
    image, gt = rectangles_scene(rng)
    cams = scene_cams(gt, rng, {1: 0, 2: 19})
    mask = crf_mask(image, cams, [])
    assert mask.shape == (H, W) and mask.dtype == np.uint8 and not mask.any()
    assert not crf_mask(image, np.zeros((20, H, W), np.float32)).any()  # no map above zero: nothing present


def test_crf_mask_errors():
    rng = np.random.default_rng(7)
    image, gt = rectangles_scene(rng)
    cams = scene_cams(gt, rng, {1: 0})
    with pytest.raises(ValueError, match=r"label ids must be in 0\.\.19"):
        crf_mask(image, cams, [20])
    with pytest.raises(ValueError, match="label ids"):
        crf_mask(image, cams, [-1])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        crf_mask(image, cams[0])
    with pytest.raises(ValueError, match="resize"):
        crf_mask(image, cams[:, :-2])


def make_items(n: int) -> list[tuple[np.ndarray, np.ndarray, list[int] | None]]:
    """``n`` varied small ``(image, cams, label_ids)`` items (some with ``label_ids=None``)."""
    items = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        image, gt = rectangles_scene(rng)
        ids = sorted(rng.choice(20, size=2, replace=False).tolist())
        cams = scene_cams(gt, rng, {1: ids[0], 2: ids[1]})
        items.append((image, cams, None if i % 3 == 0 else ids))
    return items


def test_crf_masks_in_two_processes_match_one_in_order_and_consume_lazily():
    items = make_items(14)
    serial = list(crf_masks(iter(items), workers=1))
    assert len(serial) == len(items)
    expected = [crf_mask(*item) for item in items[:2]]
    np.testing.assert_array_equal(serial[0], expected[0])
    np.testing.assert_array_equal(serial[1], expected[1])

    consumed = []

    def generate():
        for i, item in enumerate(items):
            consumed.append(i)
            yield item

    results = crf_masks(generate(), workers=2)
    first = next(results)
    assert len(consumed) <= 4 * 2 < len(items)  # a bounded window, not the whole input up front
    parallel = [first, *results]
    assert len(parallel) == len(items)
    for i, (a, b) in enumerate(zip(serial, parallel, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"item {i}")
    assert len({m.tobytes() for m in serial}) > 5  # the items really differ, so the order is checked


def test_crf_masks_pass_options_and_handle_an_empty_input():
    items = make_items(3)
    assert list(crf_masks(iter([]), workers=2)) == []
    one = list(crf_masks(iter(items), workers=2, alpha=2.0, iterations=0))
    for (image, cams, ids), mask in zip(items, one, strict=True):
        np.testing.assert_array_equal(mask, crf_mask(image, cams, ids, alpha=2.0, iterations=0))


def test_crf_masks_raise_the_error_of_a_bad_item():
    image, cams, _ = make_items(1)[0]
    for workers in (1, 2):
        with pytest.raises(ValueError, match=r"label ids must be in 0\.\.19"):
            list(crf_masks(iter([(image, cams, [3, 20])]), workers=workers))
        with pytest.raises(ValueError, match=r"\(C, H, W\)"):
            list(crf_masks(iter([(image, cams[0], None)]), workers=workers))


def test_crf_masks_accept_float64_cams_and_label_arrays():
    items = make_items(4)
    expected = [crf_mask(*item) for item in items]
    converted = [(image, cams.astype(np.float64), None if ids is None else np.array(ids)) for image, cams, ids in items]
    for mask, want in zip(crf_masks(iter(converted), workers=2), expected, strict=True):
        np.testing.assert_array_equal(mask, want)


def _slow_square(value: int) -> tuple[int, int, str | None]:
    """``value ** 2``, this process's id and its OMP_NUM_THREADS; the even values later than the odd ones (so
    that completion order differs from input order); 13 raises."""
    if value == 13:
        raise ValueError("thirteen")
    time.sleep(0.02 if value % 2 == 0 else 0.0)
    return value * value, os.getpid(), os.environ.get("OMP_NUM_THREADS")


def test_ordered_pool_map_keeps_the_order_keeps_extras_here_and_reads_lazily(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # what the workers inherit, and must not keep
    consumed = []

    def items():
        for value in range(12):
            consumed.append(value)
            # the extra is a lambda: it would not pickle, so it must stay in this process
            yield (value,), (lambda v=value: v)

    results = ordered_pool_map(_slow_square, items(), workers=2, in_flight=2)
    first = next(results)
    assert len(consumed) <= 2 * 2 < 12  # a bounded window of submitted items
    rest = [first, *results]
    assert [extra() for _, extra in rest] == list(range(12))
    assert [square for (square, _, _), _ in rest] == [v * v for v in range(12)]
    pids = {pid for (_, pid, _), _ in rest}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {threads for (_, _, threads), _ in rest} == {"1"}  # the CRF workers are single-threaded
    here = list(ordered_pool_map(_slow_square, [((3,), "x")], workers=1))
    assert here == [((9, os.getpid(), "7"), "x")]  # workers <= 1: in this process, its settings untouched


def test_ordered_pool_map_raises_a_task_error_at_its_turn():
    for workers in (1, 2):
        seen = []
        with pytest.raises(ValueError, match="thirteen"):
            for (square, _, _), extra in ordered_pool_map(_slow_square, (((v,), v) for v in range(10, 16)), workers):
                seen.append((extra, square))
        assert seen == [(10, 100), (11, 121), (12, 144)]  # everything before the failing item, nothing after
