"""Batched photometric ops on 8-bit levels with PIL's and torchvision's exact rounding, in place.

The "uint8" arithmetic of :mod:`fsae.augment` (the authors' pipeline: every op a PIL op on a ``uint8`` image).
Every op takes a contiguous batch ``images`` of shape ``(N, 3, H, W)``, **float32 holding integer levels
0..255** (exact in float32), on any device, and where it has one a per-sample ``magnitude`` of shape ``(N,)``,
float32, on the same device.  It modifies ``images`` in place and returns it; outputs are integer levels again.

=================  ===========================================================================================
op                 what PIL / torchvision computes on ``uint8``, reproduced here
=================  ===========================================================================================
``blend_``         ``Image.blend(deg, im, f)``: ``floor(clip(deg + f * (im - deg), 0, 255))`` in C ``float``
                   (float32) arithmetic: interpolation truncates, extrapolation clips then truncates
``brightness_``    ``ImageEnhance.Brightness``: blend with black
``color_``         ``ImageEnhance.Color``: blend with ``convert("L")`` (``(19595 R + 38470 G + 7471 B +
                   32768) >> 16``) replicated over the channels
``contrast_``      ``ImageEnhance.Contrast``: blend with ``int(mean(convert("L")) + 0.5)``; optionally the mean
                   over each sample's top-left ``region`` only (a resized image on a larger canvas)
``sharpness_``     ``ImageEnhance.Sharpness``: blend with ``ImageFilter.SMOOTH`` (3x3 [[1,1,1],[1,5,1],[1,1,1]]
                   / 13, rounded; border pixels copied; images under 3x3 unchanged)
``autocontrast_``  ``ImageOps.autocontrast``: per channel ``int(i * 255 / (hi - lo) - lo * 255 / (hi - lo))``
                   in Python (float64) arithmetic, constant channel kept
``equalize_``      ``ImageOps.equalize``: PIL's per-channel histogram table
``posterize_``     ``ImageOps.posterize``: ``i & ~(2 ** (8 - bits) - 1)``
``solarize_``      ``ImageOps.solarize(t)``: ``255 - i`` where ``i >= t`` (``t`` a level threshold, may be
                   fractional: PIL's ``i < t`` test)
``hue_``           torchvision's PIL ``adjust_hue``: PIL ``RGB -> HSV`` (8-bit H, S, V), H += ``int(255 f)``
                   modulo 256, PIL ``HSV -> RGB``; the conversions follow Pillow's C code float for float
``gaussian_blur_`` torchvision ``GaussianBlur`` on a PIL image: its ``k x k`` float32 kernel, reflect border,
                   ``torch.round`` back to levels
=================  ===========================================================================================

The mixed float32 / float64 steps follow the C and Python sources (Pillow 13 ``Blend.c``, ``Convert.c``,
``Filter.c``, ``ImageOps.py``, torchvision 0.29 ``_functional_pil.py``); the tests check every op against
PIL / torchvision themselves.  Each intermediate is a separate elementwise torch op (correctly rounded on the
CPU and on CUDA, no fused multiply-add), so the results are the same bits on every device, except the blur,
whose 2-D sum is within float32 rounding of torchvision's (one level off on a tie, rarely).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

__all__ = [
    "autocontrast_",
    "blend_",
    "blur_kernels",
    "brightness_",
    "color_",
    "contrast_",
    "draw_blur_kernel_size",
    "equalize_",
    "gaussian_blur_",
    "gray_levels",
    "hsv_to_rgb",
    "hue_",
    "identity_",
    "posterize_",
    "rgb_to_hsv",
    "sharpness_",
    "solarize_",
]

# PIL's fixed-point luma weights (Convert.c, L24): 0.299, 0.587, 0.114 in units of 2 ** -16.
_L24 = (19595.0, 38470.0, 7471.0)


def _per_sample(magnitude: torch.Tensor) -> torch.Tensor:
    return magnitude.view(-1, 1, 1, 1)


def _div(x: torch.Tensor, divisor: float) -> torch.Tensor:
    """``x / divisor`` correctly rounded on every device: a Python-number divisor reaches a CUDA kernel as a CPU
    scalar, which it turns into a product with the reciprocal (an ulp off, enough to move a truncation)."""
    return x / torch.full((), divisor, dtype=x.dtype, device=x.device)


def identity_(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``images`` unchanged."""
    return images


def blend_(images: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``Image.blend(degenerate, images, factor)`` in place on ``images``.

    ``degenerate`` broadcasts against ``images`` (``(N, 1, H, W)``, ``(N, 1, 1, 1)``, ...); ``factor`` ``(N,)``
    float32 (PIL passes its alpha as a C float).  ``deg + f * (im - deg)`` rounds as C does: the difference is
    exact, then one float32 product and one float32 sum; then clip to [0, 255] and truncate.
    """
    return images.sub_(degenerate).mul_(_per_sample(factor)).add_(degenerate).clamp_(0.0, 255.0).floor_()


def gray_levels(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W) -> (N, 1, H, W)``: PIL's ``convert("L")``, ``(19595 R + 38470 G + 7471 B + 32768) >> 16``.

    Every partial sum is an integer below ``2 ** 24``, so float32 holds it exactly."""
    r, g, b = images.unbind(dim=1)
    acc = torch.mul(r, _L24[0])
    acc.add_(torch.mul(g, _L24[1])).add_(torch.mul(b, _L24[2])).add_(32768.0)
    return acc.div_(65536.0).floor_().unsqueeze(1)


def brightness_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Brightness(im).enhance(f)``: blend with black, ``floor(min(f * im, 255))``."""
    return images.mul_(_per_sample(magnitude)).clamp_(0.0, 255.0).floor_()


def color_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Color(im).enhance(f)``: blend with the L image (see :func:`gray_levels`)."""
    return blend_(images, gray_levels(images), magnitude)


def _region_mask(region: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) valid (height, width) per sample -> float64 row mask (N, H) and column mask (N, W)."""
    region = region.to(torch.int64)
    rows = torch.arange(height, device=region.device) < region[:, :1]
    cols = torch.arange(width, device=region.device) < region[:, 1:]
    return rows.to(torch.float64), cols.to(torch.float64)


def contrast_(images: torch.Tensor, magnitude: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """``ImageEnhance.Contrast(im).enhance(f)``: blend with the rounded mean level of the L image.

    ``region``: optional ``(N, 2)`` integer ``(height, width)`` per sample: the image occupies the top-left
    ``height x width`` of its plane (a resized image on a fixed canvas) and the mean is taken there only; the
    blend still runs over the whole plane.  Mean = ``floor(sum / count + 0.5)`` in float64, as
    ``int(ImageStat.Stat(L).mean[0] + 0.5)`` (the sum is exact: integers far below ``2 ** 53``).
    """
    n, _, h, w = images.shape
    gray = gray_levels(images).view(n, h, w).to(torch.float64)
    if region is None:
        total = gray.sum(dim=(1, 2))
        count = torch.full((n,), float(h * w), dtype=torch.float64, device=images.device)
    else:
        rows, cols = _region_mask(region, h, w)
        total = torch.einsum("nhw,nh,nw->n", gray, rows, cols)
        count = rows.sum(dim=1) * cols.sum(dim=1)
    mean = torch.floor(total / count.clamp_min(1.0) + 0.5).to(torch.float32)
    return blend_(images, _per_sample(mean), magnitude)


def _smooth(images: torch.Tensor) -> torch.Tensor:
    """``ImageFilter.SMOOTH`` on levels: interior ``round((box3x3 + 4 centre) / 13)``, border copied.

    The exact value is ``n / 13`` for an integer ``n``, never within ``1 / 26`` of a half level, so one float32
    division and ``floor(. + 0.5)`` reproduce PIL's float32 kernel sum and rounding for any summation order."""
    out = images.clone()
    rows = torch.add(images[:, :, :-2], images[:, :, 2:]).add_(images[:, :, 1:-1])  # (N, C, H-2, W)
    box = torch.add(rows[..., :-2], rows[..., 2:]).add_(rows[..., 1:-1])  # (N, C, H-2, W-2)
    box.add_(images[:, :, 1:-1, 1:-1], alpha=4.0)
    box = _div(box, 13.0).add_(0.5).floor_()
    out[:, :, 1:-1, 1:-1] = box
    return out


def sharpness_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Sharpness(im).enhance(f)``: blend with ``ImageFilter.SMOOTH`` (see :func:`_smooth`).

    PIL leaves an image under 3x3 unfiltered, and a blend of an image with itself is the image."""
    h, w = images.shape[-2:]
    if h < 3 or w < 3:
        return images
    return blend_(images, _smooth(images), magnitude)


def _plane_index(images: torch.Tensor) -> torch.Tensor:
    """Flat int32 index ``plane * 256 + level`` of every pixel, ``(N * C * H * W,)``."""
    n, c = images.shape[:2]
    index = images.to(torch.int32).view(n * c, -1)
    index += torch.arange(0, n * c * 256, 256, device=images.device, dtype=torch.int32).unsqueeze(1)
    return index.view(-1)


def _apply_table_(images: torch.Tensor, table: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """``images[p, ...] = table[p, images[p, ...]]`` for each ``(sample, channel)`` plane ``p``; table ``(P, 256)``."""
    if index is None:
        index = _plane_index(images)
    torch.index_select(table.to(images.dtype).reshape(-1), 0, index, out=images.view(-1))
    return images


def autocontrast_(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """``ImageOps.autocontrast(im)`` (cutoff 0): per channel table ``clip(int(i * s + o), 0, 255)``,
    ``s = 255.0 / (hi - lo)``, ``o = -lo * s`` in float64 as Python computes it; a constant channel is kept."""
    n, c = images.shape[:2]
    planes = images.view(n * c, -1)
    lo = planes.amin(dim=1).to(torch.float64)
    hi = planes.amax(dim=1).to(torch.float64)
    flat = hi <= lo
    scale = torch.full_like(lo, 255.0) / torch.where(flat, 1.0, hi - lo)  # not 255.0 / t: a reciprocal
    offset = -lo * scale
    levels = torch.arange(256, device=images.device, dtype=torch.float64)
    table = (levels * scale[:, None]).add_(offset[:, None]).trunc_().clamp_(0.0, 255.0)
    table = torch.where(flat[:, None], levels, table)
    return _apply_table_(images, table)


def equalize_(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """``ImageOps.equalize(im)``: per channel, ``step = (count - h[last level present]) // 255``; step 0 keeps the
    plane; else level ``i`` -> ``(step // 2 + #pixels below i) // step`` (clipped to 255, as PIL's ``point``)."""
    n, c = images.shape[:2]
    index = _plane_index(images)
    histo = torch.bincount(index, minlength=n * c * 256).view(n * c, 256)
    ar = torch.arange(256, device=images.device)
    last = torch.where(histo > 0, ar, 0).amax(dim=1, keepdim=True)
    step = (histo.sum(dim=1, keepdim=True) - histo.gather(1, last)) // 255
    below = histo.cumsum(dim=1) - histo
    table = ((step // 2 + below) // step.clamp_min(1)).clamp_(max=255)
    table = torch.where(step == 0, ar, table)
    return _apply_table_(images, table, index)


def posterize_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """``ImageOps.posterize(im, bits)``: ``magnitude`` = bits per sample (integers 1..8 as floats)."""
    step = _per_sample(torch.exp2(8.0 - magnitude))
    return images.div_(step).floor_().mul_(step)


def solarize_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """``ImageOps.solarize(im, t)``: ``255 - i`` where ``i >= t``; ``magnitude`` = ``t`` in levels (e.g. [0, 256))."""
    inverted = torch.ge(images, _per_sample(magnitude)).to(images.dtype)  # 1 / 0
    # i + inv * (255 - 2 i): exact integer arithmetic
    return images.add_(inverted.mul_(torch.mul(images, -2.0).add_(255.0)))


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C ``round()`` of non-negative float64 values (half away from zero), exact at every representable tie."""
    floor = torch.floor(x)
    return floor + (x - floor >= 0.5).to(x.dtype)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("HSV")`` on levels: ``(N, 3, H, W)`` -> float32 8-bit H, S, V (Convert.c ``rgb2hsv``).

    C float (float32) quotients ``(max - c) / chroma``, the hue sums and ``h / 6 + 1`` modulo 1 in double where
    the C code promotes, ``int(h * 255)`` and ``int(s * 255)`` truncated."""
    r, g, b = images.unbind(dim=1)
    v = images.amax(dim=1)
    chroma = v - images.amin(dim=1)
    grey = chroma == 0
    cr = torch.where(grey, 1.0, chroma)
    s = chroma / torch.where(v == 0, 1.0, v)  # float32
    rc, gc, bc = ((v - x) / cr for x in (r, g, b))
    rc64, gc64, bc64 = rc.double(), gc.double(), bc.double()
    hue = torch.where(
        r == v, (bc - gc).double(), torch.where(g == v, (2.0 + rc64 - bc64).float().double(), (4.0 + gc64 - rc64))
    ).float()  # each branch assigned to a C float
    hue = torch.fmod(_div(hue.double(), 6.0) + 1.0, 1.0).float()
    uh = torch.trunc(hue.double() * 255.0).clamp_(0.0, 255.0)
    us = torch.trunc(s.double() * 255.0).clamp_(0.0, 255.0)
    uh = torch.where(grey, 0.0, uh).float()
    us = torch.where(grey, 0.0, us).float()
    return torch.stack([uh, us, v], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """PIL's HSV -> RGB on 8-bit H, S, V (Convert.c ``hsv2rgb``): ``(N, 3, H, W)`` float32 -> float32 levels.

    ``i = floor(h * 6 / 255)``, the remainder ``f`` and ``s / 255`` stored as C floats, ``p, q, t`` rounded
    half away from zero from double products (``q``'s ``s * f`` a float32 product, as in C)."""
    h, s, v = (x.double() for x in hsv.unbind(dim=1))
    sextant = _div(h * 6.0, 255.0)
    i = torch.floor(sextant)
    f = (sextant - i).float()
    fs = _div(s, 255.0).float()
    p = _round_half_away(v * (1.0 - fs.double())).clamp_(0.0, 255.0)
    q = _round_half_away(v * (1.0 - (fs * f).double())).clamp_(0.0, 255.0)
    t = _round_half_away(v * (1.0 - fs.double() * (1.0 - f.double()))).clamp_(0.0, 255.0)
    case = torch.remainder(i, 6.0).to(torch.int64)  # i in 0..6
    # (R, G, B) per sextant: 0 (v, t, p), 1 (q, v, p), 2 (p, v, t), 3 (p, q, v), 4 (t, p, v), 5 (v, p, q)
    choices = torch.stack([v, p, q, t])  # 0 v, 1 p, 2 q, 3 t
    pick = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]], device=hsv.device)
    out = []
    for channel in range(3):
        which = pick[:, channel][case]  # (N, H, W) index into choices
        out.append(choices.gather(0, which.unsqueeze(0)).squeeze(0))
    rgb = torch.stack(out, dim=1)
    grey = (s == 0).unsqueeze(1)
    return torch.where(grey, v.unsqueeze(1), rgb).float()


def hue_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """torchvision's PIL ``adjust_hue(im, f)``: HSV (PIL), ``H += int32(f * 255)`` wrapped modulo 256, RGB (PIL).

    ``f`` in [-0.5, 0.5] per sample.  The round trip is lossy even for a shift of 0, as in torchvision."""
    hsv = rgb_to_hsv(images)
    shift = torch.trunc(magnitude.double() * 255.0).view(-1, 1, 1)  # np.int32(f * 255)
    hsv[:, 0] = torch.remainder(hsv[:, 0].double() + shift, 256.0).float()  # uint8 wraparound
    return images.copy_(hsv_to_rgb(hsv))


def draw_blur_kernel_size(source: int | torch.Generator | None = None) -> int:
    """The authors' once-per-run blur window: ``k = int(4.95 u)``, plus 1 when even: 1, 3, 5 with P .40/.40/.19.

    ``source``: an ``int`` seed draws ``u`` as their code did, from Python's ``random`` right after
    ``random.seed(seed)`` (their training script seeds, then builds the training set, whose constructor makes this
    one draw first): the window of their run with that seed.  Their paper seed 7 gives ``u = 0.3238``, ``k = 1``:
    no blur at all in their VOC and COCO runs.  A ``torch.Generator`` (or None: torch's default) draws ``u``
    from it instead.
    """
    if isinstance(source, int):
        u = random.Random(source).random()  # the same stream as random.seed(source); random.random()
    else:
        u = float(torch.rand((), generator=source, dtype=torch.float64))
    k = int(u * 4.95)
    return k + 1 if k % 2 == 0 else k


def blur_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """torchvision's 2-D Gaussian kernels (``_get_gaussian_kernel2d``), one per sigma: ``(N,)`` -> ``(N, k, k)``
    float32 on the CPU.  Computed sample by sample with the very ops torchvision runs, so the same bits."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=torch.float32)
    kernels = []
    for value in sigma.detach().to("cpu", torch.float32).tolist():
        pdf = torch.exp(-0.5 * (x / value).pow(2))
        k1 = pdf / pdf.sum()
        kernels.append(torch.mm(k1[:, None], k1[None, :]))
    if not kernels:
        return torch.empty(0, kernel_size, kernel_size)
    return torch.stack(kernels)


def _reflect_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a reflect-padded axis (edge not repeated, as ``F.pad(mode="reflect")``), for any ``size``:
    reflection repeats for an axis shorter than the padding (torch would raise), a 1-pixel axis repeats it."""
    index = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = torch.remainder(index, period)
    return torch.where(index >= size, period - index, index)


def gaussian_blur_(
    images: torch.Tensor, kernels: torch.Tensor, round_levels: bool = True, method: str | None = None
) -> torch.Tensor:
    """torchvision ``gaussian_blur`` of each sample with its ``(k, k)`` kernel (:func:`blur_kernels`), in place.

    Reflect border, float32 sum, then (``round_levels``) ``torch.round`` (half to even) to integer levels, as
    torchvision's uint8 path.  ``kernels``: ``(N, k, k)`` on any device.  ``method``: ``"conv"`` (default on the
    CPU: the grouped ``conv2d`` torchvision itself runs, the same sums) or ``"taps"`` (default elsewhere: a
    float32 tap-by-tap sum, no TF32 convolution on a GPU; within float32 rounding of ``"conv"``).
    """
    n, c, h, w = images.shape
    size = kernels.shape[-1]
    if size <= 1 or n == 0:
        return images  # a 1x1 kernel is [1.0]: torchvision returns the image
    pad = size // 2
    rows, cols = _reflect_index(h, pad, images.device), _reflect_index(w, pad, images.device)
    padded = images.index_select(2, rows).index_select(3, cols)  # (N, C, H + 2p, W + 2p)
    kernels = kernels.to(device=images.device, dtype=torch.float32)
    if method is None:
        method = "conv" if images.device.type == "cpu" else "taps"
    if method == "conv":
        weight = kernels.repeat_interleave(c, dim=0).unsqueeze(1)  # (N*C, 1, k, k)
        out = F.conv2d(padded.view(1, n * c, h + 2 * pad, w + 2 * pad), weight, groups=n * c).view(n, c, h, w)
    elif method == "taps":
        out = torch.zeros_like(images)
        weights = kernels.view(n, 1, size, size)
        for i in range(size):
            for j in range(size):
                out.add_(padded[:, :, i : i + h, j : j + w] * weights[:, :, i : i + 1, j : j + 1])
    else:
        raise ValueError(f"method must be 'conv' or 'taps', got {method!r}")
    if round_levels:
        out = out.round_().clamp_(0.0, 255.0)
    return images.copy_(out)
