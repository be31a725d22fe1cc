"""The contract every registered method keeps, swept over ``fsae.methods.list_methods()`` (timm-style).

The sweep includes ``toy_cam``, a method registered from outside fsae (tests/methods/external/toy_wsss.py): a
method someone adds passes these tests, or it does not fit the trainer, the EMA teacher or the pseudo-label
recipe. Each method is built with its ``tiny_options`` (a small instance: CPU seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from fsae.augment import StrongPerturbation, WeakPerturbation, imagenet_normalize
from fsae.data import VOCSegmentation, make_toy_dataset, train_geometry
from fsae.engine import load_config
from fsae.infer import load_cam_model
from fsae.losses import EMATeacher, FSAELoss
from fsae.methods import WSSSMethod, build_method, get_method, list_methods

sys.path.insert(0, str(Path(__file__).parent / "external"))
import toy_wsss  # noqa: E402, F401  (registers toy_cam and toy_voc)

C = 20
METHODS = list_methods()


def test_the_sweep_covers_the_built_ins_and_the_external_method():
    assert {"ppc", "sipe", "mctformer", "toy_cam"} <= set(METHODS)


def small(name: str) -> WSSSMethod:
    torch.manual_seed(0)
    return build_method(name, num_classes=C, **get_method(name).tiny_options)


@pytest.fixture(scope="module")
def toy_batch(tmp_path_factory):
    """4 toy images (64 px crops in [0, 1]) and their labels."""
    root = make_toy_dataset(tmp_path_factory.mktemp("toy") / "VOC2012", num_train=4, num_val=1, image_size=64)
    dataset = VOCSegmentation(root, "train_aug", transform=train_geometry(64, (64, 80)))
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    return batch["image"].float() / 255, batch["labels"]


@pytest.mark.parametrize("name", METHODS)
def test_cam_logits(name, toy_batch):
    crops, labels = toy_batch
    method = small(name).eval()
    images = imagenet_normalize(crops)
    with torch.no_grad():
        logits = method.cam_logits(images, labels)
        free = method.cam_logits(images)
        assert logits.dim() == 4 and logits.shape[:2] == (4, C + 1) and min(logits.shape[2:]) >= 1
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all() and torch.isfinite(free).all()
        assert free.shape == logits.shape
        # forward dispatches: images alone / cam_only -> cam_logits (the EMA teacher's and DDP's path)
        torch.testing.assert_close(method(images), free, rtol=0, atol=0)
        torch.testing.assert_close(method(images, labels, cam_only=True), logits, rtol=0, atol=0)
        step = method(images, labels, strong=images)
    assert step.losses and all(v.dim() == 0 and torch.isfinite(v) for v in step.losses.values())
    assert step.strong_logits is not None and step.strong_logits.shape == logits.shape
    assert method.training_step(images, labels).strong_logits is None


@pytest.mark.parametrize("name", METHODS)
def test_parameter_groups_partition_the_trainable_parameters(name):
    method = small(name)
    groups = method.parameter_groups()
    assert groups and all(g["lr_mult"] > 0 for g in groups)
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert set(grouped) == trainable, "the groups must hold every trainable parameter and no frozen one"


@pytest.mark.parametrize("name", METHODS)
def test_ema_teacher_follows_and_round_trips(name, toy_batch):
    crops, labels = toy_batch
    images = imagenet_normalize(crops)
    method = small(name)
    teacher = EMATeacher(method, decay=0.5, mode="eval")
    before = {n: p.detach().clone() for n, p in teacher.module.named_parameters()}
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(1.0)
    teacher.update(method)
    for n, p in teacher.module.named_parameters():
        student = dict(method.named_parameters())[n]
        expected = (before[n] + student.detach()) / 2 if student.requires_grad else student.detach()
        torch.testing.assert_close(p, expected, msg=n)
    restored = EMATeacher(small(name), decay=0.5, mode="eval")
    restored.load_state_dict(teacher.state_dict())
    assert int(restored.num_updates) == 1
    torch.testing.assert_close(restored(images, labels, cam_only=True), teacher(images, labels, cam_only=True))


@pytest.mark.parametrize("name", METHODS)
def test_load_cam_model_round_trip(name, toy_batch, tmp_path):
    from safetensors.torch import save_file

    crops, labels = toy_batch
    images = imagenet_normalize(crops)
    method = small(name).eval()
    options = get_method(name).tiny_options
    overrides = [("method.name", name), ("method.options", dict(options))]
    if name == "toy_cam":
        overrides.append(("method.module", "toy_wsss"))
    if "backbone" in options:  # the backbone is a constructor argument set from method.backbone
        overrides = [("method.name", name), ("method.backbone", options["backbone"]),
                     ("method.options", {k: v for k, v in options.items() if k != "backbone"})]  # fmt: skip
    config = load_config(overrides=overrides)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, "_run": {"num_classes": C}}))
    save_file({k: v.contiguous() for k, v in method.state_dict().items()}, tmp_path / "model.safetensors")
    loaded, loaded_config = load_cam_model(tmp_path)
    assert type(loaded) is type(method) and not loaded.training and loaded_config["method"]["name"] == name
    with torch.no_grad():
        torch.testing.assert_close(loaded.cam_logits(images, labels), method.cam_logits(images, labels))


@pytest.mark.parametrize("name", METHODS)
def test_a_few_steps_with_fsae_lower_the_loss_on_one_batch(name, toy_batch):
    crops, labels = toy_batch
    method = small(name)
    method.eval()  # dropout off: the batch and every draw are fixed, so the objective is too
    teacher = EMATeacher(method, decay=0.8)
    # a lower threshold and absent classes excluded: FSAE acts within a few steps of an untrained network
    criterion = FSAELoss(conf_threshold=0.6, ring_threshold=0.3, absent="exclude")
    optimizer = torch.optim.AdamW([{**g, "lr": 1e-3 * g["lr_mult"]} for g in method.parameter_groups()])
    weak = imagenet_normalize(WeakPerturbation(seed=0)(crops))
    strong = imagenet_normalize(StrongPerturbation(seed=1)(crops))
    totals, fsae_terms = [], []
    for step in range(20):
        out = method(weak, labels, strong=strong, generator=torch.Generator().manual_seed(0))
        fsae_term = criterion(out.strong_logits, teacher(weak, labels, cam_only=True), labels)
        loss = out.base_loss + fsae_term
        assert torch.isfinite(loss), (name, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        teacher.update(method)
        totals.append(loss.item())
        fsae_terms.append(fsae_term.item())
    assert sum(totals[-3:]) / 3 < sum(totals[:3]) / 3, (name, totals)
    assert max(fsae_terms) > 0, f"{name}: FSAE never supervised a pixel"
