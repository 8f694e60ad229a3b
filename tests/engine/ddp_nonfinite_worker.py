"""Run by ``test_reliability_ddp.py`` under ``accelerate launch``: the non-finite guard in 2 CPU processes
with NaN on rank 1 only. Each process writes ``rank<i>.json``:

- ``skipped``: updates skipped in round 0 (step 2 has a NaN loss on rank 1 only, with finite gradients, so
  only the exchanged flag tells rank 0: both must skip it);
- ``params``: the parameters after round 0 (identical on both ranks when they agreed);
- ``diverged``: ``[step, consecutive, checkpoint]`` of the ``TrainingDiverged`` every rank must raise when
  rank 1 alone keeps producing NaN (``max_nonfinite_steps=2``);
- ``refused``: the ``NonFiniteWeightsError`` of ``save_state`` when only rank 1's weights hold a NaN.

Usage: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ddp_nonfinite_worker.py OUT``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script

from tests.engine.engine_toys import ToyConfig, make_parts, toy_config  # noqa: E402
from tests.engine.reliability_toys import NAN, FeedStep, PoisonedObjective  # noqa: E402

from selfvos.engine import Trainer  # noqa: E402
from selfvos.errors import NonFiniteWeightsError, TrainingDiverged  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    model, _, data = make_parts(seed=0, n=16, config=ToyConfig(norm="batch"))
    objective = PoisonedObjective(steps={2}, mode="loss", only_rank=1)
    trainer = Trainer(model, data, toy_config(out, max_steps=8, batch_size=2, max_nonfinite_steps=2),
                      objective=objective, callbacks=[FeedStep(objective, model)])
    trainer.train(3)  # round 0 ends at step 3 with a checkpoint
    record = {
        "rank": trainer.accelerator.process_index,
        "skipped": trainer.state.nonfinite_skipped,
        "params": {k: v.tolist() for k, v in model.named_parameters()},
        "finite": all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()),
    }
    objective.start = 5
    try:
        trainer.train()
    except TrainingDiverged as err:
        record["diverged"] = [err.step, err.consecutive, err.checkpoint]
    if trainer.accelerator.process_index == 1:
        with torch.no_grad():
            model.head.bias.fill_(NAN)
    try:
        trainer.save_state()
    except NonFiniteWeightsError as err:
        record["refused"] = str(err)
    (out / f"rank{record['rank']}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
