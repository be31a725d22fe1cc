"""Training engine on Accelerate: configs, the FSAE training loop, checkpoints.

* :func:`fsae.engine.config.load_config`: defaults <- YAML <- ``key=value`` overrides, validated early.
* :func:`fsae.engine.trainer.train`: the loop (see its module docstring for one step).
"""

from fsae.engine.config import DEFAULTS, ConfigError, load_config
from fsae.engine.trainer import NonFiniteLossError, build_optimizer, find_checkpoint, train

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "NonFiniteLossError",
    "build_optimizer",
    "find_checkpoint",
    "load_config",
    "train",
]
