"""Train the segmentation network (DeepLab) on pseudo-masks, then evaluate it (docs/method.md §6, second stage).

    accelerate launch recipes/train_seg.py --data-root /data/VOCdevkit/VOC2012 --pseudo-labels runs/pseudo \
        --output-dir runs/seg --set model.pretrained_path=/weights/resnet101_coco.pth
    python recipes/train_seg.py --config recipes/configs/toy_seg.yaml --data-root /tmp/fsae_toy \
        --pseudo-labels runs/toy_pseudo --output-dir runs/toy_seg
    python recipes/train_seg.py --data-root /data/VOCdevkit/VOC2012 --output-dir runs/seg --eval-only \
        --crf --crf-workers 8 --predict-split test

Options: ``--config`` (default ``configs/voc_seg_deeplabv2.yaml``; also ``voc_seg_deeplabv3plus``, ``toy_seg``),
``--resume latest``, ``--set key=value``, ``--mixed-precision bf16``, ``--max-steps``, ``--eval-only
[--checkpoint RUN]``, ``--crf``, ``--predict-split test``; see ``--help``.  Outputs under ``--output-dir``:
``config.yaml``, ``log.jsonl``, ``checkpoints/step_*``, ``model.safetensors``, ``eval/metrics.{json,md}``,
``results/VOC2012/Segmentation/comp6_test_cls/*.png`` (``tar czf results.tgz results`` for the VOC server).
"""

import sys
from pathlib import Path

from fsae.engine.seg_trainer import main, training_function  # noqa: F401  (the accelerate-example entry points)

if __name__ == "__main__":
    sys.exit(
        main(
            description=__doc__.splitlines()[0],
            default_config=Path(__file__).parent / "configs" / "voc_seg_deeplabv2.yaml",
        )
    )
