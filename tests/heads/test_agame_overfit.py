"""A-GAME fits real clips from the first frame's masks: DAVIS-2016 ``bear`` (one large object, the positive control)
and DAVIS-2017 ``schoolgirls`` (7 objects) should reach mean object J > 0.9 on the frames it segments.

schoolgirls is not reached yet (hence slow + strict xfail, which turns into a failure the day it passes). Measured
from random weights (4 clips of 3 frames, 7 objects each, AdamW lr 1e-3, cross-entropy + soft IoU on the final and
the coarse prediction, eval-mode J):

- 96x176, output stride 8, gmm/propagation/fusion dims 32/64/32, cosine schedule: J 0.20 at step 50, 0.58 at 100,
  0.65 at 200, 0.72 at 400, 0.73 at 600 (about 0.6 s a step alone on 2 cores); the loss flattens at 0.84;
- 96x176, output stride 16, default dims (64/128/64), constant lr: J 0.24 at 50, 0.41 at 75;
- 192x352, output stride 16, dims 32/64/32, cosine: J 0.58 at 100, 0.65 at 200.

Per object at step 600 the large girls (400-600 pixels a frame) reach J 0.80-0.90 and the small ones (50-100
pixels) 0.42-0.70: the girls are one to three cells of the 1/8 grid and the prediction is made at 1/4 and
upsampled bilinearly, which caps thin, adjacent objects (the ground truth itself, area-pooled to 1/4 and
upsampled, scores J 0.64 at 96x176 and 0.79 at 192x352). Passing needs a larger input and many more steps than
CPU minutes allow (A-GAME trains for 80 + 100 epochs on YouTube-VOS, DAVIS and synthetic videos).
"""
from __future__ import annotations

import os

import pytest

from selfvos.backbones import BackboneConfig
from tests.conftest import shared_path
from tests.heads.test_stm_overfit import fit_clips, one_video

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 200))


@pytest.mark.slow
def test_agame_overfits_one_large_object(tmp_path):
    """The positive control: from random weights A-GAME fits clips of DAVIS-2016 ``bear`` (one large object)."""
    j = fit_clips(one_video(tmp_path, "bear"), (96, 176), max_objects=1, steps=80, head="agame", cosine=True)
    assert j > 0.85, f"J {j:.3f} after 80 steps"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="A-GAME from scratch reaches J 0.73 on schoolgirls at 96x176 in CPU minutes, "
                                       "not 0.9 (see module docstring)")
def test_agame_overfits_schoolgirls():
    stride8 = BackboneConfig(name="resnet18", output_stride=8, return_layers=("layer1", "layer2", "layer3"))
    j = fit_clips(f"davis:{shared_path('davis2017-multi')}", (96, 176), max_objects=7, steps=STEPS, head="agame",
                  cosine=True, backbone=stride8, gmm_dim=32, propagation_dim=64, fusion_dim=32)
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
