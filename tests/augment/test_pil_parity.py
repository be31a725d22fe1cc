"""The uint8 ("authors") arithmetic against PIL and torchvision themselves: every op, the jitter, the blur, the views.

The oracle is always the library the authors ran: PIL's op (``ImageEnhance`` / ``ImageOps`` / ``convert``) or
torchvision's (``ColorJitter`` / ``adjust_*`` / ``gaussian_blur`` on a PIL image) on the ``uint8`` image; ours must
give the same bytes (the blur: the same bytes here, within a level by contract).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from augment_cases import pil_ops
from PIL import Image, ImageEnhance, ImageOps

from fsae.augment import JITTER_COMPONENTS, RANDAUGMENT_OPS, StrongPerturbation, WeakPerturbation
from fsae.augment import functional as AF
from fsae.augment import levels as LV
from fsae.augment._grouped import apply_grouped
from fsae.augment.views import TrainingViews, crop_canvas

PHOTOS = Path(__file__).resolve().parents[1] / "fidelity" / "fixtures"

# PIL's RandAugment ops as the authors call them; solarize's magnitude is our level threshold (i >= t inverts)
PIL_OPS = pil_ops(solarize_scale=1.0)
OURS = {
    "autocontrast": LV.autocontrast_,
    "brightness": LV.brightness_,
    "color": LV.color_,
    "contrast": LV.contrast_,
    "sharpness": LV.sharpness_,
    "equalize": LV.equalize_,
    "identity": LV.identity_,
    "posterize": LV.posterize_,
    "solarize": LV.solarize_,
}
TV_JITTER = {
    "brightness": TF.adjust_brightness,
    "contrast": TF.adjust_contrast,
    "saturation": TF.adjust_saturation,
    "hue": TF.adjust_hue,
}


def photo(name: str = "chelsea", box: tuple[int, int, int, int] | None = (100, 40, 260, 160)) -> np.ndarray:
    """A real photo (CC0), ``uint8 (H, W, 3)``, optionally cropped to ``box`` (left, top, right, bottom)."""
    image = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
    return np.asarray(image.crop(box) if box else image).copy()


def to_levels(arrays: list[np.ndarray] | np.ndarray, device: str = "cpu") -> torch.Tensor:
    """``uint8 (H, W, 3)`` arrays -> float32 levels ``(N, 3, H, W)``."""
    arrays = [arrays] if isinstance(arrays, np.ndarray) else arrays
    return torch.stack([torch.from_numpy(a.transpose(2, 0, 1).copy()) for a in arrays]).float().to(device)


def to_uint8(levels: torch.Tensor) -> np.ndarray:
    """One ``(3, H, W)`` levels tensor (integers) -> ``uint8 (H, W, 3)``; asserts the values are levels."""
    levels = levels.detach().cpu()
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 255
    return levels.to(torch.uint8).numpy().transpose(1, 2, 0)


def pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array)


def assert_same(ours: np.ndarray, theirs: Image.Image | np.ndarray, max_diff: int = 0) -> None:
    d = np.abs(ours.astype(np.int64) - np.asarray(theirs).astype(np.int64))
    assert d.max() <= max_diff, f"max |diff| {d.max()} levels at {(d > max_diff).mean():.2e} of the values"


def _random_images(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# The building blocks, exhaustively where that is cheap
# ---------------------------------------------------------------------------------------------------------------


def _all_colours(step: int = 1) -> np.ndarray:
    """Every RGB triple (``step`` 1: 16.7 M) as a ``uint8 (N / 4096, 4096, 3)`` image."""
    r, g, b = np.meshgrid(*[np.arange(0, 256, step)] * 3, indexing="ij")
    return np.stack([r, g, b], -1).reshape(-1, 4096, 3).astype(np.uint8)


def test_gray_levels_is_convert_L_for_every_colour() -> None:
    colours = _all_colours()
    ours = LV.gray_levels(to_levels(colours))[0, 0].to(torch.uint8).numpy()
    assert np.array_equal(ours, np.asarray(pil(colours).convert("L")))


def test_rgb_to_hsv_and_back_are_pils_for_every_colour() -> None:
    colours = _all_colours()
    for rows in np.array_split(np.arange(colours.shape[0]), 8):  # in chunks: float64 temporaries
        part = colours[rows]
        hsv = LV.rgb_to_hsv(to_levels(part))[0]
        assert np.array_equal(to_uint8(hsv), np.asarray(pil(part).convert("HSV")))
        # HSV -> RGB over every (H, S, V) triple: read the same bytes as HSV
        rgb = LV.hsv_to_rgb(to_levels(part))[0]
        assert np.array_equal(to_uint8(rgb), np.asarray(Image.merge("HSV", pil(part).split()).convert("RGB")))


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.3337, 0.7, 0.95, 1.0, 1.0000001, 1.3, 1.9])
def test_blend_is_image_blend_for_every_pair(alpha: float) -> None:
    a = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(256, 256)
    b = a.T.copy()
    ours = LV.blend_(
        torch.from_numpy(b).float()[None, None], torch.from_numpy(a).float()[None, None], torch.tensor([alpha])
    )
    theirs = Image.blend(Image.fromarray(a), Image.fromarray(b), alpha)
    assert np.array_equal(ours[0, 0].to(torch.uint8).numpy(), np.asarray(theirs))


# ---------------------------------------------------------------------------------------------------------------
# Every RandAugment op against PIL
# ---------------------------------------------------------------------------------------------------------------

MAGNITUDES = {
    "brightness": [0.05, 0.4, 0.95, 1.3],
    "color": [0.05, 0.5, 0.95, 1.3],
    "contrast": [0.05, 0.5, 0.95, 1.3],
    "sharpness": [0.05, 0.5, 0.95, 1.9],
    "posterize": [1.0, 4.0, 5.0, 7.0, 8.0],
    "solarize": [0.0, 1.0, 100.0, 128.0, 255.0, 256.0],
}


def _inputs() -> list[np.ndarray]:
    return [photo("chelsea"), photo("coffee", (300, 100, 460, 220)), *_random_images(2, 120, 160, 0)]


@pytest.mark.parametrize("name", sorted(OURS))
def test_op_is_pils(name: str, device: str) -> None:
    images = _inputs()
    for v in MAGNITUDES.get(name, [0.0]):
        batch = to_levels(images, device)
        out = OURS[name](batch, torch.full((len(images),), v, device=device))
        for i, image in enumerate(images):
            assert_same(to_uint8(out[i]), PIL_OPS[name](pil(image), v))


def test_solarize_fractional_threshold_is_ceil() -> None:
    """PIL keeps the levels i < t: a fractional threshold acts as ceil(t) on levels."""
    image = photo()
    for t in (0.4, 99.5, 200.01, 255.99):
        out = LV.solarize_(to_levels(image), torch.tensor([float(math.ceil(t))]))
        assert_same(to_uint8(out[0]), ImageOps.solarize(pil(image), t))


def test_per_sample_magnitudes_in_one_call() -> None:
    """One call, each sample its own factor: equal to PIL per sample (a broadcasting slip would mix them)."""
    images = _random_images(4, 24, 30, 1)
    factors = [0.05, 0.6, 1.0, 1.3]
    for name in ("brightness", "color", "contrast", "sharpness"):
        out = OURS[name](to_levels(images), torch.tensor(factors))
        for i, (image, f) in enumerate(zip(images, factors, strict=True)):
            assert_same(to_uint8(out[i]), PIL_OPS[name](pil(image), f))


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (2, 2), (2, 7), (3, 3), (4, 2)])
def test_tiny_images(shape: tuple[int, int]) -> None:
    images = _random_images(2, *shape, 2)
    for name in OURS:
        for v in MAGNITUDES.get(name, [0.0])[:2]:
            out = OURS[name](to_levels(images), torch.full((2,), v))
            for i, image in enumerate(images):
                assert_same(to_uint8(out[i]), PIL_OPS[name](pil(image), v))


@pytest.mark.parametrize("value", [0, 1, 128, 254, 255])
def test_constant_and_two_level_images(value: int) -> None:
    """Autocontrast keeps a constant channel, equalize a single-level plane; a two-level plane is stretched."""
    constant = np.full((9, 11, 3), value, np.uint8)
    two = constant.copy()
    two[0, 0, 1] = 255 - value if value != 128 else 0
    for image in (constant, two):
        for name in ("autocontrast", "equalize", "contrast", "color", "sharpness"):
            out = OURS[name](to_levels(image), torch.tensor([0.5]))
            assert_same(to_uint8(out[0]), PIL_OPS[name](pil(image), 0.5))


def test_equalize_small_planes_hit_255() -> None:
    """Few pixels: PIL's table can exceed 255 (clipped by ``point``)."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        image = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
        image[0, 0] = 255
        out = LV.equalize_(to_levels(image))
        assert_same(to_uint8(out[0]), ImageOps.equalize(pil(image)))


# ---------------------------------------------------------------------------------------------------------------
# Hue, the jitter on the whole image, the blur
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [-0.5, -0.1, -0.0039, 0.0, 0.002, 0.05, 0.1, 0.3, 0.5])
def test_hue_is_torchvision_pil_adjust_hue(factor: float, device: str) -> None:
    images = _inputs()
    out = LV.hue_(to_levels(images, device), torch.full((len(images),), factor, device=device))
    for i, image in enumerate(images):
        assert_same(to_uint8(out[i]), TF.adjust_hue(pil(image), factor))


def _inject_jitter(monkeypatch, draws: list) -> None:
    """Make torchvision's ColorJitter use our parameters, one draw per call."""
    monkeypatch.setattr(T.ColorJitter, "get_params", staticmethod(lambda *args: draws.pop(0)))


@pytest.mark.parametrize("arithmetic_seed", [0, 1, 2])
def test_whole_image_jitter_is_torchvision_color_jitter(monkeypatch, arithmetic_seed: int, device: str) -> None:
    """Images of different sizes on one canvas: jitter with the region (Contrast's mean over the image only),
    equal to ``T.ColorJitter(0.3, 0.3, 0.3, 0.1)`` on each PIL image with the same order and factors."""
    images = [photo("chelsea", None), photo("coffee", (0, 0, 371, 203)), *_random_images(2, 50, 77, 4)]
    side = max(max(a.shape[:2]) for a in images)
    canvas = torch.zeros(len(images), 3, side, side)
    for i, a in enumerate(images):
        canvas[i, :, : a.shape[0], : a.shape[1]] = to_levels(a)[0]
    region = torch.tensor([a.shape[:2] for a in images]).to(device)
    weak = WeakPerturbation(arithmetic="uint8", seed=arithmetic_seed)
    params = weak.generate_parameters(len(images))
    out = weak.apply_jitter_(canvas.to(device), params, region)
    draws = [
        (params["jitter_order"][i], *(float(params[name][i]) for name in JITTER_COMPONENTS)) for i in range(len(images))
    ]
    _inject_jitter(monkeypatch, draws)
    jitter = T.ColorJitter(0.3, 0.3, 0.3, 0.1)
    for i, a in enumerate(images):
        assert_same(to_uint8(out[i, :, : a.shape[0], : a.shape[1]]), jitter(pil(a)))


def test_contrast_mean_is_over_the_region_only() -> None:
    """A bright image on a black canvas: the whole-canvas mean would be darker, so the views would differ."""
    image = photo()
    canvas = torch.zeros(1, 3, 300, 300)
    canvas[0, :, : image.shape[0], : image.shape[1]] = to_levels(image)[0]
    region = torch.tensor([image.shape[:2]])
    out = LV.contrast_(canvas.clone(), torch.tensor([0.5]), region)
    assert_same(to_uint8(out[0, :, : image.shape[0], : image.shape[1]]), ImageEnhance.Contrast(pil(image)).enhance(0.5))
    unmasked = LV.contrast_(canvas.clone(), torch.tensor([0.5]))
    assert not torch.equal(
        unmasked[0, :, : image.shape[0], : image.shape[1]], out[0, :, : image.shape[0], : image.shape[1]]
    )
    # the float arithmetic's contrast takes the region too
    x = canvas / 255
    region_mean = AF.contrast_(x.clone(), torch.tensor([0.5]), region)[..., : image.shape[0], : image.shape[1]]
    cropped = AF.contrast_(x[..., : image.shape[0], : image.shape[1]].clone(), torch.tensor([0.5]))
    torch.testing.assert_close(region_mean, cropped, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["conv", "taps"])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_blur_is_torchvision_gaussian_blur_on_pil(kernel_size: int, method: str, device: str) -> None:
    images = _inputs()
    sigma = torch.tensor([0.1, 0.77, 1.5, 2.0])
    kernels = LV.blur_kernels(sigma, kernel_size)
    out = LV.gaussian_blur_(to_levels(images, device), kernels, method=method)
    for i, image in enumerate(images):
        theirs = TF.gaussian_blur(pil(image), kernel_size, [float(sigma[i])] * 2)
        assert_same(to_uint8(out[i]), theirs, max_diff=1)
        assert (np.asarray(theirs) == to_uint8(out[i])).mean() > 0.999


def test_blur_kernel_1_and_tiny_images() -> None:
    image = photo()
    assert torch.equal(LV.gaussian_blur_(to_levels(image), LV.blur_kernels(torch.tensor([1.3]), 1)), to_levels(image))
    for h, w in [(1, 1), (1, 4), (2, 2), (2, 6), (3, 3)]:
        tiny = _random_images(1, h, w, 5)[0]
        kernels = LV.blur_kernels(torch.tensor([1.7]), 5)
        out = LV.gaussian_blur_(to_levels(tiny), kernels)[0]
        # reference: numpy's reflect padding (which repeats the reflection on short axes) and the same kernel
        padded = np.pad(tiny.astype(np.float64), ((2, 2), (2, 2), (0, 0)), mode="reflect")
        k = kernels[0].double().numpy()
        ref = np.zeros((h, w, 3))
        for i in range(5):
            for j in range(5):
                ref += k[i, j] * padded[i : i + h, j : j + w]
        assert np.abs(to_uint8(out).astype(np.float64) - np.round(ref)).max() <= 1
        if min(h, w) > 2:  # torchvision's reflect pad needs the padding below the size
            assert_same(to_uint8(out), TF.gaussian_blur(pil(tiny), 5, [1.7, 1.7]), max_diff=1)


def test_blur_kernel_size_draw_distribution() -> None:
    g = torch.Generator().manual_seed(0)
    draws = np.array([LV.draw_blur_kernel_size(g) for _ in range(20000)])
    assert set(draws.tolist()) == {1, 3, 5}
    freq = {k: (draws == k).mean() for k in (1, 3, 5)}
    for k, expected in ((1, 2 / 4.95), (3, 2 / 4.95), (5, 0.95 / 4.95)):
        assert abs(freq[k] - expected) < 0.012, freq
    # and the authors' construction on their own terms: int(u * 4.95), + 1 when even
    assert StrongPerturbation.authors(seed=0).blur_kernel_size in (1, 3, 5)


# ---------------------------------------------------------------------------------------------------------------
# The strong view, per sample, against the PIL / torchvision chain
# ---------------------------------------------------------------------------------------------------------------


def pil_strong(image: np.ndarray, params: dict[str, torch.Tensor], i: int, kernel_size: int, blur: bool = True):
    """The authors' strong view of one crop, given our drawn parameters: torchvision's functional ColorJitter
    calls on PIL in the drawn order, ``TF.gaussian_blur`` on PIL, the PIL RandAugment ops."""
    img = pil(image)
    for component in params["jitter_order"][i].tolist():
        name = JITTER_COMPONENTS[component]
        img = TV_JITTER[name](img, float(params[name][i]))
    if blur and bool(params["blur"][i]) and kernel_size > 1:
        img = TF.gaussian_blur(img, kernel_size, [float(params["sigma"][i])] * 2)
    for op, v in zip(params["ops"][i].tolist(), params["magnitudes"][i].tolist(), strict=True):
        img = PIL_OPS[RANDAUGMENT_OPS[op]](img, v)
    return img


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_strong_view_is_the_pil_chain_per_sample(kernel_size: int, device: str) -> None:
    """A batch of 12 where samples draw different ops in every slot: each equals its own PIL chain."""
    images = [photo("chelsea", (x, 30, x + 64, 94)) for x in range(0, 360, 30)]
    strong = StrongPerturbation.authors(seed=kernel_size, blur_kernel_size=kernel_size)
    params = strong.generate_parameters(len(images))
    assert len({tuple(row) for row in params["ops"].tolist()}) > 6
    assert all(len(set(params["ops"][:, s].tolist())) > 1 for s in range(strong.n_ops))
    x = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy()).to(device).float() / 255
    out = strong.apply(x, params)
    assert torch.equal(out * 255, (out * 255).round())
    for i, image in enumerate(images):
        ours = (out[i].cpu() * 255).round().to(torch.uint8).numpy().transpose(1, 2, 0)
        assert_same(ours, pil_strong(image, params, i, kernel_size), max_diff=0 if kernel_size == 1 else 2)


def test_strong_draws_follow_the_authors() -> None:
    strong = StrongPerturbation.authors(seed=0)
    params = strong.generate_parameters(4000)
    assert params["blur"].all()
    ops, mags = params["ops"], params["magnitudes"]
    sol = mags[ops == RANDAUGMENT_OPS.index("solarize")]
    assert sol.min() >= 0 and sol.max() < 256 and sol.max() > 250  # U[0, 256) levels
    post = mags[ops == RANDAUGMENT_OPS.index("posterize")]
    assert set(post.tolist()) == {4.0, 5.0, 6.0, 7.0}
    factor = mags[ops == RANDAUGMENT_OPS.index("brightness")]
    assert factor.min() >= 0.05 and factor.max() <= 0.95
    # ours: 255 * U[0, 1] in the float arithmetic's units
    ours = StrongPerturbation(seed=0).generate_parameters(4000)
    assert ours["magnitudes"][ours["ops"] == RANDAUGMENT_OPS.index("solarize")].max() <= 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_and_non_contiguous_input(dtype: torch.dtype) -> None:
    """Levels / 255 survive fp16 / bf16 (8 significant bits hold 0..255 as k / 255 closely enough to round back);
    a non-contiguous (channels-last, strided) input gives the same views."""
    images = [photo("chelsea", (x, 30, x + 40, 70)) for x in range(0, 200, 50)]
    x = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy()).float() / 255
    strong = StrongPerturbation.authors(seed=3, blur_kernel_size=3)
    params = strong.generate_parameters(len(images))
    reference = strong.apply(x, params)
    low = strong.apply(x.to(dtype), params)
    assert low.dtype == dtype
    assert torch.equal((low.float() * 255).round(), (reference * 255).round())
    strided = x.contiguous(memory_format=torch.channels_last)[:, :, :, :]
    assert torch.equal(strong.apply(strided, params), reference)
    wide = torch.zeros(len(images), 3, 40, 80)
    wide[..., ::2] = x
    assert torch.equal(strong.apply(wide[..., ::2], params), reference)


# ---------------------------------------------------------------------------------------------------------------
# The canvas crop and the views entry point
# ---------------------------------------------------------------------------------------------------------------


def _numpy_crop(image: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """The authors' zero container: ``out[dy, dx] = image[y + dy, x + dx]`` inside the image, else 0."""
    out = np.zeros((size, size, 3), np.uint8)
    for dy in range(size):
        for dx in range(size):
            if 0 <= y + dy < image.shape[0] and 0 <= x + dx < image.shape[1]:
                out[dy, dx] = image[y + dy, x + dx]
    return out


def test_crop_canvas_pads_black_where_the_crop_leaves_the_image() -> None:
    images = [_random_images(1, 20, 30, 6)[0], _random_images(1, 9, 7, 7)[0], _random_images(1, 1, 1, 8)[0]]
    canvas = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    for i, a in enumerate(images):
        canvas[i, :, : a.shape[0], : a.shape[1]] = torch.from_numpy(a.transpose(2, 0, 1).copy())
    region = torch.tensor([a.shape[:2] for a in images])
    origin = torch.tensor([[3, -2], [-4, -5], [0, -6]])
    out = crop_canvas(canvas, region, origin, 12, (0, 0, 0))
    for i, a in enumerate(images):
        assert np.array_equal(out[i].numpy().transpose(1, 2, 0), _numpy_crop(a, *origin[i].tolist(), 12))


def _views_batch():
    images = [photo("chelsea", (0, 0, 60, 44)), photo("coffee", (10, 10, 70, 70))]  # 44x60 and 60x60
    canvas = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    for i, a in enumerate(images):
        canvas[i, :, : a.shape[0], : a.shape[1]] = torch.from_numpy(a.transpose(2, 0, 1).copy())
    geometry = {
        "resized_h": torch.tensor([44, 60]),
        "resized_w": torch.tensor([60, 60]),
        "crop_y": torch.tensor([-10, 4]),
        "crop_x": torch.tensor([5, -3]),
    }
    return images, canvas, geometry


def test_views_weak_is_whole_image_jitter_then_black_crop(monkeypatch) -> None:
    images, canvas, geometry = _views_batch()
    views = TrainingViews(WeakPerturbation(arithmetic="uint8"), StrongPerturbation.authors(blur_kernel_size=3))
    generators = {"weak": torch.Generator().manual_seed(0), "strong": torch.Generator().manual_seed(1)}
    weak, strong = views(canvas, geometry, 56, generators, strong=True)
    assert weak.shape == strong.shape == (2, 3, 56, 56) and weak.dtype == torch.float32
    p = views.weak.last_params
    draws = [(p["jitter_order"][i], *(float(p[n][i]) for n in JITTER_COMPONENTS)) for i in range(2)]
    _inject_jitter(monkeypatch, draws)
    jitter = T.ColorJitter(0.3, 0.3, 0.3, 0.1)
    for i, a in enumerate(images):
        theirs = _numpy_crop(np.asarray(jitter(pil(a))), int(geometry["crop_y"][i]), int(geometry["crop_x"][i]), 56)
        assert_same((weak[i] * 255).round().to(torch.uint8).numpy().transpose(1, 2, 0), theirs)
    assert (weak[0, :, :10] == 0).all()  # rows above the image: black


def test_views_strong_is_jitter_crop_blur_randaugment(monkeypatch) -> None:
    images, canvas, geometry = _views_batch()
    strong_module = StrongPerturbation.authors(blur_kernel_size=5)
    views = TrainingViews(WeakPerturbation(arithmetic="uint8"), strong_module)
    _, strong = views(canvas, geometry, 56, {"weak": None, "strong": torch.Generator().manual_seed(5)})
    p = strong_module.last_params
    draws = [(p["jitter_order"][i], *(float(p[n][i]) for n in JITTER_COMPONENTS)) for i in range(2)]
    _inject_jitter(monkeypatch, draws)
    jitter = T.ColorJitter(0.3, 0.3, 0.3, 0.1)
    for i, a in enumerate(images):
        crop = _numpy_crop(np.asarray(jitter(pil(a))), int(geometry["crop_y"][i]), int(geometry["crop_x"][i]), 56)
        # then, on the black-padded crop, torchvision's blur and the PIL RandAugment ops
        img = TF.gaussian_blur(pil(crop), 5, [float(p["sigma"][i])] * 2)
        for op, v in zip(p["ops"][i].tolist(), p["magnitudes"][i].tolist(), strict=True):
            img = PIL_OPS[RANDAUGMENT_OPS[op]](img, v)
        assert_same((strong[i] * 255).round().to(torch.uint8).numpy().transpose(1, 2, 0), img, max_diff=2)


def test_views_crop_geometry_and_errors() -> None:
    views = TrainingViews(WeakPerturbation(arithmetic="uint8"), StrongPerturbation.authors(), geometry="crop")
    crops = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8)
    weak, strong = views(crops, {}, 24, {"weak": torch.Generator().manual_seed(0), "strong": None})
    expected = views.weak.apply(crops.float() / 255, views.weak.last_params)
    assert torch.equal(weak, expected) and strong.shape == crops.shape
    with pytest.raises(TypeError):
        views(crops.float(), {}, 24, {})
    with pytest.raises(ValueError):
        views(crops, {}, 20, {})
    with pytest.raises(ValueError):
        TrainingViews(views.weak, views.strong, geometry="canvas")


def test_grouped_aux_rows_follow_their_samples() -> None:
    """Each op gets the aux rows of exactly the samples it runs on, under every grouping policy."""
    seen = {}

    def record(images, magnitude, aux):
        for row, value in zip(images[:, 0, 0, 0].tolist(), aux[:, 0].tolist(), strict=True):
            seen[int(row)] = int(value)
        return images

    images = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    aux = torch.arange(100, 106).view(6, 1)
    choices = torch.tensor([[1], [0], [1], [1], [0], [1]])
    for call_cost in (0.0, math.inf):
        seen.clear()
        apply_grouped(images.clone(), choices, torch.zeros(6, 1), (None, record), call_cost, aux=aux)
        assert seen == {0: 100, 2: 102, 3: 103, 5: 105}
