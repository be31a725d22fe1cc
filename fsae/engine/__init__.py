"""Training engine on Accelerate: configs, the FSAE training loop, checkpoints.

* :func:`fsae.engine.config.load_config`: defaults <- YAML <- ``key=value`` overrides, validated early.
* :func:`fsae.engine.trainer.train`: the loop (see its module docstring for one step).
* :func:`fsae.engine.seg_config.load_seg_config`, :func:`fsae.engine.seg_trainer.train_segmenter`,
  :func:`fsae.engine.seg_trainer.evaluate_segmenter`: the second stage (DeepLab on pseudo-masks, docs/method.md §6).
"""

from fsae._optional import check

check("fsae.engine", "train")  # every piece of the training stack, before importing any

from fsae.engine.config import DEFAULTS, ConfigError, load_config
from fsae.engine.loop import NonFiniteLossError, find_checkpoint
from fsae.engine.schedule import build_optimizer
from fsae.engine.seg_config import SEG_DEFAULTS, load_seg_config
from fsae.engine.seg_trainer import evaluate_segmenter, train_segmenter
from fsae.engine.trainer import train

__all__ = [
    "DEFAULTS",
    "SEG_DEFAULTS",
    "ConfigError",
    "NonFiniteLossError",
    "build_optimizer",
    "evaluate_segmenter",
    "find_checkpoint",
    "load_config",
    "load_seg_config",
    "train",
    "train_segmenter",
]
