"""The registered operators are well-formed, and torch.compile traces whole training steps through them.

``torch.library.opcheck`` runs all its default checks (schema, autograd registration, fake kernels, AOT dispatch with
dynamic shapes: forward and, for inputs that require grad, backward compared with eager) on every
``torch.ops.fsae.*`` operator, for float32 / float16 / bfloat16 / float64 and non-contiguous inputs.  The training
step tests compile with ``fullgraph=True`` (a graph break fails them) and the ``aot_eager`` backend (the eager
kernels in the traced graph: fast, and the results must equal eager ones).
"""

from __future__ import annotations

import copy

import pytest
import torch
from ops_cases import random_case

import fsae.ops
from fsae.losses import EMATeacher, FSAELoss
from fsae.ops import reference

pytestmark = pytest.mark.usefixtures("extension")

DEFAULT_OPCHECKS = {"test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"}


def _transposed(t: torch.Tensor) -> torch.Tensor:
    """The values of ``t (B, C, H, W)`` in a non-contiguous layout (H and W strides swapped)."""
    return t.transpose(2, 3).contiguous().transpose(2, 3)


def op_samples(device: str):
    """(name, operator, args) for every torch.ops.fsae operator, over dtypes and layouts; differentiable inputs require
    grad, so opcheck also compares the compiled backward with the eager one."""
    ops = torch.ops.fsae
    for dtype, layout in [
        (torch.float32, "contiguous"),
        (torch.float16, "transposed"),
        (torch.bfloat16, "channels_last"),
        (torch.float64, "contiguous"),
    ]:
        case = random_case((2, 5, 7, 6), dtype, device, "exclude", seed=4)
        present = (case.labels != 0).contiguous()
        student, teacher = case.student, case.teacher
        if layout == "transposed":
            student, teacher = _transposed(student), _transposed(teacher)
        elif layout == "channels_last":
            student = student.to(memory_format=torch.channels_last)
            teacher = teacher.to(memory_format=torch.channels_last)
        assert student.is_contiguous() == (layout == "contiguous")
        cams = teacher[:, 1:]  # a non-contiguous slice in every layout
        tag = f"{dtype}-{layout}".replace("torch.", "")

        def grad(t):
            return t.detach().clone().requires_grad_()

        yield f"cam_normalize-max-{tag}", ops.cam_normalize.default, (grad(cams), present, False, 1e-5)
        yield f"cam_normalize-minmax-{tag}", ops.cam_normalize.default, (grad(cams), None, True, 1e-5)
        norm = reference.cam_normalize(cams.detach(), present)
        yield f"cams_to_labels-power-{tag}", ops.cams_to_labels.default, (grad(norm), present, None, 8.0)
        yield f"cams_to_labels-threshold-{tag}", ops.cams_to_labels.default, (norm, None, 0.3, None)
        masks = (grad(teacher), present, 0.95, 0.8, 3, layout == "transposed")
        yield f"expansion_masks-{tag}", ops.expansion_masks.default, masks
        for exclude, boundary_weight in [(False, None), (True, 0.5)]:
            forward = (grad(student), teacher, present, 0.9, 0.5, 3, exclude, boundary_weight)
            options = f"{'exclude' if exclude else 'zero'}-{boundary_weight}-{tag}"
            yield f"expansion_loss_forward-{options}", ops.expansion_loss_forward.default, forward
            loss, lse, label, _, conf, ring, _ = ops.expansion_loss_forward(*forward)
            # the backward kernel is not differentiable (no input requires grad here)
            backward = (torch.ones_like(loss).detach(), student, lse.detach(), label, conf, ring, present)
            yield (
                f"expansion_loss_backward-{options}",
                ops.expansion_loss_backward.default,
                (*backward, exclude, boundary_weight),
            )


def test_opcheck_covers_every_operator():
    """A new operator must get samples here (and a fake kernel, and an autograd formula if it is differentiable)."""
    sampled = {op.name() for _, op, _ in op_samples("cpu")}
    registered = {name for name in torch._C._dispatch_get_all_op_names() if name.startswith("fsae::")}
    assert sampled == registered


def test_opcheck(device):
    """All default opcheck tests (test_schema, test_autograd_registration, test_faketensor,
    test_aot_dispatch_dynamic) on every torch.ops.fsae operator and sample."""
    for name, op, args in op_samples(device):
        result = torch.library.opcheck(op, args, raise_exception=False)
        assert set(result) == DEFAULT_OPCHECKS
        failed = {test: outcome for test, outcome in result.items() if outcome != "SUCCESS"}
        assert not failed, f"{name}: {failed}"


def test_ops_are_differentiable_without_a_python_wrapper(device):
    """torch.ops.fsae.* alone: the loss and cam_normalize have gradients, the masks none."""
    case = random_case((2, 4, 6, 5), torch.float64, device, seed=8)
    present = (case.labels != 0).contiguous()
    student = case.student.clone().requires_grad_()
    loss, lse, label, confidence, *masks = torch.ops.fsae.expansion_loss_forward(
        student, case.teacher, present, 0.9, 0.5, 3, False, None
    )
    assert loss.requires_grad and not any(t.requires_grad for t in (lse, label, confidence, *masks))
    (grad,) = torch.autograd.grad(loss, student)
    want = student.detach().clone().requires_grad_()
    (want_grad,) = torch.autograd.grad(
        reference.expansion_loss(want, case.teacher, case.labels, conf_threshold=0.9, ring_threshold=0.5)[0], want
    )
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-12)

    cams = case.teacher[:, 1:].clone().requires_grad_()
    (grad,) = torch.autograd.grad(torch.ops.fsae.cam_normalize(cams, present, True, 1e-5).square().sum(), cams)
    want = cams.detach().clone().requires_grad_()
    ref = reference.cam_normalize(want, case.labels, mode="minmax", eps=1e-5).square().sum()
    (want_grad,) = torch.autograd.grad(ref, want)
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-12)

    teacher = case.teacher.clone().requires_grad_()
    outputs = torch.ops.fsae.expansion_masks(teacher, present, 0.9, 0.5, 3, False)
    assert not any(t.requires_grad for t in outputs)


def _graph_ops(seen: dict[str, set]):
    """A backend that records the call targets of the AOT forward and backward graphs, then runs them eagerly."""
    from functorch.compile import make_boxed_func
    from torch._functorch.aot_autograd import aot_module_simplified

    def compiler(name):
        def compile_graph(gm, _inputs):
            seen[name] = {node.target for node in gm.graph.nodes if node.op == "call_function"}
            return make_boxed_func(gm.forward)

        return compile_graph

    def backend(gm, inputs):
        return aot_module_simplified(gm, inputs, fw_compiler=compiler("forward"), bw_compiler=compiler("backward"))

    return backend


def test_compiled_loss_runs_the_fused_kernels(device):
    """The compiled graphs hold the fused forward and backward operators (not the reference's decomposition)."""
    case = random_case((2, 6, 9, 8), device=device, seed=5)
    seen: dict[str, set] = {}

    def step(student, teacher, labels):
        loss, masks = fsae.ops.expansion_loss(student, teacher, labels, boundary_weight=0.5)
        return loss, masks.mask

    compiled = torch.compile(step, backend=_graph_ops(seen), fullgraph=True)
    results = []
    for fn in (compiled, step):
        student = case.student.clone().requires_grad_()
        loss, mask = fn(student, case.teacher, case.labels)
        loss.backward()
        results.append((loss, mask, student.grad))
    assert torch.ops.fsae.expansion_loss_forward.default in seen["forward"]
    assert torch.ops.fsae.expansion_loss_backward.default in seen["backward"]
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    ref_loss, _ = reference.expansion_loss(case.student, case.teacher, case.labels, boundary_weight=0.5)
    torch.testing.assert_close(results[0][0], ref_loss)


class TinyCAMNet(torch.nn.Module):
    """Two conv layers and a 1x1 head: ``(B, 3, H, W)`` images to ``(B, C+1, H/2, W/2)`` CAM logits."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Conv2d(8, classes + 1, 1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, cam_only: bool = True):
        return self.head(self.body(images))


def _compare_compiled_step(method, step, inputs, tolerances):
    """Run ``step(method, teacher, criterion, *inputs) -> loss`` eagerly and compiled (fullgraph, aot_eager) on
    copies of the same modules; loss, every parameter's gradient and the teacher's masks must agree."""
    runs = []
    for compile_it in (True, False):
        student = copy.deepcopy(method)
        teacher, criterion = EMATeacher(student, decay=0.9), FSAELoss(conf_threshold=0.6, ring_threshold=0.3)
        fn = torch.compile(step, fullgraph=True, backend="aot_eager") if compile_it else step
        torch.manual_seed(0)  # same dropout draws, if any
        loss = fn(student, teacher, criterion, *inputs)
        loss.backward()
        grads = {name: p.grad for name, p in student.named_parameters() if p.requires_grad}
        runs.append((loss, grads, criterion.last_masks))
    (loss, grads, masks), (want_loss, want_grads, want_masks) = runs
    assert want_masks.conf_mask.any() and want_masks.ring_mask.any(), "the step must exercise both masks"
    assert masks.mask.equal(want_masks.mask) and masks.pseudo_label.equal(want_masks.pseudo_label)
    torch.testing.assert_close(loss, want_loss, **tolerances)
    assert grads.keys() == want_grads.keys() and all(g is not None for g in want_grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], **tolerances, msg=lambda m, n=name: f"{n}: {m}")
    return want_loss


def test_training_step_with_a_small_network_compiles(device):
    """Student forward + EMA teacher logits + FSAELoss -> loss, compiled whole with fullgraph=True."""
    torch.manual_seed(1)
    classes = 4
    method = TinyCAMNet(classes).to(device).train()
    images = torch.randn(2, 3, 24, 20, device=device)
    strong = images + 0.1 * torch.randn_like(images)
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]], device=device)

    def step(method, teacher, criterion, weak, strong, labels):
        teacher_logits = 4 * teacher(weak)  # sharpened, so that some pixels are confident
        return criterion(4 * method(strong), teacher_logits, labels)

    # aot_eager calls the eager kernels (bitwise equal on the CPU); a little slack for other devices' kernels
    _compare_compiled_step(method, step, (images, strong, labels), {"rtol": 1e-6, "atol": 1e-7})


def test_sipe_training_step_compiles(device):
    """The trainer's step_terms (SIPE's base losses, with cam_normalize's registered backward, the EMA teacher's
    and the student's CAM logits, FSAELoss) on a tiny timm backbone compiles with fullgraph=True."""
    pytest.importorskip("timm")
    from fsae.engine.trainer import step_terms
    from fsae.methods import build_method

    torch.manual_seed(2)
    method = build_method(
        "sipe",
        num_classes=3,
        backbone="resnet10t",
        pretrained=False,
        last_stage="dilated",
        output_stride=8,
        frozen_levels=0,
        batchnorm="train",
    )
    method.to(device).train()
    images = torch.randn(2, 3, 48, 48, device=device)
    strong = images + 0.1 * torch.randn_like(images)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], device=device)
    valid = torch.ones(2, 1, 48, 48, device=device)

    def step(method, teacher, criterion, weak, strong, labels, valid):
        terms = step_terms(method, teacher, criterion, 1.0, weak, strong, labels, valid_mask=valid)
        return sum(terms.values())

    # the traced graphs decompose a few ops (e.g. BatchNorm): observed on the CPU <= 5e-10 absolute, 4e-7 relative
    _compare_compiled_step(method, step, (images, strong, labels, valid), {"rtol": 1e-5, "atol": 1e-6})
