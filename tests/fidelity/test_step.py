"""Two training steps of ``voc_ppc_fsae.yaml`` against the authors' ``train_ssl`` (``fixtures/step.npz``).

The same weights (``fidelity_weights``, converted by ``fsae.models.import_checkpoint``), the same inputs
(``fidelity_step.inputs``), the same torch seed (so the backbone's dropout masks are drawn in the same order) and
the authors' recorded anchor draws of PPC's intra-view contrast: every loss term, every gradient, the parameters
after both optimizer steps and the EMA teacher must agree to float tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fidelity_step import inputs, normalise, summarise
from fidelity_weights import FIXTURES, authors_state_dict

from fsae.engine import load_config
from fsae.engine.schedule import build_optimizer, lr_factor
from fsae.engine.trainer import build_components, step_terms
from fsae.losses import EMATeacher
from fsae.losses import ppc as ppc_losses
from fsae.models.import_checkpoint import convert_ppc

CONFIG = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "voc_ppc_fsae.yaml"
_HEADS = {"fc8": "fc8", "proj_fc": "proj", "f8_3": "f8_3", "f8_4": "f8_4", "f9": "f9"}
# their logged name -> ours (their loss_cls is classification + background suppression, as our "cls")
_TERMS = {"loss_cls": "cls", "loss_er": "er", "loss_ecr": "ecr", "loss_nce": "nce", "loss_sal": "sal",
          "loss_semcon": "fsae"}  # fmt: skip


def _ours(name: str) -> str:
    head, _, rest = name.partition(".")
    return f"net.{_HEADS[head]}.{rest}" if head in _HEADS else f"net.backbone.model.{name}"


def _theirs_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Our tensor in their layout (fc8: background row back to the end)."""
    return torch.cat([tensor[1:], tensor[:1]]) if name.startswith("fc8.") else tensor


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "step.npz"))


@pytest.fixture(scope="module")
def ours(fixture):
    """Run our two steps; returns (losses per step, lrs per step, grad summaries, update and EMA summaries)."""
    config = load_config(CONFIG, ["train.max_steps=2", "optim.schedule_steps=10", "method.pretrained=false"])
    method, _, criterion, _ = build_components(config, num_classes=20, pretrained=False)
    method.load_state_dict(convert_ppc(authors_state_dict(0), method))
    method.train()
    teacher = EMATeacher(method, decay=config["fsae"]["ema_decay"], mode=config["fsae"]["teacher_mode"])
    optimizer = build_optimizer(method, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    theirs_names = [k for k in fixture if k.startswith("update/")]
    names = [k[len("update/") :] for k in theirs_names]
    params = dict(method.named_parameters())
    initial = {n: params[_ours(n)].detach().clone() for n in names}
    draws = json.loads(str(fixture["anchors"]))

    losses, lrs, grads = [], [], {}
    torch.manual_seed(0)
    for k, batch in enumerate(inputs()):
        # their anchor draws of this step, per (class, pixel count), in their order (view 1 before view 2)
        queue: dict[tuple[int, int], list[list[int]]] = {}
        for step, _view, cls, size, *drawn in draws:
            if step == k:
                queue.setdefault((0 if cls == 20 else cls + 1, size), []).append(drawn)

        def replay(label, size, half, generator, queue=queue):
            drawn = queue[(label, size)].pop(0)
            assert len(drawn) == half
            return torch.tensor(drawn, dtype=torch.int64)

        saliency = torch.from_numpy(batch["saliency"][:, None].astype(np.float32) / 255)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ppc_losses, "_draw_anchors", replay)
            terms = step_terms(method, teacher, criterion, config["fsae"]["weight"], normalise(batch["weak"]),
                               normalise(batch["strong"]), torch.from_numpy(batch["labels"]), saliency)  # fmt: skip
        assert not any(queue.values()), "every recorded anchor draw is used"
        loss = sum(terms.values())
        loss.backward()
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        for n in names:
            grads[f"grad_{k}/{n}"] = summarise(n, _theirs_layout(n, params[_ours(n)].grad))
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        teacher.update(method)
        losses.append({**{name: float(v.detach()) for name, v in terms.items()}, "loss": float(loss.detach())})
    shadow = dict(teacher.module.named_parameters())
    summaries = {
        **grads,
        **{f"update/{n}": summarise(n, _theirs_layout(n, params[_ours(n)].detach() - initial[n])) for n in names},
        **{f"ema/{n}": summarise(n, _theirs_layout(n, shadow[_ours(n)].detach() - initial[n])) for n in names},
    }
    summaries.update({f"initial/{n}": summarise(n, initial[n]) for n in names})
    return losses, lrs, summaries


def test_the_trainable_set_is_theirs(fixture, ours):
    _, _, summaries = ours
    assert {k for k in fixture if k.startswith(("grad_", "update/", "ema/"))} == {
        k for k in summaries if not k.startswith("initial/")
    }


@pytest.mark.parametrize("k", [0, 1])
def test_every_loss_term(fixture, ours, k):
    losses, _, _ = ours
    for theirs, name in _TERMS.items():
        assert losses[k][name] == pytest.approx(float(fixture[f"{theirs}_{k}"]), rel=2e-5, abs=1e-7), theirs
    assert losses[k]["loss"] == pytest.approx(float(fixture[f"loss_{k}"]), rel=2e-5)


def test_learning_rates_poly_over_the_schedule_horizon(fixture, ours):
    _, lrs, _ = ours
    for k in range(2):
        theirs = fixture[f"lr_{k}"]  # their groups: weights x1, biases x2, new weights x10, new biases x20
        assert lrs[k] == pytest.approx([theirs[0], theirs[2]], rel=1e-9)


@pytest.mark.parametrize("kind", ["grad_0", "grad_1", "update", "ema"])
def test_gradients_parameters_and_teacher(fixture, ours, kind):
    """Float32 through 38 layers and two steps: the summaries agree to ~3e-3 of each tensor's norm (a real
    difference, e.g. momentum 0.9 for their 5e-4, moves the updates by tens of percent).  The EMA's change over two
    steps is ~1e-7 of the weights, at the level of float32 rounding of the weights themselves: its bound adds a
    few ulps of the initial tensor."""
    _, _, summaries = ours
    keys = [k for k in summaries if k.startswith(kind + "/")]
    assert keys
    worst = 0.0
    for key in keys:
        mine, theirs = summaries[key], fixture[key]
        bound = 1e-2 * theirs[0]  # the tensor's norm: each projection is N(0, norm^2)
        if kind == "ema":
            bound += 16 * torch.finfo(torch.float32).eps * summaries["initial/" + key.split("/", 1)[1]][0]
        worst = max(worst, float(np.abs(mine - theirs).max() / max(bound, 1e-30)))
    assert worst < 1.0, f"{kind}: worst difference {worst:.2f} of its bound"
