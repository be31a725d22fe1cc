"""``optim.schedule: cosine_epoch`` against timm's ``CosineLRScheduler`` driven as the authors' MCTformer ``main.py``
drives it (timm is the oracle: their ``create_scheduler`` builds that scheduler from their arguments)."""

from __future__ import annotations

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from fsae.engine.config import ConfigError, load_config
from fsae.engine.schedule import cosine_epochs, lr_factor, make_scheduler, steps_per_epoch

# main.py: --lr 5e-4 scaled by batch 64 / 512, --epochs 60, --warmup-epochs 5, --warmup-lr 1e-6, --min-lr 1e-5
AUTHORS = ["optim.name=adamw", "optim.lr=0.0000625", "optim.schedule=cosine_epoch", "optim.warmup_epochs=5",
           "optim.warmup_lr=0.000001", "optim.min_lr=0.00001", "train.batch_size=64",
           "train.max_steps=9900"]  # fmt: skip
VOC_TRAIN_AUG = 10582  # images: 165 steps per epoch with drop_last


def _groups(lrs):
    return [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]


def _ours_per_step(config, lrs, dataset_size, steps):
    optimizer = torch.optim.AdamW(_groups(lrs))
    scheduler = make_scheduler(optimizer, config, dataset_size)
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


def _theirs_per_epoch(lrs, epochs, step_arg):
    optimizer = torch.optim.AdamW(_groups(lrs))
    scheduler = CosineLRScheduler(optimizer, t_initial=60, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6,
                                  cycle_limit=1, t_in_epochs=True)  # fmt: skip
    out = []
    for epoch in range(epochs):
        out.append([g["lr"] for g in optimizer.param_groups])  # what this epoch trains with
        scheduler.step(step_arg(epoch))  # their loop: lr_scheduler.step(epoch) after the epoch
    return out


def test_every_step_of_their_60_epochs_with_two_lr_groups():
    """Every optimizer step of 60 epochs x 165 steps equals timm's per-epoch value, for a group at ``optim.lr`` and
    one at 10x (absolute warm-up and floor lrs, as timm applies them to every group)."""
    config = load_config(None, AUTHORS)
    assert steps_per_epoch(VOC_TRAIN_AUG, config) == 165 and cosine_epochs(config, 165) == 60
    lrs = [0.0000625, 0.000625]
    ours = _ours_per_step(config, lrs, VOC_TRAIN_AUG, 9900)
    theirs = _theirs_per_epoch(lrs, 60, lambda epoch: epoch)
    for step, got in enumerate(ours):
        assert got == pytest.approx(theirs[step // 165], rel=1e-12, abs=0), step
    assert ours[0] == ours[2 * 165 - 1] == [1e-6, 1e-6]  # epochs 0 and 1 both at the warm-up lr
    assert ours[2 * 165][0] == pytest.approx(1e-6 + (0.0000625 - 1e-6) / 5)


def test_without_the_epoch_lag_it_is_timms_own_stepping():
    config = load_config(None, [*AUTHORS, "optim.epoch_lag=false", "optim.cosine_epochs=60", "train.max_steps=7000"])
    ours = _ours_per_step(config, [0.0000625], 6400, 100 * 70)  # 100 steps per epoch, 70 epochs: past the cosine
    theirs = _theirs_per_epoch([0.0000625], 70, lambda epoch: epoch + 1)
    for step, got in enumerate(ours):
        assert got == pytest.approx(theirs[step // 100], rel=1e-12, abs=0), step
    assert ours[-1] == [pytest.approx(1e-5)]  # the floor after t_initial epochs


def test_cosine_epoch_needs_the_group_lr_and_epoch_length():
    config = load_config(None, AUTHORS)
    with pytest.raises(ValueError, match="base_lr"):
        lr_factor(0, config)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ([*AUTHORS, "optim.warmup_steps=500"], "warmup_steps=500 do not apply"),
        ([*AUTHORS, "optim.min_lr=0.001"], "min_lr=0.001 is above optim.lr"),
        (["optim.min_lr=0.00001"], "only the cosine_epoch schedule"),
        (["optim.warmup_epochs=5"], "only the cosine_epoch schedule"),
        ([*AUTHORS, "optim.cosine_epochs=0"], "cosine_epochs"),
        ([*AUTHORS, "optim.warmup_lr=-0.1"], "warmup_lr"),
    ],
)
def test_config_checks(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)
