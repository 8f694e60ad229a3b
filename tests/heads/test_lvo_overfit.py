"""LVO fits one real clip: from random weights, 4 clips of 3 frames of DAVIS-2016 ``bear`` (one large object,
binary targets, DIS flow t -> t+1) should reach J > 0.9 on every frame (offline, both memory directions).
Measured on 2 cores: J 0.915 after 150 steps (about 40 s)."""
from __future__ import annotations

import os

import pytest

from tests.heads.test_stm_overfit import fit_clips, one_video

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 150))


@pytest.mark.slow
def test_lvo_overfits_one_large_object(tmp_path):
    j = fit_clips(one_video(tmp_path, "bear"), (96, 176), max_objects=1, steps=STEPS, head="lvo",
                  clip={"binary": True, "flow": True})
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
