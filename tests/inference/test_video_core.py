"""The generic zero-shot head core (``selfvos.inference.video_core``) with a tiny registered head: one mask per
frame at the video size, windows, online causality, the flow convention, options and the CLI."""
from __future__ import annotations

from typing import ClassVar, Dict, List

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import selfvos
from selfvos.data.video import InMemoryVideo, VideoSample
from selfvos.errors import SelfvosInputError
from selfvos.inference.core import create_core
from selfvos.inference.segmenter import Segmenter
from selfvos.inference.video_core import VideoHeadCore, ZeroShotHeadInference
from selfvos.pseudo.flow import FLOW_CACHE_VERSION, dis_flow
from tests.inference.tiny_zero_shot import ARCH, TinyZeroShot

pytestmark = pytest.mark.usefixtures("one_thread")


def moving_video(t: int = 5, h: int = 36, w: int = 52, name: str = "square", seed: int = 0) -> InMemoryVideo:
    """A textured square moving 2 px right and 1 px down per frame over a static textured background."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
    patch = rng.integers(130, 255, (12, 12, 3), dtype=np.uint8)
    frames = np.repeat(background[None], t, axis=0)
    for i in range(t):
        frames[i, 6 + i:18 + i, 8 + 2 * i:20 + 2 * i] = patch
    return InMemoryVideo(VideoSample(frames=frames, frame_names=[f"{i:05d}" for i in range(t)], name=name))


class CountingVideo(InMemoryVideo):
    """Records the highest frame index read so far."""

    def __init__(self, video: InMemoryVideo) -> None:
        super().__init__(video.sample)
        self.highest = -1

    def _read_frame(self, index: int) -> np.ndarray:
        self.highest = max(self.highest, index)
        return super()._read_frame(index)


class Recorder(nn.Module):
    """Records every call (``offline``, frames, flows). Foreground logit of frame t: the mean intensity of frames
    0..t+1 (causal, ``offline=False``) or of the whole clip (``offline=True``), minus 0.3."""

    architecture = "_recorder"
    needs_flow: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.calls: List[Dict] = []

    def forward(self, batch, offline: bool = True):
        frames, flows = batch["frames"], batch["flows"]
        self.calls.append({"offline": offline, "frames": frames.clone(), "flows": flows.clone()})
        b, t, _, h, w = frames.shape
        means = frames.mean(dim=(2, 3, 4))  # (B, T)
        if offline:
            score = means.mean(dim=1, keepdim=True).expand(b, t)
        else:
            cumulative = means.cumsum(dim=1) / torch.arange(1, t + 1)
            ahead = torch.cat([cumulative[:, 1:], cumulative[:, -1:]], dim=1)  # mean of frames 0..t+1
            score = ahead
        fg = (self.weight * score - 0.3)[..., None, None].expand(b, t, h, w)
        return {"logits": torch.stack([torch.zeros_like(fg), fg], dim=2), "frames": torch.arange(t)}


def tiny_head(**inference) -> TinyZeroShot:
    torch.manual_seed(0)
    return selfvos.create_model(ARCH, **{f"inference.{k}": v for k, v in inference.items()}).eval()


def test_one_mask_per_frame_at_the_video_size():
    video = moving_video(t=5, h=36, w=52)
    masks = list(Segmenter(tiny_head(), "zero-shot", max_side=24).segment_video(video, progress=False))
    assert len(masks) == 5
    assert all(m.shape == (36, 52) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} for m in masks)


def test_windows_give_the_per_frame_head_the_same_masks():
    video = moving_video(t=5)
    whole = list(create_core(tiny_head(), "zero-shot", {"head": {"window": 0, "threshold": 0.45}}).segment_video(video))
    pairs = list(create_core(tiny_head(), "zero-shot", {"head": {"window": 2, "threshold": 0.45}}).segment_video(video))
    assert len(whole) == len(pairs) == 5
    for a, b in zip(whole, pairs):
        np.testing.assert_array_equal(a, b)


def test_flows_follow_the_convention_at_the_working_size():
    video = moving_video(t=4, h=36, w=52)
    model = Recorder()
    core = VideoHeadCore(model, ZeroShotHeadInference(max_side=26, window=3))
    list(core.segment_video(video))
    assert [c["frames"].shape[1] for c in model.calls] == [3, 1]
    frames = torch.cat([c["frames"] for c in model.calls], dim=1)[0]
    flows = torch.cat([c["flows"] for c in model.calls], dim=1)[0]
    assert frames.shape == (4, 3, 18, 26) and flows.shape == (4, 2, 18, 26)
    small = [(f.permute(1, 2, 0) * 255).round().byte().numpy() for f in frames]
    expected = [dis_flow(small[0], small[1]), dis_flow(small[1], small[2]), dis_flow(small[2], small[3]),
                dis_flow(small[3], small[2])]  # t -> t + 1 (also across the window boundary), last -> previous
    for t in range(4):
        np.testing.assert_allclose(flows[t].permute(1, 2, 0).numpy(), expected[t], atol=1e-5)


def test_a_single_frame_video_has_zero_flow():
    model = Recorder()
    masks = list(VideoHeadCore(model, ZeroShotHeadInference()).segment_video(moving_video(t=1)))
    assert len(masks) == 1 and not model.calls[0]["flows"].any()


def test_online_mode_is_causal_and_streams():
    model = Recorder()
    video = CountingVideo(moving_video(t=6))
    core = VideoHeadCore(model, ZeroShotHeadInference(mode="online", window=1, threshold=0.05))
    for t, _ in enumerate(core.segment_video(video)):
        assert video.highest <= t + 1  # mask t is out before frame t + 2 is read
    assert all(not c["offline"] for c in model.calls)

    # whole-video online: masks up to t - 2 do not change when the last frame does; offline ones do
    bright = moving_video(t=6)
    bright.sample.frames[-1] = 255
    outputs = {}
    for mode in ("online", "offline"):
        config = ZeroShotHeadInference(mode=mode)
        probe = Recorder()
        core = VideoHeadCore(probe, config)
        outputs[mode] = [core.probabilities(v, 0, 6)[0] for v in (moving_video(t=6), bright)]
        assert all(c["offline"] is (mode == "offline") for c in probe.calls)
    online, offline = outputs["online"], outputs["offline"]
    torch.testing.assert_close(online[0][:4], online[1][:4])
    assert not torch.allclose(online[0][4:], online[1][4:])
    assert not torch.allclose(offline[0][:4], offline[1][:4])


def test_segmenter_max_side_and_head_options_reach_the_core():
    seg = Segmenter(tiny_head(), "zero-shot", max_side=20, head={"window": 3, "mode": "online"})
    masks = list(seg.segment_video(moving_video(t=4), progress=False))
    assert len(masks) == 4 and seg.object_ids == [1]
    assert (seg._core.config.max_side, seg._core.config.window, seg._core.config.mode) == (20, 3, "online")
    default = Segmenter(tiny_head(), "zero-shot")
    list(default.segment_video(moving_video(t=2), progress=False))
    assert default._core.config.max_side == ZeroShotHeadInference().max_side


def test_unknown_or_bad_head_option_is_an_input_error():
    with pytest.raises(SelfvosInputError, match=r"no inference setting\(s\) \['windw'\]; known: .*'window'"):
        create_core(tiny_head(), "zero-shot", {"head": {"windw": 2}})
    with pytest.raises(SelfvosInputError, match="mode must be one of"):
        create_core(tiny_head(), "zero-shot", {"head": {"mode": "sideways"}})
    with pytest.raises(ValueError, match="window"):
        ZeroShotHeadInference(window=-1)


def test_step_says_to_segment_whole_videos():
    seg = Segmenter(tiny_head(), "zero-shot")
    with pytest.raises(SelfvosInputError, match=f"{ARCH}.*segments whole videos.*Segmenter.segment_video"):
        seg.step(np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(SelfvosInputError, match="zero-shot only"):
        create_core(tiny_head(), "one-shot")


def test_core_fills_the_versioned_flow_cache(tmp_path):
    video = moving_video(t=3, name="clip")
    first = list(create_core(tiny_head(), "zero-shot", {"head": {"flow_cache": str(tmp_path)}}).segment_video(video))
    folder = tmp_path / "clip" / f"dis-medium-side432-v{FLOW_CACHE_VERSION}"
    assert sorted(p.name for p in folder.iterdir()) == ["000000_000001.npy", "000001_000002.npy", "000002_000001.npy"]
    again = list(create_core(tiny_head(), "zero-shot", {"head": {"flow_cache": str(tmp_path)}}).segment_video(video))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_segment_cli_runs_a_zero_shot_head(tmp_path, capsys):
    from selfvos.cli import main

    checkpoint = tiny_head().save_pretrained(tmp_path / "ckpt")
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(moving_video(t=4).sample.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    out = tmp_path / "masks"
    assert main(["segment", "--checkpoint", str(checkpoint), "--input", str(folder), "--out", str(out),
                 "--task", "zero-shot", "--max-side", "32", "--head-option", "window=2"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(4)]
    assert all(np.array(Image.open(p)).shape == (36, 52) for p in pngs)
    assert "zero-shot: wrote 4 masks" in capsys.readouterr().out
    first = tmp_path / "first.png"
    Image.fromarray(np.ones((36, 52), np.uint8)).save(first)
    assert main(["segment", "--checkpoint", str(checkpoint), "--input", str(folder), "--out", str(tmp_path / "o"),
                 "--first-mask", str(first)]) == 2
    assert "zero-shot only" in capsys.readouterr().err
