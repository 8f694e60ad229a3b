"""Supervised fine-tuning of a VOS head (STM, ...) on the selfvos pretrained backbone.

    accelerate launch recipes/finetune.py --config recipes/configs/finetune/stm_davis16.yaml \
        --init runs/mug_davis16_cpu/model                     # from the MuG pretrained backbone
    accelerate launch recipes/finetune.py --config recipes/configs/finetune/stm_davis16.yaml --init scratch
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py ...   # 2-process DDP

Same as ``selfvos finetune``. Writes ``<train.output_dir>/model`` (last weights) and ``best`` (best J&F on the
held-out videos), both loadable with ``selfvos.from_pretrained`` and usable by ``selfvos segment``, resumable
checkpoints and an MLflow run (``sqlite:///<output_dir>/mlflow.db``).
"""
import sys

from selfvos.cli.finetune import add_arguments, run
from selfvos.cli.recipes import script_main

if __name__ == "__main__":
    sys.exit(script_main(__doc__, add_arguments, run))
