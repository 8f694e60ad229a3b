"""FEELVOS fits real multi-object clips: a batch of schoolgirls clips (7 objects, DAVIS-2017) should reach J > 0.9
on the frames it segments from the first frame's masks.

Not reached within CPU minutes (hence slow + strict xfail, which turns into a failure the day it passes).
Measured on 2 idle cores (OMP_NUM_THREADS=2), 4 clips x 3 frames at 96x176, from random weights, the paper's
1/4 grid (``stride: 4``, local radius 6), AdamW lr 1e-3, bootstrapped cross-entropy (hardest 15%): eval-mode J
0.17 / 0.50 / 0.63 / 0.67 / 0.73 / 0.75 after 25 / 50 / 75 / 100 / 125 / 150 steps (186 s, 1.2 s a step); lr 3e-3
for 200 steps: J 0.77 (232 s). The loop and the loss work: one large object (DAVIS-2016 ``bear``, same
settings) reaches J 0.89 in 60 steps (39 s). What limits schoolgirls is the output resolution: the seven girls
cover 50-600 pixels each at 240x432, a few cells of the matching grid at 96x176, and the logits are bilinearly
upsampled from that grid. The ground-truth labels themselves, pooled to the grid (argmax of the class
coverage) and upsampled the same way, score J 0.56 at stride 4 (0.37 at stride 8) at 96x176 and 0.72 at
192x352; the head already beats that by sharpening its logits, but J > 0.9 needs a finer output (the paper:
stride 4 on 480p frames) and more steps than a few CPU minutes allow.
"""
from __future__ import annotations

import os

import pytest

from selfvos.finetune.losses import LossConfig
from tests.conftest import shared_path
from tests.heads.test_stm_overfit import fit_clips, one_video

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 150))
HEAD = {"stride": 4, "local_radius": 6}  # the paper's 1/4 grid: the girls cover a few cells only at 1/8
LOSS = LossConfig(ce=1.0, bootstrap=0.15)  # FEELVOS's: cross-entropy over the hardest 15% of the pixels


@pytest.mark.slow
def test_feelvos_overfits_one_large_object(tmp_path):
    """The positive control: from random weights FEELVOS fits clips of DAVIS-2016 ``bear`` (one large object)."""
    j = fit_clips(one_video(tmp_path, "bear"), (96, 176), max_objects=1, steps=60, head="feelvos", loss=LOSS, **HEAD)
    assert j > 0.85, f"J {j:.3f} after 60 steps"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="FEELVOS from scratch does not fit 7 small objects at 96x176 in CPU minutes "
                                       "(J 0.75 after 150 steps; see the module docstring)")
def test_feelvos_overfits_schoolgirls():
    j = fit_clips(f"davis:{shared_path('davis2017-multi')}", (96, 176), max_objects=7, steps=STEPS, head="feelvos",
                  loss=LOSS, **HEAD)
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
