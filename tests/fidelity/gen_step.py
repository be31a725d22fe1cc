"""Fixture: two optimizer steps of the authors' PPC + EPS + FSAE training loop (``module/train.py`` ``train_ssl``).

Their ``train_ssl`` runs unmodified, with ``--max_iters 1 --iter_size 2`` (one iteration = two batches, two
optimizer steps) and the VOC script's settings (``--tau 0.4 --p_cutoff 0.95 --bdry --bdry_size 3 --bdry_lambda 1
--bdry_cutoff 0.8 --use_ema``), on the network of :mod:`gen_network` (deterministic weights, seed 0), their
``PolyOptimizer`` with ``max_step = 10`` (lr 0.01, weight decay 5e-4), torch / Python seeds 0, and the inputs of
:func:`fidelity_step.inputs`.  Recorded (``step.npz``):

* ``loss_<name>_<k>``: every value their loop logged at sub-step k (``loss_cls``, ``loss_er``, ``loss_ecr``,
  ``loss_nce``, ``loss_sal``, ``loss_semcon``, ``loss``, ``mask_ratio``, ``exp_mask_ratio``, ...);
* ``lr_<k>``: each parameter group's lr used by step k;
* ``grad_<k>/<name>``, ``update/<name>``, ``ema/<name>``: :func:`fidelity_step.summarise` of every trainable
  tensor's gradient at step k, of its change over the two steps, and of the EMA shadow's change;
* ``anchors``: the random anchor draws of PPC's intra-view contrast (Python's ``random.sample``), as rows
  ``(step, view, class in their layout, pixels of the class, drawn position...)`` in a JSON string.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from fidelity_step import inputs, normalise, summarise
from gen_network import authors_network
from upstream import authors_code


class _Batches(list):
    """A list of batches that their loop can ask for ``.dataset`` (to print its length)."""

    @property
    def dataset(self) -> list:
        return self


class _Recorder:
    """Their AverageMeter's ``add``, recorded call by call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []

    def add(self, values: dict[str, float]) -> None:
        self.calls.append(dict(values))

    def get(self, *keys: str) -> float | tuple[float, ...]:
        found = [next((c[k] for c in reversed(self.calls) if k in c), 0.0) for k in keys]
        return found[0] if len(found) == 1 else tuple(found)

    def pop(self, key: str | None = None) -> float | None:
        return None

    def get_keys(self) -> list[str]:
        return []


def generate(upstream: Path, out: Path) -> list[Path]:
    batches = inputs()
    records: dict[str, np.ndarray] = {}
    anchors: list[list[int]] = []
    with authors_code(upstream):
        import module.ema
        import module.loss
        import module.train as their_train
        import util.torchutils

        net = authors_network(upstream)
        net.train()  # their train(): frozen BatchNorm, conv1a / b2 not trained
        initial = {k: v.detach().clone() for k, v in net.named_parameters() if v.requires_grad}
        model = torch.nn.DataParallel(net)  # no GPU: DataParallel calls the module itself

        groups = net.get_parameter_groups()
        optimizer = util.torchutils.PolyOptimizer(
            [
                {"params": groups[0], "lr": 0.01, "weight_decay": 5e-4},
                {"params": groups[1], "lr": 0.02, "weight_decay": 0},
                {"params": groups[2], "lr": 0.1, "weight_decay": 5e-4},
                {"params": groups[3], "lr": 0.2, "weight_decay": 0},
            ],
            lr=0.01,
            weight_decay=5e-4,
            max_step=10,
        )
        step_index = [0]
        plain_step = optimizer.step

        def recording_step(closure=None):  # the grads and lrs each step uses
            k = step_index[0]
            # their PolyOptimizer sets the lr inside step(): record it after
            plain_step(closure)
            records[f"lr_{k}"] = np.array([g["lr"] for g in optimizer.param_groups])
            for name, p in net.named_parameters():
                if p.requires_grad:
                    records[f"grad_{k}/{name}"] = summarise(name, p.grad)
            step_index[0] += 1

        optimizer.step = recording_step

        emas: list = []

        class RecordingEMA(module.ema.EMA):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                emas.append(self)

        meter = _Recorder()
        plain_sample = module.loss.random.sample

        def recording_sample(population, k):  # only the anchor draws (their class loop's local i_) are kept
            drawn = plain_sample(population, k)
            caller = sys._getframe(1).f_locals
            if "i_" in caller and "len_class" in caller:
                view = 2 if "loss_intra_nce2" in caller else 1
                anchors.append([step_index[0], view, int(caller["i_"]), int(caller["len_class"]), *drawn])
            return drawn

        their_train.EMA = RecordingEMA
        their_train.get_avg_meter = lambda args: meter
        module.loss.random.sample = recording_sample
        try:
            loader = _Batches(
                (["a", "b"], normalise(b["weak"]), torch.from_numpy(b["saliency"][:, None].astype(np.float32) / 255),
                 normalise(b["strong"]), [], torch.from_numpy(b["labels"]))
                for b in batches
            )  # fmt: skip
            with tempfile.TemporaryDirectory() as folder:
                args = argparse.Namespace(
                    use_geom_augs=False, n_strong_augs=5, use_ema=True, ema_m=0.999, bdry=True, bdry_size=3,
                    bdry_lambda=1.0, bdry_cutoff=0.8, p_cutoff=0.95, use_wandb=False, log_freq=100, iter_size=2,
                    max_iters=1, val_freq=500, val_only=False, network_type="contrast", tau=0.4, alpha=0.5,
                    num_classes=21, mode="ssl", log_folder=folder,
                )  # fmt: skip
                torch.manual_seed(0)
                random.seed(0)
                np.random.seed(0)
                their_train.train_ssl(loader, None, model, optimizer, 10, args)
        finally:
            module.loss.random.sample = plain_sample
            torch.autograd.set_detect_anomaly(False)
        ema = emas[0]
        for name, p in net.named_parameters():
            if p.requires_grad:
                records[f"update/{name}"] = summarise(name, p.detach() - initial[name])
                shadow = ema.shadow.get(name, ema.shadow.get(f"module.{name}"))  # EMA over the DataParallel wrapper
                records[f"ema/{name}"] = summarise(name, shadow - initial[name])
    # their loop adds one dict of losses and several of mask ratios per sub-step, in the same order each time
    per_step = len(meter.calls) // 2
    for k in range(2):
        for call in meter.calls[k * per_step : (k + 1) * per_step]:
            for key, value in call.items():
                records[f"{key}_{k}"] = np.array(value)
    records["anchors"] = np.array(json.dumps(anchors))
    path = out / "step.npz"
    np.savez_compressed(path, **records)
    return [path]
