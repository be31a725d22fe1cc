"""Train a base method with FSAE on MS-COCO 2014 (train).

    accelerate launch recipes/coco_fsae.py --data-root /data/COCO2014 --output-dir runs/coco_ppc_fsae

Options: ``--config`` (default ``configs/coco_ppc_fsae.yaml``; also ``coco_sipe_fsae``), ``--resume latest``,
``--set key=value``, ``--mixed-precision bf16``; see ``--help``.
"""

import sys
from pathlib import Path

from fsae.engine.cli import main, training_function  # noqa: F401  (the accelerate-example entry points)

if __name__ == "__main__":
    sys.exit(
        main(
            description=__doc__.splitlines()[0], default_config=Path(__file__).parent / "configs" / "coco_ppc_fsae.yaml"
        )
    )
