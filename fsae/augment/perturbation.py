"""The weak and strong photometric perturbations of FSAE (METHOD.md section 3), batched on the input's device.

Both modules follow kornia.augmentation's contract: :meth:`generate_parameters`
draws every random choice for a batch (on the CPU, from a ``torch.Generator``)
and returns a dict of tensors; :meth:`apply` applies given parameters, so a
view can be replayed; :meth:`forward` does both and keeps the parameters in
``last_params``.  Parameters are drawn on the CPU and only then moved to the
images' device, so one seed gives the same views on the CPU and on CUDA (to
float rounding).

Example:
    >>> import torch
    >>> from fsae.augment import StrongPerturbation
    >>> strong = StrongPerturbation(seed=0)
    >>> images = torch.rand(4, 3, 64, 64)           # float in [0, 1], NCHW RGB
    >>> views = strong(images)
    >>> views.shape, views.dtype
    (torch.Size([4, 3, 64, 64]), torch.float32)
    >>> params = strong.last_params                 # or strong.generate_parameters(4)
    >>> sorted(params)
    ['blur', 'brightness', 'contrast', 'hue', 'jitter_order', 'magnitudes', 'ops', 'saturation', 'sigma']
    >>> torch.equal(strong.apply(images, params), views)   # replay
    True
    >>> again = StrongPerturbation(seed=0)(images)  # same seed, same views
    >>> torch.equal(again, views)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from . import functional as AF
from ._grouped import GroupedOp, apply_grouped

__all__ = ["JITTER_COMPONENTS", "RANDAUGMENT_OPS", "StrongPerturbation", "WeakPerturbation"]

#: The 9 photometric RandAugment ops of METHOD.md section 3; ``params["ops"]`` indexes this tuple.
RANDAUGMENT_OPS: tuple[str, ...] = (
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "equalize",
    "identity",
    "posterize",
    "solarize",
)

#: ColorJitter components in torchvision's order; ``params["jitter_order"]`` holds permutations of 0..3.
JITTER_COMPONENTS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")

# The op table the slots index (entry 0 = identity).  The last entry (blur) is bound per call.
_TABLE: tuple[GroupedOp | None, ...] = (
    None,
    AF.autocontrast_,
    AF.brightness_,
    AF.color_,
    AF.contrast_,
    AF.sharpness_,
    AF.equalize_,
    AF.posterize_,
    AF.solarize_,
    AF.hue_,
)
_BLUR = len(_TABLE)
_RANDAUGMENT_TO_TABLE = torch.tensor([1, 2, 3, 4, 5, 6, 0, 7, 8])
_JITTER_TO_TABLE = torch.tensor([2, 4, 3, 9])
# RandAugment magnitudes: enhance factors ~U[0.05, 0.95], posterize bits ~int(U[4, 8]), solarize threshold ~U[0, 1].
_FACTOR_RANGE = (0.05, 0.95)
_POSTERIZE_BITS = (4.0, 8.0)

Range = tuple[float, float]


def _jitter_range(name: str, value: float | Sequence[float], *, hue: bool = False) -> Range:
    """torchvision ColorJitter's argument rule: x -> [max(0, 1 - x), 1 + x] (hue: [-x, x]), or a (min, max) pair."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"color_jitter {name} must be non-negative, got {value}")
        lo, hi = (-float(value), float(value)) if hue else (max(0.0, 1.0 - value), 1.0 + value)
    else:
        lo, hi = (float(v) for v in value)
    bounds = (-0.5, 0.5) if hue else (0.0, float("inf"))
    if not bounds[0] <= lo <= hi <= bounds[1]:
        raise ValueError(
            f"color_jitter {name} range must satisfy {bounds[0]} <= min <= max <= {bounds[1]}, got {value}"
        )
    return lo, hi


def _uniform(size: Sequence[int], bounds: Range, generator: torch.Generator | None) -> torch.Tensor:
    return torch.empty(size).uniform_(bounds[0], bounds[1], generator=generator)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype} (use x.float() / 255)")


class _Photometric(nn.Module):
    """Shared machinery: generator handling, the forward/apply contract, dtype and device handling."""

    #: Grouping policy of :func:`fsae.augment._grouped.apply_grouped` (``None``: by device; ``math.inf``:
    #: always one call per op and slot; ``0``: one call per run of samples).  Does not change the values.
    call_cost: float | None = None

    def __init__(self, color_jitter: Sequence[float], generator: torch.Generator | None, seed: int | None) -> None:
        super().__init__()
        if len(color_jitter) != len(JITTER_COMPONENTS):
            raise ValueError(f"color_jitter must be (brightness, contrast, saturation, hue), got {color_jitter}")
        self.jitter_ranges: tuple[Range, ...] = tuple(
            _jitter_range(name, value, hue=name == "hue")
            for name, value in zip(JITTER_COMPONENTS, color_jitter, strict=True)
        )
        if generator is not None and seed is not None:
            raise ValueError("pass either generator or seed, not both")
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(
                f"generator must be a CPU torch.Generator (parameters are drawn on the CPU), got {generator.device}"
            )
        self.generator = generator
        self.last_params: dict[str, torch.Tensor] | None = None

    # -- parameters --------------------------------------------------------------------------------------------------
    def _resolve(self, generator: torch.Generator | None) -> torch.Generator | None:
        return generator if generator is not None else self.generator

    def _jitter_parameters(self, batch_size: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        params = {
            name: _uniform((batch_size,), bounds, generator)
            for name, bounds in zip(JITTER_COMPONENTS, self.jitter_ranges, strict=True)
        }
        params["jitter_order"] = torch.rand(batch_size, 4, generator=generator).argsort(dim=1)
        return params

    @staticmethod
    def _jitter_slots(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4) table choices and magnitudes; a component at its neutral value (1, or 0 for hue) is skipped."""
        factors = torch.stack([params[name].float() for name in JITTER_COMPONENTS], dim=1)  # (B, 4)
        order = params["jitter_order"].long()
        magnitudes = factors.gather(1, order)
        choices = _JITTER_TO_TABLE[order]
        neutral = torch.where(order == 3, magnitudes == 0.0, magnitudes == 1.0)
        return choices.masked_fill(neutral, 0), magnitudes

    def generate_parameters(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _slots(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _table(self, height: int, width: int) -> Sequence[GroupedOp | None]:
        return _TABLE

    # -- application -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply the perturbation described by ``params`` (from :meth:`generate_parameters`) to ``images``.

        Args:
            images: ``(B, 3, H, W)`` RGB, floating point (float32; float16 / bfloat16 / float64 are
                computed in float32 and cast back), values in ``[0, 1]`` (clamped first), any device.
            params: dict of CPU tensors with leading dimension ``B``.

        Returns:
            A new ``(B, 3, H, W)`` tensor, same dtype and device, values in ``[0, 1]``, pixel-aligned
            with ``images``.  Deterministic given ``params``.
        """
        _check_images(images)
        # The working buffer, float32 and contiguous, clamped into [0, 1] (one pass for float32 input).
        if images.dtype == torch.float32:
            work = torch.clamp(
                images, 0.0, 1.0, out=torch.empty(images.shape, dtype=torch.float32, device=images.device)
            )
        else:
            work = images.to(dtype=torch.float32, memory_format=torch.contiguous_format).clamp_(0.0, 1.0)
        choices, magnitudes = self._slots(params)
        if choices.shape[0] != images.shape[0]:
            raise ValueError(f"params are for a batch of {choices.shape[0]}, images have {images.shape[0]}")
        out = apply_grouped(work, choices, magnitudes, self._table(*images.shape[-2:]), self.call_cost)
        return out if images.dtype == torch.float32 else out.to(images.dtype)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw parameters for the batch (from ``generator``, else the module's, else torch's default
        CPU generator), keep them in ``last_params``, and apply them.  Shapes as in :meth:`apply`."""
        _check_images(images)
        params = self.generate_parameters(images.shape[0], generator)
        self.last_params = params
        return self.apply(images, params)


class WeakPerturbation(_Photometric):
    """Photometric part of FSAE's weak view: torchvision-style ColorJitter, per sample, batched.

    Brightness, contrast and saturation factors ~ U[max(0, 1 - x), 1 + x] and a hue shift ~ U[-h, h]
    (turns) are drawn per sample and applied in a random order per sample, as torchvision's
    ``ColorJitter`` does image by image (semantics: :mod:`fsae.augment.functional`).  Photometric
    only: the output is pixel-aligned with the input.

    Args:
        color_jitter: ``(brightness, contrast, saturation, hue)``; each a non-negative float (range
            as above) or a ``(min, max)`` pair, torchvision's rule; 0 disables a component.
        generator: CPU ``torch.Generator`` used when :meth:`forward` gets none.
        seed: alternative to ``generator``: the module makes ``torch.Generator().manual_seed(seed)``.
            With neither, draws come from torch's default CPU generator (``torch.manual_seed``).
            Under data parallelism give each process its own seed (e.g. ``seed + rank``).

    Parameters (:meth:`generate_parameters`, CPU tensors, ``B`` = batch size): ``brightness``,
    ``contrast``, ``saturation`` (B,) float32 factors; ``hue`` (B,) float32 shift in turns;
    ``jitter_order`` (B, 4) int64, row = permutation of (brightness, contrast, saturation, hue).

    Example:
        >>> weak = WeakPerturbation(seed=0)
        >>> x = torch.rand(2, 3, 16, 16)
        >>> y = weak(x)
        >>> y.shape == x.shape and bool(y.min() >= 0) and bool(y.max() <= 1)
        True
    """

    def __init__(
        self,
        color_jitter: Sequence[float] = (0.3, 0.3, 0.3, 0.1),
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(color_jitter, generator, seed)

    def generate_parameters(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw the parameters of a batch: jitter factors, then the order (one draw sequence, on the CPU)."""
        return self._jitter_parameters(batch_size, self._resolve(generator))

    def _slots(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._jitter_slots(params)

    def extra_repr(self) -> str:
        return f"color_jitter={self.jitter_ranges}"


class StrongPerturbation(_Photometric):
    """Photometric part of FSAE's strong view: ColorJitter, Gaussian blur, RandAugment; per sample, batched.

    In order (METHOD.md section 3): a fresh ColorJitter as in :class:`WeakPerturbation`; a Gaussian
    blur with probability ``p_blur``, sigma ~ U[blur_sigma] per sample (window
    ``2 * ceil(3 * blur_sigma[1]) + 1``, at most the image size, replicate border); then ``n_ops``
    ops per sample drawn with replacement from :data:`RANDAUGMENT_OPS` (AutoContrast, Brightness,
    Color, Contrast, Sharpness with factor ~ U[0.05, 0.95]; Equalize; Identity; Posterize with bits
    ~ int(U[4, 8]); Solarize with threshold ~ U[0, 1]), magnitudes per sample.  Op semantics are
    PIL's (:mod:`fsae.augment.functional`).  Photometric only: the output is pixel-aligned with the
    input.  In each slot, each op drawn runs on the samples that drew it together (gathered into one
    sub-batch; on the CPU, where copying a large sample costs more than a call, on each run of
    consecutive such samples): no call per sample.

    Args:
        n_ops: RandAugment ops per sample.
        color_jitter: as in :class:`WeakPerturbation`.
        blur_sigma: ``(min, max)`` Gaussian std in pixels, ``0 < min <= max``.
        p_blur: probability of the blur per sample.
        generator, seed: as in :class:`WeakPerturbation`.

    Parameters (:meth:`generate_parameters`, CPU tensors): the jitter ones of
    :class:`WeakPerturbation`; ``blur`` (B,) bool; ``sigma`` (B,) float32 (drawn for every sample,
    used where ``blur``); ``ops`` (B, n_ops) int64 indices into :data:`RANDAUGMENT_OPS`, applied left
    to right; ``magnitudes`` (B, n_ops) float32: the factor, bits or threshold of each op (0 for the
    ops without one).
    """

    def __init__(
        self,
        n_ops: int = 5,
        color_jitter: Sequence[float] = (0.3, 0.3, 0.3, 0.1),
        blur_sigma: Sequence[float] = (0.1, 2.0),
        p_blur: float = 0.5,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(color_jitter, generator, seed)
        if n_ops < 0:
            raise ValueError(f"n_ops must be >= 0, got {n_ops}")
        lo, hi = (float(s) for s in blur_sigma)
        if not 0.0 < lo <= hi:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {blur_sigma}")
        if not 0.0 <= p_blur <= 1.0:
            raise ValueError(f"p_blur must be in [0, 1], got {p_blur}")
        self.n_ops = int(n_ops)
        self.blur_sigma: Range = (lo, hi)
        self.p_blur = float(p_blur)

    def generate_parameters(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw the parameters of a batch, in this order: jitter factors and order, blur flags and
        sigmas, RandAugment op ids and magnitudes (one draw sequence, on the CPU)."""
        generator = self._resolve(generator)
        params = self._jitter_parameters(batch_size, generator)
        params["blur"] = torch.rand(batch_size, generator=generator) < self.p_blur
        params["sigma"] = _uniform((batch_size,), self.blur_sigma, generator)
        ops = torch.randint(len(RANDAUGMENT_OPS), (batch_size, self.n_ops), generator=generator)
        u = torch.rand(batch_size, self.n_ops, generator=generator)
        factor = _FACTOR_RANGE[0] + (_FACTOR_RANGE[1] - _FACTOR_RANGE[0]) * u
        bits = torch.floor(_POSTERIZE_BITS[0] + (_POSTERIZE_BITS[1] - _POSTERIZE_BITS[0]) * u)
        index = {name: k for k, name in enumerate(RANDAUGMENT_OPS)}
        magnitudes = torch.where(ops == index["posterize"], bits, torch.where(ops == index["solarize"], u, factor))
        without = torch.tensor([index["autocontrast"], index["equalize"], index["identity"]])
        params["ops"] = ops
        params["magnitudes"] = magnitudes.masked_fill(torch.isin(ops, without), 0.0)
        return params

    def _slots(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        jitter_choices, jitter_magnitudes = self._jitter_slots(params)
        blur = params["blur"].bool().view(-1, 1)
        blur_choices = torch.where(blur, _BLUR, 0)
        ops = params["ops"].long()
        choices = torch.cat([jitter_choices, blur_choices, _RANDAUGMENT_TO_TABLE[ops]], dim=1)
        magnitudes = torch.cat(
            [jitter_magnitudes, params["sigma"].float().view(-1, 1), params["magnitudes"].float()], dim=1
        )
        return choices, magnitudes

    def _table(self, height: int, width: int) -> Sequence[GroupedOp | None]:
        kernel_size = AF.blur_kernel_size(self.blur_sigma[1], height, width)
        return (*_TABLE, functools.partial(AF.gaussian_blur_, kernel_size=kernel_size))

    def extra_repr(self) -> str:
        return (
            f"n_ops={self.n_ops}, color_jitter={self.jitter_ranges}, blur_sigma={self.blur_sigma}, p_blur={self.p_blur}"
        )
