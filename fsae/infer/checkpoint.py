"""Rebuild a trained CAM network from a training run's output folder (for inference)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from fsae.data import get_dataset
from fsae.errors import ConfigError
from fsae.methods import WSSSMethod, build_method, import_method_module

__all__ = ["load_cam_model", "locate_run_files"]


def locate_run_files(path: str | Path, weights: str = "model") -> tuple[Path, Path]:
    """The ``(config.yaml, weights file)`` of a training run (CAM or segmentation stage), checked to exist.

    Args:
        path: the run's ``--output-dir`` (``config.yaml`` + ``<weights>.safetensors``), one of its
            ``checkpoints/step_*`` folders (student weights only), or a ``.safetensors`` file inside either.
        weights: ``"model"`` (the student) or ``"teacher"`` (the EMA teacher; not in a checkpoint folder).

    Raises:
        ConfigError: no such path, not a ``.safetensors`` file, no weights or no ``config.yaml`` there (one line).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ConfigError(f"checkpoint file must be .safetensors, got {path}")
        candidates = [path.parent / "config.yaml", path.parent.parent.parent / "config.yaml"]
        weights_file = path
    elif path.is_dir():
        inside_checkpoints = path.parent.name == "checkpoints"
        if inside_checkpoints:
            if weights != "model":
                raise ConfigError(f"{path}: a checkpoint folder holds the student only; use --weights model")
            weights_file = path / "model.safetensors"
            candidates = [path.parent.parent / "config.yaml"]
        else:
            weights_file = path / f"{weights}.safetensors"
            candidates = [path / "config.yaml"]
    else:
        raise ConfigError(f"checkpoint not found: {path}")
    if not weights_file.is_file():
        raise ConfigError(f"no weights at {weights_file} (has the run finished?)")
    config_file = next((c for c in candidates if c.is_file()), None)
    if config_file is None:
        raise ConfigError(f"no config.yaml next to {path} (expected {candidates[0]})")
    return config_file, weights_file


def load_cam_model(
    path: str | Path, weights: str = "model", device: torch.device | str = "cpu"
) -> tuple[WSSSMethod, dict[str, Any]]:
    """The trained method of a run, in eval mode on ``device``, and the run's config.

    Args:
        path: a training run's ``--output-dir`` (``config.yaml`` + ``model.safetensors`` /
            ``teacher.safetensors``), one of its ``checkpoints/step_*`` folders (student weights), or a
            ``.safetensors`` file inside either (see :func:`locate_run_files`).
        weights: ``"model"`` (the student, the paper's choice) or ``"teacher"`` (the EMA teacher).
    """
    from safetensors.torch import load_file

    if weights not in ("model", "teacher"):
        raise ConfigError(f"weights must be 'model' or 'teacher', got {weights!r}")
    config_file, weights_file = locate_run_files(path, weights)
    config = yaml.safe_load(config_file.read_text())
    method_cfg = config["method"]
    import_method_module(method_cfg.get("module"), key=f"{config_file}: method.module")
    num_classes = config.get("_run", {}).get("num_classes")
    if num_classes is None:  # a run folder written before runs recorded it
        try:
            num_classes = get_dataset(config.get("data", {}).get("dataset", "voc")).num_classes
        except ValueError as err:
            raise ConfigError(f"{config_file}: data.dataset: {err}") from None
    state = load_file(str(weights_file))
    method = build_method(
        method_cfg["name"],
        num_classes=num_classes,
        backbone=method_cfg["backbone"],
        pretrained=False,
        pretrained_path=None,
        **method_cfg.get("options", {}),
    )
    missing, unexpected = method.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{weights_file} does not fit the {method_cfg['name']} / {method_cfg['backbone']} network of "
            f"{config_file}: {len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]})"
        )
    return method.to(device).eval(), config
