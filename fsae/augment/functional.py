"""Batched photometric ops with one magnitude per sample, in place.

Every op here takes a contiguous batch ``images`` of shape ``(N, 3, H, W)``,
float32, values in ``[0, 1]``, on any device, and (where the op has a magnitude) a
tensor ``magnitude`` of shape ``(N,)``, float32, on the same device: one value
per sample.  It **modifies ``images`` in place** and returns it (the trailing
underscore follows torch's convention): call it on a buffer you own, e.g. a
``clone()``.  In place, because on the CPU every fresh image-sized temporary
costs a page-faulting allocation that is several times the price of the
arithmetic (the perturbation modules run each op on a slice of their own
working buffer).  Outputs stay in ``[0, 1]``.

Semantics are PIL's (``ImageEnhance`` / ``ImageOps``, what the original
research code ran on ``uint8`` images) carried over to float images, and
torchvision's for the ColorJitter hue:

=================  ================================================================  ==================
op                 float semantics (x in [0, 1], f = per-sample magnitude)           PIL / torchvision
=================  ================================================================  ==================
``autocontrast_``  per-channel ``(x - min) / (max - min)``; constant channel kept    ``autocontrast``
``brightness_``    ``clamp(f * x)``                                                  ``Brightness``
``color_``         ``clamp(f * x + (1 - f) * gray(x))``                              ``Color``
``contrast_``      ``clamp(f * x + (1 - f) * mean(gray(x)))``                        ``Contrast``
``sharpness_``     ``f * x + (1 - f) * smooth(x)``, smooth = [[1,1,1],[1,5,1],         ``Sharpness``
                   [1,1,1]] / 13 on the interior, border pixels unchanged
``equalize_``      per-channel 256-bin histogram equalisation of ``round(255 x)``    ``equalize``
``posterize_``     keep the top ``f`` bits of ``round(255 x)``                       ``posterize``
``solarize_``      ``1 - x`` where ``x >= f``, else ``x``                            ``solarize(255 f)``
``hue_``           rotate the HSV hue by ``f`` turns (``f`` in [-0.5, 0.5])          ``adjust_hue``
``gaussian_blur_`` Gaussian of std ``f`` pixels, replicate border                    ``GaussianBlur(f)``
=================  ================================================================  ==================

gray = ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as PIL's ``convert("L")``
and kornia's ``rgb_to_grayscale``).  Differences from the 8-bit originals are
rounding only: PIL rounds every op's result to ``uint8`` (and truncates in
``blend`` / ``autocontrast``), and ``Contrast`` rounds the grey mean to an
integer; here values stay continuous between ops.  ``equalize_`` and
``posterize_`` are lookup tables on 8-bit levels and quantise their output to
multiples of 1/255 (as the originals do); on 8-bit-valued input
``posterize_``, ``solarize_`` and ``equalize_`` equal PIL's output exactly (the
same uint8; ``1 - x`` of solarize to the last bit).
PIL's ``GaussianBlur`` is an approximation by three box blurs; ``gaussian_blur_``
is a true (truncated) Gaussian, kornia's.

kornia: the Gaussian kernel is ``kornia.filters.get_gaussian_kernel1d``'s (:func:`gaussian_kernel1d`).
The kornia functions with the same semantics, ``kornia.enhance.adjust_brightness_accumulative``,
``adjust_saturation_with_gray_subtraction``, ``adjust_contrast_with_mean_subtraction``,
``sharpness``, ``equalize``, ``posterize``, ``solarize``, ``adjust_hue`` and
``kornia.filters.gaussian_blur2d`` (all of which take one factor per sample), are
the oracles of the tests: the functions here give the same values (to float
rounding) but run in place with few temporaries.  kornia's allocate two to five
image-sized tensors per call, and on the CPU several take slow paths
(``gaussian_blur2d`` loops over the taps, ``equalize`` scatters float counts with
int64 indices, ``adjust_hue`` goes through a full HSV image, a (N, C, H, W)
depthwise convolution is several times slower than over (1, N*C, H, W)): with
them the batched strong view is no faster than the per-image PIL loop it
replaces (0.6-1.05x its images/s on a 2-core CPU, against 2.1-3.4x with the functions here,
``benchmarks/bench_augment.py --with-kornia``).  Where kornia's
semantics differ they follow PIL: ``equalize`` and ``posterize`` read the 8-bit
level as ``floor(255 x)``, not ``round(255 x)`` (the same on 8-bit input; on
continuous input a value just below a level drops a level);
``normalize_min_max`` maps a constant channel to 0 where PIL's autocontrast keeps
it; ``adjust_brightness`` is additive, PIL's multiplicative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fsae.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "autocontrast_",
    "blur_kernel_size",
    "brightness_",
    "color_",
    "contrast_",
    "equalize_",
    "gaussian_blur_",
    "gaussian_kernel1d",
    "grayscale",
    "hue_",
    "imagenet_normalize",
    "identity_",
    "posterize_",
    "sharpness_",
    "solarize_",
]

#: ITU-R BT.601 luma weights, as PIL's ``convert("L")`` and kornia's ``rgb_to_grayscale``.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _per_sample(magnitude: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, 1), to broadcast over (N, C, H, W)."""
    return magnitude.view(-1, 1, 1, 1)


def _levels_to_unit_(levels: torch.Tensor) -> torch.Tensor:
    """``levels / 255`` in place, correctly rounded on every device: exactly what ``uint8 / 255`` gives.

    A Python-number divisor reaches PyTorch's CUDA kernel as a CPU scalar, which it turns into a
    multiplication by the reciprocal (one ulp off for some levels); a 0-dim tensor on the tensor's own
    device is a true division there too.
    """
    return levels.div_(torch.full((), 255.0, dtype=levels.dtype, device=levels.device))


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W) -> (N, 1, H, W)``: ``0.299 R + 0.587 G + 0.114 B`` (= ``kornia.color.rgb_to_grayscale``)."""
    r, g, b = images.unbind(dim=1)
    gray = torch.mul(r, GRAY_WEIGHTS[0])
    return gray.add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def identity_(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``images`` unchanged (the RandAugment ``Identity`` op)."""
    return images


def brightness_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Brightness``: ``clamp(f * x, 0, 1)`` (multiplicative, unlike kornia's additive
    ``adjust_brightness``).  Same values as ``kornia.enhance.adjust_brightness_accumulative``."""
    return images.mul_(_per_sample(magnitude)).clamp_(0.0, 1.0)


def color_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Color``: blend with the grey image, ``clamp(gray + f * (x - gray))``.

    Same values as ``kornia.enhance.adjust_saturation_with_gray_subtraction`` (and torchvision's
    ``adjust_saturation``, up to its 0.2989 red weight).
    """
    gray = grayscale(images)  # (N, 1, H, W): a third of the image
    return torch.lerp(gray, images, _per_sample(magnitude), out=images).clamp_(0.0, 1.0)


def contrast_(images: torch.Tensor, magnitude: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ``ImageEnhance.Contrast``: blend with the mean grey level, ``clamp(m + f * (x - m))``, m = mean(gray(x)).

    Same values as ``kornia.enhance.adjust_contrast_with_mean_subtraction``.  PIL rounds the mean of
    its 8-bit grey image to an integer; here it stays exact (torchvision's tensor path does the same).
    ``region``: optional ``(N, 2)`` integer ``(height, width)``: the mean over each sample's top-left
    ``height x width`` only (an image on a larger canvas); the blend still covers the whole plane.
    """
    n, c = images.shape[:2]
    if region is None:
        channel_means = images.view(n, c, -1).mean(dim=2)  # (N, 3): the grey image is not materialised
    else:
        h, w = images.shape[-2:]
        region = region.to(torch.int64)
        rows = (torch.arange(h, device=images.device) < region[:, :1]).to(images.dtype)  # (N, H)
        cols = (torch.arange(w, device=images.device) < region[:, 1:]).to(images.dtype)  # (N, W)
        count = (rows.sum(dim=1) * cols.sum(dim=1)).clamp_min(1.0)
        channel_means = torch.einsum("nchw,nh,nw->nc", images, rows, cols) / count[:, None]
    r, g, b = channel_means.unbind(dim=1)
    mean = (r * GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2])  # (N,)
    f = _per_sample(magnitude)
    # (mul_, add_: an addcmul or lerp with the (N, 1, 1, 1) mean broadcast takes a slow path on the CPU)
    return images.mul_(f).add_(_per_sample(mean) * (1.0 - f)).clamp_(0.0, 1.0)


def sharpness_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with the ``ImageFilter.SMOOTH``-filtered image.

    ``smooth = conv3x3(x, [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13)`` on the interior; PIL's filter
    copies the one-pixel border, so the border is unchanged.  Result ``clamp(smooth + f * (x - smooth))``.
    Same values as ``kornia.enhance.sharpness``.  Images smaller than 3x3 are returned as is.
    """
    h, w = images.shape[-2:]
    if h < 3 or w < 3:
        return images
    # 3x3 box sum from shifted slices (a depthwise conv2d is several times slower on the CPU for few planes),
    # then interior = f x + (1 - f) (box + 4 x) / 13 = (f + 4 (1 - f) / 13) x + ((1 - f) / 13) box.
    rows = torch.add(images[:, :, :-2], images[:, :, 2:]).add_(images[:, :, 1:-1])  # (N, C, H-2, W)
    box = torch.add(rows[..., :-2], rows[..., 2:]).add_(rows[..., 1:-1])  # (N, C, H-2, W-2)
    f = _per_sample(magnitude)
    rest = (1.0 - f) / 13.0
    interior = images[:, :, 1:-1, 1:-1]
    interior.mul_(f + 4.0 * rest).add_(box.mul_(rest)).clamp_(0.0, 1.0)
    return images


def autocontrast_(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0): stretch each channel's ``[min, max]`` to ``[0, 1]``.

    A constant channel is left unchanged (as PIL does; kornia's ``normalize_min_max`` maps it to 0).
    PIL's 8-bit table truncates, so it is up to one level below this continuous version.
    """
    n, c = images.shape[:2]
    planes = images.view(n * c, -1)
    lo, hi = planes.amin(dim=1), planes.amax(dim=1)  # (N*C,); faster than aminmax(dim=...) on the CPU
    flat = hi <= lo
    lo.masked_fill_(flat, 0.0)
    span = (hi - lo).masked_fill_(flat, 1.0)
    # Dividing (not multiplying by 1 / span) maps max to exactly 1: no clamp needed.
    return images.sub_(lo.view(n, c, 1, 1)).div_(span.view(n, c, 1, 1))


def equalize_(images: torch.Tensor, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """PIL ``ImageOps.equalize``: per-channel histogram equalisation on the 8-bit levels ``round(255 x)``.

    Per (sample, channel) plane with histogram ``h`` over the 256 levels:
    ``step = (sum(h) - h[last nonzero]) // 255``; if ``step == 0`` the plane is only quantised,
    else level ``i`` maps to ``(step // 2 + sum(h[:i])) // step`` (at most 255).  The output is
    a multiple of 1/255.  On 8-bit-valued input this is kornia's ``equalize`` (and PIL's) exactly;
    kornia reads the level as ``floor(255 x)``, which drops a continuous value just below a level
    (e.g. ``k / 255 - 1e-7`` after a float op) to ``k - 1``; rounding keeps it on ``k``.
    """
    n, c, h, w = images.shape
    planes = n * c
    # One flat index per pixel: its plane's 256-entry block + its level (int32: index_select and bincount take it).
    index = images.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.int32).view(planes, -1)
    index += torch.arange(0, planes * 256, 256, device=images.device, dtype=torch.int32).unsqueeze(1)
    index = index.view(-1)
    histo = torch.bincount(index, minlength=planes * 256).view(planes, 256)
    ar = torch.arange(256, device=images.device)
    last = torch.where(histo > 0, ar, 0).amax(dim=1, keepdim=True)
    step = (histo.sum(dim=1, keepdim=True) - histo.gather(1, last)) // 255  # (P, 1)
    below = histo.cumsum(dim=1) - histo  # pixels strictly below each level
    table = ((step // 2 + below) // step.clamp_min(1)).clamp_(max=255)
    table = _levels_to_unit_(torch.where(step == 0, ar, table).to(images.dtype))  # step 0: the plane keeps its levels
    torch.index_select(table.view(-1), 0, index, out=images.view(-1))
    return images


def posterize_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.posterize``: keep the top ``bits`` bits of the 8-bit level ``round(255 x)``.

    ``magnitude`` holds the bits per sample (integers 1..8 as floats).  Output = a multiple of
    ``2 ** (8 - bits) / 255``; on 8-bit-valued input equal to PIL's and to kornia's ``posterize``.
    kornia truncates ``255 x`` instead of rounding it: a continuous value just below a multiple
    of the step (``16 / 255 - 1e-7``, 4 bits) falls a whole step (to 0) there.
    """
    step = _per_sample(torch.exp2(8.0 - magnitude))  # quantisation step in 8-bit levels
    # floor(round(255 x) / step) == floor((255 x + 0.5) / step) for an integer step
    images.mul_(255.0 / step).add_(0.5 / step).floor_()
    return _levels_to_unit_(images.mul_(step))


def solarize_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.solarize``: invert (``1 - x``) the values ``>= threshold``; keep the others.

    ``magnitude`` = threshold in ``[0, 1]`` (PIL's threshold ``255 * f`` on 8-bit levels).  Same
    values as ``kornia.enhance.solarize(x, f)``.
    """
    inverted = torch.ge(images, _per_sample(magnitude), out=torch.empty_like(images))  # 1.0 / 0.0
    return images.sub_(inverted).abs_()  # |x - 1| = 1 - x where inverted, |x - 0| = x elsewhere


def hue_(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_hue``: rotate the HSV hue by ``f`` turns (``f`` in [-0.5, 0.5]).

    Same values as ``kornia.enhance.adjust_hue(x, 2 * pi * f)`` and torchvision's tensor
    ``adjust_hue``; torchvision's PIL path quantises H, S and V to 8 bits on the way and so
    differs by a few levels.  Computed without the HSV image, in a few passes over ``(N, H, W)``
    planes: the value ``v = max(r, g, b)`` and chroma ``c = v - min(r, g, b)`` are invariant and
    the hue ``h`` (in sextants) rotates by ``6 f``; channel ``k`` comes back as
    ``v - c * clamp(2 - d, 0, 1)`` with ``d`` the circular distance (period 6) between ``h + 6 f``
    and 3 (R), 5 (G), 1 (B): the closed form of HSV -> RGB.  The shift moves the anchors instead
    of the hue, so no per-pixel modulo is needed (``h`` in [-1, 5), anchor ``a`` wrapped into
    [-1, 5): ``d = 3 - ||h - a| - 3|``), and everything is scaled by ``c`` so that no per-pixel
    division is either: ``c * clamp(2 - d, 0, 1) = clamp(||c h - c a| - 3 c| - c, 0, c)``.
    """
    r, g, b = images.unbind(dim=1)  # views, (N, H, W)
    v = images.amax(dim=1)
    chroma = torch.sub(v, images.amin(dim=1))
    # c * h by the max channel (ties: R, then G, as torchvision): R (g - b), G (b - r + 2c), B (r - g + 4c).
    # Selected with lerp on 0/1 weights (exact: lerp returns the end point at weight 1), several times
    # faster than torch.where on the CPU.
    ch = torch.sub(r, g).add_(chroma, alpha=4.0)
    tmp = torch.sub(b, r).add_(chroma, alpha=2.0)
    pick = torch.eq(v, g, out=torch.empty_like(v))
    torch.lerp(ch, tmp, pick, out=ch)
    torch.sub(g, b, out=tmp)
    torch.lerp(ch, tmp, torch.eq(v, r, out=pick), out=ch)
    shift = 6.0 * magnitude.view(-1, 1, 1)
    zero = chroma.new_zeros(())
    for channel, anchor in ((0, 3.0), (1, 5.0), (2, 1.0)):
        moved = torch.remainder(anchor - shift + 1.0, 6.0) - 1.0  # (N, 1, 1), in [-1, 5)
        torch.addcmul(ch, moved, chroma, value=-1.0, out=tmp).abs_()  # c |h - a|
        tmp.sub_(chroma, alpha=3.0).abs_().sub_(chroma)  # c (||h - a| - 3| - 1)
        tmp.clamp_(zero, chroma)
        torch.sub(v, tmp, out=images[:, channel])  # v - c g is in [v - c, v]: no clamp
    return images


def blur_kernel_size(sigma: float, height: int, width: int) -> int:
    """Odd Gaussian window for std ``sigma``: ``2 * ceil(3 sigma) + 1``, at most the image size (made odd)."""
    size = 2 * math.ceil(3.0 * sigma) + 1
    limit = min(height, width)
    limit -= 1 - limit % 2  # largest odd number <= min(H, W)
    return max(1, min(size, limit))


def gaussian_kernel1d(kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """Normalised 1-D Gaussian windows: ``sigma`` ``(N, 1)`` float -> ``(N, kernel_size)`` of its dtype.

    Tap ``i`` weighs ``exp(-(i - k // 2)^2 / (2 sigma^2))`` over the window's sum (``kernel_size`` odd), the
    values of ``kornia.filters.get_gaussian_kernel1d``.  ``sigma = 0`` is the unit impulse.  Half-precision
    sigmas are computed in float32 and rounded once.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    work = sigma.float() if sigma.dtype in (torch.float16, torch.bfloat16) else sigma
    offsets = torch.arange(kernel_size, device=sigma.device, dtype=work.dtype) - kernel_size // 2
    denominator = 2.0 * work.square()
    impulse = denominator == 0
    # the centre tap weighs exp(0) = 1, so the sum never underflows; sigma = 0 selects the impulse instead
    gauss = torch.exp(-offsets.square() / torch.where(impulse, torch.ones_like(denominator), denominator))
    gauss = torch.where(impulse, (offsets == 0).to(work.dtype), gauss)
    return (gauss / gauss.sum(-1, keepdim=True)).to(sigma.dtype)


def _blur_conv(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable blur as two depthwise convolutions over the (1, N*C, H, W) view; ``kernel`` (N*C, k)."""
    n, c, h, w = images.shape
    size = kernel.shape[1]
    radius = size // 2
    padded = F.pad(images.view(1, n * c, h, w), (radius, radius, radius, radius), mode="replicate")
    # oneDNN's depthwise kernels are fast and steady in channels-last; in NCHW their speed swings several-fold
    # with the number of planes.
    padded = padded.contiguous(memory_format=torch.channels_last)
    rows = F.conv2d(padded, kernel.view(n * c, 1, 1, size), groups=n * c)
    return F.conv2d(rows, kernel.view(n * c, 1, size, 1), groups=n * c).view(n, c, h, w)


def _blur_taps(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable blur tap by tap (pairs of symmetric taps), in float32 arithmetic: no TF32 convolution."""
    n, c, h, w = images.shape
    radius = kernel.shape[1] // 2
    weights = kernel.view(n, c, -1)[:, :, :, None, None]  # (N, C, k, 1, 1)
    out = images
    for dim, pad in ((3, (radius, radius, 0, 0)), (2, (0, 0, radius, radius))):
        padded = F.pad(out, pad, mode="replicate")
        size = out.shape[dim]
        acc = padded.narrow(dim, radius, size) * weights[:, :, radius]
        for offset in range(1, radius + 1):
            pair = padded.narrow(dim, radius - offset, size) + padded.narrow(dim, radius + offset, size)
            acc.addcmul_(pair, weights[:, :, radius + offset])
        out = acc
    return out


def gaussian_blur_(
    images: torch.Tensor, magnitude: torch.Tensor, kernel_size: int | None = None, method: str | None = None
) -> torch.Tensor:
    """Gaussian blur with std ``f`` pixels per sample (both axes), replicate border.

    ``kernel_size`` (odd) defaults to :func:`blur_kernel_size` of the largest sigma; the perturbation
    modules pass the one of their upper sigma bound so that a sample's result depends on its own
    sigma only.  Values equal ``kornia.filters.gaussian_blur2d(x, kernel_size, sigma, "replicate")``
    (kernel: :func:`gaussian_kernel1d`).  ``method``: ``"conv"`` (default on the
    CPU) runs one replicate pad and two depthwise convolutions over the ``(1, N*C, H, W)`` view in
    channels-last, several times faster there than the tap-by-tap loop ``gaussian_blur2d`` takes;
    ``"taps"`` (default elsewhere) accumulates symmetric tap pairs in float32, which on a GPU is
    cheap and keeps the result off TF32 convolutions, so CPU and CUDA agree to float rounding.
    """
    n, c, h, w = images.shape
    if kernel_size is None:
        kernel_size = blur_kernel_size(float(magnitude.max()), h, w)
    if kernel_size <= 1:
        return images
    if method is None:
        method = "conv" if images.device.type == "cpu" else "taps"
    if method not in ("conv", "taps"):
        raise ValueError(f"method must be 'conv' or 'taps', got {method!r}")
    kernel = gaussian_kernel1d(kernel_size, magnitude.view(-1, 1).to(images.dtype))  # (N, k)
    kernel = kernel.repeat_interleave(c, dim=0)  # (N*C, k): one per plane
    blurred = _blur_conv(images, kernel) if method == "conv" else _blur_taps(images, kernel)
    return images.copy_(blurred)


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` with the ImageNet mean and std (:mod:`fsae.constants`), what the networks take.

    ``images``: ``(B, 3, H, W)`` RGB, float in ``[0, 1]`` (the result has its dtype and device), or ``uint8`` levels
    (``x = images / 255``; float32 out, computed in float64 and rounded once, as the authors' ``Normalize``: numpy
    float64 arithmetic stored into a float32 array).
    """
    x = images.double() / 255 if images.dtype == torch.uint8 else images
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = (x - mean) / std
    return out.float() if images.dtype == torch.uint8 else out
