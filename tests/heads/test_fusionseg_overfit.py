"""FusionSeg fits one real clip: from random weights, 4 clips of 3 frames of DAVIS-2016 ``bear`` (one large object,
binary targets, DIS flow t -> t+1 rendered as an image) should reach J > 0.9 on every frame."""
from __future__ import annotations

import os

import pytest

from tests.heads.test_stm_overfit import fit_clips, one_video

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 150))


@pytest.mark.slow
def test_fusionseg_overfits_one_large_object(tmp_path):
    j = fit_clips(one_video(tmp_path, "bear"), (96, 176), max_objects=1, steps=STEPS, head="fusionseg",
                  clip={"binary": True, "flow": True})
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
