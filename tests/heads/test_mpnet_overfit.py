"""MP-Net fits one real clip: from random weights, 4 clips of 3 frames of DAVIS-2016 ``bear`` (one large moving
object, DIS flow computed on the clip frames) should reach J > 0.9 on every frame, with the flow-only network
(the paper's) and with the shared backbone's RGB features fused into the decoder (``appearance``).

Measured on 2 cores, 150 steps at 96x176 (cosine schedule, cross-entropy): with appearance J > 0.9 (passes, 38 s);
flow-only J 0.823 (16 s), hence a strict xfail: the flow-only network sees no appearance, so whatever part of the
object the DIS flow of the clip does not separate from the background it cannot label (the paper multiplies in an
objectness map for that; here `appearance`).
"""
from __future__ import annotations

import os

import pytest

from selfvos.finetune.losses import LossConfig
from tests.heads.test_stm_overfit import fit_clips, one_video

STEPS = int(os.environ.get("SELFVOS_OVERFIT_STEPS", 150))


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    pytest.param({}, id="flow-only", marks=pytest.mark.xfail(strict=True, reason="flow alone: J 0.823 (docstring)")),
    pytest.param({"appearance": True}, id="appearance")])
def test_mpnet_overfits_one_moving_object(tmp_path, options):
    j = fit_clips(one_video(tmp_path, "bear"), (96, 176), max_objects=1, steps=STEPS, head="mpnet",
                  loss=LossConfig(ce=1.0), cosine=True, clip={"binary": True, "flow": True}, **options)
    assert j > 0.9, f"J {j:.3f} after {STEPS} steps ({options or 'flow-only'})"
