"""STM fits real multi-object clips: a batch of schoolgirls clips (7 objects, DAVIS-2017) should reach J > 0.9 on
the frames it segments from the first frame's masks.

Not reached yet (hence slow + strict xfail, which turns into a failure the day it passes): from random weights
at 96x176 or 128x224 the loss stalls at about 1.16-1.23 (J 0.02-0.06 after 75-200 steps: every pixel is called
background). The same loop on one large object (DAVIS-2016 ``bear``, 96x176, from scratch) reaches J 0.92 in 50
steps, so the loop and the loss work; with seven small adjacent girls (50-600 pixels each, one or two cells of
the 6x11 grid at 1/16) the query's own object-agnostic values cannot separate them and the memory read, the only
object-specific path, starts near uniform. Neither the MuG backbone as init (J 0.03 at step 75) nor starting the
memory encoder as a copy of the query encoder (J 0.02 at step 50) changes that within CPU minutes. What the next
try needs: >= 240p input so that each girl covers several cells, and many more steps (STM pretrains its matching
on static-image pseudo-videos first).
"""
from __future__ import annotations

import os
from typing import Optional

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


def fit_clips(source: str, size: tuple, max_objects: int, steps: int, clips: int = 4, head: str = "stm",
              loss: LossConfig = LossConfig(ce=1.0, soft_iou=1.0), lr: float = 1e-3, cosine: bool = False,
              clip: Optional[dict] = None, **options) -> float:
    """Train a fresh ``create_model(head, **options)`` for ``steps`` full-batch AdamW steps (``lr``, cosine decay
    if ``cosine``) with ``SegmentationLoss(loss)`` on ``clips`` 3-frame clips of ``source`` (more
    ``SupervisedClipConfig`` fields in ``clip``, e.g. ``{"binary": True, "flow": True}`` for a zero-shot head);
    returns the eval-mode mean object J on the frames the head segments."""
    collection = open_source(source)
    config = SupervisedClipConfig(**{"num_frames": 3, "max_skip": 2, "size": size, "max_objects": max_objects,
                                     **(clip or {})})
    data = SupervisedClipDataset(collection, config, clips_per_video=clips)
    batch = collate_objects([data[i] for i in range(clips)])
    assert int(batch["num_objects"].max()) >= min(max_objects, 6)
    torch.manual_seed(0)
    model = create_model(head, **options)
    objective = SegmentationLoss(loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
    for _ in range(steps):
        value = objective(model, batch)["loss"]
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
    model.eval()
    with torch.no_grad():
        out = model(batch)
    return mean_object_j(out["logits"], batch["masks"][:, out["frames"]], batch["object_valid"])


def one_video(tmp_path, name: str) -> str:
    """A ``davis:`` source holding only DAVIS-2016 train video ``name`` (symlinked)."""
    root = shared_path("davis2016-train-240p")
    for part in ("JPEGImages", "Annotations"):
        (tmp_path / part).mkdir()
        (tmp_path / part / name).symlink_to(root / part / name)
    return f"davis:{tmp_path}"


@pytest.mark.slow
def test_stm_overfits_one_large_object(tmp_path):
    """The positive control: from random weights STM fits clips of DAVIS-2016 ``bear`` (one large object)."""
    j = fit_clips(one_video(tmp_path, "bear"), (96, 176), max_objects=1, steps=80, decoder_dim=32)
    assert j > 0.85, f"J {j:.3f} after 80 steps"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="STM from scratch does not fit 7 small objects at 96x176 yet (see module docstring)")
def test_stm_overfits_schoolgirls():
    j = fit_clips(f"davis:{shared_path('davis2017-multi')}", (96, 176), max_objects=7, steps=STEPS, decoder_dim=32)
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
