"""MuG multi-granularity self-supervised pretraining.

    accelerate launch recipes/mug_pretrain.py                                   # built-in synthetic videos, ~5 min on 2 CPU cores
    accelerate launch recipes/mug_pretrain.py --config recipes/configs/mug_davis16_cpu.yaml
    accelerate launch recipes/mug_pretrain.py --data video:my_videos/ --train.max_steps 2000
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipes/mug_pretrain.py   # 2-process DDP on CPU

Same as ``selfvos pretrain``. Writes ``<train.output_dir>/model`` (load it with ``selfvos.from_pretrained``),
resumable checkpoints, the pseudo-label rounds and an MLflow run (``sqlite:///<output_dir>/mlflow.db``).
"""
import sys

from selfvos.cli.pretrain import add_arguments, run
from selfvos.cli.recipes import script_main

if __name__ == "__main__":
    sys.exit(script_main(__doc__, add_arguments, run))
