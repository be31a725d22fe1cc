"""Output folders of the recipes: checked before any work, never mixed with an earlier run's files.

A training run's folder holds :data:`RUN_OUTPUTS`.  :func:`prepare_run_dir` refuses a folder that already holds
files unless the run continues it (``--resume``) or replaces it (``--overwrite``: the earlier run's outputs are
removed, anything else in the folder makes it refuse); :func:`check_writable` makes sure the folder (and its
``checkpoints/``) can be written, so that a bad ``--output-dir`` ends in one line before a dataset is read,
not at the first checkpoint.  :func:`trim_log` keeps ``log.jsonl`` at one line per step when a run resumes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fsae.errors import ConfigError
from fsae.paths import check_writable

__all__ = ["RUN_OUTPUTS", "check_writable", "prepare_run_dir", "trim_log"]

#: What a training run writes into its folder (the CAM stage and the segmentation stage).
RUN_OUTPUTS: tuple[str, ...] = (
    "config.yaml",
    "log.jsonl",
    "checkpoints",
    "logs",
    "model.safetensors",
    "teacher.safetensors",
    "eval",
    "results",
)


def prepare_run_dir(folder: Path, *, resume: bool, overwrite: bool, main_process: bool = True) -> None:
    """Check ``folder`` for a new run, a resumed one (``resume``) or a replacement (``overwrite``).

    A new run needs an empty (or missing) folder.  ``overwrite`` removes the earlier run's :data:`RUN_OUTPUTS`
    (on the main process only; call it on every process, then wait for everyone) and refuses when the folder
    also holds other files.  ``resume`` takes the folder as it is.

    Raises:
        ConfigError: the folder is used and neither flag allows it, it holds files that are not a run's, or it
            cannot be written; nothing is touched then.
    """
    folder = Path(folder)
    check_writable(folder)
    # fsae's own caches (.fsae_cache: labels derived from masks) do not make a folder used
    entries = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".fsae"))
    if not entries or resume:
        return
    if not overwrite:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise ConfigError(
            f"--output-dir {folder} is not empty ({shown}): --resume latest continues that run, --overwrite "
            "replaces it, or choose another folder"
        )
    foreign = [name for name in entries if name not in RUN_OUTPUTS and not name.startswith(".")]
    if foreign:
        raise ConfigError(
            f"--overwrite: {folder} holds files that are not a run's outputs ({', '.join(foreign[:4])}); "
            "choose another --output-dir"
        )
    if main_process:
        for name in entries:
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def trim_log(log_file: Path, step: int) -> None:
    """Drop the lines of ``log_file`` (``log.jsonl``) logged after ``step`` (a resumed run logs them again).

    Atomic (a temporary file renamed over the log); unreadable lines are kept."""
    log_file = Path(log_file)
    if not log_file.is_file():
        return
    kept = []
    for line in log_file.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) > step:
                continue
        except (ValueError, AttributeError, TypeError):
            pass
        kept.append(line)
    tmp = log_file.with_name(log_file.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, log_file)
