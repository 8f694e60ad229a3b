"""MP-Net on hand-made inputs: forward shapes, frame t's logits depend only on the flow t -> t+1 (and frame t with
the appearance stream), the motion input is resolution invariant with exact values, the flow-only model has no
backbone, and with ``appearance`` every parameter (backbone included) gets a gradient."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import selfvos
from selfvos.backbones import BackboneConfig
from selfvos.heads.mpnet import MPNet, MPNetConfig, motion_input

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"channels": (8, 8, 16, 16), "decoder_dim": 8, "appearance_dim": 8}


def clip(b: int = 2, t: int = 3, h: int = 50, w: int = 70, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"frames": torch.rand(b, t, 3, h, w, generator=g), "flows": 4 * torch.randn(b, t, 2, h, w, generator=g),
            "masks": torch.zeros(b, t, h, w, dtype=torch.int64), "object_valid": torch.ones(b, 1, dtype=torch.bool)}


def model(appearance: bool = False, **options) -> MPNet:
    torch.manual_seed(0)
    return MPNet(MPNetConfig(appearance=appearance, **{**SMALL, **options}))


@pytest.mark.parametrize("appearance", [False, True])
def test_forward_shapes_any_size(appearance):
    net = model(appearance).eval()
    for h, w in ((50, 70), (64, 96), (33, 17)):  # not multiples of 16 included
        batch = clip(h=h, w=w)
        with torch.no_grad():
            out = net(batch)
        assert out["logits"].shape == (2, 3, 2, h, w) and torch.isfinite(out["logits"]).all()
        assert out["frames"].tolist() == [0, 1, 2]


def test_flow_only_reads_no_frames_and_needs_flows():
    net = model().eval()
    batch = clip()
    with torch.no_grad():
        full = net(batch)["logits"]
        flows_only = net({"flows": batch["flows"]})["logits"]
    torch.testing.assert_close(flows_only, full, rtol=0, atol=0)
    with pytest.raises(ValueError, match="flows"):
        net({"frames": batch["frames"]})
    assert MPNet.needs_flow and MPNet.tasks == ("zero-shot",)


def test_registered_by_name_and_the_flow_only_model_has_no_backbone():
    net = selfvos.create_model("mpnet")
    assert isinstance(net, MPNet) and not net.config.appearance
    assert not hasattr(net, "backbone") and net.backbones() == {}
    with_rgb = selfvos.create_model("mpnet", appearance=True)
    assert list(with_rgb.backbones()) == ["backbone"]


@pytest.mark.parametrize("appearance, train", [(False, True), (False, False), (True, False)])
@pytest.mark.parametrize("offline", [True, False])
def test_frame_t_depends_only_on_its_own_flow_and_frame(appearance, train, offline):
    """Changing every other frame's flow (and RGB) leaves frame t's logits bit-identical; changing flow t (or, with
    appearance, frame t) changes them. Training mode too for the flow-only net (GroupNorm: no batch coupling)."""
    net = model(appearance).train(train)
    batch, t = clip(t=4), 1
    with torch.no_grad():
        base = net(batch, offline=offline)["logits"]
        others = dict(batch, flows=batch["flows"].clone(), frames=batch["frames"].clone())
        others["flows"][:, [0, 2, 3]] = 10 * torch.randn_like(others["flows"][:, [0, 2, 3]])
        others["frames"][:, [0, 2, 3]] = torch.rand_like(others["frames"][:, [0, 2, 3]])
        torch.testing.assert_close(net(others, offline=offline)["logits"][:, t], base[:, t], rtol=0, atol=0)
        own = dict(batch, flows=batch["flows"].clone())
        own["flows"][:, t] = own["flows"][:, t].flip(-1)
        assert not torch.allclose(net(own, offline=offline)["logits"][:, t], base[:, t])
        if appearance:
            rgb = dict(batch, frames=batch["frames"].clone())
            rgb["frames"][:, t] = 1 - rgb["frames"][:, t]
            assert not torch.allclose(net(rgb, offline=offline)["logits"][:, t], base[:, t])
    if not appearance and not train:
        torch.testing.assert_close(net(batch, offline=not offline)["logits"], base.detach())  # offline is moot


def test_motion_input_exact_values():
    """A uniform flow (3, 4) px on a 30x40 image (diagonal 50): f~ = (0.06, 0.08), |f~| = 0.1; gain 20."""
    flows = torch.zeros(1, 2, 30, 40)
    flows[:, 0], flows[:, 1] = 3.0, 4.0
    flows[..., :10] = 0.0  # a static band
    vector = motion_input(flows, "vector", 20.0)
    angle = motion_input(flows, "angle", 20.0)
    torch.testing.assert_close(vector[0, :, 0, 20], torch.tensor([1.2, 1.6, 2.0]))
    torch.testing.assert_close(angle[0, :, 0, 20], torch.tensor([0.6, 0.8, 2.0]))
    assert vector[..., :10].abs().max() == 0 and angle[..., :10].abs().max() == 0  # no motion: all zero
    tiny = torch.zeros(1, 2, 30, 40)
    tiny[:, 0] = 0.5 * 1e-3 * 50  # |f~| = 5e-4 < eps: the unit vector fades to |f~| / eps = 0.5
    torch.testing.assert_close(motion_input(tiny, "angle")[0, :2, 0, 0], torch.tensor([0.5, 0.0]))


@pytest.mark.parametrize("flow_input", ["vector", "angle"])
def test_motion_input_is_resolution_invariant(flow_input):
    """The same video at twice the size has twice the flow in pixels: the normalised input is the same
    (nearest-neighbour upsampled), so the network sees the same motion pattern."""
    g = torch.Generator().manual_seed(1)
    flows = 3 * torch.randn(2, 2, 24, 36, generator=g)
    small = motion_input(flows, flow_input)
    large = motion_input(2 * F.interpolate(flows, scale_factor=2, mode="nearest"), flow_input)
    assert large.shape == (2, 3, 48, 72)
    torch.testing.assert_close(large, F.interpolate(small, scale_factor=2, mode="nearest"))
    diagonal = math.hypot(24, 36)
    torch.testing.assert_close(small[:, 2], 20.0 * flows.norm(dim=1) / diagonal)


def test_appearance_every_parameter_gets_a_gradient():
    net = model(appearance=True, flow_input="angle")
    out = net(clip())
    out["logits"].logsumexp(dim=2).mean().backward()
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert any(n.startswith("backbone.") for n in trainable) and any(n.startswith("reduce.") for n in trainable)
    missing = [n for n in trainable if net.get_parameter(n).grad is None]
    assert not missing, missing
    # nonzero too, except inside the ResNet's residual branches (their last BatchNorm starts at 0)
    zero = [n for n in trainable if not net.get_parameter(n).grad.abs().sum() > 0 and ".layer" not in f".{n}"]
    assert not zero, zero


def test_config_validation():
    with pytest.raises(ValueError, match="flow_input"):
        MPNetConfig(flow_input="hsv")
    with pytest.raises(ValueError, match="channels"):
        MPNetConfig(channels=(8, 16, 32))
    with pytest.raises(ValueError, match="return_layers"):
        MPNetConfig(appearance=True, backbone=BackboneConfig(return_layers=("layer1", "layer3")))
    assert MPNetConfig(channels=[8, 8, 16, 16]).channels == (8, 8, 16, 16)


@pytest.mark.parametrize("appearance", [False, True])
def test_zero_shot_core_segments_a_video(appearance):
    """The generic zero-shot core runs MP-Net (flows from DIS on the video) and yields one 0/1 mask per frame."""
    from selfvos.inference.core import create_core
    from tests.inference.test_video_core import moving_video

    core = create_core(model(appearance), "zero-shot")
    masks = list(core.segment_video(moving_video(t=4, h=36, w=52)))
    assert len(masks) == 4 and all(m.shape == (36, 52) and set(m.ravel().tolist()) <= {0, 1} for m in masks)
