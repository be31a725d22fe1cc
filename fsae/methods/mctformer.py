"""MCTformer-V2 as a :class:`~fsae.methods.base.WSSSMethod`, and how FSAE attaches to it.

Base method (docs/method.md §5): :class:`~fsae.models.mctformer_net.MCTformerV2Net` trained with
:func:`fsae.losses.mctformer.mctformer_loss` on the weak view: ``cls_token`` = multilabel soft margin on the
class-token logits, ``cls_patch`` = the same on the global average pool of the patch CAM.

How FSAE attaches
-----------------
MCTformer has no background logit, so the CAM logits ``(B, C+1, h, w)`` that FSAE needs come from class maps through
:func:`fsae.losses.attach_background` (``fsae_attach`` picks the maps; both forms are differentiable and cost one
extra forward of the strong view):

1. maps ``m (B, C, h, w)``: ``"derived"`` (default) the raw patch CAM of the conv head; ``"fused"`` the attention-
   weighted CAM ``attn_maps * relu(patch_cam)`` (class-to-patch attention of the last ``attn_layers`` blocks, only
   the C class query rows, so it stays cheap), gradient reaching the attention as well as the head.
2. ``n_k = relu(m_k) / (max_hw relu(m_k) + 1e-5)`` with the peak detached (so FSAE cannot expand a map by lowering
   its peak), then, with ``gate=True`` (default), ``n_k *= sigmoid(s_k)`` where ``s_k`` is the detached image-level
   logit of the patch head (``patch_logits``): a class claims pixels only as far as the image classifier believes it
   present (detached, so that FSAE's background pixels do not push the image-level scores down: those belong to
   ``cls_patch``). With the labels (training: student and teacher) absent classes are set to the floor.
3. ``p = [1 - max_{k present} n_k, n_1, ..., n_C]`` (background first), and
   ``logits = log(max(p, floor)) - log(floor)`` with ``floor = prob_floor = 1e-4``.

``softmax(logits) = max(p, floor) / sum(max(p, floor))``: the normalised distribution. Where one class fires alone
the sum is 1 (up to the floor) and ``softmax_k = n_k``. The ``- log(floor)`` shift makes every logit >= 0 and a
logit of 0 the same as a map at the floor: FSAE's original label masking (``absent="zero"``, absent-class logits set
to 0) then means "this class is absent", as intended. ``absent="exclude"`` works unchanged.

Why the 0.95 confidence is reachable: at a pixel where class k peaks (``n_k = sigmoid(s_k)``) and no other map is
active, ``p = [1 - sigmoid(s_k), sigmoid(s_k), floor, ...]``, so the confidence is ``~sigmoid(s_k) / (1 + C * floor)``:
>= 0.95 once the classifier gives the class >= ~0.95 (C * floor = 0.002 on VOC, 0.008 on COCO). Background is
confident where all present maps are below 0.05. Early in training (scores ~0.5) nothing is confident and FSAE is
silent: a built-in warm-up. With ``gate=False`` foreground confidence needs only ``n_k >= 0.95``. Two present classes
active at one pixel split it: such a pixel is confident for neither (``benchmarks/teacher_masks.py`` measures how
often the teacher is confident on foreground).

A second way, a learned background channel (an extra conv output), is not offered: nothing in MCTformer's losses
supervises a background map (its image-level losses have no background class), so the channel would be trained
only by FSAE's own pseudo-labels, which come from the teacher's copy of that same untrained channel.

Inference. ``cam_logits`` uses the same construction. In eval mode with ``eval_cam="refined"`` (default), the maps
are MCTformer-V2's inference CAMs instead (fused, refined by the patch-to-patch attention of all blocks: the
original's ``--attention-type fused --layer-index 3 --patch-attn-refine``), so ``fsae.infer`` reproduces the
published seed pipeline; in train mode (the student, and the EMA teacher in its default "train" mode) the
``fsae_attach`` maps are used. An EMA teacher in "eval" mode would see the refined CAMs: set ``eval_cam="attach"``
for a teacher that matches the student. :meth:`MCTformerMethod.authors_cams` gives the authors' own pseudo-label
maps (their ``generate_attention_maps_ms``: the refined fused CAMs of the image and its mirror at scale 1.0, summed,
min-max normalised per class, no softmax; the background a constant threshold plane).

Optimisation (original ``main.py``): timm AdamW, one learning rate ``5e-4 * batch / 512`` for *all* parameters (no
higher rate for the new layers), weight decay 0.05 except for biases, norm weights, ``pos_embed`` and ``cls_token``,
cosine schedule stepped per epoch (timm's ``CosineLRScheduler``: 5 warm-up epochs from 1e-6, floor 1e-5, the
trainer's ``optim.schedule: cosine_epoch``), 60 epochs, 224 crops, drop path 0.1.
:meth:`MCTformerMethod.parameter_groups` reproduces the decay split (``"weight_decay": 0.0`` on the no-decay
groups) and uses ``new_lr_mult=1.0`` by default for the class tokens and conv head; ``drop_path_rate`` defaults to
0.1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from fsae.losses.attach import attach_background
from fsae.losses.mctformer import mctformer_loss
from fsae.methods.base import StepOutput, WSSSMethod
from fsae.methods.registry import register_method
from fsae.models.mctformer_net import MCTformerOutput, MCTformerV2Net

__all__ = ["EVAL_CAMS", "FSAE_ATTACH", "MCTformerMethod"]

FSAE_ATTACH = ("derived", "fused")
EVAL_CAMS = ("refined", "attach")


@register_method("mctformer")
class MCTformerMethod(WSSSMethod):
    """MCTformer-V2 (DeiT-S/16, C class tokens, conv CAM head) with FSAE attached by :func:`attach_background`.

    Args:
        num_classes: C foreground classes.
        backbone: timm ViT name (``"deit_small_patch16_224"`` as the paper).
        pretrained: timm's ImageNet weights (needs internet or timm's cache).
        pretrained_path: local ViT state dict (timm names), e.g. DeiT-S's ``deit_small_patch16_224-cd65a155.pth``.
        fsae_attach: ``"derived"`` (patch CAM) or ``"fused"`` (attention-weighted patch CAM); module docstring.
        gate: scale each normalised map by the detached ``sigmoid`` of its image-level patch logit.
        eval_cam: maps of :meth:`cam_logits` in eval mode: ``"refined"`` (MCTformer-V2's inference CAM) or
            ``"attach"`` (the ``fsae_attach`` maps, as in train mode).
        prob_floor: probability floor of the derived logits (C * floor must stay well below 0.05).
        new_lr_mult: learning-rate multiplier of the class tokens and conv head (1.0: the original's single rate).
        attn_layers: class-to-patch attention from this many last blocks (3).
        seed_threshold: the constant background plane of :meth:`authors_cams` (their seeds are ``argmax`` over
            ``[t, maps]``; their evaluation sweeps t, so this is ours to choose: 0.22, fsae's fixed seed threshold).
        **backbone_kwargs: to :class:`~fsae.models.mctformer_net.MCTformerV2Net` / ``timm.create_model``
            (``drop_path_rate`` defaults to 0.1, the original's; ``depth``, ``img_size``, ``final_norm``, ...).
    """

    name = "mctformer"
    tiny_options = {"backbone": "deit_tiny_patch16_224", "depth": 3, "img_size": 64, "attn_layers": 2}

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "deit_small_patch16_224",
        pretrained: bool = False,
        pretrained_path: str | os.PathLike[str] | None = None,
        fsae_attach: str = "derived",
        gate: bool = True,
        eval_cam: str = "refined",
        prob_floor: float = 1e-4,
        new_lr_mult: float = 1.0,
        attn_layers: int = 3,
        seed_threshold: float = 0.22,
        **backbone_kwargs: object,
    ) -> None:
        super().__init__()
        if isinstance(seed_threshold, bool) or not isinstance(seed_threshold, (int, float)):
            raise ValueError(f"seed_threshold must be a number, got {seed_threshold!r}")
        if not 0.0 <= seed_threshold <= 1.0:
            raise ValueError(f"seed_threshold must be in [0, 1], got {seed_threshold!r}")
        if fsae_attach not in FSAE_ATTACH:
            raise ValueError(f"fsae_attach must be one of {FSAE_ATTACH}, got {fsae_attach!r}")
        if eval_cam not in EVAL_CAMS:
            raise ValueError(f"eval_cam must be one of {EVAL_CAMS}, got {eval_cam!r}")
        if isinstance(prob_floor, bool) or not isinstance(prob_floor, (int, float)) or not 0.0 < prob_floor < 1.0:
            raise ValueError(f"prob_floor must be a number in (0, 1), got {prob_floor!r}")
        if isinstance(new_lr_mult, bool) or not isinstance(new_lr_mult, (int, float)) or not new_lr_mult > 0:
            raise ValueError(f"new_lr_mult must be a number > 0, got {new_lr_mult!r}")
        backbone_kwargs.setdefault("drop_path_rate", 0.1)
        self.net = MCTformerV2Net(
            num_classes=num_classes,
            backbone=backbone,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            attn_layers=attn_layers,
            **backbone_kwargs,
        )
        self.num_classes = num_classes
        self.fsae_attach = fsae_attach
        self.gate = bool(gate)
        self.eval_cam = eval_cam
        self.prob_floor = float(prob_floor)
        self.new_lr_mult = float(new_lr_mult)
        self.seed_threshold = float(seed_threshold)

    def _attach_logits(self, out: MCTformerOutput, maps: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        gate = out.patch_logits if self.gate else None
        return attach_background(maps, labels, gate_logits=gate, floor=self.prob_floor)

    def _student_logits(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.fsae_attach == "derived":
            out = self.net(images, attention="none")
            return self._attach_logits(out, out.patch_cam, labels)
        out = self.net(images, attention="class")
        return self._attach_logits(out, out.fused, labels)

    def training_step(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        strong: torch.Tensor | None = None,
        images_small: torch.Tensor | None = None,
        saliency: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """``{"cls_token", "cls_patch"}`` on the weak view; ``strong_logits`` = :meth:`cam_logits` maps of ``strong``.

        ``images_small``, ``saliency`` and ``generator`` are not used (MCTformer trains on one view, no saliency).
        """
        out = self.net(images, attention="none")
        losses = mctformer_loss(out.token_logits, out.patch_cam, labels)
        strong_logits = None if strong is None else self._student_logits(strong, labels)
        return StepOutput(losses=losses, strong_logits=strong_logits)

    def cam_logits(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """float32 ``(B, C+1, h, w)`` CAM logits (channel 0 = background) at the patch grid (H/16, W/16).

        Train mode: the ``fsae_attach`` maps. Eval mode with ``eval_cam="refined"``: the refined fused CAMs.
        ``labels`` ``(B, C)``: background from the present classes, absent ones at the floor; None: label-free.
        """
        if not self.training and self.eval_cam == "refined":
            out = self.net(images, attention="all")
            return self._attach_logits(out, out.cams, labels)
        return self._student_logits(images, labels)

    @torch.no_grad()
    def authors_cams(self, image: torch.Tensor, labels: torch.Tensor, scales: Sequence[float] = (1.0,)) -> torch.Tensor:
        """The authors' pseudo-label maps of one image: float32 ``(1, C+1, H, W)``, channel 0 = background.

        Their ``generate_attention_maps_ms`` with the V2 recipe (``--attention-type fused --layer-index 3
        --patch-attn-refine --scales 1.0``), computed in float32 (theirs runs under CUDA autocast): for each scale
        ``s`` the uint8 image resized by PIL bicubic to ``(round(H s), round(W s))`` (as is at its own size),
        ``ToTensor`` + ImageNet ``Normalize``, and its horizontal mirror; each through the net in eval mode for
        the refined fused CAM (:class:`~fsae.models.mctformer_net.MCTformerV2Net`, ``attention="all"``, at the
        grid ``(h // 16, w // 16)``), upsampled bilinearly (``align_corners=False``) to ``(H, W)``, multiplied
        by ``labels``, the mirror flipped back; all passes summed. Each present class's map is then min-max
        normalised, ``(m - min) / (max - min + 1e-8)``; absent classes are 0 (theirs leaves them out of the saved
        dict, and their evaluation fills them with 0).

        Their seeds put a constant background plane under the maps and take the argmax, so channel 0 is filled
        with ``self.seed_threshold``: ``argmax`` over the channels is their seed at that threshold (ties go to
        the lower channel, as ``np.argmax``). Their code upsamples to the size of the *first* scale's image;
        here always to ``(H, W)`` (the same when the first scale is 1.0, as in their recipe).

        Args:
            image: uint8 RGB ``(1, 3, H, W)`` (any ``H, W`` with every scaled side >= 16).
            labels: ``(1, C)`` multi-hot image labels.
            scales: input scales (their ``--scales``; 1.0 in their recipe).

        Returns:
            float32 ``(1, C+1, H, W)`` on ``image``'s device.
        """
        if image.dim() != 4 or image.shape[:2] != (1, 3) or image.dtype != torch.uint8:
            raise ValueError(f"image must be a uint8 (1, 3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
        if labels.shape != (1, self.num_classes):
            raise ValueError(f"labels must be (1, {self.num_classes}), got {tuple(labels.shape)}")
        if not scales:
            raise ValueError("scales must not be empty")
        height, width = image.shape[-2:]
        device = next(self.net.parameters()).device
        rgb = image[0].permute(1, 2, 0).cpu().numpy()
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
        target = labels.to(device=device, dtype=torch.float32).view(-1, 1, 1)
        was_training = self.training
        self.eval()
        try:
            total = torch.zeros(self.num_classes, height, width, device=device)
            for scale in scales:
                size = (round(height * scale), round(width * scale))
                if min(size) < self.net.patch_size[0]:
                    raise ValueError(f"a {height}x{width} image at scale {scale:g} is {size}: under one patch")
                array = rgb if size == (height, width) else np.asarray(
                    Image.fromarray(rgb).resize((size[1], size[0]), resample=Image.BICUBIC)
                )  # fmt: skip
                x = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div(255)
                x = x.sub(mean).div(std)  # torchvision's ToTensor + Normalize, float32
                for flip in (False, True):
                    inputs = (x.flip(-1) if flip else x)[None].to(device)
                    cams = self.net(inputs, attention="all").cams.float()
                    cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)[0]
                    cams = cams * target
                    total += cams.flip(-1) if flip else cams
        finally:
            self.train(was_training)
        present = labels[0].to(device) > 0
        flat = total.flatten(1)
        low, high = flat.amin(dim=1).view(-1, 1, 1), flat.amax(dim=1).view(-1, 1, 1)
        maps = torch.where(present.view(-1, 1, 1), (total - low) / (high - low + 1e-8), torch.zeros_like(total))
        background = torch.full((1, height, width), self.seed_threshold, device=device)
        return torch.cat([background, maps], dim=0)[None].to(image.device)

    def parameter_groups(self) -> list[dict]:
        """Pretrained ViT parameters (``lr_mult`` 1), then the new class tokens and conv head (``new_lr_mult``).

        Each is split as timm's optimizer factory does for the original: parameters with weight decay, then a group
        with ``"weight_decay": 0.0`` for biases, 1-D (norm) weights, ``pos_embed`` and ``cls_token``. Empty groups
        are left out; together the groups hold every trainable parameter exactly once.
        """
        new_names = set(self.net.new_parameter_names())
        no_decay_names = self.net.no_weight_decay()
        buckets: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {
            (False, True): [],
            (False, False): [],
            (True, True): [],
            (True, False): [],
        }
        for name, param in self.net.named_parameters():
            if not param.requires_grad:
                continue
            decay = not (param.ndim <= 1 or name.endswith(".bias") or name in no_decay_names)
            buckets[(name in new_names, decay)].append(param)
        groups = []
        for (new, decay), params in buckets.items():
            if not params:
                continue
            group: dict = {"params": params, "lr_mult": self.new_lr_mult if new else 1.0}
            if not decay:
                group["weight_decay"] = 0.0
            groups.append(group)
        return groups
