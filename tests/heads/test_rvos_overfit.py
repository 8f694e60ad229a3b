"""RVOS fits real clips from random weights, one-shot (previous masks as input) and zero-shot (Hungarian-matched
instance slots): 4 clips x 3 frames at 96x176, AdamW lr 1e-3, cross-entropy + soft IoU, mean object J of the
eval-mode forward (zero-shot: of the slots matched to the instances). The positive control is DAVIS-2016
``bear`` (one large object); DAVIS-2017 ``schoolgirls`` (7 instances) should reach J > 0.9.

schoolgirls is not reached (slow + strict xfail, which turns into a failure the day it passes). Measured (seed 0)
with one thread at nice 19 beside a two-thread benchmark job on 2 cores, wall times of two runs: ``bear``
one-shot J 0.914 after 80 steps (127-136 s), zero-shot with 2 slots J 0.898 after 80 steps (185-190 s);
schoolgirls J 0.000 one-shot after 150 steps (75 with ground-truth previous masks; 213-409 s) and J 0.000
zero-shot with 8 slots after 150 steps (212-433 s): no predicted pixel of any object overlaps its girl.
Two limits explain it: the seven girls cover 48-593 pixels each at this size, one to a few cells of the 24x44
grid the decoder predicts on (1/4), so even the ground truth pooled to 1/4 and upsampled scores J 0.64 (0.79 at
192x320, 0.85 at 240x432): a 1/4-scale prediction cannot reach 0.9 here; and, as for STM and CFBI (see
test_stm_overfit.py / test_cfbi_overfit.py), a random-weight encoder does not separate seven small adjacent
objects within CPU minutes. What the next try needs: >= 240p input, the MuG backbone as init and many more
steps.
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import shared_path
from tests.heads.test_stm_overfit import fit_clips, one_video

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 150))
CONTROL_STEPS = 80
SIZE = (96, 176)
SCHOOLGIRLS = "RVOS from scratch finds no girl of schoolgirls at 96x176 within 150 steps (J 0.000; module docstring)"


@pytest.mark.slow
def test_rvos_one_shot_overfits_one_large_object(tmp_path):
    """The positive control, one-shot: frames 1 and 2 of ``bear`` clips from frame 0's mask."""
    j = fit_clips(one_video(tmp_path, "bear"), SIZE, max_objects=1, steps=CONTROL_STEPS, head="rvos",
                  teacher_forcing_steps=CONTROL_STEPS // 2)
    print(f"rvos one-shot bear: J {j:.3f} after {CONTROL_STEPS} steps")
    assert j > 0.85, f"J {j:.3f} after {CONTROL_STEPS} steps"


@pytest.mark.slow
def test_rvos_zero_shot_overfits_one_large_object(tmp_path):
    """The positive control, zero-shot: every frame of ``bear`` clips, two slots (the bear + one to stop)."""
    j = fit_clips(one_video(tmp_path, "bear"), SIZE, max_objects=1, steps=CONTROL_STEPS, head="rvos",
                  mode="zero_shot", max_instances=2)
    print(f"rvos zero-shot bear: J {j:.3f} after {CONTROL_STEPS} steps")
    assert j > 0.85, f"J {j:.3f} after {CONTROL_STEPS} steps"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=SCHOOLGIRLS)
def test_rvos_one_shot_overfits_schoolgirls():
    j = fit_clips(f"davis:{shared_path('davis2017-multi')}", SIZE, max_objects=7, steps=STEPS, head="rvos",
                  teacher_forcing_steps=STEPS // 2)
    print(f"rvos one-shot schoolgirls: J {j:.3f} after {STEPS} steps")
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=SCHOOLGIRLS)
def test_rvos_zero_shot_overfits_schoolgirls():
    j = fit_clips(f"davis:{shared_path('davis2017-multi')}", SIZE, max_objects=7, steps=STEPS, head="rvos",
                  mode="zero_shot", max_instances=8)
    print(f"rvos zero-shot schoolgirls: J {j:.3f} after {STEPS} steps")
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
