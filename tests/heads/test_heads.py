"""One parametrised test over every registered head (timm style): build by name, train-forward shapes and
gradients, strict save/load by architecture with identical outputs, and the inference core's contract.

One-shot heads get multi-object id clips and predict frames 1..T-1; zero-shot heads get binary clips (plus
``flows`` when they read optical flow) and predict every frame. Test-only heads (names starting with ``_``,
registered by platform tests) are skipped."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import selfvos
from selfvos.errors import SelfvosInputError
from selfvos.heads.base import VOSHead
from selfvos.hub.mixin import architectures
from selfvos.inference.core import create_core
from selfvos.registry import CORES

HEADS = sorted(name for name, cls in architectures().items() if issubclass(cls, VOSHead) and not name.startswith("_"))


def zero_shot(name: str) -> bool:
    return tuple(architectures()[name].tasks) == ("zero-shot",)


def vis(name: str) -> bool:
    """A video instance segmentation head (MaskTrack): it scores identities and classes (``extra_loss``) and
    segments no frame (empty ``logits`` / ``frames``)."""
    return "vis" in architectures()[name].tasks


def tiny_batch(b: int = 2, t: int = 3, k: int = 2, h: int = 64, w: int = 96) -> dict:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(b, t, h, w, dtype=torch.int64)
    masks[:, :, 8:30, 10:40] = 1
    masks[0, :, 36:60, 50:90] = 2  # item 0 has 2 objects, item 1 one (padded)
    masks[:, :, 0:2] = 255  # a void band
    return {"frames": torch.rand(b, t, 3, h, w, generator=g), "masks": masks,
            "object_valid": torch.tensor([[True, True], [True, False]])[:, :k]}


def zero_shot_batch(needs_flow: bool, b: int = 2, t: int = 3, h: int = 64, w: int = 96) -> dict:
    """Binary targets (0 / 1 / 255), ``object_valid`` (B, 1), and ``flows`` (B, T, 2, H, W) when the head reads them."""
    batch = tiny_batch(b, t, 1, h, w)
    batch["masks"] = torch.where(batch["masks"] == 255, 255, (batch["masks"] > 0).long())
    batch["object_valid"] = torch.ones(b, 1, dtype=torch.bool)
    if needs_flow:
        batch["flows"] = torch.randn(b, t, 2, h, w, generator=torch.Generator().manual_seed(1)) * 3
    return batch


def test_heads_are_registered():
    assert "stm" in HEADS and set(HEADS) <= set(CORES.names())
    assert set(selfvos.list_models("one-shot")) >= {"stm"}


@pytest.mark.parametrize("name", HEADS)
def test_head_forward_backward_save_load(name, tmp_path):
    torch.manual_seed(0)
    model = selfvos.create_model(name)
    # every head starts from the shared backbone, except a head on optical flow alone (MP-Net's default)
    assert isinstance(model, VOSHead) and (model.backbones() or getattr(type(model), "needs_flow", False))
    if zero_shot(name):
        batch = zero_shot_batch(bool(getattr(type(model), "needs_flow", False)))
    else:
        batch = tiny_batch()
    out = model(batch)
    logits, frames = out["logits"], out["frames"]
    b, t, _, h, w = batch["frames"].shape
    if zero_shot(name):  # every frame, background / foreground
        assert torch.equal(frames.cpu(), torch.arange(t)) and logits.shape == (b, t, 2, h, w)
    else:
        assert logits.shape == (b, len(frames), 3, h, w) and (len(frames) == 0) == vis(name)
    assert torch.isfinite(logits).all()
    (out["extra_loss"] if vis(name) else logits.logsumexp(dim=2).mean()).backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(model.get_parameter(n).grad is not None for n in trainable), \
        [n for n in trainable if model.get_parameter(n).grad is None]

    model.eval()
    with torch.no_grad():
        expected = model(batch)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = selfvos.from_pretrained(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        got = loaded(batch)
    torch.testing.assert_close(got["logits"], expected["logits"])
    if vis(name):
        torch.testing.assert_close(got["extra_loss"], expected["extra_loss"])


@pytest.mark.parametrize("name", [n for n in HEADS if "one-shot" in architectures()[n].tasks])
def test_one_shot_core_contract(name):
    torch.manual_seed(0)
    model = selfvos.create_model(name).eval()
    core = create_core(model, "one-shot")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)  # not a multiple of 16: padded inside
    mask = np.zeros((50, 70), np.uint8)
    mask[5:20, 5:30], mask[30:45, 40:65], mask[0, :] = 2, 5, 255
    first = core.step(frame, mask)
    assert core.object_ids == [2, 5] and first.shape == (3, 50, 70)
    for _ in range(3):
        probs = core.step(frame)
        assert probs.shape == (3, 50, 70) and torch.allclose(probs.sum(0), torch.ones(50, 70), atol=1e-4)
    with pytest.raises(ValueError, match="not in the first frame"):
        core.step(frame, np.full((50, 70), 7, np.uint8))
    core.reset()
    assert core.object_ids == []
    with pytest.raises(SelfvosInputError, match="one-shot only"):
        create_core(model, "zero-shot")


@pytest.mark.parametrize("name", [n for n in HEADS if zero_shot(n)])
def test_zero_shot_core_contract(name):
    from selfvos.data.video import InMemoryVideo, VideoSample

    torch.manual_seed(0)
    model = selfvos.create_model(name).eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 50, 70, 3), dtype=np.uint8)  # not a multiple of 16: padded inside
    video = InMemoryVideo(VideoSample(frames=frames, frame_names=["00000", "00001", "00002"], name="tiny"))
    core = create_core(model, "zero-shot", {"max_side": 64})
    masks = list(core.segment_video(video))
    assert len(masks) == 3 and all(m.shape == (50, 70) and m.dtype == np.uint8 for m in masks)
    assert set(np.unique(np.concatenate(masks))) <= {0, 1} and core.object_ids == [1]
    with pytest.raises(SelfvosInputError, match="segments whole videos"):
        core.step(frames[0])
    with pytest.raises(SelfvosInputError, match="zero-shot only"):
        create_core(model, "one-shot")
