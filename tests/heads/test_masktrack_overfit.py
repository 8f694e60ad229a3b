"""MaskTrack learns to track the seven girls of DAVIS-2017 ``schoolgirls`` by its identity embedding alone.

Instances are the ground-truth masks, given by :class:`~selfvos.heads.vis_core.GivenInstances` in a new random order
every frame with boxes jittered by up to 10 % of their size, and the box-IoU and class terms are off at test time
(beta = gamma = 0; every score is 1 so alpha log s = 0): the assignment is ``log p_i(n)`` of the learnt embedding
only. The head (default size, from scratch) trains on 3-frame clips of the video at 120x216 (4 clips a step, AdamW
5e-4, identity + class loss), then tracks the whole 80-frame video at 216 px; the tracks are scored with the
YouTube-VIS metric against ``davis_to_vis`` of the same video. Measured (seed 0): the untrained head gives AP 0.39
(7 tracks with identity switches), after 50 steps AP 1.0; the test trains ``STEPS`` (default 80) steps.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import selfvos
from selfvos.data.sources import open_source
from selfvos.data.supervised import SupervisedClipConfig, SupervisedClipDataset, collate_objects
from selfvos.eval.vis import davis_to_vis, evaluate_vis
from selfvos.heads.vis_core import GivenInstances, create_vis_core
from tests.conftest import shared_path

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 80))
SIZE = (120, 216)
CLIPS = 4


def tracking_ap(model, collection, gt) -> tuple:
    """(number of tracks, YouTube-VIS AP) of ``model`` tracking shuffled, box-jittered ground-truth instances with
    the embedding alone (beta = gamma = 0)."""
    video = collection[0]
    source = GivenInstances(lambda i: np.where(video.mask(i) == 255, 0, video.mask(i)), shuffle=True, box_jitter=0.1)
    core = create_vis_core(model, source, head={"beta": 0.0, "gamma": 0.0}, max_side=SIZE[1])
    tracks = core.segment_video(video)
    return len(tracks), evaluate_vis(gt, core.to_vis_results(1, tracks)).stats["AP"]


@pytest.mark.slow
def test_masktrack_embedding_tracks_schoolgirls():
    collection = open_source(f"davis:{shared_path('davis2017-multi')}")
    gt = davis_to_vis(collection)
    assert len(gt["annotations"]) == 7
    data = SupervisedClipDataset(collection, SupervisedClipConfig(num_frames=3, max_skip=5, size=SIZE, max_objects=7),
                                 clips_per_video=CLIPS * STEPS)
    torch.manual_seed(0)
    model = selfvos.create_model("masktrack")
    untrained = tracking_ap(model, collection, gt)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    for step in range(STEPS):
        batch = collate_objects([data[CLIPS * step + j] for j in range(CLIPS)])
        loss = model(batch)["extra_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tracks, ap = tracking_ap(model, collection, gt)
    assert untrained[1] < 0.9, f"the untrained embedding already tracks (AP {untrained[1]:.3f}): no test"
    assert ap > 0.9 and tracks == 7, f"AP {ap:.3f} with {tracks} tracks after {STEPS} steps (untrained {untrained})"
