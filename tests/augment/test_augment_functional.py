"""fsae.augment.functional: each batched op against PIL (the original's semantics) and kornia / torchvision.

Tolerances are in 8-bit levels.  PIL works on uint8 and truncates in ``Image.blend`` and
``autocontrast``'s table, so a continuous op is 0..1 level above PIL; ops that also round an
intermediate image or mean (Color: the L image, Contrast: the mean, Sharpness: the smoothed image)
are within 1.5 levels.  Table ops (equalize, posterize, solarize) are exact on 8-bit input.
"""

from __future__ import annotations

import math

import kornia
import pytest
import torch
import torchvision.transforms.functional as TF
from augment_cases import LOCAL, OPS, POINTWISE, magnitudes, pil_map, random_uint8, step_image

from fsae.augment import functional as AF

BATCH, HEIGHT, WIDTH = 5, 36, 44

# name -> (lowest, highest) allowed value of (ours * 255 - PIL) in levels
PIL_BOUNDS = {
    "autocontrast": (-1e-3, 1.0 + 1e-3),
    "brightness": (-1e-3, 1.0 + 1e-3),
    "color": (-0.5 - 1e-3, 1.5 + 1e-3),
    "contrast": (-0.5 - 1e-3, 1.5 + 1e-3),
    "sharpness": (-0.5 - 1e-3, 1.5 + 1e-3),
    "equalize": (0.0, 0.0),
    "identity": (0.0, 0.0),
    "posterize": (0.0, 0.0),
    "solarize": (0.0, 0.0),
}


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, the same as float in [0, 1]) on the CPU."""
    images = random_uint8(BATCH, HEIGHT, WIDTH, torch.Generator().manual_seed(1))
    return images, images.float() / 255.0


def _run(name: str, x: torch.Tensor, mags: torch.Tensor, device: str) -> torch.Tensor:
    work = x.to(device).clone()
    out = OPS[name](work, mags.to(device))
    assert out.data_ptr() == work.data_ptr(), "ops work in place and return their input"
    return out.cpu()


@pytest.mark.parametrize("name", sorted(PIL_BOUNDS))
def test_matches_pil(name: str, batch, device: str) -> None:
    images, x = batch
    mags = magnitudes(name, BATCH, torch.Generator().manual_seed(2))
    if name == "solarize":  # keep thresholds off the 8-bit levels (k / 255 vs 255 f: no ties)
        mags = (torch.floor(mags * 255.0) + 0.5) / 255.0
    ref = pil_map(name, images, mags).float()
    diff = _run(name, x, mags, device) * 255.0 - ref
    lo, hi = PIL_BOUNDS[name]
    assert diff.min() >= lo - 1e-3 and diff.max() <= hi + 1e-3, (name, diff.min().item(), diff.max().item())
    if hi == 0.0:  # exact on 8-bit input: the same uint8, and the very value uint8 / 255 (1 - x: within an ulp)
        out = _run(name, x, mags, device)
        assert torch.equal((out * 255.0).round(), ref)
        if name == "solarize":
            torch.testing.assert_close(out, ref / 255.0, atol=1.2e-7, rtol=0)
        else:
            assert torch.equal(out, ref / 255.0)


@pytest.mark.parametrize(
    "name, pil_fn, lo, hi",
    [
        ("brightness", TF.adjust_brightness, 0.7, 1.3),
        ("contrast", TF.adjust_contrast, 0.7, 1.3),
        ("color", TF.adjust_saturation, 0.7, 1.3),
    ],
)
def test_jitter_components_match_torchvision_on_pil(name, pil_fn, lo, hi, batch, device: str) -> None:
    """ColorJitter factors above 1 extrapolate and clip, as torchvision's PIL path does."""
    images, x = batch
    mags = torch.linspace(lo, hi, BATCH)
    ref = torch.stack(
        [TF.pil_to_tensor(pil_fn(TF.to_pil_image(img), float(m))) for img, m in zip(images, mags, strict=True)]
    )
    diff = _run(name, x, mags, device) * 255.0 - ref.float()
    assert diff.min() >= -0.5 - 1e-3 and diff.max() <= 1.5 + 1e-3


def test_hue_matches_torchvision_and_kornia(batch, device: str) -> None:
    _, x = batch
    x = x.clone()
    x[0] = x[0, :1]  # grey image: hue undefined, must stay
    x[1, :, :4] = torch.tensor([1.0, 1.0, 0.2]).view(3, 1, 1)  # max ties between R and G
    mags = torch.tensor([0.3, -0.5, 0.5, 0.0, -0.17])
    out = _run("hue", x, mags, device)
    ref = torch.stack([TF.adjust_hue(img, float(m)) for img, m in zip(x, mags, strict=True)])
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(out, kornia.enhance.adjust_hue(x, 2 * math.pi * mags), atol=2e-5, rtol=0)
    assert torch.equal(out[0], x[0])
    assert out.min() >= 0 and out.max() <= 1


def test_hue_close_to_torchvision_on_pil(batch) -> None:
    """torchvision's PIL hue quantises H, S and V to 8 bits: a few levels on few pixels."""
    images, x = batch
    mags = torch.linspace(-0.1, 0.1, BATCH)
    ref = torch.stack(
        [TF.pil_to_tensor(TF.adjust_hue(TF.to_pil_image(img), float(m))) for img, m in zip(images, mags, strict=True)]
    )
    diff = (AF.hue_(x.clone(), mags) * 255.0 - ref.float()).abs()
    assert diff.mean() < 1.0 and diff.flatten().quantile(0.99) < 5.0 and diff.max() < 12.0


def test_gaussian_blur_matches_kornia_and_pil(batch, device: str) -> None:
    images, x = batch
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0])
    out = AF.gaussian_blur_(x.to(device).clone(), sigma.to(device), kernel_size=13).cpu()
    ref = kornia.filters.gaussian_blur2d(x, 13, torch.stack([sigma, sigma], 1), border_type="replicate")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # PIL's GaussianBlur(radius=sigma) approximates the Gaussian by three box blurs.
    diff = (out * 255.0 - pil_map("blur", images, sigma).float()).abs()
    assert diff.mean() < 1.0 and diff.max() < 8.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gaussian_kernel1d_matches_kornia_and_the_formula(dtype: torch.dtype) -> None:
    sigma = torch.tensor([[0.0], [0.1], [0.7], [2.0], [50.0]], dtype=dtype)
    out = AF.gaussian_kernel1d(9, sigma)
    assert out.shape == (5, 9) and out.dtype == dtype
    ref = kornia.filters.get_gaussian_kernel1d(9, sigma)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    offsets = torch.arange(-4.0, 5.0, dtype=torch.float64)
    direct = torch.exp(-(offsets**2) / (2 * sigma.double().clamp_min(1e-30) ** 2))
    direct = direct / direct.sum(-1, keepdim=True)
    torch.testing.assert_close(out.double(), direct, atol=1e-3 if dtype.itemsize == 2 else 1e-6, rtol=0)
    assert torch.equal(out[0].float(), (offsets == 0).float())  # sigma 0: the unit impulse


def test_gaussian_kernel1d_rejects_even_sizes() -> None:
    with pytest.raises(ValueError, match="odd"):
        AF.gaussian_kernel1d(4, torch.ones(1, 1))


def test_blur_kernel_size() -> None:
    assert AF.blur_kernel_size(2.0, 448, 448) == 13
    assert AF.blur_kernel_size(0.1, 448, 448) == 3
    assert AF.blur_kernel_size(2.0, 10, 448) == 9  # clamped to the image, kept odd
    assert AF.blur_kernel_size(2.0, 11, 448) == 11


@pytest.mark.parametrize(
    "name, kornia_fn",
    [
        ("brightness", kornia.enhance.adjust_brightness_accumulative),
        ("color", kornia.enhance.adjust_saturation_with_gray_subtraction),
        ("contrast", kornia.enhance.adjust_contrast_with_mean_subtraction),
        ("sharpness", kornia.enhance.sharpness),
        ("solarize", kornia.enhance.solarize),
    ],
)
def test_matches_kornia_with_per_sample_factors(name, kornia_fn, batch, device: str) -> None:
    """kornia's functions take a (B,) factor per sample; ours give the same values in place.

    The reference runs on the CPU (on a GPU kornia's sharpness is a convolution cuDNN may run in TF32)."""
    _, x = batch
    mags = magnitudes(name, BATCH, torch.Generator().manual_seed(3))
    ref = kornia_fn(x, mags)
    torch.testing.assert_close(_run(name, x, mags, device), ref, atol=2e-6, rtol=0)


def test_equalize_posterize_match_kornia_on_8bit_input(batch, device: str) -> None:
    """On 8-bit-valued input kornia's equalize / posterize are PIL's too (k / 255 * 255 floors to k).

    Exactly on the CPU.  On CUDA kornia's ``level / 255.0`` is a multiplication by the reciprocal, one ulp off
    ``uint8 / 255`` for some levels, while ours divides there too (``test_matches_pil`` pins it): the same
    levels, values within an ulp."""
    _, x = batch
    x = x.to(device)
    bits = torch.tensor([4, 5, 6, 7, 8], device=device)
    pairs = [
        (AF.equalize_(x.clone()), kornia.enhance.equalize(x)),
        (AF.posterize_(x.clone(), bits.float()), kornia.enhance.posterize(x, bits)),
    ]
    for ours, theirs in pairs:
        if device == "cpu":
            assert torch.equal(ours, theirs)
        else:
            assert torch.equal((ours * 255).round(), (theirs * 255).round())
            torch.testing.assert_close(ours, theirs, atol=1.2e-7, rtol=0)


def test_levels_divide_exactly_on_every_device(device: str) -> None:
    """k / 255 with a true division (a Python-number divisor is a reciprocal multiplication on CUDA)."""
    levels = torch.arange(256, dtype=torch.float32)
    got = AF._levels_to_unit_(levels.to(device, copy=True)).cpu()
    assert torch.equal(got, levels / 255.0)  # CPU division: correctly rounded
    assert torch.equal(got, torch.tensor([k / 255 for k in range(256)], dtype=torch.float64).float())


def posterize_on_levels(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """The oracle: PIL's posterize table ``level & ~(2 ** (8 - bits) - 1)`` on the nearest 8-bit level
    ``round(255 x)`` (the level a uint8 image would hold), back to ``level / 255``; per-sample ``bits``."""
    levels = torch.round(x.double() * 255).long()
    keep = torch.tensor([~((1 << (8 - int(b))) - 1) for b in bits.tolist()]).view(-1, 1, 1, 1)
    return (levels & keep).float() / 255


def test_posterize_keeps_the_top_bits_of_the_nearest_level(device: str) -> None:
    """Every level 0..255, exactly on it and off it (continuous values that float ops leave, never at half a level),
    under 1..8 bits, against the oracle's integer bit mask."""
    offsets = torch.tensor([-0.3, -1e-3, 0.0, 1e-3, 0.3], dtype=torch.float64)
    values = ((torch.arange(256, dtype=torch.float64)[:, None] + offsets) / 255).clamp(0, 1).float()
    bits = torch.arange(1.0, 9.0)
    x = values.reshape(1, 1, 32, 40).expand(len(bits), 3, 32, 40).contiguous()
    expected = posterize_on_levels(x, bits)
    assert torch.equal(_run("posterize", x, bits, device), expected)
    # each bit count keeps 2 ** bits levels, the multiples of 2 ** (8 - bits)
    assert [len(torch.unique(expected[i])) for i in range(len(bits))] == [2**b for b in range(1, 9)]


def test_levels_are_rounded_not_truncated() -> None:
    """Continuous input just below a level (float ops leave such values): truncating 255 x (kornia's posterize does)
    would drop a level, a whole posterize step here; PIL's uint8 image would hold the level, so we round."""
    x = torch.full((1, 3, 4, 4), 16 / 255 - 1e-6)
    assert torch.equal(AF.posterize_(x.clone(), torch.tensor([4.0])), torch.full_like(x, 16 / 255))
    y = torch.linspace(0, 1, 256).mul(255).round().div(255).view(1, 1, 16, 16).expand(1, 3, 16, 16) - 1e-6
    y = y.clamp(0, 1)
    assert torch.equal(AF.equalize_(y.clone()), AF.equalize_((y * 255).round() / 255))


@pytest.mark.parametrize("name", sorted(OPS))
def test_range_shape_and_per_sample_magnitudes(name: str, device: str) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(4, 3, 17, 23, generator=g)
    x[0, :, :3] = 0.0
    x[1, :, -3:] = 1.0
    mags = magnitudes(name, 4, g)
    out = _run(name, x, mags, device)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # each sample depends on its own magnitude only: run them one by one
    single = torch.cat([_run(name, x[i : i + 1], mags[i : i + 1], device) for i in range(4)])
    torch.testing.assert_close(out, single, atol=1e-6, rtol=0)


def test_identity_is_exact() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(AF.identity_(x.clone(), torch.zeros(2)), x)


def test_neutral_magnitudes(batch) -> None:
    _, x = batch
    ones = torch.ones(BATCH)
    for name in ("brightness", "color", "contrast", "sharpness"):
        torch.testing.assert_close(OPS[name](x.clone(), ones), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(AF.hue_(x.clone(), torch.zeros(BATCH)), x, atol=2e-6, rtol=0)
    assert torch.equal(AF.posterize_(x.clone(), torch.full((BATCH,), 8.0)), x)  # 8-bit input
    assert torch.equal(AF.solarize_(x.clone(), torch.full((BATCH,), 1.5)), x)


def test_constant_channel_autocontrast_and_equalize() -> None:
    """PIL leaves a constant channel alone in both ops (kornia's normalize_min_max would zero it)."""
    x = torch.full((1, 3, 8, 8), 100 / 255)
    x[0, 1] = torch.linspace(0.2, 0.6, 64).view(8, 8)
    out = AF.autocontrast_(x.clone())
    assert torch.equal(out[0, 0], x[0, 0]) and torch.equal(out[0, 2], x[0, 2])
    assert out[0, 1].min() == 0.0 and out[0, 1].max() == 1.0
    assert torch.equal(AF.equalize_(x.clone())[0, 0], x[0, 0])


# ---------------------------------------------------------------------------------------------------------------
# Geometry: every op is photometric, the output stays pixel-aligned with the input.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POINTWISE)
def test_pointwise_ops_commute_with_pixel_shuffles(name: str, device: str) -> None:
    """Equal input pixels map to equal output pixels: shuffling the pixels commutes with the op."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 12, 16, generator=g)
    mags = magnitudes(name, 3, g)
    perm = torch.randperm(12 * 16, generator=g)

    def shuffle(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2)[..., perm].view_as(t)

    torch.testing.assert_close(
        _run(name, shuffle(x), mags, device), shuffle(_run(name, x, mags, device)), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_commute_with_flips(name: str, device: str) -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.rand(3, 3, 15, 20, generator=g)
    mags = magnitudes(name, 3, g)
    for dims in ((-1,), (-2,)):
        flipped = _run(name, x.flip(dims), mags, device)
        torch.testing.assert_close(flipped, _run(name, x, mags, device).flip(dims), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", POINTWISE)
def test_step_edge_stays_put_pointwise(name: str, device: str) -> None:
    """Left half one colour, right half another: after the op each half is still constant, so the
    only column where the image changes is the edge column."""
    x = step_image(3, 10, 16)
    out = _run(name, x, magnitudes(name, 3, torch.Generator().manual_seed(7)), device)
    left, right = out[..., :8], out[..., 8:]
    torch.testing.assert_close(left, left[..., :1, :1].expand_as(left), atol=1e-6, rtol=0)
    torch.testing.assert_close(right, right[..., :1, :1].expand_as(right), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", LOCAL)
def test_step_edge_stays_centred_local(name: str, device: str) -> None:
    """Blur and sharpness are linear with symmetric kernels: on a step a | b the output profile is
    antisymmetric about the edge (y[e - 1 - k] + y[e + k] = a + b), so the edge stays between
    columns e - 1 and e and is still where the horizontal gradient peaks."""
    x = step_image(3, 24, 32)
    mags = magnitudes(name, 3, torch.Generator().manual_seed(8))
    out = _run(name, x, mags, device)
    e = 16
    a, b = x[..., :1, :1], x[..., :1, -1:]
    torch.testing.assert_close(out[..., :e].flip(-1) + out[..., e:], (a + b).expand(3, 3, 24, e), atol=1e-5, rtol=0)
    grad = (out[..., 1:] - out[..., :-1]).abs().sum(dim=(1, 2))  # (B, W-1): change from column j to j + 1
    assert (grad.argmax(dim=1) == e - 1).all()


def test_gaussian_blur_methods_agree(device: str) -> None:
    """The convolution (CPU default) and the tap-by-tap float32 loop (default elsewhere) give the same blur.

    The reference is the convolution on the CPU: on a GPU, cuDNN may run it in TF32.
    """
    x = torch.rand(3, 3, 30, 26, generator=torch.Generator().manual_seed(9))
    sigma = torch.tensor([0.3, 1.1, 2.0])
    conv = AF.gaussian_blur_(x.clone(), sigma, kernel_size=13, method="conv")
    taps = AF.gaussian_blur_(x.to(device, copy=True), sigma.to(device), kernel_size=13, method="taps").cpu()
    torch.testing.assert_close(taps, conv, atol=2e-6, rtol=0)
    default = AF.gaussian_blur_(x.to(device, copy=True), sigma.to(device), 13).cpu()
    torch.testing.assert_close(default, conv, atol=2e-6, rtol=0)
    with pytest.raises(ValueError):
        AF.gaussian_blur_(x.clone(), sigma, method="fft")
