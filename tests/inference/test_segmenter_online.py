"""Online fine-tuning as an option of ``Segmenter`` and ``selfvos segment --online-steps``: the video is segmented by
a fine-tuned copy, the served model never changes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import selfvos
from selfvos.inference import Segmenter
from selfvos.inference.online import OnlineFinetuneConfig
from tests.cli.test_segment_prompts import T, checkpoint, frames, segment, two_objects  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = OnlineFinetuneConfig(steps=2, short_side=48, crop=32, lr=1e-3, parameters=("",))


def test_the_segmenter_propagates_with_a_copy_fine_tuned_on_the_first_frame(checkpoint, frames):  # noqa: F811
    from selfvos.data.sources import open_source

    model = selfvos.from_pretrained(checkpoint).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    video = open_source(f"frames:{frames}")[0]
    segmenter = Segmenter(model, "one-shot", max_side=64, online=SMALL)
    masks = list(segmenter.segment_video(video, first_mask=two_objects(), progress=False))
    assert len(masks) == T and set(np.unique(masks[0])) <= {0, 1, 2}
    assert segmenter.video_model is not model
    tuned = segmenter.video_model.state_dict()
    assert any(not torch.equal(tuned[k], before[k]) for k in before)  # the copy trained
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the served model did not
    plain = Segmenter(model, "one-shot", max_side=64)
    list(plain.segment_video(video, first_mask=two_objects(), progress=False))
    assert plain.video_model is model


def test_the_cli_fine_tunes_with_online_steps(checkpoint, frames, tmp_path, monkeypatch):  # noqa: F811
    calls = []
    import selfvos.inference.online as online

    real = online.finetune_on_frames

    def spy(model, frames_, masks, cfg):
        calls.append(cfg.steps)
        return real(model, frames_, masks, SMALL)

    monkeypatch.setattr(online, "finetune_on_frames", spy)
    assert segment(checkpoint, frames, tmp_path / "out", "--box", "6,10,26,30", "--online-steps", "3") == 0
    assert calls == [3] and len(list((tmp_path / "out").glob("*.png"))) == T
    assert segment(checkpoint, frames, tmp_path / "plain", "--box", "6,10,26,30") == 0
    assert calls == [3]  # off by default
