"""The training loop on the toy dataset: a run, resume with identical results, atomic checkpoints, guards."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from fsae.data import make_toy_dataset
from fsae.engine import ConfigError, NonFiniteLossError, find_checkpoint, load_config, train
from fsae.engine import loop as loop_module
from fsae.engine.schedule import lr_factor


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "VOC2012", num_train=8, num_val=2, image_size=64)


def tiny_config(root, **overrides):
    items = {
        "method.backbone": "resnet18",
        "data.root": str(root),
        "data.crop_size": 64,
        "data.long_side": [64, 80],
        "data.num_workers": 0,
        "fsae.conf_threshold": 0.3,
        "fsae.ring_threshold": 0.1,
        "fsae.ema_decay": 0.5,
        "train.batch_size": 2,
        "train.max_steps": 4,
        "train.log_every": 1,
        "train.checkpoint_every": 2,
        **overrides,
    }
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in items.items()])


def test_a_run_writes_config_logs_checkpoints_and_weights(toy_root, tmp_path):
    summary = train(tiny_config(toy_root), tmp_path, progress=False)
    assert summary["steps"] == 4 and all(torch.isfinite(torch.tensor(summary[k])) for k in ("loss", "fsae", "cls"))
    effective = (tmp_path / "config.yaml").read_text()
    assert "global_batch: 2" in effective and "git_commit" in effective
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert {"loss", "lr", "images_per_s", "mask_fraction", "fsae", "nce"} <= set(lines[0])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    student, teacher = load_file(tmp_path / "model.safetensors"), load_file(tmp_path / "teacher.safetensors")
    assert student.keys() == teacher.keys() and any(not torch.equal(student[k], teacher[k]) for k in student)


def test_resume_mid_run_gives_identical_weights(toy_root, tmp_path, monkeypatch):
    config = tiny_config(toy_root, **{"train.max_steps": 5})
    train(config, tmp_path / "straight", progress=False)

    original = loop_module.save_checkpoint

    def crash_after_first_checkpoint(accelerator, output_dir, state, keep):
        original(accelerator, output_dir, state, keep)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(loop_module, "save_checkpoint", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(loop_module, "save_checkpoint", original)
    assert find_checkpoint(tmp_path / "resumed", "latest").name == "step_00000002"
    train(config, tmp_path / "resumed", resume="latest", progress=False)

    for name in ("model.safetensors", "teacher.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name}:{key}")


def test_fsae_start_step_is_a_warm_up_without_the_term(toy_root, tmp_path):
    # a random resnet18's CAM logits are small (softmax confidence ~1/21): a low threshold gives the term pixels
    low = {"train.max_steps": 3, "fsae.conf_threshold": 0.055, "fsae.ring_threshold": 0.05}

    def student(name, **overrides):
        train(tiny_config(toy_root, **{**low, **overrides}), tmp_path / name, progress=False)
        lines = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return load_file(tmp_path / name / "model.safetensors"), lines

    off, _ = student("off", **{"fsae.enabled": False})
    warm, _ = student("warm", **{"fsae.start_step": 10})  # never reached: the student trains as without FSAE
    late, lines = student("late", **{"fsae.start_step": 2})
    assert all(torch.equal(off[k], warm[k]) for k in off)
    assert any(not torch.equal(off[k], late[k]) for k in off)
    assert ["fsae" in line for line in lines] == [False, False, True]  # steps 1, 2 warm up; step 3 has the term
    # the warm-up is a baseline run: FSAE continuing from the baseline's step-2 checkpoint ends where "late" does
    branch = tiny_config(toy_root, **{**low, "fsae.start_step": 2})
    train(branch, tmp_path / "branch", resume=str(tmp_path / "off" / "checkpoints" / "step_00000002"), progress=False)
    branched = load_file(tmp_path / "branch" / "model.safetensors")
    assert all(torch.equal(late[k], branched[k]) for k in late)
    with pytest.raises(ConfigError, match="start_step"):
        tiny_config(toy_root, **{"fsae.start_step": -1})


def test_saliency_dir_adds_ppcs_eps_term(toy_root, tmp_path):
    """data.saliency_dir=SALImages (the toy's simulated maps) feeds PPC's EPS saliency loss ``sal``."""
    config = tiny_config(toy_root, **{"data.saliency_dir": "SALImages", "train.max_steps": 2, "fsae.enabled": False})
    summary = train(config, tmp_path / "sal", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "sal" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        assert "sal" in line and math.isfinite(line["sal"]) and line["sal"] > 0
        parts = sum(line[k] for k in ("cls", "er", "ecr", "nce", "sal"))
        assert line["loss"] == pytest.approx(parts, rel=1e-5)
    assert math.isfinite(summary["sal"])
    # the default (no saliency folder): PPC on SEAM, no sal term
    train(tiny_config(toy_root, **{"train.max_steps": 1, "fsae.enabled": False}), tmp_path / "plain", progress=False)
    assert "sal" not in json.loads((tmp_path / "plain" / "log.jsonl").read_text())
    with pytest.raises(ConfigError, match="data.saliency_dir must be str"):
        tiny_config(toy_root, **{"data.saliency_dir": 3})


def test_a_checkpoint_that_does_not_fit_the_config_is_refused_in_one_line(toy_root, tmp_path):
    train(tiny_config(toy_root, **{"train.max_steps": 2, "fsae.enabled": False}), tmp_path, progress=False)
    written = (tmp_path / "config.yaml").read_text()
    other = tiny_config(toy_root, **{"train.max_steps": 3, "fsae.enabled": False, "method.backbone": "resnet10t"})
    with pytest.raises(ConfigError, match=r"^--resume .*step_00000002 does not fit this run's config") as err:
        train(other, tmp_path, resume="latest", progress=False)
    assert "\n" not in str(err.value)
    assert (tmp_path / "config.yaml").read_text() == written  # the run's record is kept


def test_interrupted_checkpoint_is_never_resumed(toy_root, tmp_path):
    (tmp_path / "checkpoints" / ".tmp_step_00000009").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_00000007").mkdir()  # no train_state.json: incomplete
    with pytest.raises(ConfigError, match="no checkpoint"):
        find_checkpoint(tmp_path, "latest")
    with pytest.raises(ConfigError, match="not a checkpoint"):
        find_checkpoint(tmp_path, str(tmp_path / "checkpoints" / "step_00000007"))


def test_non_finite_loss_stops_naming_step_and_term(toy_root, tmp_path, monkeypatch):
    from fsae.methods.ppc import PPCMethod

    original = PPCMethod.training_step

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.calls == 2:
            out.losses["er"] = out.losses["er"] * float("nan")
        self.calls += 1
        return out

    monkeypatch.setattr(PPCMethod, "calls", 0, raising=False)
    monkeypatch.setattr(PPCMethod, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2: er=nan"):
        train(tiny_config(toy_root, **{"train.checkpoint_every": 1}), tmp_path, progress=False)
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["step_00000001", "step_00000002"], "steps before the bad one only"
    assert not (tmp_path / "model.safetensors").exists()


def test_config_errors_come_before_heavy_work(tmp_path):
    config = load_config(None, ["train.batch_size=3", "train.gradient_accumulation_steps=2", f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match="not divisible"):
        train(config, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="data.root is not set"):
        train(load_config(None, ["train.batch_size=2"]), tmp_path / "out", progress=False)


def test_lr_schedules():
    config = load_config(None, ["train.max_steps=100"])
    assert lr_factor(0, config) == 1.0
    assert lr_factor(50, config) == pytest.approx(0.5**0.9)
    assert lr_factor(100, config) == 0.0
    warm = load_config(None, ["train.max_steps=100", "optim.warmup_steps=10", "optim.schedule=cosine"])
    assert lr_factor(0, warm) == pytest.approx(0.1) and lr_factor(50, warm) == pytest.approx(0.5)


def test_momentum_quirk():
    from fsae.engine import build_optimizer
    from fsae.methods import build_method

    method = build_method("ppc", backbone="resnet18")
    clean = build_optimizer(method, load_config())
    quirk = build_optimizer(method, load_config(None, ["optim.original_momentum_quirk=true"]))
    assert clean.param_groups[0]["momentum"] == 0.9 and quirk.param_groups[0]["momentum"] == 0.0005
    assert [g["lr"] for g in clean.param_groups] == [0.01, 0.1]


def test_a_launch_accelerate_did_not_join_is_refused(tmp_path, monkeypatch):
    """`accelerate launch --multi_gpu` on a machine without GPUs starts WORLD_SIZE processes that Accelerate leaves
    unjoined (seen with accelerate 1.15): each would train alone into the same folder. Stand-in for that state: an
    Accelerator of one process under WORLD_SIZE=2."""
    import accelerate

    train_cfg = load_config(None, [])["train"]
    real = loop_module.make_accelerator(train_cfg, tmp_path)  # no launcher: one process, accepted
    assert real.num_processes == 1

    class Unjoined:
        num_processes = 1
        distributed_type = real.distributed_type
        mixed_precision, device = "no", real.device

        def __init__(self, **kwargs):
            pass

    monkeypatch.setattr(accelerate, "Accelerator", Unjoined)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="launched as 2 processes, but Accelerate runs 1"):
        loop_module.make_accelerator(train_cfg, tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert isinstance(loop_module.make_accelerator(train_cfg, tmp_path), Unjoined)


def test_sipe_gets_the_crop_valid_mask_and_clipped_gradients(toy_root, tmp_path, monkeypatch):
    """SIPE's loop: the valid mask of each padded crop reaches the method (0 on the padding, from the loader's
    geometry), and ``optim.clip_grad_norm`` clips the gradient norm before every optimizer step."""
    from accelerate import Accelerator

    from fsae.methods.sipe import SIPEMethod

    masks, norms = [], []
    step = SIPEMethod.training_step

    def spy_step(self, images, labels, *args, valid_mask=None, **kwargs):
        masks.append((tuple(images.shape), None if valid_mask is None else valid_mask.clone()))
        return step(self, images, labels, *args, valid_mask=valid_mask, **kwargs)

    clip = Accelerator.clip_grad_norm_

    def spy_clip(self, parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        total = clip(self, parameters, max_norm, *args, **kwargs)
        after = torch.norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
        norms.append((max_norm, float(total), float(after)))
        return total

    monkeypatch.setattr(SIPEMethod, "training_step", spy_step)
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", spy_clip)
    config = tiny_config(toy_root, **{"method.name": "sipe", "data.long_side": [40, 48], "optim.clip_grad_norm": 0.5,
                                      "fsae.enabled": False, "train.max_steps": 2})  # fmt: skip
    train(config, tmp_path, progress=False)
    assert len(masks) == 2 and len(norms) == 2
    for shape, mask in masks:
        assert mask is not None and mask.shape == (shape[0], 1, 64, 64)
        assert set(mask.unique().tolist()) == {0.0, 1.0}  # a 40-48 px image in a 64 px crop: padding
        rows, cols = mask[:, 0].amax(dim=2).sum(dim=1), mask[:, 0].amax(dim=1).sum(dim=1)
        assert bool(((rows >= 1) & (rows <= 48) & (cols >= 1) & (cols <= 48)).all())
    assert all(m == 0.5 and after <= 0.5 * (1 + 1e-4) < total for m, total, after in norms)
    # off by default: no clipping, and no valid mask for a method without uses_valid_mask
    norms.clear()
    train(tiny_config(toy_root, **{"train.max_steps": 1}), tmp_path / "ppc", progress=False)
    assert norms == []


def test_compile_components_keeps_the_step_and_the_checkpoint_keys():
    """train.compile: the modules compiled in place give the eager step's loss and gradients, keep their
    state-dict keys (checkpoints and resume unchanged) and the EMA update still reaches the teacher."""
    import copy

    from fsae.engine.trainer import compile_components, step_terms
    from fsae.losses import EMATeacher, FSAELoss
    from fsae.methods import build_method

    torch.manual_seed(2)
    method = build_method("sipe", num_classes=3, backbone="resnet10t", last_stage="dilated", output_stride=8,
                          frozen_levels=0, batchnorm="train").train()  # fmt: skip
    images = torch.randn(2, 3, 48, 48)
    strong = images + 0.1 * torch.randn_like(images)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    runs = []
    for compiled in (False, True):
        student = copy.deepcopy(method)
        teacher, criterion = EMATeacher(student, decay=0.5), FSAELoss(conf_threshold=0.6, ring_threshold=0.3)
        keys = list(student.state_dict())
        if compiled:
            compile_components(student, teacher, criterion, backend="aot_eager")
            assert list(student.state_dict()) == keys  # no _orig_mod. prefix: checkpoints load either way
            assert all(m._compiled_call_impl is not None for m in (student, teacher, criterion))
        terms = step_terms(student, teacher, criterion, 1.0, images, strong, labels)
        sum(terms.values()).backward()
        with torch.no_grad():
            for p in student.parameters():
                p.add_(1.0)
        teacher.update(student)
        runs.append((terms, {n: p.grad for n, p in student.named_parameters()}, teacher.module.state_dict()))
    (want, want_grads, want_teacher), (got, grads, teacher_state) = runs
    assert want["fsae"] > 0
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    for name, grad in want_grads.items():
        if grad is not None:
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    for name, value in want_teacher.items():
        torch.testing.assert_close(teacher_state[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_train_compile_compiles_the_components(toy_root, tmp_path, monkeypatch):
    from fsae.engine import trainer as trainer_module

    real, seen = trainer_module.compile_components, []

    def fast(method, teacher, criterion):  # aot_eager: the traced graph without inductor's minutes of codegen
        seen.append(type(method).__name__)
        real(method, teacher, criterion, backend="aot_eager")

    monkeypatch.setattr(trainer_module, "compile_components", fast)
    summary = train(tiny_config(toy_root, **{"train.compile": True, "train.max_steps": 2}), tmp_path, progress=False)
    assert seen == ["PPCMethod"] and summary["steps"] == 2 and math.isfinite(summary["loss"])
    assert load_file(tmp_path / "model.safetensors").keys() == load_file(tmp_path / "teacher.safetensors").keys()
