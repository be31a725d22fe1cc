"""Train a base method with FSAE on PASCAL VOC 2012 (train_aug).

    accelerate launch recipes/voc_fsae.py --data-root /data/VOCdevkit/VOC2012 --output-dir runs/voc_ppc_fsae
    python recipes/voc_fsae.py --config recipes/configs/toy_fsae.yaml --data-root /tmp/toy --output-dir runs/toy

Options: ``--config`` (default ``configs/voc_ppc_fsae.yaml``; also ``voc_sipe_fsae``, ``voc_mctformer_fsae``,
``voc_mctformer_baseline``),
``--resume latest``, ``--set key=value``, ``--mixed-precision bf16``; see ``--help``.
"""

import sys
from pathlib import Path

from fsae.engine.cli import main, training_function  # noqa: F401  (the accelerate-example entry points)

if __name__ == "__main__":
    sys.exit(
        main(
            description=__doc__.splitlines()[0], default_config=Path(__file__).parent / "configs" / "voc_ppc_fsae.yaml"
        )
    )
