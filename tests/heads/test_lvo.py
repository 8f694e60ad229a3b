"""LVO wiring: shapes; the visual memory is ONE ConvGRU cell run forward and backward over the two streams'
concatenation; offline output t sees later frames, online output t never sees frames after t+1; the motion stream
reads the flow divided by the image diagonal (resolution invariant)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selfvos
from selfvos.layers.conv_rnn import run_sequence
from selfvos.layers.two_stream import normalize_flow

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"appearance_dim": 8, "memory_dim": 8, "decoder_dim": 8, "motion_channels": (8, 8, 8)}


def small_model():
    torch.manual_seed(0)
    return selfvos.create_model("lvo", **SMALL).eval()


def clip(b: int = 2, t: int = 4, h: int = 32, w: int = 48, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"frames": torch.rand(b, t, 3, h, w, generator=g), "flows": 3 * torch.randn(b, t, 2, h, w, generator=g)}


def changed_after(batch: dict, s: int, seed: int = 1) -> dict:
    """Frames s.. replaced, and every flow that reads them (flow s-1 = s-1 -> s, and flows s..)."""
    other = clip(*batch["frames"].shape[:2], *batch["frames"].shape[-2:], seed=seed)
    frames, flows = batch["frames"].clone(), batch["flows"].clone()
    frames[:, s:] = other["frames"][:, s:]
    flows[:, s - 1:] = other["flows"][:, s - 1:]
    return {"frames": frames, "flows": flows}


def test_shapes_and_registration():
    model, batch = small_model(), clip()
    assert type(model).needs_flow and type(model).tasks == ("zero-shot",)
    assert set(model.backbones()) == {"appearance.backbone"}
    with torch.no_grad():
        out = model(batch)
    assert out["logits"].shape == (2, 4, 2, 32, 48) and out["frames"].tolist() == [0, 1, 2, 3]
    with torch.no_grad():
        odd = model(clip(1, 3, 33, 50))
    assert odd["logits"].shape == (1, 3, 2, 33, 50)
    with pytest.raises(ValueError, match="optical flow"):
        model({"frames": batch["frames"]})


def test_memory_is_one_gru_cell_run_both_ways():
    model, batch = small_model(), clip()
    memory = model.memory
    assert memory.forward_cell is memory.backward_cell  # weights shared by construction
    names = [name for name, _ in model.named_parameters() if name.startswith("memory.")]
    assert names and all(name.startswith("memory.forward_cell.") for name in names)  # one parameter set
    seen = []
    memory.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    with torch.no_grad():
        model(batch)
        x, out = seen[0]
        cell = memory.forward_cell
        torch.testing.assert_close(out, torch.cat([run_sequence(cell, x), run_sequence(cell, x, reverse=True)], dim=2))
        # the memory input is the two streams' concatenation: appearance (8) + motion probability (1)
        expected = model.streams(batch["frames"].flatten(0, 1), batch["flows"].flatten(0, 1))
    torch.testing.assert_close(x.flatten(0, 1), expected)
    assert x.shape[2] == 9 and ((x[:, :, 8] > 0) & (x[:, :, 8] < 1)).all()


def test_offline_output_sees_later_frames():
    model, batch = small_model(), clip()
    with torch.no_grad():
        before = model(batch, offline=True)["logits"]
        after = model(changed_after(batch, 3), offline=True)["logits"]
    assert not torch.allclose(before[:, 0], after[:, 0], atol=1e-6)  # frame 0 reads frame 3 through the backward GRU


def test_online_output_ignores_frames_after_the_next():
    model, batch = small_model(), clip()
    with torch.no_grad():
        before = model(batch, offline=False)["logits"]
        after = model(changed_after(batch, 3), offline=False)["logits"]  # frames 3.. and flows 2.. changed
        next_frame = model(changed_after(batch, 1), offline=False)["logits"]  # frame 1 and flows 0.. changed
    torch.testing.assert_close(after[:, :2], before[:, :2], rtol=0, atol=0)  # outputs 0, 1: frames <= 2 only
    assert not torch.allclose(after[:, 2], before[:, 2])
    assert not torch.allclose(next_frame[:, 0], before[:, 0])  # output 0 reads frame 1 (through flow 0)


def test_motion_stream_reads_the_flow_over_the_diagonal():
    model, batch = small_model(), clip()
    inputs = []
    model.motion.encoder.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    with torch.no_grad():
        model(batch)
    flows = batch["flows"].flatten(0, 1)
    torch.testing.assert_close(inputs[0], flows / (32 ** 2 + 48 ** 2) ** 0.5)
    torch.testing.assert_close(inputs[0], normalize_flow(flows))
    # the same motion at twice the resolution (flow doubled, nearest upsampled) gives the same input
    up = 2.0 * F.interpolate(flows, scale_factor=2, mode="nearest")
    torch.testing.assert_close(normalize_flow(up), F.interpolate(inputs[0], scale_factor=2, mode="nearest"))
