"""fsae.augment._grouped.apply_grouped: per-sample op choices applied by groups equal a per-sample loop."""

from __future__ import annotations

import math

import pytest
import torch
from augment_cases import per_sample_loop

from fsae.augment._grouped import apply_grouped, default_call_cost

CALLS: list[tuple[int, int]] = []


def _affine(k: int):
    """An in-place op that is exact in float32 and records its calls: x -> x * (k + 1) / 8 + m."""

    def op(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        CALLS.append((k, x.shape[0]))
        return x.mul_((k + 1) / 8).add_(m.view(-1, 1, 1, 1))

    return op


TABLE = [None, *[_affine(k) for k in range(1, 6)]]


def _case(batch: int, slots: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 64, (batch, 2, 3, 4), generator=g).float()
    choices = torch.randint(0, len(TABLE), (batch, slots), generator=g)
    mags = torch.randint(0, 8, (batch, slots), generator=g).float()
    return images, choices, mags


@pytest.mark.parametrize("call_cost", [None, 0.0, 40.0, math.inf])
@pytest.mark.parametrize("batch, slots", [(1, 3), (5, 1), (8, 5), (13, 10)])
def test_equals_per_sample_loop(batch: int, slots: int, call_cost, device: str) -> None:
    """Every policy (gather all, runs only, mixed by cost) gives the per-sample result exactly."""
    images, choices, mags = _case(batch, slots, seed=batch * 100 + slots)
    expected = per_sample_loop(images, choices, mags, TABLE)
    out = apply_grouped(images.to(device).clone(), choices, mags, TABLE, call_cost)
    assert torch.equal(out.cpu(), expected)


def test_grouped_calls_are_one_per_op_and_slot() -> None:
    """With grouping forced, each slot calls each drawn op once, on all its samples, whatever the batch."""
    images, choices, mags = _case(64, 4, seed=1)
    CALLS.clear()
    apply_grouped(images.clone(), choices, mags, TABLE, call_cost=math.inf)
    expected = [
        (k, int((choices[:, s] == k).sum()))
        for s in range(4)
        for k in range(1, len(TABLE))
        if (choices[:, s] == k).any()
    ]
    assert sorted(CALLS) == sorted(expected)


def test_without_gathering_calls_follow_the_runs() -> None:
    images, choices, mags = _case(16, 3, seed=2)
    CALLS.clear()
    apply_grouped(images.clone(), choices, mags, TABLE, call_cost=0.0)
    runs = sum(
        1 for s in range(3) for i in range(16) if choices[i, s] != 0 and (i == 0 or choices[i, s] != choices[i - 1, s])
    )
    assert len(CALLS) == runs <= 16 * 3


def test_default_policy() -> None:
    assert default_call_cost(torch.device("cpu")) == 2**20
    assert default_call_cost(torch.device("cuda")) == math.inf


def test_identity_only_and_empty() -> None:
    images = torch.rand(3, 3, 4, 4)
    work = images.clone()
    assert apply_grouped(work, torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2), TABLE) is work
    assert torch.equal(work, images)
    empty = torch.empty(0, 3, 4, 4)
    assert apply_grouped(empty, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2), TABLE).shape == empty.shape
