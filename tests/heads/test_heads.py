"""One parametrised test over every registered head (timm style): build by name, train-forward shapes and
gradients, strict save/load by architecture with identical outputs, and the inference core's contract."""
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

HEADS = sorted(name for name, cls in architectures().items() if issubclass(cls, VOSHead))


def tiny_batch(b: int = 2, t: int = 3, k: int = 2, h: int = 64, w: int = 96) -> dict:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(b, t, h, w, dtype=torch.int64)
    masks[:, :, 8:30, 10:40] = 1
    masks[0, :, 36:60, 50:90] = 2  # item 0 has 2 objects, item 1 one (padded)
    masks[:, :, 0:2] = 255  # a void band
    return {"frames": torch.rand(b, t, 3, h, w, generator=g), "masks": masks,
            "object_valid": torch.tensor([[True, True], [True, False]])[:, :k]}


def test_heads_are_registered():
    assert "stm" in HEADS and set(HEADS) <= set(CORES.names())
    assert set(selfvos.list_models("one-shot")) >= {"stm"}


@pytest.mark.parametrize("name", HEADS)
def test_head_forward_backward_save_load(name, tmp_path):
    torch.manual_seed(0)
    model = selfvos.create_model(name)
    assert isinstance(model, VOSHead) and model.backbones()
    batch = tiny_batch()
    out = model(batch)
    logits, frames = out["logits"], out["frames"]
    b, t, _, h, w = batch["frames"].shape
    assert logits.shape == (b, len(frames), 3, h, w) and torch.isfinite(logits).all()
    logits.logsumexp(dim=2).mean().backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(model.get_parameter(n).grad is not None for n in trainable), \
        [n for n in trainable if model.get_parameter(n).grad is None]

    model.eval()
    with torch.no_grad():
        expected = model(batch)["logits"]
    model.save_pretrained(tmp_path / "ckpt")
    loaded = selfvos.from_pretrained(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch)["logits"], expected)


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
