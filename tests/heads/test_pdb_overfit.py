"""PDB fits one real clip from random weights: DAVIS-2016 ``bear`` (one large object), every frame segmented
zero-shot from RGB only (no mask, no flow given), should reach J > 0.9 (4 clips x 3 frames at 96x176, the
DB-ConvLSTMs run both ways over each clip).

Measured on 2 cores (cosine schedule): J > 0.9 after 150 steps (the default; about 45 s); at 100 steps PDB or AGS
stopped at J 0.890.
"""
from __future__ import annotations

import os

import pytest

from tests.heads.test_stm_overfit import fit_clips, one_video

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 150))


@pytest.mark.slow
def test_pdb_overfits_one_large_object(tmp_path):
    j = fit_clips(one_video(tmp_path, "bear"), (96, 176), max_objects=1, steps=STEPS, head="pdb", cosine=True,
                  clip={"binary": True, "flow": False})
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps"
