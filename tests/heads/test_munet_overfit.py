"""MUNet fits real clips: from random weights, a batch of 4 clips of 3 frames should reach J > 0.9 on the frames it
segments from the first frame's masks, with MUNet's loss (bootstrapped CE over the hardest 40% + soft IoU).

Schoolgirls (DAVIS-2017, 7 objects) is not reached (slow + strict xfail, which turns into a failure the day it
passes). Measured at 96x176 (4 clips x 3 frames, AdamW lr 1e-3, decoder_dim 32, about 1 s a step on 2 idle
cores): J 0.000 / 0.025 / 0.077 / 0.109 after 25 / 50 / 100 / 150 steps, loss 1.85 -> 1.56, still creeping up
but far from 0.9 within the few CPU minutes a test may take. MUNet adds a motion attention to STM's query feature, which is object-agnostic
like the query values, so the only object-specific path is still STM's memory read; it starts near uniform
and seven small adjacent girls (one or two cells each of the 6x11 map at 1/16) stay unseparated within CPU
minutes, as for STM (tests/heads/test_stm_overfit.py). The positive control on DAVIS-2016 ``bear`` (one large
object) shows the loop, the loss and the MU-layer's gradients work.
"""
from __future__ import annotations

import os

import pytest

from selfvos.finetune.losses import LossConfig
from tests.conftest import shared_path
from tests.heads.test_stm_overfit import fit_clips, one_video

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 150))
LOSS = LossConfig(ce=1.0, bootstrap=0.4, soft_iou=1.0)  # MUNet's


@pytest.mark.slow
def test_munet_overfits_one_large_object(tmp_path):
    """The positive control: from random weights MUNet fits clips of DAVIS-2016 ``bear`` (one large object)."""
    j = fit_clips(one_video(tmp_path, "bear"), (96, 176), max_objects=1, steps=80, head="munet", loss=LOSS,
                  decoder_dim=32)
    assert j > 0.85, f"J {j:.3f} after 80 steps"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="MUNet from scratch does not fit 7 small objects at 96x176 yet (see module docstring)")
def test_munet_overfits_schoolgirls():
    j = fit_clips(f"davis:{shared_path('davis2017-multi')}", (96, 176), max_objects=7, steps=STEPS, head="munet",
                  loss=LOSS, decoder_dim=32)
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
