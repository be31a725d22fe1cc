"""Run by test_confusion.py under ``torch.distributed.run --nproc_per_node 2``: reduce a ConfusionMatrix.

Usage: ``confusion_worker.py DATA.npz OUT_DIR NUM_CLASSES {accelerate,torch}``.  Each rank updates with its
share of the images of ``DATA.npz`` (``pred``, ``gt``: ``(N, H, W)`` integer maps; rank r takes images
r, r + 2, ...), then calls ``reduce()`` with an ``accelerate.Accelerator`` or through plain
``torch.distributed`` (gloo).  Rank r writes ``rank{r}.json`` with its reduced matrix; rank 0 also writes
``metrics.json`` with the matrix before and after the reduction and :meth:`ConfusionMatrix.compute`.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from fsae.eval import ConfusionMatrix

data_path, out_dir, num_classes, backend = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if backend == "accelerate":
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)  # torchrun's environment: MULTI_CPU with gloo
    rank, world = accelerator.process_index, accelerator.num_processes
elif backend == "torch":
    accelerator = None
    torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
else:
    raise SystemExit(f"unknown backend {backend!r}")

data = np.load(data_path)
pred, gt = data["pred"][rank::world], data["gt"][rank::world]
cm = ConfusionMatrix(num_classes)
for p, g in zip(pred, gt, strict=True):
    cm.update(torch.from_numpy(p), g)
local = cm.mat.clone()
cm.reduce(accelerator)
(out_dir / f"rank{rank}.json").write_text(json.dumps({"mat": cm.mat.tolist()}))
if rank == 0:
    metrics = cm.compute()
    metrics.update(mat=cm.mat.tolist(), local_mat=local.tolist(), world_size=world, backend=backend)
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
torch.distributed.barrier()
if backend == "torch":
    torch.distributed.destroy_process_group()
