"""The options of the FSAE API are keyword-only at every layer, and each one reaches the fused kernel.

Layers: ``fsae.ops`` (functional) -> ``fsae.ops.reference`` -> ``fsae.losses.fsae_loss`` -> ``FSAELoss``.  A
positional option raises TypeError, so a new option inserted in the middle cannot silently shift the others;
each option, passed alone through the top layers, gives the reference's result for that option (the oracle)
and not the default's.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from ops_cases import random_case, unambiguous_cams

import fsae.ops
from fsae.losses import FSAELoss, fsae_loss
from fsae.ops import reference

# A value per option that changes the loss on CASE_SHAPE (asserted below), all away from the defaults.
OPTIONS = {
    "conf_threshold": 0.6,
    "ring_threshold": 0.3,
    "ring_kernel": 5,
    "absent": "exclude",
    "boundary_weight": 0.25,
    "mask_student": False,
}
CASE_SHAPE = (2, 6, 13, 12)
THRESHOLDS = (0.95, 0.8, 0.6, 0.3)  # the case keeps its pixels away from the defaults and the values above

# (function, number of leading tensor arguments)
LAYERS = [
    (fsae.ops.cam_normalize, 2),
    (fsae.ops.cams_to_labels, 2),
    (fsae.ops.expansion_masks, 2),
    (fsae.ops.expansion_loss, 3),
    (reference.cam_normalize, 2),
    (reference.cams_to_labels, 2),
    (reference.expansion_masks, 2),
    (reference.expansion_loss, 3),
    (reference.masked_logits, 2),
    (reference.weighted_ce, 2),
    (fsae_loss, 3),
    (FSAELoss, 0),
]


@pytest.mark.parametrize(("fn", "tensors"), LAYERS, ids=lambda v: getattr(v, "__qualname__", str(v)))
def test_options_are_keyword_only_in_the_signatures(fn, tensors):
    params = list(inspect.signature(fn).parameters.values())
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:tensors])
    options = params[tensors:]
    assert options, "every layer has options"
    assert all(p.kind is p.KEYWORD_ONLY for p in options), [p.name for p in options if p.kind is not p.KEYWORD_ONLY]


def test_positional_options_raise_type_error():
    case = random_case((1, 3, 4, 4), seed=0)
    s, t, labels = case.student, case.teacher, case.labels
    cams = t[:, 1:]
    masks = reference.expansion_masks(t, labels)
    calls = [
        lambda: fsae.ops.cam_normalize(cams, labels, "minmax"),
        lambda: fsae.ops.cams_to_labels(cams, labels, 0.3),
        lambda: fsae.ops.expansion_masks(t, labels, 0.6),
        lambda: fsae.ops.expansion_loss(s, t, labels, 0.6),
        lambda: reference.cam_normalize(cams, labels, "minmax"),
        lambda: reference.cams_to_labels(cams, labels, 0.3),
        lambda: reference.expansion_masks(t, labels, 0.6),
        lambda: reference.expansion_loss(s, t, labels, 0.6),
        lambda: reference.masked_logits(t, labels, "zero"),
        lambda: reference.weighted_ce(s, masks, None),
        lambda: fsae_loss(s, t, labels, 0.6),
        lambda: FSAELoss(0.6),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="positional argument"):
            call()


def _case(device: str):
    return random_case(CASE_SHAPE, device=device, seed=11, thresholds=THRESHOLDS)


@pytest.mark.usefixtures("extension")
@pytest.mark.parametrize(("name", "value"), list(OPTIONS.items()))
def test_each_option_reaches_the_kernel(device, name, value):
    """Through FSAELoss, fsae_loss and fsae.ops.expansion_loss (fused kernel) each option alone gives the
    reference's loss, masks and gradient for it, which differ from the defaults'."""
    case = _case(device)
    want, want_masks = reference.expansion_loss(case.student, case.teacher, case.labels, **{name: value})
    default, _ = reference.expansion_loss(case.student, case.teacher, case.labels)
    assert abs(want.item() - default.item()) > 1e-4, f"{name}={value!r} must change the loss of the case"

    criterion = FSAELoss(**{name: value})
    assert getattr(criterion, name) == value
    results = {
        "FSAELoss": lambda s: (criterion(s, case.teacher, case.labels), criterion.last_masks),
        "fsae_loss": lambda s: (fsae_loss(s, case.teacher, case.labels, **{name: value}), None),
        "fsae.ops": lambda s: fsae.ops.expansion_loss(s, case.teacher, case.labels, **{name: value}),
    }
    student = case.student.clone().requires_grad_()
    (want_grad,) = torch.autograd.grad(
        reference.expansion_loss(student, case.teacher, case.labels, **{name: value})[0], student
    )
    for layer, run in results.items():
        student = case.student.clone().requires_grad_()
        loss, masks = run(student)
        (grad,) = torch.autograd.grad(loss, student)
        torch.testing.assert_close(loss, want, rtol=2e-5, atol=2e-6, msg=f"{layer}, {name}={value!r}")
        torch.testing.assert_close(grad, want_grad, rtol=2e-5, atol=2e-6, msg=f"{layer}, {name}={value!r}")
        if masks is not None:
            for field in ("pseudo_label", "conf_mask", "ring_mask", "mask"):
                assert torch.equal(getattr(masks, field), getattr(want_masks, field)), (layer, name, field)


@pytest.mark.usefixtures("extension")
@pytest.mark.parametrize(("name", "value"), list(OPTIONS.items())[:4])
def test_each_mask_option_reaches_the_kernel(device, name, value):
    case = _case(device)
    got = fsae.ops.expansion_masks(case.teacher, case.labels, **{name: value})
    want = reference.expansion_masks(case.teacher, case.labels, **{name: value})
    default = reference.expansion_masks(case.teacher, case.labels)
    assert not torch.equal(want.mask, default.mask) or not torch.equal(want.pseudo_label, default.pseudo_label)
    for field in ("pseudo_label", "conf_mask", "ring_mask", "mask"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field


@pytest.mark.usefixtures("extension")
def test_normalize_and_seed_options_reach_the_kernel(device):
    case = _case(device)
    cams, labels = case.teacher[:, 1:].sigmoid() + 0.5, case.labels  # min > 0: "minmax" differs from "max"
    for options in ({"mode": "minmax"}, {"eps": 0.5}):
        got = fsae.ops.cam_normalize(cams, labels, **options)
        want = reference.cam_normalize(cams, labels, **options)
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-6)
        assert not torch.allclose(want, reference.cam_normalize(cams, labels), atol=1e-3), options
    norm = reference.cam_normalize(cams, labels)
    seeds = []
    for options in ({"bg_threshold": 0.2}, {"bg_threshold": 0.7}, {"bg_power": 1.0}):
        seeds.append(reference.cams_to_labels(norm, labels, **options))
        clear = unambiguous_cams(norm, labels, options.get("bg_threshold"), options.get("bg_power"))
        got = fsae.ops.cams_to_labels(clear, labels, **options)
        assert torch.equal(got, reference.cams_to_labels(clear, labels, **options)), options
    assert not torch.equal(seeds[0], seeds[1]) and not torch.equal(seeds[1], seeds[2]), "each option gives other seeds"
