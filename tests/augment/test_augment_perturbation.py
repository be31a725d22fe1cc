"""fsae.augment.WeakPerturbation / StrongPerturbation: contract, reproducibility, replay, semantics, geometry."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from augment_cases import OPS, mostly_equal, step_image

from fsae.augment import JITTER_COMPONENTS, RANDAUGMENT_OPS, StrongPerturbation, WeakPerturbation
from fsae.augment import functional as AF

MODULES = {"weak": WeakPerturbation, "strong": StrongPerturbation}
JITTER_FNS = {"brightness": AF.brightness_, "contrast": AF.contrast_, "saturation": AF.color_, "hue": AF.hue_}


def _images(batch: int = 6, height: int = 32, width: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 5, 6, generator=g)
    x = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    return (0.8 * x + 0.2 * torch.rand(batch, 3, height, width, generator=g)).clamp(0, 1)


def _strong_reference(x: torch.Tensor, params: dict[str, torch.Tensor], kernel_size: int) -> torch.Tensor:
    """The strong view sample by sample, straight from the parameters (independent of the grouping)."""
    out = []
    for i in range(x.shape[0]):
        y = x[i : i + 1].clone()
        for component in params["jitter_order"][i].tolist():
            name = JITTER_COMPONENTS[component]
            y = JITTER_FNS[name](y, params[name][i : i + 1].to(x.device))
        if "blur" in params:
            if params["blur"][i]:
                y = AF.gaussian_blur_(y, params["sigma"][i : i + 1].to(x.device), kernel_size)
            for op, magnitude in zip(params["ops"][i].tolist(), params["magnitudes"][i].tolist(), strict=True):
                y = OPS[RANDAUGMENT_OPS[op]](y, torch.tensor([magnitude], device=x.device))
        out.append(y)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------
# Contract: shape, dtype, device, range
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_shape_dtype_device_range(kind: str, dtype: torch.dtype, device: str) -> None:
    x = _images().to(device=device, dtype=dtype)
    x[0] = 0.0
    x[1] = 1.0
    out = MODULES[kind](seed=0)(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert out.data_ptr() != x.data_ptr()


def test_low_precision_is_computed_in_float32() -> None:
    x = _images()
    params = StrongPerturbation(seed=1).generate_parameters(x.shape[0])
    full = StrongPerturbation().apply(x, params)
    for dtype in (torch.float16, torch.bfloat16):
        low = StrongPerturbation().apply(x.to(dtype), params)
        # = the float32 pipeline on the rounded input, rounded once at the end
        via_float32 = StrongPerturbation().apply(x.to(dtype).float(), params).to(dtype)
        assert torch.equal(low, via_float32)
        assert (low.float() - full).abs().mean() < 0.02


def test_input_is_not_modified_and_channels_last_works() -> None:
    x = _images()
    before = x.clone()
    strong = StrongPerturbation(seed=2)
    out = strong(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(x, before)
    assert torch.equal(out, strong.apply(x, strong.last_params))


# ---------------------------------------------------------------------------------------------------------------
# Reproducibility, per-sample draws, replay
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_seed_determinism(kind: str, device: str) -> None:
    x = _images().to(device)
    cls = MODULES[kind]
    a, b = cls(seed=7), cls(seed=7)
    first = a(x)
    assert torch.equal(first, b(x))
    assert torch.equal(a(x), b(x))  # the stream continues identically
    assert not torch.equal(first, a(x))  # and moves on
    assert not torch.equal(cls(seed=8)(x), cls(seed=7)(x))
    # a generator passed to the constructor or per call, and torch's global seed, all reproduce
    assert torch.equal(cls(generator=torch.Generator().manual_seed(7))(x), first)
    assert torch.equal(cls()(x, generator=torch.Generator().manual_seed(7)), first)
    assert torch.equal(cls(seed=123)(x, generator=torch.Generator().manual_seed(7)), first)  # per call wins
    torch.manual_seed(7)
    assert torch.equal(cls()(x), first)


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_samples_in_a_batch_differ(kind: str, device: str) -> None:
    x = _images(batch=1).expand(8, -1, -1, -1).contiguous().to(device)
    module = MODULES[kind](seed=3)
    out = module(x)
    params = module.last_params
    for name in ("brightness", "contrast", "saturation", "hue"):
        assert params[name].unique().numel() == 8
    flat = out.flatten(1)
    distinct = {tuple(row.tolist()) for row in (flat * 1e4).round().int()}
    assert len(distinct) == 8


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_replay(kind: str, device: str) -> None:
    x = _images().to(device)
    module = MODULES[kind](seed=4)
    out = module(x)
    params = module.last_params
    assert all(t.device.type == "cpu" for t in params.values())
    assert torch.equal(module.apply(x, params), out)
    assert torch.equal(module.apply(x, params), module.apply(x, params))
    assert torch.equal(MODULES[kind]().apply(x, params), out)  # params carry everything
    assert torch.equal(module.apply(x, module.generate_parameters(6, torch.Generator().manual_seed(4))), out)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("kind", sorted(MODULES))
def test_same_seed_same_views_on_cpu_and_cuda(kind: str) -> None:
    x = _images(batch=8, height=64, width=64)
    cpu, gpu = MODULES[kind](seed=5), MODULES[kind](seed=5)
    out_cpu, out_gpu = cpu(x), gpu(x.cuda())
    for name, value in cpu.last_params.items():
        assert torch.equal(value, gpu.last_params[name])
    assert mostly_equal(out_cpu, out_gpu, atol=1e-4, fraction=5e-3)


# ---------------------------------------------------------------------------------------------------------------
# Parameters and semantics
# ---------------------------------------------------------------------------------------------------------------


def test_parameters() -> None:
    strong = StrongPerturbation(seed=6)
    p = strong.generate_parameters(4000)
    assert set(p) == {*JITTER_COMPONENTS, "jitter_order", "blur", "sigma", "ops", "magnitudes"}
    for name in ("brightness", "contrast", "saturation"):
        assert p[name].shape == (4000,) and p[name].dtype == torch.float32
        assert p[name].min() >= 0.7 and p[name].max() <= 1.3
    assert p["hue"].min() >= -0.1 and p["hue"].max() <= 0.1
    assert torch.equal(p["jitter_order"].sort(dim=1).values, torch.arange(4).expand(4000, 4))
    assert p["jitter_order"][:, 0].bincount().min() > 800  # every component comes first sometimes
    assert p["blur"].dtype == torch.bool and 0.45 < p["blur"].float().mean() < 0.55
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    ops, mags = p["ops"], p["magnitudes"]
    assert ops.shape == mags.shape == (4000, 5) and ops.dtype == torch.int64
    counts = ops.flatten().bincount(minlength=9)
    assert counts.shape == (9,) and (counts > 0.9 * 20000 / 9).all()
    assert (ops.sort(dim=1).values.diff(dim=1) == 0).any(dim=1).float().mean() > 0.5  # with replacement
    for k, name in enumerate(RANDAUGMENT_OPS):
        m = mags[ops == k]
        if name == "posterize":
            assert set(m.unique().tolist()) == {4.0, 5.0, 6.0, 7.0}
        elif name == "solarize":
            assert m.min() >= 0 and m.max() <= 1 and m.max() > 0.9
        elif name in ("autocontrast", "equalize", "identity"):
            assert (m == 0).all()
        else:
            assert m.min() >= 0.05 and m.max() <= 0.95


def test_strong_equals_per_sample_reference(device: str) -> None:
    x = _images(batch=12).to(device)
    strong = StrongPerturbation(seed=9)
    for call_cost in (None, 0.0, math.inf):  # every grouping policy gives the same views
        strong.call_cost = call_cost
        params = strong.generate_parameters(12)
        assert mostly_equal(strong.apply(x, params), _strong_reference(x, params, kernel_size=13))


def test_weak_is_torchvision_color_jitter(device: str) -> None:
    """Per sample: torchvision's tensor adjust_* in the drawn order with the drawn factors."""
    x = _images().to(device)
    weak = WeakPerturbation(seed=10)
    out = weak(x)
    p = weak.last_params
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(x.shape[0]):
        y = x[i]
        for component in p["jitter_order"][i].tolist():
            y = fns[component](y, float(p[JITTER_COMPONENTS[component]][i]))
        # torchvision's grey uses 0.2989 for red where PIL and kornia use 0.299
        torch.testing.assert_close(out[i], y, atol=2e-3, rtol=0)


def test_disabled_components_are_exact_identity() -> None:
    x = _images()
    assert torch.equal(WeakPerturbation(color_jitter=(0, 0, 0, 0), seed=0)(x), x)
    assert torch.equal(StrongPerturbation(n_ops=0, color_jitter=(0, 0, 0, 0), p_blur=0.0, seed=0)(x), x)
    only_blur = StrongPerturbation(n_ops=0, color_jitter=(0, 0, 0, 0), p_blur=1.0, seed=0)
    out = only_blur(x)
    sigma = only_blur.last_params["sigma"]
    torch.testing.assert_close(out, AF.gaussian_blur_(x.clone(), sigma, kernel_size=13), atol=1e-6, rtol=0)


def test_jitter_ranges_follow_torchvision() -> None:
    weak = WeakPerturbation(color_jitter=(0.5, (0.9, 1.1), 2.0, (-0.2, 0.3)))
    assert weak.jitter_ranges == ((0.5, 1.5), (0.9, 1.1), (0.0, 3.0), (-0.2, 0.3))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"color_jitter": (0.3, 0.3, 0.3)},
        {"color_jitter": (-0.1, 0.3, 0.3, 0.1)},
        {"color_jitter": (0.3, 0.3, 0.3, 0.6)},
        {"color_jitter": ((1.2, 1.1), 0.3, 0.3, 0.1)},
        {"blur_sigma": (0.0, 2.0)},
        {"blur_sigma": (2.0, 1.0)},
        {"p_blur": 1.5},
        {"n_ops": -1},
        {"seed": 0, "generator": torch.Generator()},
    ],
)
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        StrongPerturbation(**kwargs)


def test_bad_inputs() -> None:
    strong = StrongPerturbation(seed=0)
    with pytest.raises(ValueError):
        strong(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError):
        strong(torch.rand(3, 8, 8))
    with pytest.raises(TypeError):
        strong(torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8))
    with pytest.raises(ValueError):
        strong.apply(torch.rand(2, 3, 8, 8), strong.generate_parameters(3))


def test_module_plumbing() -> None:
    strong = StrongPerturbation(n_ops=3, seed=0)
    assert list(strong.parameters()) == [] and strong.state_dict() == {}
    assert "n_ops=3" in repr(strong) and "p_blur=0.5" in repr(strong)
    assert "color_jitter" in repr(WeakPerturbation())
    assert strong(torch.empty(0, 3, 8, 8)).shape == (0, 3, 8, 8)
    tiny = strong(torch.rand(2, 3, 2, 2))  # smaller than the blur window and the sharpness kernel
    assert tiny.shape == (2, 3, 2, 2)


# ---------------------------------------------------------------------------------------------------------------
# Geometry: the views stay pixel-aligned with the input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_views_commute_with_flips_and_transpose(kind: str, device: str) -> None:
    """Every op is photometric or a symmetric filter, so mirroring the input mirrors the view;
    a shift, crop or rotation anywhere in the pipeline would break this."""
    x = _images(batch=8, height=36, width=36).to(device)
    module = MODULES[kind](seed=11)
    params = module.generate_parameters(8)
    out = module.apply(x, params)
    for transform in (lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.transpose(-1, -2)):
        assert mostly_equal(module.apply(transform(x), params), transform(out))


def test_weak_view_keeps_the_step_edge(device: str) -> None:
    """ColorJitter is pointwise: each half of a step image stays constant, the edge stays in its column."""
    x = step_image(8, 12, 20).to(device)
    out = WeakPerturbation(seed=12)(x).cpu()
    for half in (out[..., :10], out[..., 10:]):
        torch.testing.assert_close(half, half[..., :1, :1].expand_as(half), atol=1e-6, rtol=0)
    assert ((out[..., 9] - out[..., 10]).abs().amax(dim=(1, 2)) > 0.01).all()


def test_strong_view_keeps_the_step_edge(device: str) -> None:
    """Blur (radius 6) and up to 5 sharpness ops (radius 1 each) spread the edge by at most 11 columns;
    everything farther away stays constant, rows stay alike (PIL's sharpness keeps the border rows,
    so the 5 outer rows may differ near the edge), and the edge does not move (flip test above)."""
    n_ops, radius = 5, 6 + 5
    x = step_image(16, 40, 64).to(device)
    strong = StrongPerturbation(n_ops=n_ops, seed=13)
    out = strong(x).cpu()
    e = 32
    left, right = out[..., : e - radius], out[..., e + radius :]
    for half in (left, right):
        torch.testing.assert_close(half, half[..., :1, :1].expand_as(half), atol=1e-5, rtol=0)
    inner = out[..., n_ops:-n_ops, :]
    torch.testing.assert_close(inner, inner[..., :1, :].expand_as(inner), atol=1e-5, rtol=0)
