"""Palette PNGs, the shared resize rule and atomic DAVIS-folder export."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from selfvos.data.video import InMemoryVideo, VideoCollection, VideoSample
from selfvos.data.writers import (
    DAVIS_PALETTE,
    decode_id_png,
    encode_palette_png,
    export_davis,
    fit_max_side,
    save_palette_png,
)
from selfvos.errors import SelfvosInputError
from tests.conftest import shared_path


def _video(name: str, t: int = 5, h: int = 24, w: int = 32, seed: int = 0, sparse: bool = False) -> InMemoryVideo:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 200 // w, yy * 200 // h, (xx + yy) * 100 // (h + w)], -1)  # smooth: JPEG-friendly
    frames = np.stack([base + rng.integers(0, 40) + i for i in range(t)]).astype(np.uint8)
    masks = rng.integers(0, 4, (t, h, w), dtype=np.uint8)
    masks[:, 0, 0] = 255  # void survives
    annotated = (np.arange(t) % 2 == 0) if sparse else None
    names = [f"{i * 5:05d}" for i in range(t)]
    return InMemoryVideo(VideoSample(frames=frames, frame_names=names, name=name, masks=masks, annotated=annotated))


def test_palette_png_round_trip_keeps_ids_and_uses_davis_palette(tmp_path):
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = save_palette_png(tmp_path / "sub" / "m.png", ids)
    image = Image.open(path)
    assert image.mode == "P"
    np.testing.assert_array_equal(np.array(image), ids)
    np.testing.assert_array_equal(np.array(image.getpalette()).reshape(-1, 3)[:256], DAVIS_PALETTE)
    assert [p.name for p in path.parent.iterdir()] == ["m.png"]  # no temp file left behind
    np.testing.assert_array_equal(decode_id_png(path.read_bytes()), ids)


def test_palette_matches_official_davis_annotation():
    png = shared_path("davis2017-multi", "Annotations", "schoolgirls", "00000.png")
    official = np.array(Image.open(png).getpalette(), dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(official, DAVIS_PALETTE)
    assert DAVIS_PALETTE[255].tolist() == [255, 255, 255] and DAVIS_PALETTE[1].tolist() == [128, 0, 0]


def test_palette_rejects_non_id_arrays():
    with pytest.raises(ValueError, match="uint8"):
        encode_palette_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encode_palette_png(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="mode RGB"):
        decode_id_png(_rgb_png_bytes())


def _rgb_png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_fit_max_side_shrinks_keeps_aspect_and_ids():
    frame = np.zeros((240, 432, 3), np.uint8)
    mask = np.zeros((240, 432), np.uint8)
    mask[100:140, 200:260] = 7
    small, small_mask = fit_max_side(frame, mask, 108)
    assert small.shape == (60, 108, 3) and small_mask.shape == (60, 108)
    assert set(np.unique(small_mask).tolist()) == {0, 7}  # nearest: no blended ids
    assert small_mask.sum() // 7 == pytest.approx(40 * 60 / 16, rel=0.15)
    same, same_mask = fit_max_side(frame, mask, 1000)  # never enlarges
    assert same is frame and same_mask is mask
    assert fit_max_side(frame, None, 100)[1] is None


def test_export_davis_writes_frames_and_only_annotated_masks(tmp_path):
    videos = VideoCollection([_video("a", seed=1), _video("b", seed=2, sparse=True)])
    dst = export_davis(videos, tmp_path / "davis")
    for video in videos:
        jpgs = sorted((dst / "JPEGImages" / "480p" / video.name).iterdir())
        assert [p.stem for p in jpgs] == video.frame_names
        pngs = sorted((dst / "Annotations" / "480p" / video.name).iterdir())
        assert [p.stem for p in pngs] == [video.frame_names[i] for i in video.annotated_indices()]
        for png in pngs:
            i = video.frame_names.index(png.stem)
            np.testing.assert_array_equal(np.array(Image.open(png)), video.mask(i))
        decoded = np.asarray(Image.open(jpgs[1]), dtype=np.int16)  # JPEG q95 on a smooth frame: tiny error
        assert np.abs(decoded - video.frame(1)).mean() < 3
    assert (dst / "ImageSets" / "all.txt").read_text().split() == ["a", "b"]
    assert len(list((dst / "Annotations" / "480p" / "b").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["davis"]


def test_export_davis_flat_layout_and_max_side(tmp_path):
    dst = export_davis(VideoCollection([_video("a", h=40, w=80)]), tmp_path / "d", "flat", max_side=20)
    assert Image.open(dst / "JPEGImages" / "a" / "00000.jpg").size == (20, 10)
    assert Image.open(dst / "Annotations" / "a" / "00005.png").size == (20, 10)


def test_export_davis_is_atomic_and_refuses_to_clobber(tmp_path):
    class Broken(InMemoryVideo):
        def _read_frame(self, index):
            if index == 3:
                raise OSError("disk on fire")
            return super()._read_frame(index)

    dst = tmp_path / "davis"
    with pytest.raises(OSError, match="disk on fire"):
        export_davis(VideoCollection([_video("ok"), Broken(_video("bad").sample)]), dst)
    assert list(tmp_path.iterdir()) == []  # neither dst nor a temp folder

    export_davis(VideoCollection([_video("first")]), dst)
    with pytest.raises(SelfvosInputError, match="already exists"):
        export_davis(VideoCollection([_video("second")]), dst)
    export_davis(VideoCollection([_video("second")]), dst, overwrite=True)
    assert sorted(p.name for p in (dst / "JPEGImages" / "480p").iterdir()) == ["second"]
    assert [p.name for p in tmp_path.iterdir()] == ["davis"]
    with pytest.raises(ValueError, match="unknown DAVIS layout"):
        export_davis(VideoCollection([_video("x")]), tmp_path / "other", "davis2099")
