"""The recipes as users run them: command-line errors, one and two processes, kill and resume."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fsae.data import make_toy_dataset

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "voc_fsae.py"
TOY_CONFIG = ROOT / "recipes" / "configs" / "toy_fsae.yaml"
SMALL = ["--set", "method.backbone=resnet18", "--set", "data.crop_size=64", "--set", "data.long_side=[64, 80]",
         "--set", "data.num_workers=0", "--set", "train.batch_size=4", "--set", "fsae.start_step=0",
         "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "VOC2012", num_train=8, num_val=2, image_size=64)


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-root", "/nonexistent/VOC2012"], "error: data root not found: /nonexistent/VOC2012"),
        (["--set", "optim.lr=fast"], "error: optim.lr must be float"),
        (["--config", "/nonexistent.yaml"], "error: config file not found: /nonexistent.yaml"),
        (["--resume", "latest"], "error: --resume latest: no checkpoint"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(toy_root, tmp_path, extra, message):
    args = [sys.executable, str(RECIPE), "--config", str(TOY_CONFIG), "--data-root", str(toy_root)]
    result = run([*args, "--output-dir", str(tmp_path / "out"), *extra])
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreadable_image_in_a_loader_worker_is_one_line(toy_root, tmp_path):
    # A DatasetError raised in a DataLoader worker reaches the main process with the worker's traceback in its
    # message; the recipe still prints its last line only.
    root = Path(shutil.copytree(toy_root, tmp_path / "VOC2012"))
    victim = sorted((root / "JPEGImages").glob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg")
    args = [sys.executable, str(RECIPE), "--config", str(TOY_CONFIG), "--data-root", str(root), *SMALL,
            "--max-steps", "8", "--set", "data.num_workers=1", "--output-dir", str(tmp_path / "out")]  # fmt: skip
    result = run(args)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: unreadable image {victim}: cannot identify image file "
                                                  f"'{victim}'"], result.stderr  # fmt: skip


def test_kill_and_resume_matches_an_uninterrupted_run(toy_root, tmp_path):
    base = [sys.executable, str(RECIPE), "--config", str(TOY_CONFIG), "--data-root", str(toy_root), *SMALL,
            "--max-steps", "4", "--set", "train.checkpoint_every=2"]  # fmt: skip
    assert run([*base, "--output-dir", str(tmp_path / "straight")]).returncode == 0

    # Kill the second run once its first checkpoint exists, then resume it.
    killed = tmp_path / "killed"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([*base, "--output-dir", str(killed)], cwd=ROOT, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        checkpoint = killed / "checkpoints" / "step_00000002" / "train_state.json"
        while process.poll() is None and not checkpoint.exists():
            time.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    shutil.rmtree(killed / "checkpoints" / "step_00000004", ignore_errors=True)  # as if killed before step 4
    resumed = run([*base, "--output-dir", str(killed), "--resume", "latest"])
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_two_cpu_processes_keep_identical_parameters(toy_root, tmp_path):
    # Two gloo processes on the CPU (torchrun; Accelerate picks the environment up: MULTI_CPU).
    worker = str(Path(__file__).parent / "ddp_worker.py")
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(port)]  # fmt: skip
    result = run([*launch, worker, str(toy_root), str(tmp_path)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2: 3 steps" in result.stdout and "rank 1/2: 3 steps" in result.stdout, result.stdout
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == load_file(tmp_path / "model.safetensors").keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    effective = (tmp_path / "config.yaml").read_text()
    assert "processes: 2" in effective and "per_process_batch: 2" in effective and "global_batch: 4" in effective
