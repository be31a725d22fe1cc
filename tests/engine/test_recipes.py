"""The recipes as users run them: command-line errors, one and two processes, kill and resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
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


def test_a_used_output_folder_is_refused_and_left_as_it_was(toy_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("an earlier run\n")
    (out / "log.jsonl").write_text('{"step": 10}\n')
    args = [sys.executable, str(RECIPE), "--config", str(TOY_CONFIG), "--data-root", str(toy_root), *SMALL]
    result = run([*args, "--output-dir", str(out)])
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --output-dir {out} is not empty (config.yaml, log.jsonl): --resume latest continues that run, "
        "--overwrite replaces it, or choose another folder"
    ]
    assert (out / "config.yaml").read_text() == "an earlier run\n"
    assert (out / "log.jsonl").read_text() == '{"step": 10}\n'
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "log.jsonl"]
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    result = run([*args, "--output-dir", str(a_file)])
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: --output-dir {a_file} is a file, not a folder"
    ], result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused on a CPU only")
def test_fp16_on_a_cpu_is_refused(toy_root, tmp_path):
    args = [sys.executable, str(RECIPE), "--config", str(TOY_CONFIG), "--data-root", str(toy_root), *SMALL]
    result = run([*args, "--output-dir", str(tmp_path / "out"), "--mixed-precision", "fp16"])
    assert result.returncode == 1
    message = "error: mixed precision fp16 needs a CUDA GPU; on a CPU use bf16 or no"
    assert result.stderr.strip().splitlines() == [message], result.stderr
    assert not (tmp_path / "out" / "config.yaml").exists()


def test_the_launchers_precision_applies_and_is_recorded_and_a_root_keeps_its_hash(toy_root, tmp_path):
    # accelerate launch --mixed_precision bf16 (or its config file) sets ACCELERATE_MIXED_PRECISION; the config
    # does not name a precision, so the launcher's applies.  A path is passed as given (not re-read as YAML: a
    # '#' would start a comment).
    root = tmp_path / "VOC #2"
    root.symlink_to(toy_root, target_is_directory=True)
    args = [sys.executable, str(RECIPE), "--config", str(TOY_CONFIG), "--data-root", str(root), *SMALL,
            "--max-steps", "1", "--output-dir", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_MIXED_PRECISION": "bf16"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written["train"]["mixed_precision"] == "bf16"
    assert written["data"]["root"] == str(root)
    # the summary is a line for people, not a dict of 16-digit floats
    done = [line for line in result.stdout.splitlines() if line.startswith("done: ")]
    assert len(done) == 1 and done[0].startswith("done: steps 1, epoch 0, ") and "{" not in done[0], result.stdout


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


def test_check_data_lists_every_bad_file_and_skip_counts_them(toy_root, tmp_path):
    root = Path(shutil.copytree(toy_root, tmp_path / "VOC2012"))
    victims = sorted((root / "JPEGImages").glob("*.jpg"))[:2]
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[:100])  # truncated JPEGs
    args = [sys.executable, str(RECIPE), "--config", str(TOY_CONFIG), "--data-root", str(root), *SMALL,
            "--max-steps", "3"]  # fmt: skip
    checked = run([*args, "--check-data", "--output-dir", str(tmp_path / "checked")])
    assert checked.returncode == 1, checked.stderr
    lines = checked.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 2 bad file(s) in the training set: "), checked.stderr
    assert all(str(victim) in lines[0] for victim in victims), lines[0]
    assert not (tmp_path / "checked" / "checkpoints").exists()
    skipped = run([*args, "--set", "data.on_error=skip", "--set", "train.batch_size=8",
                   "--output-dir", str(tmp_path / "skipped")])  # fmt: skip
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped 2 unreadable sample(s) (data.on_error=skip): " in skipped.stdout, skipped.stdout
    assert "skipped 2" in skipped.stdout.splitlines()[-1], skipped.stdout


def test_kill_and_resume_matches_an_uninterrupted_run(toy_root, tmp_path):
    base = [sys.executable, str(RECIPE), "--config", str(TOY_CONFIG), "--data-root", str(toy_root), *SMALL,
            "--max-steps", "4", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1"]  # fmt: skip
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
    # the log holds each step once (the steps after the checkpoint were logged again); off a terminal each logged
    # step is a plain line, no carriage returns
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4], steps
    assert "train step 4/4  cls " in resumed.stdout and "\r" not in resumed.stdout + resumed.stderr, resumed.stdout
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_two_cpu_processes_keep_identical_parameters(toy_root, tmp_path):
    # Two gloo processes on the CPU (torchrun; Accelerate picks the environment up: MULTI_CPU).
    worker = str(Path(__file__).parent / "ddp_worker.py")
    # --standalone: torchrun's own rendezvous on a port it binds itself (no free port probed, closed and raced for)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run([*launch, worker, str(toy_root), str(tmp_path)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2: 3 steps" in result.stdout and "rank 1/2: 3 steps" in result.stdout, result.stdout
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == load_file(tmp_path / "model.safetensors").keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    effective = (tmp_path / "config.yaml").read_text()
    assert "processes: 2" in effective and "per_process_batch: 2" in effective and "global_batch: 4" in effective
