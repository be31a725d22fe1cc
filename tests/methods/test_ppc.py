"""PPCMethod / PPCNet: outputs, gradients, parameter groups, FSAE attached (every method: test_contract.py)."""

from __future__ import annotations

import pytest
import torch

from fsae.losses import EMATeacher, FSAELoss
from fsae.methods import build_method
from fsae.models.ppc_net import pcm_refine, seam_cam_for_pcm


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 64, generator=g)
    labels = torch.zeros(2, 20)
    labels[0, 3] = labels[1, 7] = labels[1, 12] = 1
    return images, labels


def small_ppc(**options):
    torch.manual_seed(0)
    return build_method("ppc", num_classes=20, backbone="resnet18", **options)


def test_outputs_and_losses(batch):
    images, labels = batch
    method = small_ppc()
    out = method.net(images, extra=images)
    assert out["cam_logits"].shape == (2, 21, 8, 8) and out["refined"].shape == (2, 21, 8, 8)
    assert out["embeddings"].shape == (2, 128, 8, 8) and (out["embeddings"] >= 0).all()
    assert out["extra_cam_logits"].shape == (2, 21, 8, 8)
    step = method.training_step(images, labels, strong=images * 0.9, generator=torch.Generator().manual_seed(1))
    assert set(step.losses) == {"cls", "er", "ecr", "nce"}
    assert all(v.shape == () and torch.isfinite(v) for v in step.losses.values())
    assert step.strong_logits.shape == (2, 21, 8, 8)
    saliency = torch.rand(2, 1, 64, 64)
    with_sal = method.training_step(images, labels, saliency=saliency)
    assert "sal" in with_sal.losses and with_sal.strong_logits is None
    assert method(images).shape == (2, 21, 8, 8)


def test_pcm_input_and_refinement():
    logits = torch.randn(2, 4, 5, 5)
    cam = seam_cam_for_pcm(logits)
    foreground = cam[:, 1:]
    assert ((foreground > 0).sum(1) <= 1).all(), "only the per-pixel max foreground survives"
    torch.testing.assert_close(cam[:, 0], 1 - foreground.amax(1))
    # Identical features everywhere: A is uniform, so the refined CAM is the spatial mean.
    refined = pcm_refine(cam, torch.ones(2, 8, 5, 5))
    torch.testing.assert_close(refined, cam.mean(dim=(2, 3), keepdim=True).expand_as(cam), rtol=1e-4, atol=1e-4)


def test_gradients_and_parameter_groups(batch):
    images, labels = batch
    method = small_ppc()
    step = method.training_step(images, labels, strong=images.flip(-1))
    teacher = EMATeacher(method)
    loss = step.base_loss + FSAELoss(conf_threshold=0.0)(
        step.strong_logits, teacher(images, labels, cam_only=True), labels
    )
    loss.backward()
    groups = method.parameter_groups()
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in trainable}
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    new = method.net.new_modules()
    for module in new:
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, module
    assert all(p.grad is not None for p in groups[0]["params"][-4:])  # the backbone learns too
    # BatchNorm is frozen: no BN parameters at all, and statistics do not move in train mode.
    assert not any("bn" in n and p.requires_grad for n, p in method.named_parameters())


def test_resnet38d_freezes_the_stem():
    method = build_method("ppc", num_classes=20)
    frozen = {n for n, p in method.named_parameters() if not p.requires_grad}
    assert any(".conv1a." in n for n in frozen) and any(".b2_2." in n for n in frozen)
    assert not any(".b3." in n for n in frozen)
