"""Quality (J against GT, DAVIS conventions) and the PNG gallery."""
from __future__ import annotations

import numpy as np
from PIL import Image

from selfvos.data.video import InMemoryVideo, VideoCollection, VideoSample
from selfvos.pseudo.gallery import HEADER_HEIGHT, make_gallery, overlay
from selfvos.pseudo.quality import evaluate_pseudo_masks, frame_jaccard


def test_frame_jaccard_known_answers():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert frame_jaccard(a, b) == 1.0
    b[0, :2] = True
    assert frame_jaccard(a, b) == 0.0
    a[0, 1:3] = True
    assert frame_jaccard(a, b) == 1 / 3
    valid = np.ones((4, 4), bool)
    valid[0, 2] = False
    assert frame_jaccard(a, b, valid) == 1 / 2


def _collection() -> VideoCollection:
    masks = np.zeros((4, 6, 6), np.uint8)
    masks[:, 1:4, 1:4] = 1
    masks[:, 5, 5] = 255  # void
    frames = np.full((4, 6, 6, 3), 90, np.uint8)
    labelled = InMemoryVideo(VideoSample(frames=frames, frame_names=list("abcd"), name="gt", masks=masks))
    unlabelled = InMemoryVideo(VideoSample(frames=frames, frame_names=list("abcd"), name="raw"))
    return VideoCollection([labelled, unlabelled], source="toy")


def test_evaluate_pseudo_masks_means_per_video_and_skips_missing_and_void():
    data = _collection()

    def masks_fn(name, index):
        if index == 2:
            return None
        soft = (data[name].mask(index) == 1).astype(np.float32) * 0.8
        soft[5, 5] = 1.0  # predicted on a void pixel: ignored
        if index == 3:
            soft[0, :] = 0.6  # 6 false-positive pixels: J = 9 / 15
        return soft

    result = evaluate_pseudo_masks(data, masks_fn, frame_step=1)
    assert result["per_video"] == {"gt": (1 + 1 + 9 / 15) / 3} and result["frames"] == 3 and result["missing"] == 1
    assert result["mean_j"] == result["per_video"]["gt"]
    assert evaluate_pseudo_masks(data, masks_fn, frame_step=1, videos=["raw"])["mean_j"] is None


def test_gallery_png_has_a_labelled_header_one_row_per_frame_and_three_columns(tmp_path):
    data = _collection()
    out = make_gallery(data, lambda n, i: np.ones((6, 6), np.float32), tmp_path / "g" / "gallery.png",
                       per_video=2, row_height=30)
    image = np.asarray(Image.open(out))
    assert image.shape == (HEADER_HEIGHT + 4 * 30, 90, 3)  # header + 4 rows (2 frames x 2 videos), 3 cells of 30x30
    header = image[:HEADER_HEIGHT]
    assert all((header[:, c * 30 + 2:c * 30 + 8] > 128).any() for c in range(3))  # a label starts in every column
    tinted = overlay(np.zeros((2, 2, 3), np.uint8), np.array([[True, False], [False, False]]))
    assert tinted[0, 0].tolist() == [128, 20, 20] and tinted[1, 1].tolist() == [0, 0, 0]
