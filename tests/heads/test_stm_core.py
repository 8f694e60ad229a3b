"""STM's inference memory: first frame + every N-th frame (at most max_memory, oldest dropped) + the previous
frame, so it stays bounded however long the video is; a later mask is a correction that joins the memory."""
from __future__ import annotations

import numpy as np
import torch

import selfvos
from selfvos.heads.stm import STMInferenceConfig, STMInferenceCore


def test_memory_is_bounded_and_follows_the_schedule():
    torch.manual_seed(0)
    model = selfvos.create_model("stm", decoder_dim=8).eval()
    core = STMInferenceCore(model, STMInferenceConfig(memory_every=3, max_memory=2, dtype="float32"))
    frame = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    mask = np.zeros((32, 48), np.uint8)
    mask[8:20, 10:30] = 4
    sizes = []
    core.step(frame, mask)
    for t in range(1, 20):
        core.step(frame)
        sizes.append(core.memory_frames)
    # frames 3, 6, 9, ... are kept (at most 2 of them); other frames are the temporary previous frame
    assert max(sizes) == 1 + 2 + 1 and sizes[:4] == [2, 2, 2, 3]  # frame 3 is kept, not also "previous"
    assert all(size <= 4 for size in sizes) and len(core._kept) == 2

    newest_before = core._kept[-1]
    corrected = np.zeros_like(mask)
    corrected[0:10, 0:10] = 4
    probs = core.step(frame, corrected)  # a correction at frame 20: returned as given, memorised for good
    assert torch.equal(probs.argmax(0), torch.from_numpy((corrected == 4).astype(np.int64)))
    assert core._kept[-1] is not newest_before and core._previous is None and len(core._kept) == 2


def test_segmenter_rescales_for_a_head_and_returns_the_frame_size():
    torch.manual_seed(0)
    model = selfvos.create_model("stm", decoder_dim=8).eval()
    seg = selfvos.Segmenter(model, max_side=40)
    frame = np.zeros((60, 80, 3), np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:40, 20:60] = 1
    assert seg.step(frame, mask).shape == (2, 60, 80) and seg.object_ids == [1]
    probs = seg.step(frame)
    assert probs.shape == (2, 60, 80) and seg.to_ids(probs).shape == (60, 80)
