"""Run folders (fsae.engine.rundir), the run's log and messages: checked before work, nothing lost or mixed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fsae.engine.cli import format_summary
from fsae.engine.config import ConfigError
from fsae.engine.loop import find_checkpoint, flat_hyperparameters, loader_workers, mean_over_processes, trackers
from fsae.engine.rundir import check_writable, prepare_run_dir, trim_log


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _used_run(folder: Path) -> Path:
    (folder / "checkpoints" / "step_00000002").mkdir(parents=True)
    (folder / "checkpoints" / "step_00000002" / "train_state.json").write_text('{"step": 2, "epoch": 0}')
    (folder / "config.yaml").write_text("old: run\n")
    (folder / "log.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    return folder


def test_a_new_run_needs_an_empty_folder(tmp_path):
    prepare_run_dir(tmp_path / "new" / "run", resume=False, overwrite=False)  # created
    assert (tmp_path / "new" / "run").is_dir()
    run = _used_run(tmp_path / "used")
    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"is not empty \(checkpoints, config.yaml, log.jsonl\): --resume latest"):
        prepare_run_dir(run, resume=False, overwrite=False)
    assert _snapshot(run) == before
    prepare_run_dir(run, resume=True, overwrite=False)  # continuing it touches nothing
    assert _snapshot(run) == before


def test_overwrite_removes_the_earlier_run_only(tmp_path):
    run = _used_run(tmp_path / "run")
    prepare_run_dir(run, resume=False, overwrite=True, main_process=False)  # another process: checks, removes nothing
    assert (run / "config.yaml").is_file()
    prepare_run_dir(run, resume=False, overwrite=True)
    assert list(run.iterdir()) == []
    mixed = _used_run(tmp_path / "mixed")
    (mixed / "my_notes.txt").write_text("keep me")
    before = _snapshot(mixed)
    with pytest.raises(ConfigError, match=r"holds files that are not a run's outputs \(my_notes.txt\)"):
        prepare_run_dir(mixed, resume=False, overwrite=True)
    assert _snapshot(mixed) == before


def test_a_file_or_a_read_only_folder_is_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_writable(a_file)
    with pytest.raises(ConfigError, match="cannot be created"):
        check_writable(a_file / "below")
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = _used_run(tmp_path / "locked")
    (locked / "checkpoints").chmod(0o500)  # the first checkpoint would fail 1000 steps in
    try:
        with pytest.raises(ConfigError, match="cannot write into .*checkpoints"):
            check_writable(locked)
    finally:
        (locked / "checkpoints").chmod(0o700)


def test_trim_log_keeps_each_step_once(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3, 4)) + "not json\n")
    trim_log(log, 2)
    lines = log.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines[:-1]] == [1, 2] and lines[-1] == "not json"
    trim_log(tmp_path / "missing.jsonl", 2)  # no log yet: nothing to do


def test_resume_of_a_run_folder_suggests_latest(tmp_path):
    run = _used_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"a run folder: --output-dir {run} --resume latest continues it"):
        find_checkpoint(tmp_path / "elsewhere", str(run))
    assert find_checkpoint(run, "latest") == run / "checkpoints" / "step_00000002"


def test_summary_and_log_values_read_as_numbers():
    summary = {"steps": 300, "epoch": 6, "loss": 0.53214567891234, "lr": 1e-05, "images_per_s": 9.8123, "x": None}
    assert format_summary(summary) == "steps 300, epoch 6, loss 0.5321, lr 1.000e-05, images/s 9.812"
    assert format_summary({"eval": {"split": "val", "miou": 0.41234}}) == "eval.split val, eval.miou 0.4123"


class _TwoProcesses:
    """What mean_over_processes needs of an Accelerator: the other process logged ``other``."""

    num_processes, device = 2, torch.device("cpu")

    def __init__(self, other: dict[str, float]) -> None:
        self.other = other

    def reduce(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        assert reduction == "mean"
        other = torch.tensor([self.other[k] for k in sorted(self.other)], dtype=tensor.dtype)
        return (tensor + other) / 2


def test_logged_values_are_the_mean_over_processes():
    mine, other = {"fsae": 0.0, "mask_fraction": 0.0, "loss": 1.0}, {"fsae": 0.4, "mask_fraction": 0.2, "loss": 3.0}
    assert mean_over_processes(_TwoProcesses(other), mine) == pytest.approx({"fsae": 0.2, "mask_fraction": 0.1,
                                                                           "loss": 2.0})  # fmt: skip


def test_trackers_hyperparameters_and_workers():
    assert trackers({"log_with": None}) is None and trackers({"log_with": "tensorboard, wandb"}) == [
        "tensorboard",
        "wandb",
    ]
    flat = flat_hyperparameters({"optim": {"lr": 0.01, "betas": [0.9, 0.99]}, "data": {"root": None}})
    assert flat == {"optim.lr": 0.01, "optim.betas": "[0.9, 0.99]", "data.root": "None"}
    assert loader_workers({"data": {"num_workers": 3}}) == 3
    assert 1 <= loader_workers({"data": {"num_workers": None}}) <= min(4, len(os.sched_getaffinity(0)))
