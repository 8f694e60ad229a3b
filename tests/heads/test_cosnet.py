"""COSNet head: shapes, reference selection, causality, the mean of gated summaries, one backbone pass per frame."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import selfvos
from selfvos.heads.cosnet import COSNet, COSNetConfig, select_references
from selfvos.registry import CORES, ONLINE_LOSSES


def clip(b: int = 1, t: int = 5, h: int = 48, w: int = 64, seed: int = 0) -> dict:
    return {"frames": torch.rand(b, t, 3, h, w, generator=torch.Generator().manual_seed(seed))}


def small(**options) -> COSNet:
    torch.manual_seed(0)
    return selfvos.create_model("cosnet", **{"feature_dim": 16, "decoder_dim": 16, **options})


def freeze_bn(model: nn.Module) -> nn.Module:
    """Training mode with BatchNorm on running statistics (the recipes' ``freeze_bn``), so frames do not mix."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return model


@pytest.mark.parametrize("variant", ["vanilla", "symmetric", "channel"])
def test_forward_shapes(variant):
    model = small(variant=variant)
    assert model.coattention.variant == variant and COSNet.tasks == ("zero-shot",) and not COSNet.needs_flow
    batch = clip(b=2, t=3, h=50, w=70)  # not a multiple of 8
    out = model(batch)
    assert out["logits"].shape == (2, 3, 2, 50, 70) and torch.isfinite(out["logits"]).all()
    assert torch.equal(out["frames"], torch.arange(3))
    assert model(clip(b=1, t=1))["logits"].shape == (1, 1, 2, 48, 64)  # a lone frame attends to itself


def test_config_and_registrations():
    cfg = COSNetConfig()
    assert cfg.num_references == 5 and cfg.variant == "symmetric" and cfg.backbone.output_stride == 8
    assert "cosnet" in CORES.names() and "cosnet" in ONLINE_LOSSES.names()
    assert "cosnet" in selfvos.list_models("zero-shot")
    with pytest.raises(ValueError, match="variant"):
        COSNetConfig(variant="full")
    with pytest.raises(ValueError, match="num_references"):
        COSNetConfig(num_references=0)


def test_reference_selection():
    assert select_references(4, offline=True) == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert select_references(4, offline=False) == [[0], [0], [0, 1], [0, 1, 2]]
    assert select_references(1, offline=True) == [[0]]
    spread = select_references(12, offline=True, limit=5)
    assert spread[0] == [2, 4, 6, 8, 10]  # candidates 1..11, the centres of 5 equal bins
    assert spread[11] == [1, 3, 5, 7, 9]
    assert spread[6] == [1, 3, 5, 8, 10]  # candidates 0..5, 7..11
    assert all(len(r) == 5 and len(set(r)) == 5 and i not in r for i, r in enumerate(spread))
    recent = select_references(12, offline=False, limit=5)
    assert recent[11] == [6, 7, 8, 9, 10] and recent[3] == [0, 1, 2] and recent[0] == [0]
    assert select_references(6, offline=True, limit=5) == select_references(6, offline=True)  # N + 1 frames: all


def test_summary_is_the_mean_of_gated_pair_summaries():
    model = small(variant="vanilla").eval()
    g = torch.Generator().manual_seed(1)
    query, references = torch.randn(2, 16, 4, 5, generator=g), torch.randn(2, 3, 16, 4, 5, generator=g)
    expected = torch.stack([model.coattention(query, references[:, k]) for k in range(3)]).mean(0)
    torch.testing.assert_close(model.summary(query, references), expected)


def changed(batch: dict, frame: int) -> dict:
    frames = batch["frames"].clone()
    frames[:, frame] = torch.rand(frames[:, frame].shape, generator=torch.Generator().manual_seed(9))
    return {"frames": frames}


@torch.no_grad()
def test_online_is_causal_offline_sees_the_future():
    model = small().eval()
    batch = clip(t=5)
    base_online, base_offline = model(batch, offline=False)["logits"], model(batch, offline=True)["logits"]
    for k in range(1, 5):
        online = model(changed(batch, k), offline=False)["logits"]
        torch.testing.assert_close(online[:, :k], base_online[:, :k], rtol=0, atol=0)  # frames before k untouched
        assert not torch.allclose(online[:, k], base_online[:, k])
    offline = model(changed(batch, 4), offline=True)["logits"]
    assert not torch.allclose(offline[:, 0], base_offline[:, 0])


@torch.no_grad()
def test_eval_caps_references_training_uses_all():
    """num_references = 1, T = 3, eval: frame 0's only reference is frame 2 (offline); frame 2's is frame 1 (online)."""
    model = small(num_references=1).eval()
    batch = clip(t=3)
    base = model(batch)["logits"]
    out = model(changed(batch, 1))["logits"]
    torch.testing.assert_close(out[:, 0], base[:, 0], rtol=0, atol=0)
    assert not torch.allclose(out[:, 2], base[:, 2])  # frame 2's reference is frame 1
    base = model(batch, offline=False)["logits"]
    online = model(changed(batch, 0), offline=False)["logits"]  # online: the most recent past frame only
    torch.testing.assert_close(online[:, 2], base[:, 2], rtol=0, atol=0)
    assert not torch.allclose(online[:, 1], base[:, 1])
    freeze_bn(model)
    train = model(batch)["logits"]
    assert not torch.allclose(model(changed(batch, 1))["logits"][:, 0], train[:, 0])  # every other frame


@pytest.mark.parametrize("training", [True, False])
def test_backbone_runs_once_per_frame(training):
    model = small(encode_chunk=3, num_references=2)
    model.train(training)
    seen = []
    model.backbone.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    with torch.set_grad_enabled(training):
        model(clip(b=2, t=7), offline=True)
    assert sum(seen) == 2 * 7  # every frame encoded exactly once, however many pairs use it
    assert seen == ([14] if training else [3, 3, 3, 3, 2])
