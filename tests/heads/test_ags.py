"""AGS wiring: a unidirectional CNN-ConvLSTM attention map in [0, 1] guides the segmentation features by residual
attention F * (1 + A) (zero attention = the unguided features); the released network's pyramid rates; the
attention is returned as auxiliary logits for the mask loss; causal in both modes (offline == online)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selfvos
from selfvos.finetune.losses import LossConfig, SegmentationLoss
from selfvos.heads.ags import AGS, ATTENTION_DILATIONS, PYRAMID_POOLS, PYRAMID_RATES, attention_guided
from selfvos.registry import CORES, ONLINE_LOSSES

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"pyramid_dims": [8, 6, 4], "attention_dims": [8, 6, 4], "attention_hidden": 5}


def small_model(**options) -> AGS:
    torch.manual_seed(0)
    return selfvos.create_model("ags", **{**SMALL, **options}).eval()


@pytest.fixture(scope="module")
def model() -> AGS:
    return small_model()


def clip(b: int = 2, t: int = 4, h: int = 40, w: int = 56) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.rand(b, t, 3, h, w, generator=g)}


def test_registration_and_shapes(model, monkeypatch):
    assert type(model).needs_flow is False and model.tasks == ("zero-shot",) and model.info.papers == ("ags",)
    assert "ags" in CORES.names() and "ags" in ONLINE_LOSSES.names()
    with torch.no_grad():
        out = model(clip(h=50, w=70))  # not a multiple of 8 (grid 7 x 9, attention at 1/16: 4 x 5)
    assert out["logits"].shape == (2, 4, 2, 50, 70) and torch.equal(out["frames"], torch.arange(4))
    assert out["aux_logits"].shape == (2, 4, 2, 50, 70) and out["aux_weight"] == 0.5
    assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["aux_logits"]).all()
    monkeypatch.setattr(model.config, "attention_weight", 0.0)
    with torch.no_grad():
        plain = model(clip(b=1, t=2))
    assert set(plain) == {"logits", "frames"}


def test_released_network_layout(model):
    assert [block.rates for block in model.segmentation] == list(PYRAMID_RATES)
    assert [block.pool for block in model.segmentation] == list(PYRAMID_POOLS)
    for block, dim in zip(model.segmentation, SMALL["pyramid_dims"]):
        assert [b[0].dilation[0] for b in block.dilated] == list(block.rates)
        assert block.centre[0].kernel_size == (1, 1) and block.fuse[0].out_channels == dim
    convs = [seq[0] for seq in model.attention_convs]
    assert [c.dilation[0] for c in convs] == list(ATTENTION_DILATIONS) and [c.stride[0] for c in convs] == [2, 1, 1]
    assert model.attention_lstm.gates.dilation == (2, 2)
    assert model.attention_lstm.gates.in_channels == SMALL["attention_dims"][-1] + SMALL["attention_hidden"]
    assert model.attention_out.out_channels == 1 and model.classifier.in_channels == SMALL["pyramid_dims"][-1]


def test_attention_map_is_in_unit_interval_and_is_the_aux_prediction(model):
    batch = clip()
    with torch.no_grad():
        x = model.features(batch["frames"].flatten(0, 1))
        logits = model.attention_logits(x, 2, 4)
        attention = model.attention_map(logits, tuple(x.shape[-2:]))
        out = model(batch)
    assert logits.shape == (8, 1, 3, 4) and attention.shape == (8, 1, 5, 7)  # 1/16 and 1/8 of 40 x 56
    assert attention.min() >= 0 and attention.max() <= 1
    extreme = model.attention_map(torch.tensor([-1e4, 0.0, 1e4]).view(1, 1, 1, 3), (1, 3))
    torch.testing.assert_close(extreme.flatten(), torch.tensor([0.0, 0.5, 1.0]))
    # aux logits [0, a]: softmax channel 1 = sigmoid(a) = the attention map at the input size
    expected = torch.sigmoid(F.interpolate(logits, size=(40, 56), mode="bilinear", align_corners=False))
    torch.testing.assert_close(torch.softmax(out["aux_logits"], dim=2)[:, :, 1], expected.view(2, 4, 40, 56))


def test_residual_attention_and_zero_attention_is_the_unguided_path(model, monkeypatch):
    features = torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).view(2, 4, 2, 2)  # S = pyramid_dims[-1]
    zero = torch.zeros(2, 1, 2, 2)
    torch.testing.assert_close(attention_guided(features, zero), features, rtol=0, atol=0)
    torch.testing.assert_close(attention_guided(features, zero + 1), 2 * features, rtol=0, atol=0)
    half = torch.tensor([[0.0, 0.5], [1.0, 0.25]]).view(1, 1, 2, 2).expand(2, 1, 2, 2)
    torch.testing.assert_close(attention_guided(features, half), features * torch.tensor([[1.0, 1.5], [2.0, 1.25]]))

    torch.testing.assert_close(model.segment(features, zero), model.classifier(features), rtol=0, atol=0)
    # in the full forward: zero attention -> logits = classifier(segmentation features), upsampled
    batch = clip()
    monkeypatch.setattr(model, "attention_map", lambda logits, size: torch.zeros(logits.shape[0], 1, *size))
    with torch.no_grad():
        out = model(batch)["logits"]
        seg = model.segmentation(model.features(batch["frames"].flatten(0, 1)))
        unguided = F.interpolate(model.classifier(seg), size=(40, 56), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, unguided.view(2, 4, 2, 40, 56))


def test_unidirectional_offline_equals_online_and_is_causal(model):
    batch = clip()
    changed = {"frames": batch["frames"].clone()}
    changed["frames"][:, 3] = torch.rand_like(changed["frames"][:, 3])
    with torch.no_grad():
        offline, online = model(batch)["logits"], model(batch, offline=False)["logits"]
        offline_changed = model(changed)["logits"]
        prefix = model({"frames": batch["frames"][:, :2]})["logits"]
    torch.testing.assert_close(offline, online, rtol=0, atol=0)
    torch.testing.assert_close(offline_changed[:, :3], offline[:, :3], rtol=0, atol=0)
    assert not torch.allclose(offline_changed[:, 3], offline[:, 3])
    torch.testing.assert_close(prefix, offline[:, :2])
    # the recurrence is real: frame 1's attention depends on frame 0
    earlier = {"frames": batch["frames"].clone()}
    earlier["frames"][:, 0] = torch.rand_like(earlier["frames"][:, 0])
    with torch.no_grad():
        x, y = (model.features(b["frames"].flatten(0, 1)) for b in (batch, earlier))
        a, a_changed = model.attention_logits(x, 2, 4), model.attention_logits(y, 2, 4)
    assert not torch.allclose(a.view(2, 4, -1)[:, 1], a_changed.view(2, 4, -1)[:, 1])


def test_the_loss_adds_the_attention_term(model):
    batch = clip(b=2, t=2)
    masks = torch.zeros(2, 2, 40, 56, dtype=torch.int64)
    masks[:, :, 10:30, 15:40] = 1
    masks[:, :, :2] = 255
    batch.update(masks=masks, object_valid=torch.ones(2, 1, dtype=torch.bool))
    try:
        terms = SegmentationLoss(LossConfig(ce=1.0))(model.train(), batch)
        torch.testing.assert_close(terms["loss"], terms["ce"] + 0.5 * terms["aux"])
        terms["loss"].backward()
        assert model.attention_out.weight.grad.abs().sum() > 0
    finally:
        model.eval().zero_grad(set_to_none=True)


def test_config_checks():
    with pytest.raises(ValueError, match="pyramid_dims"):
        selfvos.create_model("ags", pyramid_dims=[8, 8])
    with pytest.raises(ValueError, match="attention_weight"):
        selfvos.create_model("ags", attention_weight=-1.0)
