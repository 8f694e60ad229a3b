"""Mask/overlay writers: palette PNG round trip, overlay blend and contours, playable atomic overlay videos."""
from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from selfvos.data.writers import DAVIS_PALETTE
from selfvos.inference.io import OverlayVideoWriter, pick_codec, render_overlay, write_masks, write_overlay_video


def square_masks(n: int, h: int, w: int) -> list:
    masks = []
    for t in range(n):
        m = np.zeros((h, w), np.uint8)
        m[10:30, 5 + 2 * t:25 + 2 * t] = 1
        m[35:45, 40:60] = 2
        masks.append(m)
    return masks


def test_write_masks_round_trip(tmp_path):
    masks = square_masks(3, 50, 70)
    masks[2][0, 0] = 255
    paths = write_masks(tmp_path / "seq", ["f_007", "f_008", "f_009"], iter(masks))
    assert [p.name for p in paths] == ["f_007.png", "f_008.png", "f_009.png"]
    for path, mask in zip(paths, masks):
        image = Image.open(path)
        assert image.mode == "P"
        assert np.array_equal(np.array(image), mask)
        assert image.getpalette()[3:6] == [128, 0, 0]  # DAVIS colour of id 1
    assert not list((tmp_path / "seq").glob(".*"))  # no temp files left
    with pytest.raises(ValueError, match="2 masks for 3 frame names"):
        write_masks(tmp_path / "short", ["a", "b", "c"], masks[:2])
    with pytest.raises(ValueError, match="more masks"):
        write_masks(tmp_path / "long", ["a"], masks[:2])


def test_render_overlay_blends_colours_and_draws_contours():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    mask = square_masks(1, 50, 70)[0]
    mask[0:3, 66:70] = 255  # void stays untouched
    out = render_overlay(frame, mask, alpha=0.4, contour_thickness=1)
    assert out.shape == frame.shape and out.dtype == np.uint8
    background = mask == 0
    background[8:32, 3:27] = background[33:47, 38:62] = False  # away from the contours
    assert np.array_equal(out[background], frame[background])
    interior = np.zeros_like(mask, bool)
    interior[12:28, 7:23] = True  # strictly inside object 1
    expected = np.rint(0.6 * frame[interior].astype(np.float32) + 0.4 * DAVIS_PALETTE[1].astype(np.float32))
    assert np.abs(out[interior].astype(int) - expected.astype(int)).max() <= 1
    assert (out[10, 5:25] == DAVIS_PALETTE[1]).all()  # top edge of object 1 is its contour
    assert (out[44, 40:60] == DAVIS_PALETTE[2]).all()  # bottom edge of object 2
    no_contour = render_overlay(frame, mask, alpha=0.4, contour_thickness=0)
    assert not (no_contour[10, 5:25] == DAVIS_PALETTE[1]).all()


def decode_frames(path) -> list:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_overlay_video_is_playable_with_even_size(tmp_path, codec):
    h, w, n = 51, 73, 9  # odd sizes: padded to 52 x 74 for yuv420p
    frames = [np.full((h, w, 3), 40 + 20 * t, np.uint8) for t in range(n)]
    path = write_overlay_video(tmp_path / "out" / "overlay.mp4", frames, square_masks(n, h, w), fps=12, codec=codec)
    decoded = decode_frames(path)
    assert len(decoded) == n
    assert decoded[0].shape == (52, 74, 3)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == (codec or pick_codec()).replace("libx264", "h264")
        assert stream.average_rate == 12
    # the video shows our frames: a background pixel keeps its grey level (lossy codec: tolerance)
    assert abs(int(decoded[4][48, 3].mean()) - (40 + 20 * 4)) <= 6
    assert sorted(p.name for p in path.parent.iterdir()) == ["overlay.mp4"]


def test_overlay_video_is_atomic(tmp_path):
    target = tmp_path / "v.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with OverlayVideoWriter(target, fps=10) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    with pytest.raises(ValueError, match="differs from the first frame"):
        with OverlayVideoWriter(tmp_path / "w.mp4") as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            writer.write(np.zeros((18, 16, 3), np.uint8))
    assert not (tmp_path / "w.mp4").exists()


def test_pick_codec_falls_back():
    assert pick_codec(("no-such-encoder", "mpeg4")) == "mpeg4"
    with pytest.raises(RuntimeError):
        pick_codec(("no-such-encoder",))
