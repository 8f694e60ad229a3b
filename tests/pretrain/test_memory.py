"""Video memory: one scaled softmax over all memory cells, invalid frames ignored, loss and gradients."""
from __future__ import annotations

import math

import torch

from selfvos.pretrain.memory import MemoryReader, VideoMemory

from .conftest import backbone_grad_ok


def test_attention_is_one_softmax_with_sqrt_c_temperature():
    torch.manual_seed(0)
    reader = MemoryReader(channels=8, key_dim=4, value_dim=6)
    query, memory = torch.randn(2, 8, 3, 5), torch.randn(2, 3, 8, 2, 2)
    weights = reader.attention(query, memory)
    assert weights.shape == (2, 15, 12)
    q = reader.key(query).flatten(2).transpose(1, 2)  # (2, 15, 4)
    keys = torch.stack([reader.key(memory[:, k]).flatten(2) for k in range(3)], dim=2).flatten(2)  # (2, 4, 12)
    expected = torch.softmax(q @ keys / math.sqrt(4), dim=-1)
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-6)
    # a single softmax is far from uniform when keys differ (a second softmax would flatten it)
    sharp = MemoryReader(channels=8, key_dim=4)
    with torch.no_grad():
        sharp.key.weight.mul_(20)
    assert sharp.attention(query, memory).max() > 0.5


def test_invalid_memory_frames_get_no_weight_and_readout_matches():
    torch.manual_seed(1)
    reader = MemoryReader(channels=8, key_dim=4, value_dim=6)
    query, memory = torch.randn(2, 8, 3, 3), torch.randn(2, 3, 8, 2, 2)
    valid = torch.tensor([[True, False, True], [False, False, False]])
    weights = reader.attention(query, memory, valid)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(9))
    assert weights[0, :, 4:8].abs().max() == 0 and weights[1].abs().max() == 0
    kept = reader.attention(query[:1], memory[:1, [0, 2]])
    torch.testing.assert_close(weights[0][:, [0, 1, 2, 3, 8, 9, 10, 11]], kept[0])
    fused = reader(query, memory, valid)
    assert fused.shape == (2, 8, 3, 3)
    # with no valid frame the read-out is zero: fusion sees only the query
    empty = reader.fuse(torch.cat([query[1:], torch.zeros(1, 6, 3, 3)], dim=1))
    torch.testing.assert_close(fused[1:], empty)


def test_video_memory_loss_and_gradients(model, batch):
    feats, ref_feats = model.encode(batch["frames"]), model.encode(batch["refs"])
    loss = VideoMemory()(model, feats, ref_feats, batch["pseudo_masks"], batch["mask_valid"])
    assert loss.dim() == 0 and 0.3 < loss.item() < 2.0
    loss.backward()
    assert backbone_grad_ok(model)
    assert model.memory.key.weight.grad.abs().sum() > 0 and model.memory.value.weight.grad.abs().sum() > 0


def test_each_query_reads_only_its_own_video(model, batch):
    """Changing video 1's references must not change video 0's memory logits."""
    model.eval()
    with torch.no_grad():
        feats, refs = model.encode(batch["frames"]), model.encode(batch["refs"])
        before = model.read_memory(feats.flatten(0, 1), refs.repeat_interleave(3, dim=0))
        refs[1] = torch.randn_like(refs[1])
        after = model.read_memory(feats.flatten(0, 1), refs.repeat_interleave(3, dim=0))
    torch.testing.assert_close(before[:3], after[:3])
    assert not torch.allclose(before[3:], after[3:])
