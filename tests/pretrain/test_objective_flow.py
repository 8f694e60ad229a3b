"""The flow-explanation term inside the MuG objective: the clips' optical flow, the term on the frame head,
gradients, and the loss falling on a clip with a known moving object."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfvos.data.sampling import ClipDataset, ClipSamplerConfig, clip_flow
from selfvos.data.synthetic import SyntheticConfig, synthetic_collection
from selfvos.pretrain import MuGObjective, ObjectiveConfig
from tests.pretrain.conftest import small_model, tiny_batch


def flow_only() -> ObjectiveConfig:
    return ObjectiveConfig(frame=False, tracking=False, matching=False, memory=False, flow_explanation=True)


def with_flow(batch):
    batch["flow"] = torch.stack([clip_flow(clip) for clip in batch["frames"]])
    return batch


def test_clip_flow_measures_a_known_shift():
    texture = F.avg_pool2d(torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0)), 5, 1, 2)[0]
    frames = torch.stack([texture, torch.roll(texture, shifts=(2, 3), dims=(1, 2))])  # 3 px right, 2 px down
    flow = clip_flow(frames)
    assert flow.shape == (1, 2, 64, 80)
    inner = flow[0, :, 10:-10, 10:-10].flatten(1).median(dim=1).values
    assert torch.allclose(inner, torch.tensor([3.0, 2.0]), atol=0.25)


def test_clip_dataset_carries_the_flow_of_its_frames():
    collection = synthetic_collection(SyntheticConfig(num_videos=2, num_frames=12, height=48, width=64, seed=1))
    item = ClipDataset(collection, ClipSamplerConfig(num_frames=3, num_refs=0, size=(40, 48), flow=True))[0]
    assert item["flow"].shape == (2, 2, 40, 48) and item["flow"].dtype == torch.float32
    assert torch.equal(item["flow"], clip_flow(item["frames"]))
    assert "flow" not in ClipDataset(collection, ClipSamplerConfig(num_frames=3, num_refs=0, size=(40, 48)))[0]


def test_the_term_reaches_the_frame_head_and_needs_flow():
    model, objective = small_model(), MuGObjective(flow_only())
    batch = with_flow(tiny_batch())
    out = objective(model, batch)
    assert out["flow_explanation"] > 0 and out["frame"] == 0
    assert set(out) >= {"flow_reconstruction", "flow_temporal"}
    out["loss"].backward()
    grad = model.mask_head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    del batch["flow"]
    with pytest.raises(ValueError, match="batch\\['flow'\\]"):
        objective(model, batch)


def test_flow_explanation_falls_on_a_clip_with_a_moving_square():
    torch.manual_seed(0)
    model, objective = small_model(), MuGObjective(flow_only())
    batch = with_flow(tiny_batch(b=2, t=3, size=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = objective(model, batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["flow_explanation"]))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
