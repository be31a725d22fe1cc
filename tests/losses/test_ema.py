"""EMATeacher: the EMA arithmetic, wrappers, modes and checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fsae.losses import EMATeacher, unwrap_model


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Conv2d(3, 4, 1)
        self.frozen.requires_grad_(False)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.bn(self.frozen(x))))


def perturb(model: nn.Module, generator: torch.Generator) -> None:
    """A stand-in for an optimizer step (on every parameter, frozen ones too) and new BN statistics."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))
        model.bn.running_mean.add_(1.0)


def test_ema_arithmetic_after_k_steps():
    g = torch.Generator().manual_seed(0)
    student = Net()
    teacher = EMATeacher(student, decay=0.9)
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    history = []
    for _ in range(5):
        perturb(student, g)
        history.append({k: v.clone() for k, v in student.state_dict().items()})
        teacher.update(student)
    # Closed form: t_k = d^k t_0 + (1 - d) sum_i d^(k-i) s_i for trainable parameters.
    for name in ("head.weight", "head.bias", "bn.weight", "bn.bias"):
        expected = 0.9**5 * initial[name] + sum(0.1 * 0.9 ** (4 - i) * history[i][name] for i in range(5))
        torch.testing.assert_close(teacher.module.state_dict()[name], expected)
    # Frozen parameters and buffers are copied.
    for name in ("frozen.weight", "frozen.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        torch.testing.assert_close(teacher.module.state_dict()[name], history[-1][name])
    assert teacher.num_updates.item() == 5
    assert not any(p.requires_grad for p in teacher.module.parameters())


def test_teacher_call_has_no_graph_and_respects_mode():
    student = Net()
    x = torch.randn(2, 3, 8, 8)
    train_teacher = EMATeacher(student)
    out1, out2 = train_teacher(x), train_teacher(x)
    assert not out1.requires_grad
    assert not torch.equal(out1, out2), "train mode keeps dropout active"
    eval_teacher = EMATeacher(student, mode="eval")
    eval_teacher.train()  # a parent's .train() does not override the chosen mode
    torch.testing.assert_close(eval_teacher(x), eval_teacher(x))


def test_checkpoint_round_trip():
    g = torch.Generator().manual_seed(1)
    student = Net()
    teacher = EMATeacher(student, decay=0.5)
    perturb(student, g)
    teacher.update(student)
    restored = EMATeacher(Net(), decay=0.5)
    restored.load_state_dict(teacher.state_dict())
    assert restored.num_updates.item() == 1
    for a, b in zip(restored.state_dict().values(), teacher.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_works_with_a_ddp_wrapped_student(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        g = torch.Generator().manual_seed(2)
        plain = Net()
        wrapped = nn.parallel.DistributedDataParallel(plain)
        teacher = EMATeacher(wrapped, decay=0.8)
        assert unwrap_model(wrapped) is plain
        assert type(teacher.module) is Net
        before = teacher.module.head.weight.clone()
        perturb(plain, g)
        teacher.update(wrapped)
        torch.testing.assert_close(teacher.module.head.weight, 0.8 * before + 0.2 * plain.head.weight)
        assert set(teacher.module.state_dict()) == set(plain.state_dict())
    finally:
        dist.destroy_process_group()


def test_unwraps_compiled_modules():
    plain = Net()
    assert unwrap_model(torch.compile(plain)) is plain


def test_mismatched_student_is_rejected():
    teacher = EMATeacher(Net())
    with pytest.raises(ValueError):
        teacher.update(nn.Linear(3, 2))


@pytest.mark.parametrize(("kwargs", "match"), [({"decay": 1.0}, "decay"), ({"mode": "infer"}, "mode")])
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EMATeacher(Net(), **kwargs)
