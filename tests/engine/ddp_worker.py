"""Run by test_recipes.py under `accelerate launch --cpu --num_processes 2`: train, then save this rank's weights."""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from fsae.engine import load_config
from fsae.engine import trainer as trainer_module

root, output = Path(sys.argv[1]), Path(sys.argv[2])
config = load_config(
    None,
    [
        "method.backbone=resnet18",
        f"data.root={root}",
        "data.crop_size=64",
        "data.long_side=[64, 80]",
        "data.num_workers=0",
        "fsae.conf_threshold=0.3",
        "train.batch_size=4",
        "train.max_steps=3",
        "train.checkpoint_every=100",
    ],
)
accelerator = Accelerator(cpu=True)
captured = {}
original = trainer_module._save_weights


def keep_method(accelerator, method, teacher, output_dir):
    captured["method"] = accelerator.unwrap_model(method)
    original(accelerator, method, teacher, output_dir)


trainer_module._save_weights = keep_method
summary = trainer_module.train(config, output, accelerator=accelerator, progress=False)
state = {k: v.detach().contiguous().clone() for k, v in captured["method"].state_dict().items()}
save_file(state, output / f"rank{accelerator.process_index}.safetensors")
rank, processes = accelerator.process_index, accelerator.num_processes
print(f"rank {rank}/{processes}: {summary['steps']} steps, loss {summary['loss']:.4f}")
if torch.distributed.is_initialized():
    torch.distributed.barrier()
