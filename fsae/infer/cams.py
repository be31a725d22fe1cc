"""Multi-scale, flipped CAM inference (docs/method.md §6)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from fsae.augment import imagenet_normalize
from fsae.infer._scales import summed_scale_probs
from fsae.losses.ema import EMATeacher
from fsae.methods.base import WSSSMethod
from fsae.ops import cam_normalize

__all__ = ["SCALE_RESIZES", "multiscale_cams", "pil_bicubic_resize", "scaled_size"]

# How the input is brought to each inference scale: "pil-bicubic" is the authors' contrast_infer.py (PIL bicubic,
# which antialiases when shrinking, on the uint8 image, before the normalisation); "tensor-bilinear" resizes the
# normalised tensor with F.interpolate (no antialias), fsae's former default.
SCALE_RESIZES = ("pil-bicubic", "tensor-bilinear")


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(round(height * scale), round(width * scale))`` as the authors compute it (Python's ``round``: halves
    go to the even neighbour, e.g. 181 * 0.5 -> 90); ``ValueError`` when a side would be 0 pixels (PIL cannot
    resize to it, so their code fails there too)."""
    size = (round(height * scale), round(width * scale))
    if min(size) < 1:
        raise ValueError(
            f"a {height}x{width} image at scale {scale:g} is {size[0]}x{size[1]} pixels (round(side * scale) = 0): "
            "use larger images or scales"
        )
    return size


def pil_bicubic_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize every image of ``(B, 3, H, W)`` to ``size = (h, w)`` with PIL's bicubic filter (antialiased).

    ``uint8`` images are resized as RGB images (the authors' ``PIL.Image.resize(..., BICUBIC)``, rounded and
    clipped to 0..255); float images channel by channel in PIL's 32-bit float mode.  Returns a CPU tensor of
    ``image``'s dtype (float32 for float input), ``(B, 3, h, w)``; at its own size the image is returned as is.
    """
    height, width = size
    if (height, width) == tuple(image.shape[-2:]):
        return image.cpu()
    array = image.detach().cpu().numpy()
    if image.dtype == torch.uint8:
        out = [np.asarray(Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0))).resize((width, height),
                          resample=Image.BICUBIC)).transpose(2, 0, 1) for a in array]  # fmt: skip
    else:
        out = [
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(c, dtype=np.float32)).resize(
                        (width, height), resample=Image.BICUBIC
                    )
                )
                for c in a
            ]  # fmt: skip
            for a in array
        ]
    return torch.from_numpy(np.ascontiguousarray(np.asarray(out)))


@torch.no_grad()
def multiscale_cams(
    model: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    image: torch.Tensor,
    labels: torch.Tensor,
    scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    flip: bool = True,
    scale_resize: str = "pil-bicubic",
) -> torch.Tensor:
    """Normalised foreground CAMs of ``image`` summed over scales and horizontal flips.

    For every scale ``s`` the batch is brought to ``(round(H s), round(W s))`` (``scale_resize``) and, with
    ``flip=True``, goes through ``model`` with its mirror image in one forward pass; each pass's logits are
    soft-maxed over the C+1 channels, upsampled bilinearly (``align_corners=False``) to the image size, un-flipped
    and summed.  The sum of the C foreground channels is then normalised by the fused :func:`fsae.ops.cam_normalize`
    (each map divided by its maximum + 1e-5; classes absent from ``labels`` zeroed).

    ``scale_resize``:

    * ``"pil-bicubic"`` (default; the authors' ``contrast_infer.py``): PIL bicubic resize of the uint8 image, then
      the ImageNet normalisation (:func:`imagenet_normalize`).  A float (already normalised) ``image`` is resized
      channel by channel in PIL's float mode, which differs from the authors' only by PIL's rounding to uint8
      (after each of its two 1-D passes: about one grey level) and clipping to 0..255.  A side that rounds to
      0 pixels is a ``ValueError``.
    * ``"tensor-bilinear"``: the normalised image resized with ``F.interpolate`` (bilinear, no antialias), to
      ``max(1, round(side * s))``; it stays on ``image``'s device.

    Args:
        model: maps ``(N, 3, h, w)`` images to CAM logits ``(N, C+1, h', w')`` (channel 0 = background),
            e.g. a :class:`fsae.methods.WSSSMethod` or an ``EMATeacher`` of one (these are called with the image
            labels too: ``model(x, labels, cam_only=True)``); put in eval mode for the call when it is an
            ``nn.Module`` (its mode is restored afterwards).
        image: ``(B, 3, H, W)``: uint8 RGB (normalised here), or float ImageNet-normalised.
        labels: ``(B, C)`` multi-hot image labels.
        scales: input scale factors.
        flip: also run the horizontally flipped images.
        scale_resize: one of :data:`SCALE_RESIZES` (above).

    Returns:
        ``(B, C, H, W)`` float32 CAMs in [0, 1] on ``image``'s device.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    if labels.dim() != 2 or labels.shape[0] != image.shape[0]:
        raise ValueError(f"labels must be (B, C) with B={image.shape[0]}, got {tuple(labels.shape)}")
    if not scales:
        raise ValueError("scales must not be empty")
    if scale_resize not in SCALE_RESIZES:
        raise ValueError(f"scale_resize must be one of {SCALE_RESIZES}, got {scale_resize!r}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ValueError(f"image must be uint8 (raw RGB) or float (normalised), got {image.dtype}")
    num_classes = labels.shape[1]
    height, width = image.shape[-2:]
    # a method (or its EMA teacher) gets the labels, as in training: a background-free method builds its
    # background from the present classes (fsae.losses.attach_background); other callables get the images only
    inner = model.module if isinstance(model, EMATeacher) else model
    known = labels.to(image.device) if isinstance(inner, WSSSMethod) else None

    def check(logits: torch.Tensor, inputs: torch.Tensor) -> None:
        if logits.dim() != 4 or logits.shape[1] != num_classes + 1:
            raise ValueError(f"model returned {tuple(logits.shape)}; expected (N, C+1, h, w) with C={num_classes}")

    if scale_resize == "tensor-bilinear":
        normalised = imagenet_normalize(image) if image.dtype == torch.uint8 else image
        total = summed_scale_probs(model, normalised, scales, flip, check, first_channel=1, labels=known)
    else:
        sizes = {s: scaled_size(height, width, s) for s in scales}  # every size checked before any forward pass
        source = image.detach().cpu()

        def inputs_at(scale: float) -> torch.Tensor:
            scaled = pil_bicubic_resize(source, sizes[scale])
            scaled = imagenet_normalize(scaled) if image.dtype == torch.uint8 else scaled.to(image.dtype)
            return scaled.to(image.device)

        total = summed_scale_probs(
            model, image, scales, flip, check, first_channel=1, inputs_at=inputs_at, labels=known
        )
    return cam_normalize(total, labels, mode="max", eps=1e-5)
