"""A tiny YouTube-VOS train layout generated in tmp_path (no real data): palette masks keep their object ids
and void, sparse annotation (every 5th frame) is honoured, and supervised clips use annotated frames only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfvos.data.sources import open_source
from selfvos.data.supervised import SupervisedClipConfig, SupervisedClipDataset
from selfvos.data.video import VOID

H, W = 24, 32
PALETTE = [v for k in range(256) for v in (k, (37 * k) % 256, 255 - k)]


def _ids(t: int) -> np.ndarray:
    """Object ids 2 and 5 (5 appears at frame 5), void in the bottom row."""
    ids = np.zeros((H, W), np.uint8)
    ids[2:10, 2 + t % 4:12 + t % 4] = 2
    if t >= 5:
        ids[12:20, 16:28] = 5
    ids[-1] = VOID
    return ids


def build_ytvos(root: Path, step: int = 1, n: int = 12, every: int = 5) -> Path:
    """``JPEGImages/vid/*.jpg`` (frame names numbered by ``step``), ``Annotations/vid/*.png`` every ``every``-th
    frame, ``meta.json``; a second video ``other`` with only ids 0/1 annotated on every frame."""
    rng = np.random.default_rng(0)
    for vid, ann_every in (("vid", every), ("other", 1)):
        (root / "JPEGImages" / vid).mkdir(parents=True)
        (root / "Annotations" / vid).mkdir(parents=True)
        for t in range(n):
            name = f"{t * step:05d}"
            frame = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            Image.fromarray(frame).save(root / "JPEGImages" / vid / f"{name}.jpg")
            if t % ann_every == 0:
                ids = _ids(t) if vid == "vid" else (_ids(t) == 2).astype(np.uint8)
                png = Image.fromarray(ids)
                png.putpalette(PALETTE)  # an L image with a palette becomes a palette (P) PNG, indices = ids
                assert png.mode == "P"
                png.save(root / "Annotations" / vid / f"{name}.png")
    frames = [f"{t * step:05d}" for t in range(0, n, every)]
    every_frame = [f"{t * step:05d}" for t in range(n)]
    meta = {"videos": {"vid": {"objects": {"2": {"category": "cat", "frames": frames},
                                           "5": {"category": "dog", "frames": frames[1:]}}},
                       "other": {"objects": {"1": {"category": "cat", "frames": every_frame}}}}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_sparse_palette_masks_keep_their_ids(tmp_path):
    root = build_ytvos(tmp_path / "train")
    for spec in (f"youtube-vos:{root}", str(root)):  # named and auto-detected (meta.json)
        coll = open_source(spec)
        assert coll.kind == "youtube-vos" and coll.names == ["other", "vid"]
    video = coll["vid"]
    assert video.annotated_indices() == [0, 5, 10] and video.mask(3) is None
    for t in (0, 5, 10):
        np.testing.assert_array_equal(video.mask(t), _ids(t))
    assert set(np.unique(video.mask(5)).tolist()) == {0, 2, 5, VOID}
    assert video.meta["first_frame"] == {2: 0, 5: 5}
    assert coll["other"].annotated_indices() == list(range(12))


def test_train_numbering_step_5_every_frame_annotated(tmp_path):
    root = build_ytvos(tmp_path / "train", step=5, n=8, every=1)
    video = open_source(f"youtube-vos:{root}")["vid"]
    assert video.frame_names[:3] == ["00000", "00005", "00010"]
    assert video.annotated_indices() == list(range(8))
    np.testing.assert_array_equal(video.mask(6), _ids(6))


def test_supervised_clips_draw_annotated_frames_with_their_ids(tmp_path):
    coll = open_source(f"youtube-vos:{build_ytvos(tmp_path / 'train')}").select(["vid"])
    cfg = SupervisedClipConfig(num_frames=2, max_skip=2, size=(H, W), max_objects=3, min_pixels=4, seed=0)
    ds = SupervisedClipDataset(coll, cfg, clips_per_video=12)
    seen_k = set()
    for index in range(len(ds)):
        item = ds[index]
        picks = item["frame_indices"].tolist()
        assert set(picks) <= {0, 5, 10} and picks == sorted(picks)
        k = int(item["num_objects"])
        seen_k.add(k)
        expected = {1} if picks[0] == 0 else {1, 2}  # id 5 is an object only when frame 0 of the clip holds it
        assert set(item["masks"][0].unique().tolist()) - {0, VOID} == expected
        assert (item["masks"][:, -1] == VOID).all()
        orig = torch.from_numpy(np.stack([_ids(t) for t in picks])).long()
        assert torch.equal(item["masks"] == 1, orig == 2)
    assert seen_k == {1, 2}
