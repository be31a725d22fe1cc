"""The weak and strong photometric perturbations of FSAE (docs/method.md §3), batched on the input's device.

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
from . import levels as LV
from ._grouped import GroupedOp, apply_grouped

__all__ = [
    "ARITHMETICS",
    "AUTHORS_RANDAUGMENT_ORDER",
    "BLURS",
    "JITTER_COMPONENTS",
    "RANDAUGMENT_OPS",
    "StrongPerturbation",
    "WeakPerturbation",
]

#: ``arithmetic=``: ``"float"`` runs the ops continuously on [0, 1] values (:mod:`fsae.augment.functional`);
#: ``"uint8"`` runs them on 8-bit levels with PIL's / torchvision's rounding after every op
#: (:mod:`fsae.augment.levels`), as the authors' PIL pipeline did.
ARITHMETICS: tuple[str, ...] = ("float", "uint8")
#: ``blur=``: ``"wide"``, our Gaussian of ``2 * ceil(3 * sigma_max) + 1`` taps with a replicate border
#: (kornia's kernel); ``"torchvision"``, torchvision's ``GaussianBlur(kernel_size)`` (its k x k kernel,
#: reflect border; rounded to levels in the uint8 arithmetic), the authors' blur.
BLURS: tuple[str, ...] = ("wide", "torchvision")

#: The 9 photometric RandAugment ops of docs/method.md §3; ``params["ops"]`` indexes this tuple.
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

#: The authors' RandAugment list (``augment_list(False)``) by name, in their order: their op index ``i`` is
#: ``RANDAUGMENT_OPS.index(AUTHORS_RANDAUGMENT_ORDER[i])`` here.
AUTHORS_RANDAUGMENT_ORDER: tuple[str, ...] = (
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "equalize",
    "identity",
    "posterize",
    "sharpness",
    "solarize",
)

#: ColorJitter components in torchvision's order; ``params["jitter_order"]`` holds permutations of 0..3.
JITTER_COMPONENTS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")

# The op tables the slots index (entry 0 = identity).  The last entry (the "wide" blur) is bound per call.
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
_LEVEL_TABLE: tuple[GroupedOp | None, ...] = (
    None,
    LV.autocontrast_,
    LV.brightness_,
    LV.color_,
    LV.contrast_,
    LV.sharpness_,
    LV.equalize_,
    LV.posterize_,
    LV.solarize_,
    LV.hue_,
)
_CONTRAST, _HUE = 4, 9
_BLUR = len(_TABLE)
_RANDAUGMENT_TO_TABLE = torch.tensor([1, 2, 3, 4, 5, 6, 0, 7, 8])
_JITTER_TO_TABLE = torch.tensor([2, 4, 3, 9])
# RandAugment magnitudes: enhance factors ~U[0.05, 0.95], posterize bits ~int(U[4, 8]), solarize threshold
# ~U[0, solarize_max) levels.
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


def _takes_region(op: GroupedOp | None) -> GroupedOp | None:
    """``op`` called as ``op(images, magnitude, region)`` by :func:`apply_grouped` with ``aux``: contrast uses the
    region (its mean), every other jitter op is pointwise and ignores it."""
    if op is None or op in (AF.contrast_, LV.contrast_):
        return op
    return lambda images, magnitude, region: op(images, magnitude)


class _Photometric(nn.Module):
    """Shared machinery: generator handling, the forward/apply contract, dtype and device handling.

    Images travel in a float32 *working buffer* in the arithmetic's units: ``[0, 1]`` values (``"float"``) or
    integer levels 0..255 (``"uint8"``); :meth:`to_work` / :meth:`from_work` convert, and the stages
    (:meth:`apply_jitter_`, and the strong view's :meth:`StrongPerturbation.apply_post_`) run in place on it, so
    that :class:`fsae.augment.views.TrainingViews` can jitter a whole image and crop before the rest.
    """

    #: Grouping policy of :func:`fsae.augment._grouped.apply_grouped` (``None``: by device; ``math.inf``:
    #: always one call per op and slot; ``0``: one call per run of samples).  Does not change the values.
    call_cost: float | None = None

    def __init__(
        self,
        color_jitter: Sequence[float],
        generator: torch.Generator | None,
        seed: int | None,
        arithmetic: str = "float",
    ) -> None:
        super().__init__()
        if len(color_jitter) != len(JITTER_COMPONENTS):
            raise ValueError(f"color_jitter must be (brightness, contrast, saturation, hue), got {color_jitter}")
        if arithmetic not in ARITHMETICS:
            raise ValueError(f"arithmetic must be one of {ARITHMETICS}, got {arithmetic!r}")
        self.arithmetic = arithmetic
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

    @property
    def levels(self) -> bool:
        """True in the ``"uint8"`` arithmetic (the working buffer holds levels 0..255)."""
        return self.arithmetic == "uint8"

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

    def _jitter_slots(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4) table choices and magnitudes; a component at its neutral value (1, or 0 for hue) is skipped.

        In the uint8 arithmetic a hue of 0 is skipped only when the hue is disabled (range (0, 0)): torchvision
        skips a disabled component, but a drawn 0 still makes PIL's lossy HSV round trip."""
        factors = torch.stack([params[name].float() for name in JITTER_COMPONENTS], dim=1)  # (B, 4)
        order = params["jitter_order"].long()
        magnitudes = factors.gather(1, order)
        choices = _JITTER_TO_TABLE[order]
        hue_neutral = magnitudes == 0.0
        if self.levels and self.jitter_ranges[3] != (0.0, 0.0):
            hue_neutral = torch.zeros_like(hue_neutral)
        neutral = torch.where(order == 3, hue_neutral, magnitudes == 1.0)
        return choices.masked_fill(neutral, 0), magnitudes

    def generate_parameters(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _table(self, height: int, width: int) -> Sequence[GroupedOp | None]:
        """The op table of the jitter and RandAugment slots (and, at ``_BLUR``, the "wide" blur)."""
        return _LEVEL_TABLE if self.levels else _TABLE

    # -- working buffer ----------------------------------------------------------------------------------------------
    def to_work(self, images: torch.Tensor) -> torch.Tensor:
        """A new float32 contiguous working buffer from ``(B, 3, H, W)`` floating ``images`` in [0, 1] (clamped):
        the values themselves (``"float"``), or the levels ``round(255 x)`` (``"uint8"``; input that is a
        multiple of 1/255 maps to its level exactly)."""
        if images.dtype == torch.float32:
            work = torch.clamp(
                images, 0.0, 1.0, out=torch.empty(images.shape, dtype=torch.float32, device=images.device)
            )
        else:
            work = images.to(dtype=torch.float32, memory_format=torch.contiguous_format).clamp_(0.0, 1.0)
        if self.levels:
            work.mul_(255.0).round_()
        return work

    def from_work(self, work: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The working buffer back in [0, 1] as ``dtype`` (levels / 255, correctly rounded, in place)."""
        if self.levels:
            work = AF._levels_to_unit_(work)
        return work if dtype == torch.float32 else work.to(dtype)

    @torch.no_grad()
    def apply_jitter_(
        self, work: torch.Tensor, params: dict[str, torch.Tensor], region: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The ColorJitter stage in place on the working buffer ``work`` ``(B, 3, H, W)`` float32.

        ``region``: optional ``(B, 2)`` integer ``(height, width)`` on ``work``'s device: each sample's image fills
        the top-left ``height x width`` of its plane (a resized image on a canvas), and Contrast takes its mean
        there, as on the whole image; the other components are pointwise."""
        choices, magnitudes = self._jitter_slots(params)
        if choices.shape[0] != work.shape[0]:
            raise ValueError(f"params are for a batch of {choices.shape[0]}, images have {work.shape[0]}")
        table = self._table(*work.shape[-2:])
        if region is not None:
            table = tuple(_takes_region(op) for op in table)
        return apply_grouped(work, choices, magnitudes, table, self.call_cost, aux=region)

    def _apply_post_(self, work: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return work

    # -- application -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply the perturbation described by ``params`` (from :meth:`generate_parameters`) to ``images``.

        Args:
            images: ``(B, 3, H, W)`` RGB, floating point (float32; float16 / bfloat16 / float64 are
                computed in float32 and cast back), values in ``[0, 1]`` (clamped first; in the uint8
                arithmetic read as the levels ``round(255 x)``), any device, any strides.
            params: dict of CPU tensors with leading dimension ``B``.

        Returns:
            A new ``(B, 3, H, W)`` tensor, same dtype and device, values in ``[0, 1]`` (multiples of 1/255 in
            the uint8 arithmetic), pixel-aligned with ``images``.  Deterministic given ``params``.
        """
        _check_images(images)
        work = self.to_work(images)
        self.apply_jitter_(work, params)
        self._apply_post_(work, params)
        return self.from_work(work, images.dtype)

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
    ``ColorJitter`` does image by image (semantics: :mod:`fsae.augment.functional`, or with
    ``arithmetic="uint8"`` torchvision's PIL path exactly: :mod:`fsae.augment.levels`).  Photometric
    only: the output is pixel-aligned with the input.

    Args:
        color_jitter: ``(brightness, contrast, saturation, hue)``; each a non-negative float (range
            as above) or a ``(min, max)`` pair, torchvision's rule; 0 disables a component.
        generator: CPU ``torch.Generator`` used when :meth:`forward` gets none.
        seed: alternative to ``generator``: the module makes ``torch.Generator().manual_seed(seed)``.
            With neither, draws come from torch's default CPU generator (``torch.manual_seed``).
            Under data parallelism give each process its own seed (e.g. ``seed + rank``).
        arithmetic: ``"float"`` (continuous) or ``"uint8"`` (8-bit levels, PIL's rounding), see
            :data:`ARITHMETICS`.

    Parameters (:meth:`generate_parameters`, CPU tensors, ``B`` = batch size): ``brightness``,
    ``contrast``, ``saturation`` (B,) float32 factors; ``hue`` (B,) float32 shift in turns;
    ``jitter_order`` (B, 4) int64, row = permutation of (brightness, contrast, saturation, hue).

    Example:
        >>> weak = WeakPerturbation(seed=0)
        >>> x = torch.rand(2, 3, 16, 16)
        >>> y = weak(x)
        >>> y.shape == x.shape and bool(y.min() >= 0) and bool(y.max() <= 1)
        True
        >>> z = WeakPerturbation(seed=0, arithmetic="uint8")(x)   # PIL's 8-bit levels
        >>> bool(((z * 255).round() - z * 255).abs().max() < 1e-4)
        True
    """

    def __init__(
        self,
        color_jitter: Sequence[float] = (0.3, 0.3, 0.3, 0.1),
        generator: torch.Generator | None = None,
        seed: int | None = None,
        arithmetic: str = "float",
    ) -> None:
        super().__init__(color_jitter, generator, seed, arithmetic)

    def generate_parameters(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw the parameters of a batch: jitter factors, then the order (one draw sequence, on the CPU)."""
        return self._jitter_parameters(batch_size, self._resolve(generator))

    def extra_repr(self) -> str:
        return f"color_jitter={self.jitter_ranges}, arithmetic={self.arithmetic!r}"


class StrongPerturbation(_Photometric):
    """Photometric part of FSAE's strong view: ColorJitter, Gaussian blur, RandAugment; per sample, batched.

    In order (docs/method.md §3): a fresh ColorJitter as in :class:`WeakPerturbation`; a Gaussian
    blur with probability ``p_blur``, sigma ~ U[blur_sigma] per sample; then ``n_ops``
    ops per sample drawn with replacement from :data:`RANDAUGMENT_OPS` (AutoContrast, Brightness,
    Color, Contrast, Sharpness with factor ~ U[0.05, 0.95]; Equalize; Identity; Posterize with bits
    ~ int(U[4, 8]); Solarize with threshold ~ U[0, solarize_max) levels), magnitudes per sample.  Op
    semantics are PIL's (:mod:`fsae.augment.functional` continuously, :mod:`fsae.augment.levels` on 8-bit
    levels with PIL's rounding).  Photometric only: the output is pixel-aligned with the input.  In each
    slot, each op drawn runs on the samples that drew it together (gathered into one sub-batch; on the CPU,
    where copying a large sample costs more than a call, on each run of consecutive such samples): no call
    per sample.

    The blur: ``"wide"`` (ours) a window of ``2 * ceil(3 * blur_sigma[1]) + 1`` taps (at most the image
    size), replicate border; ``"torchvision"`` (the authors') torchvision's ``GaussianBlur(blur_kernel_size)``,
    its ``k x k`` kernel with a reflect border (rounded to levels in the uint8 arithmetic); the authors drew
    ``k`` once per run (:func:`fsae.augment.levels.draw_blur_kernel_size`: 1, 3 or 5; 1 = no blur), which
    ``blur_kernel_size=None`` does here at construction: with ``seed`` the window their code drew with that seed
    (seed 7, theirs: k = 1), else from the module's generator.

    Args:
        n_ops: RandAugment ops per sample.
        color_jitter: as in :class:`WeakPerturbation`.
        blur_sigma: ``(min, max)`` Gaussian std in pixels, ``0 < min <= max``.
        p_blur: probability of the blur per sample (the authors: 1).
        generator, seed, arithmetic: as in :class:`WeakPerturbation`.
        blur: ``"wide"`` or ``"torchvision"`` (:data:`BLURS`).
        blur_kernel_size: odd window of the ``"torchvision"`` blur; None draws it as the authors did.
        solarize_max: the solarize threshold is drawn from U[0, solarize_max) levels (the authors: 256, so a
            threshold above 255 leaves the image as is; 255 = a fraction U[0, 1] of full scale).

    Parameters (:meth:`generate_parameters`, CPU tensors): the jitter ones of
    :class:`WeakPerturbation`; ``blur`` (B,) bool; ``sigma`` (B,) float32 (drawn for every sample,
    used where ``blur``); ``ops`` (B, n_ops) int64 indices into :data:`RANDAUGMENT_OPS`, applied left
    to right; ``magnitudes`` (B, n_ops) float32: the factor, bits or threshold of each op (0 for the
    ops without one); a threshold is in the working units: a level in the uint8 arithmetic (levels ``>= t``
    invert), a fraction of full scale (``t / 255``) in the float one.
    """

    #: ``method`` of :func:`fsae.augment.levels.gaussian_blur_` for the torchvision blur (None: by device).
    blur_method: str | None = None

    def __init__(
        self,
        n_ops: int = 5,
        color_jitter: Sequence[float] = (0.3, 0.3, 0.3, 0.1),
        blur_sigma: Sequence[float] = (0.1, 2.0),
        p_blur: float = 0.5,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        arithmetic: str = "float",
        blur: str = "wide",
        blur_kernel_size: int | None = None,
        solarize_max: float = 255.0,
    ) -> None:
        super().__init__(color_jitter, generator, seed, arithmetic)
        if n_ops < 0:
            raise ValueError(f"n_ops must be >= 0, got {n_ops}")
        lo, hi = (float(s) for s in blur_sigma)
        if not 0.0 < lo <= hi:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {blur_sigma}")
        if not 0.0 <= p_blur <= 1.0:
            raise ValueError(f"p_blur must be in [0, 1], got {p_blur}")
        if blur not in BLURS:
            raise ValueError(f"blur must be one of {BLURS}, got {blur!r}")
        if blur_kernel_size is not None and (blur_kernel_size < 1 or blur_kernel_size % 2 == 0):
            raise ValueError(f"blur_kernel_size must be a positive odd integer, got {blur_kernel_size}")
        if not 0.0 < solarize_max <= 256.0:
            raise ValueError(f"solarize_max must be in (0, 256], got {solarize_max}")
        self.n_ops = int(n_ops)
        self.blur_sigma: Range = (lo, hi)
        self.p_blur = float(p_blur)
        self.blur = blur
        if blur == "torchvision" and blur_kernel_size is None:
            # once, as the authors' dataset did (from Python's random after random.seed(seed), as theirs)
            blur_kernel_size = LV.draw_blur_kernel_size(seed if seed is not None else self.generator)
        self.blur_kernel_size = blur_kernel_size
        self.solarize_max = float(solarize_max)

    @classmethod
    def authors(cls, **kwargs) -> StrongPerturbation:
        """The authors' strong view: uint8 arithmetic, blur always, torchvision's blur, thresholds in [0, 256).

        ``kwargs`` (``seed``, ``generator``, ``blur_kernel_size``, ...) override.

        Example:
            >>> strong = StrongPerturbation.authors(seed=0)
            >>> strong.arithmetic, strong.p_blur, strong.blur, strong.blur_kernel_size in (1, 3, 5)
            ('uint8', 1.0, 'torchvision', True)
        """
        defaults = {"arithmetic": "uint8", "p_blur": 1.0, "blur": "torchvision", "solarize_max": 256.0}
        return cls(**{**defaults, **kwargs})

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
        # threshold in levels (uint8) or as a fraction of full scale (float: u itself for solarize_max = 255)
        threshold = u * self.solarize_max if self.levels else u * (self.solarize_max / 255.0)
        index = {name: k for k, name in enumerate(RANDAUGMENT_OPS)}
        magnitudes = torch.where(
            ops == index["posterize"], bits, torch.where(ops == index["solarize"], threshold, factor)
        )
        without = torch.tensor([index["autocontrast"], index["equalize"], index["identity"]])
        params["ops"] = ops
        params["magnitudes"] = magnitudes.masked_fill(torch.isin(ops, without), 0.0)
        return params

    def _table(self, height: int, width: int) -> Sequence[GroupedOp | None]:
        kernel_size = AF.blur_kernel_size(self.blur_sigma[1], height, width)
        blur = functools.partial(AF.gaussian_blur_, kernel_size=kernel_size)
        if self.levels:  # the wide blur is linear: run it on levels, round back (torchvision's cast rule)
            wide = blur

            def blur(images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
                return wide(images, magnitude).round_().clamp_(0.0, 255.0)

        return (*super()._table(height, width), blur)

    @torch.no_grad()
    def apply_post_(self, work: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The blur and RandAugment stages in place on the working buffer ``work`` (B, 3, H, W) float32 (the
        crop, after :meth:`apply_jitter_`)."""
        if params["ops"].shape[0] != work.shape[0]:
            raise ValueError(f"params are for a batch of {params['ops'].shape[0]}, images have {work.shape[0]}")
        table = self._table(*work.shape[-2:])
        blur = params["blur"].bool()
        if self.blur == "wide":
            choices = torch.where(blur, _BLUR, 0).view(-1, 1)
            apply_grouped(work, choices, params["sigma"].float().view(-1, 1), table, self.call_cost)
        elif self.blur_kernel_size > 1 and bool(blur.any()):
            rows = blur.nonzero().view(-1)
            kernels = LV.blur_kernels(params["sigma"][rows], self.blur_kernel_size)
            if len(rows) == work.shape[0]:
                LV.gaussian_blur_(work, kernels, self.levels, self.blur_method)
            else:
                index = rows.to(work.device, non_blocking=True)
                sub = LV.gaussian_blur_(work.index_select(0, index), kernels, self.levels, self.blur_method)
                work.index_copy_(0, index, sub)
        ops = params["ops"].long()
        return apply_grouped(work, _RANDAUGMENT_TO_TABLE[ops], params["magnitudes"].float(), table, self.call_cost)

    def _apply_post_(self, work: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.apply_post_(work, params)

    def extra_repr(self) -> str:
        return (
            f"n_ops={self.n_ops}, color_jitter={self.jitter_ranges}, blur_sigma={self.blur_sigma}, "
            f"p_blur={self.p_blur}, arithmetic={self.arithmetic!r}, blur={self.blur!r}, "
            f"blur_kernel_size={self.blur_kernel_size}, solarize_max={self.solarize_max}"
        )
