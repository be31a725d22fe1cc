"""Wide ResNet-38 ("model A" of Wu, Shen & van den Hengel, 2019), the PSA / SEAM / PPC backbone, registered into timm.

Importing this module (``import fsae.models`` does it) registers ``"resnet38d"`` with timm, so that::

    import timm
    import fsae.models  # noqa: F401  (registers resnet38d)

    net = timm.create_model("resnet38d", num_classes=0)  # (B, 3, H, W) -> pooled (B, 4096)
    feats = timm.create_model("resnet38d", features_only=True)  # PPC taps: [conv4, conv5, conv6]
    feats = timm.create_model("resnet38d", features_only=True, pretrained_path="resnet38d.safetensors")

Architecture (every block is pre-activation: BN -> ReLU -> conv; spatial sizes for an H x W input)::

    module          blocks  channels in -> out         stride  dilation  output size
    conv1a          3x3 conv    3 -> 64                1       1         H
    b2, b2_1, b2_2  3 basic     64 -> 128              2       1         H/2
    b3, b3_1, b3_2  3 basic    128 -> 256              2       1         H/4
    b4 ... b4_5     6 basic    256 -> 512              2       1         H/8
    b5, b5_1, b5_2  3 basic    512 -> 1024 (mid 512)   1       2         H/8
    b6              bottleneck 1024 -> 512/1024/2048   1       4         H/8   Dropout2d 0.3 (twice)
    b7              bottleneck 2048 -> 1024/2048/4096  1       4         H/8   Dropout2d 0.5 (twice)
    bn7 + relu7     BN + ReLU on the 4096 channels ("conv6")             H/8

Output stride 8; the strided 3x3 convs round up, so the final map is ``ceil(ceil(ceil(H/2)/2)/2)`` high (56 for 448).
Parameter names are those of PSA / SEAM ``network/resnet38d.Net`` (``conv1a.weight``,
``b2.bn_branch2a.running_mean``, ``b2.conv_branch1.weight``, ``b6.conv_branch2b2.weight``, ``bn7.weight``, ...), so a
PSA-converted ImageNet state dict loads without renaming (see :mod:`fsae.models.pretrained` for the layout and
:mod:`fsae.models.convert_resnet38` for converting the MXNet original). The timm classifier ``fc`` (4096 ->
``num_classes``, after global pooling) is extra; it is absent with ``num_classes=0`` and ignored when loading a file
without it. Weight initialisation is PyTorch's default (the network is meant to start from converted weights).

Features (``feature_info``; ``features_only=True`` / :meth:`ResNet38d.forward_intermediates`). Every feature is a
*pre-activated* stage output, ``relu(bn(stage output))``, where the BN is the input BN (``bn_branch2a``) of the next
stage's first block, or ``bn7`` for the last one. These are exactly the tensors PSA's ``forward_as_dict`` returns as
``conv4`` / ``conv5`` / ``conv6`` (and that SEAM's / PPC's PCM reads); they cost nothing extra, the next block
computes them anyway::

    index  module            channels  reduction  PSA name
    0      b2.relu_branch2a      64        1
    1      b3.relu_branch2a     128        2
    2      b4.relu_branch2a     256        4
    3      b5.relu_branch2a     512        8      conv4  (PCM input, stage 4)
    4      b6.relu_branch2a    1024        8      conv5  (PCM input, stage 5)
    5      b7.relu_branch2a    2048        8
    6      relu7               4096        8      conv6  (CAM / projection head input)

``features_only=True`` defaults to ``out_indices=(3, 4, 6)`` and timm's ``FeatureGetterNet`` (``feature_cls="getter"``,
which prunes what the requested taps do not need); ``feature_cls="hook"`` gives the same tensors through forward hooks
on the modules listed above. ``feature_cls="list"`` is not supported (the taps are not top-level modules).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["PPC_FROZEN_PREFIXES", "ResNet38d", "ResBlock", "BottleneckBlock"]

#: Parameters PSA / SEAM / PPC never train (their ``not_training`` list): the stem conv and the whole of stage 2.
PPC_FROZEN_PREFIXES: tuple[str, ...] = ("conv1a", "b2", "b2_1", "b2_2")

# Blocks of each stage after conv1a; the first block of stage k+1 produces feature k (see the module docstring).
_STAGES: tuple[tuple[str, ...], ...] = (
    ("b2", "b2_1", "b2_2"),
    ("b3", "b3_1", "b3_2"),
    ("b4", "b4_1", "b4_2", "b4_3", "b4_4", "b4_5"),
    ("b5", "b5_1", "b5_2"),
    ("b6",),
    ("b7",),
)
_NUM_FEATURES = len(_STAGES) + 1  # taps 0..5 come from the stages' input BNs, tap 6 is relu(bn7)


def _take_indices(num: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """timm's index convention: None = all, int n = the last n, sequence = those (negative from the end).

    Returns the absolute indices (in the order given) and the largest.
    """
    if indices is None:
        indices = num
    if isinstance(indices, int):
        if not 0 < indices <= num:
            raise ValueError(f"resnet38d: last-n feature count {indices} is out of range 1..{num}")
        take = list(range(num - indices, num))
    else:
        take = [num + i if i < 0 else i for i in indices]
        bad = [i for i in take if not 0 <= i < num]
        if bad or not take:
            raise ValueError(f"resnet38d: feature indices {list(indices)} out of range 0..{num - 1}")
    return take, max(take)


class ResBlock(nn.Module):
    """Pre-activation basic block: ``shortcut + conv3x3(relu(bn(conv3x3(relu(bn(x))))))``.

    The shortcut is ``x`` when the shape is kept, else ``conv_branch1`` (1x1, strided) applied to ``relu(bn(x))``.
    Shapes: ``(B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        stride: int = 1,
        first_dilation: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(in_chs)
        self.relu_branch2a = nn.ReLU()
        self.conv_branch2a = nn.Conv2d(
            in_chs, mid_chs, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_chs)
        self.relu_branch2b1 = nn.ReLU(inplace=True)
        self.conv_branch2b1 = nn.Conv2d(mid_chs, out_chs, 3, padding=dilation, dilation=dilation, bias=False)
        same_shape = in_chs == out_chs and stride == 1
        self.conv_branch1 = None if same_shape else nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn_branch2a(x))``, same shape as ``x``: the block's activated input (a feature tap)."""
        return self.relu_branch2a(self.bn_branch2a(x))

    def forward(self, x: torch.Tensor, preact: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, in_chs, H, W) -> (B, out_chs, H', W')``; ``preact`` = :meth:`preact` of ``x`` when already known."""
        if preact is None:
            preact = self.preact(x)
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(preact)
        y = self.conv_branch2a(preact)
        y = self.conv_branch2b1(self.relu_branch2b1(self.bn_branch2b1(y)))
        return shortcut + y


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck ``in -> out/4 (1x1) -> out/2 (3x3, dilated) -> out (1x1)`` with Dropout2d.

    PSA's ``ResBlock_bot``: Dropout2d(``drop_rate``) before the 3x3 and before the last 1x1 conv (active in train mode
    only). The shortcut is ``conv_branch1`` (1x1) on ``relu(bn(x))`` unless the shape is kept.
    Shapes: ``(B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_chs)
        self.relu_branch2a = nn.ReLU()
        self.conv_branch2a = nn.Conv2d(in_chs, out_chs // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_chs // 4)
        self.relu_branch2b1 = nn.ReLU(inplace=True)
        self.dropout_2b1 = nn.Dropout2d(drop_rate)
        self.conv_branch2b1 = nn.Conv2d(out_chs // 4, out_chs // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_chs // 2)
        self.relu_branch2b2 = nn.ReLU(inplace=True)
        self.dropout_2b2 = nn.Dropout2d(drop_rate)
        self.conv_branch2b2 = nn.Conv2d(out_chs // 2, out_chs, 1, bias=False)
        same_shape = in_chs == out_chs and stride == 1
        self.conv_branch1 = None if same_shape else nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn_branch2a(x))``, same shape as ``x``: the block's activated input (a feature tap)."""
        return self.relu_branch2a(self.bn_branch2a(x))

    def forward(self, x: torch.Tensor, preact: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, in_chs, H, W) -> (B, out_chs, H', W')``; ``preact`` = :meth:`preact` of ``x`` when already known."""
        if preact is None:
            preact = self.preact(x)
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(preact)
        y = self.conv_branch2a(preact)
        y = self.conv_branch2b1(self.dropout_2b1(self.relu_branch2b1(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(self.relu_branch2b2(self.bn_branch2b2(y))))
        return shortcut + y


class _PreActTap(nn.Module):
    """What pruning keeps of a block whose convolutions are not needed: its input BN + ReLU (one feature tap).

    Keeps the block's names (``bn_branch2a``, ``relu_branch2a``), so state-dict keys do not change.
    """

    def __init__(self, block: ResBlock | BottleneckBlock) -> None:
        super().__init__()
        self.bn_branch2a = block.bn_branch2a
        self.relu_branch2a = block.relu_branch2a

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_branch2a(self.bn_branch2a(x))

    def forward(self, x: torch.Tensor, preact: torch.Tensor | None = None) -> torch.Tensor:
        return self.preact(x) if preact is None else preact


class ResNet38d(nn.Module):
    """Wide ResNet-38 with output stride 8 and a 4096-channel last map (see the module docstring).

    Args:
        num_classes: classes of the timm classifier ``fc`` on the globally pooled map; 0 for none.
        in_chans: input channels (``conv1a``).
        global_pool: timm pooling type of the classifier head (``"avg"``, ``"max"``, ``"avgmax"``, ``""``).
        drop_rate: dropout before ``fc`` (timm's classifier dropout; not part of PSA).
        block_drop_rates: Dropout2d rates inside ``b6`` and ``b7`` (PSA: 0.3, 0.5).
        output_stride: only 8 (the dilations are fixed by the pretrained model); anything else raises.

    ``forward(x)``: ``(B, in_chans, H, W) -> (B, num_classes)`` logits, or pooled ``(B, 4096)`` when
    ``num_classes=0``; ``forward_features(x) -> (B, 4096, H/8, W/8)`` ("conv6").
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        block_drop_rates: tuple[float, float] = (0.3, 0.5),
        output_stride: int = 8,
    ) -> None:
        super().__init__()
        if output_stride != 8:
            raise ValueError(f"resnet38d has a fixed output stride of 8, got output_stride={output_stride}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1a = nn.Conv2d(in_chans, 64, 3, padding=1, bias=False)

        self.b2 = ResBlock(64, 128, 128, stride=2)
        self.b2_1 = ResBlock(128, 128, 128)
        self.b2_2 = ResBlock(128, 128, 128)

        self.b3 = ResBlock(128, 256, 256, stride=2)
        self.b3_1 = ResBlock(256, 256, 256)
        self.b3_2 = ResBlock(256, 256, 256)

        self.b4 = ResBlock(256, 512, 512, stride=2)
        self.b4_1 = ResBlock(512, 512, 512)
        self.b4_2 = ResBlock(512, 512, 512)
        self.b4_3 = ResBlock(512, 512, 512)
        self.b4_4 = ResBlock(512, 512, 512)
        self.b4_5 = ResBlock(512, 512, 512)

        self.b5 = ResBlock(512, 512, 1024, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = ResBlock(1024, 512, 1024, dilation=2)

        self.b6 = BottleneckBlock(1024, 2048, dilation=4, drop_rate=block_drop_rates[0])
        self.b7 = BottleneckBlock(2048, 4096, dilation=4, drop_rate=block_drop_rates[1])

        self.bn7 = nn.BatchNorm2d(4096)
        self.relu7 = nn.ReLU()

        self.num_features = self.head_hidden_size = 4096
        self.feature_info = [
            dict(num_chs=64, reduction=1, module="b2.relu_branch2a"),
            dict(num_chs=128, reduction=2, module="b3.relu_branch2a"),
            dict(num_chs=256, reduction=4, module="b4.relu_branch2a"),
            dict(num_chs=512, reduction=8, module="b5.relu_branch2a"),
            dict(num_chs=1024, reduction=8, module="b6.relu_branch2a"),
            dict(num_chs=2048, reduction=8, module="b7.relu_branch2a"),
            dict(num_chs=4096, reduction=8, module="relu7"),
        ]
        self._num_taps = _NUM_FEATURES  # lowered by prune_intermediate_layers
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    # ----------------------------------------------------------------------------------------- timm classifier API
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """Replace the head with a fresh ``fc`` for ``num_classes`` (0: none, ``forward`` returns pooled features)."""
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    # ----------------------------------------------------------------------------------------------------- forward
    def _run_block(self, block: nn.Module, x: torch.Tensor, preact: torch.Tensor | None = None) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            if preact is None:
                return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            return torch.utils.checkpoint.checkpoint(block, x, preact, use_reentrant=False)
        return block(x) if preact is None else block(x, preact)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward that also returns the feature taps of the module docstring.

        Args:
            x: ``(B, in_chans, H, W)``.
            indices: taps to return: None = all, int n = the last n, sequence = those indices (negative from the end).
            norm: accepted for timm compatibility, no effect (the taps are always the BN + ReLU maps).
            stop_early: stop after the deepest requested tap (always done when ``intermediates_only``).
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of taps.

        Returns:
            ``[feature_i (B, C_i, H / r_i, W / r_i) for the requested i, in increasing order]``, or
            ``(final, features)`` where ``final`` is conv6 ``(B, 4096, H/8, W/8)`` (with ``stop_early``: the deepest
            tap computed).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"resnet38d only produces NCHW features, got output_fmt={output_fmt!r}")
        take_indices, max_index = _take_indices(self._num_taps, indices)
        stop = stop_early or intermediates_only or self._num_taps < _NUM_FEATURES
        intermediates: list[torch.Tensor] = []

        x = self.conv1a(x)
        for tap, names in enumerate(_STAGES):
            first = getattr(self, names[0])
            preact = first.preact(x)
            if tap in take_indices:
                intermediates.append(preact)
            if stop and tap == max_index:
                return intermediates if intermediates_only else (preact, intermediates)
            x = self._run_block(first, x, preact)
            for name in names[1:]:
                x = self._run_block(getattr(self, name), x)
        x = self.relu7(self.bn7(x))
        if _NUM_FEATURES - 1 in take_indices:
            intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop what the taps in ``indices`` do not need (timm's feature-extraction hook).

        Blocks after the deepest tap go; the block producing it keeps only its input BN (``bn_branch2a``, same key).
        ``bn7`` belongs to tap 6 and is kept whenever tap 6 is, whatever ``prune_norm`` says. Returns the absolute
        indices kept; afterwards ``forward_features`` returns the deepest kept tap.
        """
        take_indices, max_index = _take_indices(self._num_taps, indices)
        if max_index < _NUM_FEATURES - 1:
            provider = _STAGES[max_index][0]
            setattr(self, provider, _PreActTap(getattr(self, provider)))
            later = [name for names in _STAGES[max_index:] for name in names][1:]
            for name in later:
                setattr(self, name, nn.Identity())
            self.bn7 = nn.Identity()
            self.relu7 = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self._num_taps = max_index + 1
        if prune_head or max_index < _NUM_FEATURES - 1:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, 4096, H/8, W/8)``: relu(bn7(b7(...))), PSA's "conv6"."""
        if self._num_taps < _NUM_FEATURES:  # pruned: the deepest tap left
            return self.forward_intermediates(x, indices=[self._num_taps - 1], intermediates_only=True)[0]
        x = self.conv1a(x)
        for names in _STAGES:
            for name in names:
                x = self._run_block(getattr(self, name), x)
        return self.relu7(self.bn7(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C, h, w) -> (B, num_classes)`` logits, or the pooled ``(B, C)`` with ``pre_logits``."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: object) -> dict[str, object]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (28, 28),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1a",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "resnet38d": _cfg(
            paper_ids="arXiv:1611.10080",
            paper_name="Wider or Deeper: Revisiting the ResNet Model for Visual Recognition",
            notes=(
                "No published timm weights. Convert the MXNet ImageNet checkpoint "
                "ilsvrc-cls_rna-a1_cls1000_ep-0001.params with `python -m fsae.models.convert_resnet38 SRC DST` and "
                "pass pretrained_path=DST (fsae.models.create_backbone or timm.create_model after import fsae.models).",
            ),
        ),
    }
)


def _create_resnet38d(variant: str, pretrained: bool = False, **kwargs: object) -> ResNet38d:
    return build_model_with_cfg(
        ResNet38d,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=(3, 4, 6)),
        **kwargs,
    )


@register_model
def resnet38d(pretrained: bool = False, **kwargs: object) -> ResNet38d:
    """Wide ResNet-38 "model A" (PSA / SEAM / PPC backbone), output stride 8, 4096 channels at the end.

    ``pretrained_path=FILE`` (a state dict in the PSA key layout, ``.pth`` / ``.pt`` / ``.safetensors``) loads local
    weights through :func:`fsae.models.pretrained.create_backbone`, which reports missing / unexpected keys;
    ``pretrained=True`` fails, timm has no published weights for this model.
    """
    pretrained_path = kwargs.pop("pretrained_path", None)
    if pretrained_path is not None:
        from fsae.models.pretrained import create_backbone

        return create_backbone("resnet38d", pretrained=pretrained, pretrained_path=pretrained_path, **kwargs)
    return _create_resnet38d("resnet38d", pretrained=pretrained, **kwargs)
