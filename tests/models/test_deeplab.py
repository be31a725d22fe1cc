"""DeepLab-v2 / v3+: output shapes, the ASPP structure, parameter groups, frozen BatchNorm, local weights."""

from __future__ import annotations

import functools
import math

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from fsae.models import DeepLabV2, DeepLabV3Plus, build_segmenter
from fsae.models.deeplab import ASPPv2


def small(name: str, **kwargs) -> nn.Module:
    return build_segmenter(name, 21, backbone=kwargs.pop("backbone", "resnet10t"), freeze_bn=False, **kwargs)


@functools.cache
def shape_model(name: str, output_stride: int) -> nn.Module:
    return small(name, output_stride=output_stride).eval()


CASES = [("deeplabv2", 8, 8), ("deeplabv2", 16, 16), ("deeplabv3plus", 16, 4), ("deeplabv3plus", 8, 4)]


@pytest.mark.parametrize("size", [(64, 64), (65, 97), (96, 80)])
@pytest.mark.parametrize(("name", "output_stride", "stride"), CASES)
def test_output_shapes(name, output_stride, stride, size):
    with torch.no_grad():
        logits = shape_model(name, output_stride)(torch.randn(2, 3, *size))
    assert logits.shape == (2, 21, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_default_output_strides_and_aspp_rates():
    v2, v3 = small("deeplabv2"), small("deeplabv3plus")
    assert (v2.output_stride, v3.output_stride) == (8, 16)
    assert [conv.dilation for conv in v2.head.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert all(conv.out_channels == 21 and conv.kernel_size == (3, 3) for conv in v2.head.branches)
    assert [b[0].dilation for b in v3.aspp.branches] == [(1, 1), (6, 6), (12, 12), (18, 18)]
    assert [b[0].dilation for b in small("deeplabv3plus", output_stride=8).aspp.branches[1:]] == [
        (12, 12),
        (24, 24),
        (36, 36),
    ]
    assert v3.reduce[0].out_channels == 48 and v3.low_index == 1  # resnet's layer1, stride 4


def test_aspp_v2_is_the_sum_of_its_branches():
    head = ASPPv2(8, 3).eval()
    x = torch.randn(1, 8, 30, 30)
    expected = sum(nn.functional.conv2d(x, c.weight, c.bias, padding=d, dilation=d)
                   for c, d in zip(head.branches, (6, 12, 18, 24), strict=True))  # fmt: skip
    torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("name", ["deeplabv2", "deeplabv3plus"])
@pytest.mark.parametrize("freeze_bn", [False, True])
def test_parameter_groups_are_disjoint_complete_and_split_backbone_from_head(name, freeze_bn):
    with pytest.warns(UserWarning, match="freeze_bn") if freeze_bn else _nothing():
        model = build_segmenter(name, 21, backbone="resnet10t", freeze_bn=freeze_bn)
    backbone, head = model.parameter_groups()
    assert (backbone["lr_mult"], head["lr_mult"]) == (1.0, 10.0)
    ids_backbone, ids_head = {id(p) for p in backbone["params"]}, {id(p) for p in head["params"]}
    assert not ids_backbone & ids_head
    assert ids_backbone | ids_head == {id(p) for p in model.parameters() if p.requires_grad}
    assert ids_backbone == {id(p) for p in model.backbone.parameters()}
    assert len(ids_backbone) == len(backbone["params"]) and len(ids_head) == len(head["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(not names[id(p)].startswith("backbone.") for p in head["params"])
    # every trainable parameter receives a gradient
    model.train()
    model(torch.randn(2, 3, 48, 48)).sum().backward()
    assert all(p.grad is not None for g in (backbone, head) for p in g["params"])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.filterwarnings("ignore:freeze_bn")
@pytest.mark.parametrize("cls", [DeepLabV2, DeepLabV3Plus])
def test_frozen_batchnorm_stays_frozen_in_train_mode(cls):
    model = cls(21, backbone="resnet10t", freeze_bn=True)
    model.train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.backbone.modules())
    buffers = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert any(k.endswith("running_mean") for k in buffers)
    names = {n for n, _ in model.backbone.named_parameters()}
    assert not any("bn" in n for n in names), "BatchNorm affine parameters must not be trainable"
    for _ in range(2):
        model(torch.randn(2, 3, 48, 48) * 3 + 1).sum().backward()
    for key, value in model.backbone.state_dict().items():
        if "bn" in key or "running" in key:
            assert torch.equal(value, buffers[key]), key
    if cls is DeepLabV2:  # no BatchNorm or dropout left anywhere: train and eval mode agree
        x = torch.randn(1, 3, 40, 40)
        with torch.no_grad():
            train_out = model.train()(x)
            torch.testing.assert_close(train_out, model.eval()(x), rtol=0, atol=0)


def test_unfrozen_batchnorm_updates_its_statistics():
    model = DeepLabV2(21, backbone="resnet10t", freeze_bn=False).train()
    before = model.backbone.state_dict()["bn1.running_mean"].clone()
    model(torch.randn(2, 3, 48, 48) + 2)
    assert not torch.equal(model.backbone.state_dict()["bn1.running_mean"], before)


@pytest.mark.parametrize("name", ["deeplabv2", "deeplabv3plus"])
def test_local_pretrained_weights_reach_the_dilated_backbone(name, tmp_path):
    reference = timm.create_model("resnet10t", num_classes=1000)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    path = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    model = build_segmenter(name, 21, backbone="resnet10t", pretrained_path=path, freeze_bn=True)
    loaded = model.backbone.state_dict()
    for key, value in reference.state_dict().items():
        if key.startswith(("fc.", "global_pool")) or key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_other_timm_backbones_work():
    model = small("deeplabv3plus", backbone="mobilenetv3_small_050", output_stride=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 21, 16, 16)
    v2 = small("deeplabv2", backbone="resnet18").eval()
    with torch.no_grad():
        assert v2(torch.randn(1, 3, 64, 64)).shape == (1, 21, 8, 8)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown segmentation model"):
        build_segmenter("unet", 21)
    with pytest.raises(ValueError, match="output_stride"):
        small("deeplabv2", output_stride=4)
