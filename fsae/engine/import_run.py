"""``python -m fsae.models.import_checkpoint``: an authors' checkpoint as an fsae run folder.

The converters (tensor names and layouts, checked) are :mod:`fsae.models.import_checkpoint`'s; this module writes
the run folder: ``model.safetensors`` and ``config.yaml`` (the effective config of the method's defaults, the
dataset and ``_run.imported_from``), which :func:`fsae.infer.load_cam_model` and ``make_pseudo_labels.py
--checkpoint`` read.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsae.engine.config import load_config
from fsae.methods import build_method
from fsae.models.import_checkpoint import CONVERTERS, read_checkpoint, strip_prefix

__all__ = ["import_checkpoint", "main"]


def import_checkpoint(
    method_name: str, checkpoint: str | Path, run_dir: str | Path, dataset: str = "voc", overwrite: bool = False
) -> Path:
    """Convert ``checkpoint`` (the authors' file) into the run folder ``run_dir``; returns ``run_dir``.

    Raises:
        ValueError: unknown method, unreadable file, tensors that do not fit, or a non-empty ``run_dir``
            without ``overwrite`` (nothing is written in any of these cases).
    """
    import yaml
    from safetensors.torch import save_file

    if method_name not in CONVERTERS:
        raise ValueError(f"--method {method_name!r}: converters exist for {sorted(CONVERTERS)}")
    run_dir, checkpoint = Path(run_dir), Path(checkpoint)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())) and not overwrite:
        raise ValueError(f"{run_dir} exists and is not an empty folder (give --overwrite to replace it)")
    convert, backbone, classes_of, classes_key = CONVERTERS[method_name]
    state = read_checkpoint(checkpoint)
    num_classes = classes_of(strip_prefix(state))
    if num_classes is None:
        raise ValueError(f"{checkpoint} has no {classes_key}: not a checkpoint of the authors' {method_name} network")
    config = load_config(overrides=[f"method.name={method_name}", f"method.backbone={backbone}",
                                    f"data.dataset={dataset}"])  # fmt: skip
    method = build_method(method_name, num_classes=num_classes, backbone=backbone, **config["method"]["options"])
    weights = convert(state, method)
    method.load_state_dict(weights, strict=True)  # the same check load_cam_model makes

    if run_dir.exists() and overwrite:
        shutil.rmtree(run_dir) if run_dir.is_dir() else run_dir.unlink()
    run_dir.mkdir(parents=True)
    save_file(weights, run_dir / "model.safetensors")
    run: dict[str, Any] = {"num_classes": num_classes, "imported_from": str(checkpoint.resolve())}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "_run": run}, sort_keys=False))
    return run_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsae.models.import_checkpoint", description=__doc__.split("\n")[0])
    parser.add_argument("--method", required=True, help=f"method.name of the checkpoint ({', '.join(CONVERTERS)})")
    parser.add_argument("checkpoint", type=Path, help="the authors' .pth file")
    parser.add_argument("run_dir", type=Path, help="run folder to write (model.safetensors + config.yaml)")
    parser.add_argument(
        "--dataset", default="voc", help="data.dataset of the run (a registered dataset: voc, coco, ...)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    args = parser.parse_args(argv)
    try:
        out = import_checkpoint(args.method, args.checkpoint, args.run_dir, args.dataset, args.overwrite)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'model.safetensors'} and {out / 'config.yaml'}")
    return 0
