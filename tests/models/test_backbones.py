"""Backbones: resnet38d in timm's registry, local pretrained weights, freezing, the MXNet converter.

Everything runs on the CPU with 1x3x64x64 inputs; resnet38d instances are shared per module where the test does not
change them.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import timm
import torch
from mxnet_params_writer import write_params
from safetensors.torch import save_file
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fsae.models import (
    PPC_FROZEN_PREFIXES,
    PretrainedLoadWarning,
    ResNet38d,
    create_backbone,
    freeze_batchnorm,
    freeze_by_prefix,
    load_pretrained,
)
from fsae.models.convert_resnet38 import main as convert_main
from fsae.models.convert_resnet38 import mxnet_to_torch_name, read_mxnet_params
from fsae.models.pretrained import read_state_dict

X = (1, 3, 64, 64)
# taps of the module docstring: (channels, reduction)
TAPS = [(64, 1), (128, 2), (256, 4), (512, 8), (1024, 8), (2048, 8), (4096, 8)]


@pytest.fixture(scope="module")
def net() -> ResNet38d:
    """A resnet38d without classifier, eval mode; tests must not modify it."""
    torch.manual_seed(0)
    return timm.create_model("resnet38d", num_classes=0).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(X, generator=torch.Generator().manual_seed(1))


def psa_keys() -> list[str]:
    """The state-dict keys of PSA's network/resnet38d.Net, written out from its definition (in order)."""

    def bn(p: str) -> list[str]:
        return [f"{p}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    keys = ["conv1a.weight"]
    for stage, n in ((2, 3), (3, 3), (4, 6), (5, 3)):
        for k in range(n):
            b = f"b{stage}" if k == 0 else f"b{stage}_{k}"
            keys += bn(f"{b}.bn_branch2a") + [f"{b}.conv_branch2a.weight"]
            keys += bn(f"{b}.bn_branch2b1") + [f"{b}.conv_branch2b1.weight"]
            keys += [f"{b}.conv_branch1.weight"] if k == 0 else []
    for b in ("b6", "b7"):
        keys += bn(f"{b}.bn_branch2a") + [f"{b}.conv_branch2a.weight"]
        keys += bn(f"{b}.bn_branch2b1") + [f"{b}.conv_branch2b1.weight"]
        keys += bn(f"{b}.bn_branch2b2") + [f"{b}.conv_branch2b2.weight"]
        keys += [f"{b}.conv_branch1.weight"]
    return keys + bn("bn7")


# --------------------------------------------------------------------------------------------------- resnet38d
def test_registered_in_timm(net: ResNet38d) -> None:
    assert "resnet38d" in timm.list_models()
    assert "resnet38d" in timm.list_models("resnet38*")
    with torch.device("meta"):  # no memory, no init: registry and config only
        model = timm.create_model("resnet38d", pretrained=False, pretrained_path=None)
    assert isinstance(model, ResNet38d)
    cfg = model.pretrained_cfg
    assert cfg["first_conv"] == "conv1a" and cfg["classifier"] == "fc" and cfg["num_classes"] == 1000
    assert tuple(cfg["mean"]) == (0.485, 0.456, 0.406) and tuple(cfg["std"]) == (0.229, 0.224, 0.225)
    assert model.fc.out_features == 1000 and isinstance(net.fc, nn.Identity)


def test_parameter_names_match_psa_layout(net: ResNet38d) -> None:
    assert list(net.state_dict()) == psa_keys()
    params = dict(net.named_parameters())
    assert params["conv1a.weight"].shape == (64, 3, 3, 3)
    assert params["b4_5.conv_branch2b1.weight"].shape == (512, 512, 3, 3)
    assert params["b5.conv_branch1.weight"].shape == (1024, 512, 1, 1)
    assert params["b6.conv_branch2b1.weight"].shape == (1024, 512, 3, 3)
    assert params["b7.conv_branch2b2.weight"].shape == (4096, 2048, 1, 1)
    assert params["bn7.weight"].shape == (4096,)
    assert (net.b5.conv_branch2a.dilation, net.b5.conv_branch2b1.dilation) == ((1, 1), (2, 2))
    assert net.b5_1.conv_branch2a.dilation == (2, 2) and net.b7.conv_branch2b1.dilation == (4, 4)
    assert sum(p.numel() for p in net.parameters()) == 105_070_912


@torch.no_grad()
def test_output_stride_8_and_4096_channels(net: ResNet38d, image: torch.Tensor) -> None:
    conv6 = net.forward_features(image)
    assert conv6.shape == (1, 4096, 8, 8) and (conv6 >= 0).all()
    assert net(image).shape == (1, 4096)  # num_classes=0: pooled features
    assert net.forward_features(torch.randn(1, 3, 60, 52)).shape == (1, 4096, 8, 7)  # strided convs round up


@torch.no_grad()
def test_forward_intermediates_are_psa_conv4_conv5_conv6(net: ResNet38d, image: torch.Tensor) -> None:
    final, feats = net.forward_intermediates(image)
    assert [(f.shape[1], 64 // f.shape[-1]) for f in feats] == TAPS
    assert [(i["num_chs"], i["reduction"]) for i in net.feature_info] == TAPS
    assert torch.equal(final, feats[-1]) and torch.equal(final, net.forward_features(image))
    # PSA's forward_as_dict: conv4 = relu(b5.bn_branch2a(b4_5 out)), conv5 = relu(b6.bn_branch2a(b5_2 out))
    x = net.conv1a(image)
    for name in ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2", "b4", "b4_1", "b4_2", "b4_3", "b4_4", "b4_5"):
        x = getattr(net, name)(x)
    torch.testing.assert_close(feats[3], torch.relu(net.b5.bn_branch2a(x)), rtol=0, atol=0)
    for name in ("b5", "b5_1", "b5_2"):
        x = getattr(net, name)(x)
    torch.testing.assert_close(feats[4], torch.relu(net.b6.bn_branch2a(x)), rtol=0, atol=0)
    assert [f.shape for f in net.forward_intermediates(image, indices=[3, 4, -1], intermediates_only=True)] == [
        (1, 512, 8, 8),
        (1, 1024, 8, 8),
        (1, 4096, 8, 8),
    ]
    with pytest.raises(ValueError, match="out of range"):
        net.forward_intermediates(image, indices=[7])


@torch.no_grad()
def test_features_only(net: ResNet38d, image: torch.Tensor) -> None:
    feats = timm.create_model("resnet38d", features_only=True).eval()
    assert type(feats).__name__ == "FeatureGetterNet"
    assert feats.feature_info.channels() == [512, 1024, 4096]
    assert feats.feature_info.reduction() == [8, 8, 8]
    feats.model.load_state_dict(net.state_dict())
    out = feats(image)
    assert [tuple(o.shape) for o in out] == [(1, c, 64 // r, 64 // r) for c, r in zip(
        feats.feature_info.channels(), feats.feature_info.reduction(), strict=True)]  # fmt: skip
    _, ref = net.forward_intermediates(image, indices=[3, 4, 6])
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # forward hooks on feature_info's modules give the same tensors
    hooked = timm.create_model("resnet38d", features_only=True, feature_cls="hook").eval()
    hooked.load_state_dict({"body." + k: v for k, v in net.state_dict().items()}, strict=False)
    for a, b in zip(hooked(image), ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@torch.no_grad()
def test_features_only_prunes_unused_blocks(net: ResNet38d, image: torch.Tensor) -> None:
    feats = timm.create_model("resnet38d", features_only=True, out_indices=(1, 3)).eval()
    assert feats.feature_info.channels() == [128, 512] and feats.feature_info.reduction() == [2, 8]
    kept = feats.state_dict()
    assert "model.b5.bn_branch2a.running_mean" in kept  # b5's input BN makes tap 3 ...
    assert not any(k.startswith(("model.b5.conv", "model.b5_1.", "model.b6.", "model.b7.", "model.bn7.")) for k in kept)
    feats.load_state_dict({"model." + k: v for k, v in net.state_dict().items() if "model." + k in kept})
    ref = net.forward_intermediates(image, indices=[1, 3], intermediates_only=True)
    for a, b in zip(feats(image), ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert feats.model.forward_features(image).shape == (1, 512, 8, 8)


def test_dropout_in_b6_b7_only_in_train_mode(image: torch.Tensor) -> None:
    model = freeze_batchnorm(timm.create_model("resnet38d", num_classes=0))  # BN deterministic in train mode too
    image = image[..., :32, :32]
    drops = {n: m.p for n, m in model.named_modules() if isinstance(m, nn.Dropout2d)}
    assert drops == {"b6.dropout_2b1": 0.3, "b6.dropout_2b2": 0.3, "b7.dropout_2b1": 0.5, "b7.dropout_2b2": 0.5}
    with torch.no_grad():
        model.eval()
        ref = model.forward_features(image)
        assert torch.equal(ref, model.forward_features(image))
        model.train()
        a, b = model.forward_features(image), model.forward_features(image)
        assert not torch.allclose(a, b) and not torch.allclose(a, ref)
        for m in model.modules():
            if isinstance(m, nn.Dropout2d):
                m.p = 0.0
        torch.testing.assert_close(model.forward_features(image), ref)  # the only train-mode difference is dropout


# ------------------------------------------------------------------------------------------------------ freezing
def test_freeze_ppc_layers_and_batchnorm(image: torch.Tensor) -> None:
    model = timm.create_model("resnet38d", num_classes=0).eval()
    with torch.no_grad():
        before = model.forward_features(image[..., :32, :32])
    model = freeze_batchnorm(model)
    frozen = freeze_by_prefix(model, PPC_FROZEN_PREFIXES)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert not any("bn" in n for n, _ in model.named_parameters())  # BN affine are constant buffers now
    assert frozen == [n for n, _ in model.named_parameters() if n.split(".")[0] in PPC_FROZEN_PREFIXES]
    assert frozen[0] == "conv1a.weight" and "b2_2.conv_branch2b1.weight" in frozen and len(frozen) == 8
    assert all(p.requires_grad == (n not in frozen) for n, p in model.named_parameters())

    stats = {k: v.clone() for k, v in model.state_dict().items() if "bn" in k}
    model.train()  # must not thaw anything
    for m in model.modules():
        if isinstance(m, nn.Dropout2d):
            m.p = 0.0
    out = model.forward_features(image[..., :32, :32])  # 32x32: cheaper backward
    torch.testing.assert_close(out, before, rtol=1e-4, atol=1e-5)  # running statistics used in train mode
    out.square().mean().backward()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    for name, p in model.named_parameters():
        assert (p.grad is None) == (name in frozen), name
    assert model.b3.conv_branch2a.weight.grad.abs().sum() > 0

    teacher = copy.deepcopy(model)  # an EMA copy stays frozen
    teacher.train()
    assert not any(isinstance(m, _BatchNorm) for m in teacher.modules())


def test_freeze_by_prefix_on_features_wrapper_and_errors() -> None:
    with torch.device("meta"):
        feats = timm.create_model("resnet38d", features_only=True, out_indices=(0,))
    frozen = freeze_by_prefix(feats, ["conv1a"])  # FeatureGetterNet puts the model under "model."
    assert frozen == ["model.conv1a.weight"]
    assert not feats.model.conv1a.weight.requires_grad and feats.model.b2.bn_branch2a.weight.requires_grad
    with pytest.raises(ValueError, match="no parameter name starts with 'b9'"):
        freeze_by_prefix(feats, ["b9"])
    bn = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="2d BatchNorm only"):
        freeze_batchnorm(bn)


# ------------------------------------------------------------------------------------------- pretrained weights
@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    return timm.create_model("resnet18").state_dict()


def _assert_same(model: nn.Module, state: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    mine = model.state_dict()
    for k, v in state.items():
        if not k.startswith(skip):
            assert torch.equal(mine[k], v), k


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_load_pth_and_safetensors(tmp_path, r18_state, fmt: str) -> None:
    path = tmp_path / f"r18.{fmt}"
    if fmt == "pth":
        torch.save({"epoch": 3, "state_dict": r18_state}, path)  # a training checkpoint
    else:
        save_file(r18_state, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file loads silently
        model = create_backbone("resnet18", pretrained_path=path)
    _assert_same(model, r18_state)
    report = load_pretrained(model, path, strict=True)
    assert report.complete and len(report.loaded) == len([k for k in r18_state if "num_batches" not in k])


def test_nested_state_dict_and_module_prefix(tmp_path, r18_state) -> None:
    path = tmp_path / "ddp.pt"
    torch.save({"model": {"state_dict": {"module." + k: v for k, v in r18_state.items()}}}, path)
    assert set(read_state_dict(path)) == set(r18_state)
    model = timm.create_model("resnet18")
    assert load_pretrained(model, path).complete
    _assert_same(model, r18_state)


def test_other_head_skips_classifier_quietly(tmp_path, r18_state) -> None:
    path = tmp_path / "r18.safetensors"
    save_file(r18_state, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = create_backbone("resnet18", pretrained_path=path, num_classes=20)
    assert model.fc.weight.shape == (20, 512)
    _assert_same(model, r18_state, skip=("fc.",))
    report = load_pretrained(timm.create_model("resnet18", num_classes=0), path)
    assert sorted(report.skipped_classifier) == ["fc.bias", "fc.weight"] and report.complete
    assert sorted(load_pretrained(model, path, strict=True).skipped_classifier) == ["fc.bias", "fc.weight"]
    headless = {k: v for k, v in r18_state.items() if not k.startswith("fc.")}  # a file without classifier ...
    with pytest.warns(PretrainedLoadWarning, match="2 missing .*: fc.weight, fc.bias"):  # ... into a model with one
        load_pretrained(timm.create_model("resnet18"), headless)


def test_missing_and_unexpected_keys_one_warning(tmp_path, r18_state) -> None:
    state = dict(r18_state)
    del state["layer4.1.conv2.weight"], state["layer4.1.bn2.running_var"]
    state["head.proj.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    model = timm.create_model("resnet18")
    initial = model.layer4[1].conv2.weight.clone()
    with pytest.warns(PretrainedLoadWarning) as record:
        report = load_pretrained(model, path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "2 missing (left as initialised): layer4.1.conv2.weight, layer4.1.bn2.running_var" in message
    assert "1 unexpected (ignored): head.proj.weight" in message and "partial.pth" in message
    assert report.missing == ["layer4.1.conv2.weight", "layer4.1.bn2.running_var"]
    assert report.unexpected == ["head.proj.weight"] and not report.complete
    assert torch.equal(model.layer4[1].conv2.weight, initial)
    _assert_same(model, {k: v for k, v in state.items() if k != "head.proj.weight"})

    fresh = timm.create_model("resnet18")
    untouched = fresh.conv1.weight.clone()
    with pytest.raises(ValueError, match="strict loading failed.*2 missing.*1 unexpected"):
        load_pretrained(fresh, path, strict=True)
    assert torch.equal(fresh.conv1.weight, untouched)  # nothing loaded on error


def test_shape_mismatch_and_no_match_raise(tmp_path, r18_state) -> None:
    state = dict(r18_state)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    model = timm.create_model("resnet18")
    untouched = model.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"layer1.0.conv1.weight file \(64, 64, 1, 1\) vs model \(64, 64, 3, 3\)"):
        load_pretrained(model, path)
    assert torch.equal(model.conv1.weight, untouched)

    torch.save({"backbone." + k: v for k, v in r18_state.items()}, tmp_path / "prefixed.pth")
    with pytest.raises(ValueError, match="none of the .* tensors .* matches"):
        create_backbone("resnet18", pretrained_path=tmp_path / "prefixed.pth")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        read_state_dict(tmp_path / "meta.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        create_backbone("resnet18", pretrained_path=tmp_path / "nope.pth")


@torch.no_grad()
def test_resnet18_features_only_through_create_backbone(tmp_path, r18_state) -> None:
    path = tmp_path / "r18.safetensors"
    save_file(r18_state, str(path))
    feats = create_backbone("resnet18", pretrained_path=path, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert feats.feature_info.channels() == [64, 128, 256, 512]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    _assert_same(feats, {k: v for k, v in r18_state.items() if not k.startswith("fc.")})
    out = feats(torch.randn(X))
    assert [tuple(o.shape) for o in out] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    plain = create_backbone("resnet18", features_only=True, out_indices=(4,))
    assert plain.feature_info.channels() == [512]


def test_resnet38d_pretrained_path_through_timm_features_only(tmp_path, net: ResNet38d) -> None:
    full = net.state_dict()
    part = {k: full[k] + 1 for k in ("conv1a.weight", "b5.bn_branch2a.weight", "b5.bn_branch2a.running_mean")}
    part["b7.conv_branch1.weight"] = full["b7.conv_branch1.weight"]  # in the file, pruned from the features model
    path = tmp_path / "partial38.safetensors"
    save_file(part, str(path))
    with pytest.warns(PretrainedLoadWarning, match=r"loaded 4/\d+ model tensors .* missing"):
        feats = timm.create_model("resnet38d", features_only=True, out_indices=(3,), pretrained_path=path)
    assert type(feats).__name__ == "FeatureGetterNet" and feats.feature_info.channels() == [512]
    got = feats.state_dict()
    assert all(torch.equal(got["model." + k], part[k]) for k in part if not k.startswith("b7"))


def test_pretrained_flag_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="publishes no weights for 'resnet38d'.*convert_resnet38"):
        create_backbone("resnet38d", pretrained=True)
    with pytest.raises(ValueError, match="not both"):
        create_backbone("resnet18", pretrained=True, pretrained_path=tmp_path / "x.pth")


# ---------------------------------------------------------------------------------------------- MXNet converter
@pytest.mark.parametrize("version", ["legacy", "v1", "v2", "v3"])
def test_read_mxnet_params_versions(tmp_path, version: str) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "arg:w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "aux:half": rng.standard_normal(5).astype(np.float16),
        "arg:double": rng.standard_normal((2, 2)),
        "arg:ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "arg:bytes": np.arange(7, dtype=np.uint8),
        "arg:none": None,
    }
    got = read_mxnet_params(write_params(tmp_path / f"{version}.params", arrays, version))
    assert list(got) == [k for k, v in arrays.items() if v is not None]
    for name, value in got.items():
        assert value.dtype == arrays[name].dtype and np.array_equal(value, arrays[name]), name


def test_read_mxnet_params_rejects_bad_files(tmp_path) -> None:
    good = write_params(tmp_path / "good.params", {"arg:a": np.ones(3, np.float32)}).read_bytes()
    (tmp_path / "short.params").write_bytes(good[:-12])
    with pytest.raises(ValueError, match="truncated"):
        read_mxnet_params(tmp_path / "short.params")
    (tmp_path / "magic.params").write_bytes(b"\x00" * 8 + good[8:])
    with pytest.raises(ValueError, match="not an MXNet NDArray list"):
        read_mxnet_params(tmp_path / "magic.params")
    sparse = bytearray(good)
    sparse[28:32] = (1).to_bytes(4, "little")  # V2 storage type: row_sparse
    (tmp_path / "sparse.params").write_bytes(bytes(sparse))
    with pytest.raises(ValueError, match="sparse"):
        read_mxnet_params(tmp_path / "sparse.params")


def test_mxnet_name_mapping() -> None:
    cases = {
        "arg:conv1a_weight": "conv1a.weight",
        "arg:res2a_branch1_weight": "b2.conv_branch1.weight",
        "arg:bn2a_branch2a_gamma": "b2.bn_branch2a.weight",
        "aux:bn3b2_branch2b1_moving_mean": "b3_2.bn_branch2b1.running_mean",
        "arg:res4b5_branch2b1_weight": "b4_5.conv_branch2b1.weight",
        "aux:bn6a_branch2b2_moving_var": "b6.bn_branch2b2.running_var",
        "arg:res7a_branch2b2_weight": "b7.conv_branch2b2.weight",
        "arg:bn7_beta": "bn7.bias",
        "arg:linear1000_bias": "fc.bias",
        "arg:res2a_branch2a_gamma": None,
        "arg:fc8_weight": None,
    }
    assert {k: mxnet_to_torch_name(k) for k in cases} == cases


def test_converter_round_trip(tmp_path, capsys) -> None:
    rng = np.random.default_rng(3)
    shapes = {
        "arg:conv1a_weight": (64, 3, 3, 3),
        "arg:bn2a_branch2a_gamma": (64,),
        "arg:bn2a_branch2a_beta": (64,),
        "aux:bn2a_branch2a_moving_mean": (64,),
        "aux:bn2a_branch2a_moving_var": (64,),
        "arg:res2a_branch1_weight": (128, 64, 1, 1),
        "arg:res2b1_branch2a_weight": (128, 128, 3, 3),
        "arg:bn4b5_branch2b1_gamma": (512,),
        "aux:bn6a_branch2b2_moving_var": (1024,),
        "arg:bn7_gamma": (4096,),
        "aux:bn7_moving_mean": (4096,),
        "arg:linear1000_bias": (1000,),
    }
    arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    src = write_params(tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params", arrays, "legacy")
    dst = tmp_path / "out" / "resnet38d.safetensors"
    assert convert_main([str(src), str(dst)]) == 0
    assert f"wrote 12 tensors to {dst}" in capsys.readouterr().out
    state = read_state_dict(dst)
    for name, value in arrays.items():
        assert np.array_equal(state[mxnet_to_torch_name(name)].numpy(), value), name

    assert convert_main([str(src), str(tmp_path / "r38.pth"), "--drop-classifier"]) == 0
    assert set(read_state_dict(tmp_path / "r38.pth")) == set(state) - {"fc.bias"}
    with torch.device("meta"):  # keys and shapes are resnet38d's
        reference = ResNet38d(num_classes=1000).state_dict()
    assert all(reference[k].shape == v.shape for k, v in state.items())


def test_converter_errors(tmp_path, capsys) -> None:
    bad_name = write_params(tmp_path / "a.params", {"arg:conv9_weight": np.ones(3, np.float32)})
    assert convert_main([str(bad_name), str(tmp_path / "a.pth")]) == 1
    assert "outside the ResNet-38 mapping" in capsys.readouterr().err
    bad_shape = write_params(tmp_path / "b.params", {"arg:conv1a_weight": np.ones((64, 3, 1, 1), np.float32)})
    assert convert_main([str(bad_shape), str(tmp_path / "b.pth")]) == 1
    assert "shapes differ from resnet38d" in capsys.readouterr().err
    assert not (tmp_path / "a.pth").exists() and not (tmp_path / "b.pth").exists()
