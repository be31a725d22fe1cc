"""SIPE network and method (fsae.models.sipe_net, fsae.methods.sipe): shapes, hand computations, gradients, FSAE."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from fsae.losses import EMATeacher, FSAELoss, attach_background
from fsae.methods.base import StepOutput
from fsae.methods.sipe import SIPEMethod
from fsae.models.sipe_net import SIPENet, image_specific_cam, seed_iou
from fsae.ops import expansion_masks

B, C, S = 2, 20, 64  # batch, classes, image size; resnet18 at output stride 16 -> 4x4 maps
H = S // 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny CPU models run faster and far steadier on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_method(**kwargs) -> SIPEMethod:
    torch.manual_seed(0)
    return SIPEMethod(num_classes=C, backbone="resnet18", **kwargs)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(B, 3, S, S, generator=g)
    labels = torch.zeros(B, C)
    labels[0, 3] = 1
    labels[1, [5, 7]] = 1
    return images, labels


def test_net_outputs_shapes_and_dtypes():
    net = make_method().net
    images, labels = batch()
    out = net(images)
    assert set(out) == {"cam", "score", "norm_cam"}  # no labels: no seeds, no is_cam
    out = net(images, labels)
    expected = {
        "cam": (B, C, H, H),
        "score": (B, C),
        "norm_cam": (B, C + 1, H, H),
        "features": (B, 128 + 128 + 256 + 256, H, H),
        "seeds": (B, C + 1, H, H),
        "prototypes": (B, C + 1, 768),
        "is_cam": (B, C + 1, H, H),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.dtype == torch.float32 for v in out.values())
    torch.testing.assert_close(out["score"], out["cam"].mean(dim=(2, 3)))


def test_norm_cam_background_and_label_mask():
    net = make_method().net
    images, labels = batch()
    with torch.no_grad():
        free, masked = net(images)["norm_cam"], net(images, labels)["norm_cam"]
        cam = net(images)["cam"]
    assert free.min() >= 0 and free.max() <= 1
    fg = cam.relu() / (cam.relu().amax(dim=(2, 3), keepdim=True) + 1e-5)
    torch.testing.assert_close(free[:, 1:], fg)
    torch.testing.assert_close(free[:, 0], 1 - fg.amax(dim=1))
    # with labels: absent maps zeroed, present maps and the background (1 - max over ALL maps, as SIPE) unchanged
    present = torch.cat([torch.ones(B, 1), labels], dim=1)[:, :, None, None]
    torch.testing.assert_close(masked, free * present)


def test_seeds_and_is_cam_zero_for_absent_classes():
    net = make_method().net
    images, labels = batch()
    with torch.no_grad():
        out = net(images, labels)
    absent = torch.cat([torch.zeros(B, 1), 1 - labels], dim=1).bool()
    assert out["seeds"][absent].abs().sum() == 0
    assert out["is_cam"][absent].abs().sum() == 0 and out["prototypes"][absent].abs().sum() == 0
    assert out["is_cam"].min() >= 0 and out["is_cam"].max() <= 1 + 1e-6
    assert out["seeds"].sum(dim=1).max() <= 1  # at most one seed per pixel
    assert set(out["seeds"].unique().tolist()) <= {0.0, 1.0}


def test_seed_iou_by_hand():
    # two pixels with orthogonal features: the correlation is the identity
    feature = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    norm_cam = torch.tensor([[0.5, 0.0], [0.4, 1.0]]).view(1, 2, 1, 2)  # background, class 1
    # IoU_k(i) = n_k(i) / (1 + sum_j n_kj - n_k(i)); background halved
    expected = torch.tensor([[0.5 / 1.0 * 0.5, 0.0], [0.4 / 2.0, 1.0 / 1.4]]).view(1, 2, 1, 2)
    torch.testing.assert_close(seed_iou(norm_cam, feature), expected, atol=1e-4, rtol=0)  # L2 norm's + 1e-5


def test_image_specific_cam_by_hand():
    features = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0]]).view(1, 2, 1, 3)
    seeds = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]).view(1, 2, 1, 3)  # class 1 has no seed
    prototypes, is_cam = image_specific_cam(seeds, features)
    torch.testing.assert_close(prototypes, torch.tensor([[[1.0, 0.5], [0.0, 0.0]]]))  # mean of (1,0) and (1,1)
    p = torch.tensor([1.0, 0.5]) / math.hypot(1.0, 0.5)
    cos = [p[0].item(), p[1].item(), (p.sum() / math.sqrt(2)).item()]
    torch.testing.assert_close(is_cam, torch.tensor([[cos, [0.0, 0.0, 0.0]]]).view(1, 2, 1, 3))


def test_gradients_reach_what_they_should():
    method = make_method()
    net = method.net
    images, labels = batch()
    # SIPE's detach after stage 2: stem, layer1, layer2 frozen; layer3, layer4 trainable
    frozen = set(net.frozen_parameters)
    assert {n.split(".")[0] for n in frozen} == {"conv1", "bn1", "layer1", "layer2"}
    assert all(not p.requires_grad for n, p in net.backbone.named_parameters() if n in frozen)
    assert all(p.requires_grad for n, p in net.backbone.named_parameters() if n.startswith(("layer3", "layer4")))

    def grads(loss: torch.Tensor) -> dict[str, bool]:
        method.zero_grad(set_to_none=True)
        loss.backward()
        return {n: p.grad is not None and p.grad.abs().sum().item() > 0 for n, p in method.named_parameters()}

    out = net(images, labels)
    got = grads(out["is_cam"].sum())  # image-specific branch: side convs only (features detached, seeds argmax'ed)
    assert all(got[f"net.side.{i}.weight"] for i in range(4))
    assert not any(v for n, v in got.items() if not n.startswith("net.side."))

    out = net(images, labels)
    got = grads(out["norm_cam"].sum() + out["score"].sum())  # general branch: classifier and the trainable backbone
    assert got["net.classifier.weight"] and not any(got[f"net.side.{i}.weight"] for i in range(4))
    # (timm zero-initialises each block's last BatchNorm, so look at the shortcut convs)
    assert got["net.backbone.layer4.0.downsample.0.weight"] and got["net.backbone.layer3.0.downsample.0.weight"]

    step = method.training_step(images, labels)
    got = grads(step.base_loss)
    assert got["net.classifier.weight"] and all(got[f"net.side.{i}.weight"] for i in range(4))
    assert all(p.grad is None for n, p in net.backbone.named_parameters() if n in frozen)


def test_parameter_groups_partition_trainable_parameters():
    method = make_method()
    groups = method.parameter_groups()
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in method.parameters() if p.requires_grad}
    new = {id(p) for m in method.net.new_modules() for p in m.parameters()}
    assert {id(p) for p in groups[1]["params"]} == new


def test_batchnorm_modes():
    images, labels = batch()
    method = make_method().train()  # "fixed" (SIPE): statistics frozen, affine trainable
    bns = [m for m in method.net.backbone.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns) and method.net.classifier.training
    before = [m.running_mean.clone() for m in bns]
    method.training_step(images, labels, strong=images)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns, strict=True))
    assert method.net.backbone.layer3[0].bn1.weight.requires_grad
    teacher = EMATeacher(method)  # the teacher's train mode keeps them fixed too
    teacher(images)
    assert all(not m.training for m in teacher.module.net.backbone.modules() if isinstance(m, _BatchNorm))

    frozen = make_method(batchnorm="frozen").net
    assert not any(isinstance(m, _BatchNorm) for m in frozen.modules())
    trained = make_method(batchnorm="train").net.train()
    assert all(m.training for m in trained.modules() if isinstance(m, _BatchNorm))


def test_cam_logits_softmax_is_the_normalised_maps():
    method = make_method()
    images, labels = batch()
    with torch.no_grad():
        logits = method.cam_logits(images)  # label-free (inference)
        out = method.net(images)
    assert logits.shape == (B, C + 1, H, H) and logits.dtype == torch.float32
    assert logits.min() >= 0 and logits.max() <= -math.log(method.eps) + 1e-5
    p = out["norm_cam"].clamp_min(method.eps)  # SIPE's own [1 - max n, n]
    torch.testing.assert_close(logits.softmax(dim=1), p / p.sum(dim=1, keepdim=True))
    torch.testing.assert_close(method(images), logits)  # forward without labels is cam_logits
    # with the labels (training): the attachment primitive on SIPE's raw CAM, absent classes at the floor
    with torch.no_grad():
        labelled = method(images, labels, cam_only=True)
    torch.testing.assert_close(labelled, attach_background(out["cam"], labels, floor=method.eps))
    assert torch.all(labelled[:, 1:][labels == 0] == 0)
    cube = make_method(bg_power=3.0)
    cube.load_state_dict(method.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(cube.cam_logits(images, labels), attach_background(out["cam"], labels, bg_power=3.0))


def test_attached_logits_reach_the_fsae_threshold():
    # C = 20, class 4 present (channel 4); pixel 0 its peak alone, pixel 1 at 0.9 of it, pixel 2 empty
    maps = torch.zeros(1, C, 1, 3)
    maps[0, 3] = torch.tensor([1.0, 0.9, 0.0])
    maps[0, 7] = torch.tensor([0.0, 5.0, 0.0])  # an absent class: must not matter
    labels = torch.zeros(1, C)
    labels[:, 3] = 1
    masks = expansion_masks(attach_background(maps, labels), labels)
    conf = masks.confidence.flatten()
    n0, n1 = 1 / (1 + 1e-5), 0.9 / (1 + 1e-5)
    assert conf[0].item() == pytest.approx(n0 / (n0 + C * 1e-4), abs=1e-5) and conf[0] >= 0.95
    assert conf[1].item() == pytest.approx(n1 / (1.0 + 19 * 1e-4), abs=1e-4)
    assert masks.conf_mask.flatten().tolist() == [True, False, True]
    assert masks.pseudo_label.flatten().tolist() == [4, 4, 0]


def test_fsae_attached_end_to_end():
    method = make_method()
    teacher = EMATeacher(method)
    images, labels = batch()
    step = method.training_step(images, labels, strong=images * 0.8)
    assert isinstance(step, StepOutput) and set(step.losses) == {"cls", "gsc"}
    assert step.strong_logits.shape == (B, C + 1, H, H)
    teacher_logits = teacher(images, labels, cam_only=True)  # as the trainer calls it
    assert teacher_logits.shape == (B, C + 1, H, H) and not teacher_logits.requires_grad
    torch.testing.assert_close(step.strong_logits, method.cam_logits(images * 0.8, labels))
    fsae = FSAELoss()
    loss = fsae(step.strong_logits, teacher_logits, labels)
    assert torch.isfinite(loss) and loss > 0 and fsae.last_stats["mask_fraction"] > 0
    (step.base_loss + loss).backward()
    assert method.net.classifier.weight.grad.abs().sum() > 0
    assert method.training_step(images, labels).strong_logits is None
    assert isinstance(method(images, labels, strong=images), StepOutput)  # forward dispatches (DDP path)


def test_pretrained_file_and_autocast(tmp_path):
    import timm

    torch.manual_seed(3)
    reference = timm.create_model("resnet18")
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    method = SIPEMethod(num_classes=C, backbone="resnet18", pretrained_path=tmp_path / "resnet18.pth")
    torch.testing.assert_close(method.net.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    images, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = method.training_step(images, labels, strong=images)
        out = method.net(images, labels)
    assert out["norm_cam"].dtype == out["is_cam"].dtype == step.strong_logits.dtype == torch.float32
    assert all(torch.isfinite(v) for v in step.losses.values())


def test_other_timm_backbone_and_validation():
    torch.manual_seed(0)
    net = SIPENet(num_classes=3, backbone="efficientnet_b0")  # not a FeatureListNet: freezing found by autograd
    assert net.frozen_parameters and not any(n.startswith("blocks.4") for n in net.frozen_parameters)
    out = net(torch.randn(1, 3, 64, 64), torch.tensor([[1.0, 0.0, 1.0]]))
    assert out["is_cam"].shape == (1, 4, 4, 4)
    assert SIPENet(num_classes=3, backbone="resnet18", frozen_levels=0).frozen_parameters == []
    with pytest.raises(ValueError, match="bg_power"):
        SIPEMethod(backbone="resnet18", bg_power=0)
    with pytest.raises(ValueError, match="batchnorm"):
        SIPENet(backbone="resnet18", batchnorm="nope")
    with pytest.raises(ValueError, match="labels must have shape"):
        net(torch.randn(1, 3, 64, 64), torch.ones(1, 5))


def test_last_stage_stride1_is_the_undilated_stride_16_network():
    """``last_stage="stride1"`` (default): the last stage's strided convs at stride 1, no dilation anywhere; the
    ``"dilated"`` switch is timm's output stride 16 (dilation 2). Same sizes, another function on the same weights."""
    torch.manual_seed(0)
    plain = SIPENet(num_classes=3, backbone="resnet18")
    for m in plain.modules():  # timm zero-initialises each block's last BatchNorm: make the branches count
        if isinstance(m, _BatchNorm):
            m.weight.data.normal_(1.0, 0.1)
    dilated = SIPENet(num_classes=3, backbone="resnet18", last_stage="dilated")
    dilated.load_state_dict(plain.state_dict())
    convs = dict(plain.backbone.named_modules())
    assert convs["layer4.0.conv1"].stride == (1, 1) and convs["layer4.0.downsample.0"].stride == (1, 1)
    assert all(m.dilation == (1, 1) for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    assert any(m.dilation == (2, 2) for m in dilated.modules() if isinstance(m, torch.nn.Conv2d))
    images = torch.randn(1, 3, 80, 64)
    with torch.no_grad():
        a, b = plain.eval()(images)["cam"], dilated.eval()(images)["cam"]
        # by hand: timm's output-stride-32 network with the two strides undone
        import timm

        ref = timm.create_model("resnet18", features_only=True, out_indices=(-4, -3, -2, -1))
        ref.load_state_dict(plain.backbone.state_dict())
        ref.layer4[0].conv1.stride, ref.layer4[0].downsample[0].stride = (1, 1), (1, 1)
        x4 = ref.eval()(images)[-1]
    assert a.shape == b.shape == (1, 3, 5, 4)
    torch.testing.assert_close(a, plain.classifier(x4))
    assert float((a - b).norm() / a.norm()) > 0.05
    with pytest.raises(ValueError, match="last_stage must be one of"):
        SIPENet(backbone="resnet18", last_stage="nope")
    with pytest.raises(ValueError, match="gives output stride 16"):
        SIPENet(backbone="resnet18", output_stride=8)
    with pytest.raises(ValueError, match="AvgPool2d.*use last_stage='dilated'"):
        SIPENet(backbone="resnet18d")  # ResNet-D: an average-pool downsample in the last stage


def test_flip_fused_is_cam_and_authors_cams():
    """The inference IS-CAM: the flip-fused maps equal a hand fusion; ``authors_cams`` sums the scales, normalises by
    the max, zeroes absent classes, and leaves the method's mode as it was."""
    method = make_method()
    net = method.net.eval()
    g = torch.Generator().manual_seed(3)
    image = torch.randn(1, 3, 64, 48, generator=g)
    labels = torch.zeros(1, C)
    labels[0, [2, 9]] = 1
    with torch.no_grad():
        out = net.flip_fused_is_cam(torch.cat([image, image.flip(-1)]), labels)
        features = net.backbone(torch.cat([image, image.flip(-1)]))
        cam = net.classifier(features[-1])
        cam = cam[:1] + cam[1:].flip(-1)
    fg = cam.relu() / (cam.relu().amax(dim=(2, 3), keepdim=True) + 1e-5)
    torch.testing.assert_close(out["norm_cam"], torch.cat([1 - fg.amax(dim=1, keepdim=True), fg], dim=1))
    absent = [c + 1 for c in range(C) if c not in (2, 9)]
    assert float(out["is_cam"][0, absent].abs().max()) == 0
    uint8 = torch.randint(0, 256, (1, 3, 50, 40), dtype=torch.uint8, generator=g)
    method.train()
    maps = method.authors_cams(uint8, labels)
    assert method.training and maps.shape == (1, C + 1, 50, 40) and maps.dtype == torch.float32
    assert float(maps[0, absent].abs().max()) == 0 and float(maps.amax()) <= 1
    present = maps[0, [0, 3, 10]].amax(dim=(1, 2))
    assert bool(((present == 0) | (present > 0.99)).all())  # each map normalised by its own max
    with pytest.raises(ValueError, match="uint8"):
        method.authors_cams(uint8.float(), labels)
