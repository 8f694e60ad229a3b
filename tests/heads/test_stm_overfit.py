"""STM fits real multi-object clips: a batch of schoolgirls clips (7 objects, DAVIS-2017) should reach J > 0.9 on
the frames it segments from the first frame's masks.

Not reached yet (hence slow + strict xfail, which turns into a failure the day it passes): from random weights
at 96x176 or 128x224 the loss stalls at about 1.16 (J 0.02-0.05 after 200 steps, 4 CPU minutes). The memory read
works on the 1/16 map, a 6x11 or 8x14 grid there, where the seven adjacent girls are one or two cells each and
the object-agnostic 1/8 and 1/4 skips cannot separate them; a larger input (>= 240p) and a pretrained trunk
are what the next try needs.
"""
from __future__ import annotations

import os

import pytest
import torch

from selfvos.data.sources import open_source
from selfvos.data.supervised import SupervisedClipConfig, SupervisedClipDataset, collate_objects
from selfvos.finetune.losses import LossConfig, SegmentationLoss
from selfvos.registry import create_model
from tests.conftest import shared_path

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 150))


def mean_object_j(logits: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean over (clip, object) of the IoU of argmax predictions with the masks over all predicted frames."""
    pred = logits.argmax(dim=2)
    scores = []
    for b in range(pred.shape[0]):
        for k in range(1, int(valid[b].sum()) + 1):
            p, g = pred[b] == k, masks[b] == k
            scores.append(float((p & g).sum()) / max(float((p | g).sum()), 1.0))
    return sum(scores) / len(scores)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="STM from scratch does not fit 7 small objects at 96x176 yet (see module docstring)")
def test_stm_overfits_schoolgirls():
    collection = open_source(f"davis:{shared_path('davis2017-multi')}")
    data = SupervisedClipDataset(collection, SupervisedClipConfig(num_frames=3, max_skip=2, size=(96, 176),
                                                                  max_objects=7), clips_per_video=4)
    batch = collate_objects([data[i] for i in range(4)])
    assert int(batch["num_objects"].max()) >= 6
    torch.manual_seed(0)
    model = create_model("stm", decoder_dim=32)
    objective = SegmentationLoss(LossConfig(ce=1.0, soft_iou=1.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(STEPS):
        loss = objective(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(batch)
    j = mean_object_j(out["logits"], batch["masks"][:, out["frames"]], batch["object_valid"])
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
