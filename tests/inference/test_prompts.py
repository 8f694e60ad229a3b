"""First-frame masks from boxes and clicks (``selfvos.inference.prompts``) and the ``Segmenter`` prompt API.

Synthetic frames: a textured grey-green background with objects of distinct colours (ellipses), so the true
mask is known; the colour model alone must find them. Tiny random models check the model-evidence plumbing.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import selfvos
from selfvos.data.image_io import read_mask
from selfvos.data.writers import DAVIS_PALETTE
from selfvos.errors import SelfvosInputError
from selfvos.eval.davis import jaccard
from selfvos.inference.prompts import (
    PromptConfig,
    check_prompts,
    mask_from_prompts,
    model_evidence,
    parse_boxes,
    parse_points,
    prompt_preview,
    resolve_overlaps,
    save_preview,
    save_prompt_mask,
)
from selfvos.inference.segmenter import Segmenter

pytestmark = pytest.mark.usefixtures("one_thread")
H, W = 96, 128


def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """(H, W) bool ellipse."""
    yy, xx = np.mgrid[0:H, 0:W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def scene(objects, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: noisy background with each (mask, RGB colour) painted in, with noise."""
    rng = np.random.default_rng(seed)
    frame = np.clip(rng.normal((90, 110, 80), 12, (H, W, 3)), 0, 255)
    for mask, colour in objects:
        frame[mask] = np.clip(rng.normal(colour, 10, (int(mask.sum()), 3)), 0, 255)
    return frame.astype(np.uint8)


def tight_box(mask: np.ndarray) -> tuple:
    rows, cols = np.nonzero(mask)
    return (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


RED = ellipse(45, 50, 22, 30)
BLUE = ellipse(50, 95, 20, 18)


# ------------------------------------------------------------------------------------------------- parsing


def test_parse_boxes_reads_one_box_per_object():
    assert parse_boxes("10,20,30,40") == [(10, 20, 30, 40)]
    assert parse_boxes(" 1, 2 ,3,4 ; 5,6,70.4,80.6;") == [(1, 2, 3, 4), (5, 6, 70, 81)]


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"), ("1,2,3", "box 1 '1,2,3': expected x0,y0,x1,y1 (4 numbers), got 3"),
    ("1,2,3,4;a,2,3,4", "box 2 'a,2,3,4': 'a' is not a number"), ("5,5,5,9", "box 1 '5,5,5,9': needs x0 < x1"),
    ("1,2,3,4;;5,6,7,8", "box 2 is empty"), ("nan,1,2,3", "'nan' is not a number"), ("1,2,3,4,5", "got 5"),
])
def test_bad_boxes_name_the_bad_part(text, fragment):
    with pytest.raises(ValueError) as err:
        parse_boxes(text)
    assert fragment in str(err.value)


def test_parse_points_defaults_to_positive_labels():
    assert parse_points("10,20") == [(10, 20, 1)]
    assert parse_points("10,20,0; 3,4,1;7,8") == [(10, 20, 0), (3, 4, 1), (7, 8, 1)]


@pytest.mark.parametrize("text, fragment", [
    ("1,2,3", "click 1 '1,2,3': label must be 1 (object) or 0"), ("5", "click 1 '5': expected x,y"),
    ("1,2;1,2,1,1", "click 2 '1,2,1,1'"), ("1,x", "'x' is not a number"), ("  ", "empty"),
])
def test_bad_points_name_the_bad_part(text, fragment):
    with pytest.raises(ValueError) as err:
        parse_points(text)
    assert fragment in str(err.value)


@pytest.mark.parametrize("boxes, points, option, fragment", [
    ([(0, 0, W + 1, 10)], None, "--box", "box 1 (0, 0, 129, 10) reaches outside the 128x96"),
    ([(5, 5, 20, 20), (-1, 0, 5, 5)], None, "--box", "box 2"),
    ([(5, 5, 5, 20)], None, "--box", "is empty"),
    (None, [[(10, 10, 1)], [(W, 3, 1)]], "--points", "click (128,3) of object 2 lies outside"),
    (None, [[(10, 10, 0)]], "--points", "object 1 has only negative clicks"),
    ([(5, 5, 20, 20)], [[], [(3, 3, 0)]], "--points", "object 2 has only negative clicks"),
    (None, [[(10, 10, 2)]], "--points", "label 2"),
    (None, None, "--box", "no prompt given"),
])
def test_check_prompts_names_the_option(boxes, points, option, fragment):
    with pytest.raises(SelfvosInputError) as err:
        check_prompts(boxes, points, (H, W))
    assert err.value.path == option and fragment in err.value.problem


def test_check_prompts_counts_objects():
    assert check_prompts([(1, 1, 5, 5)], [[(2, 2, 1)], [(60, 60, 1), (70, 70, 0)]], (H, W)) == 2


# ------------------------------------------------------------------------------------------------- masks


def test_box_prompt_finds_the_object():
    frame = scene([(RED, (200, 40, 40))])
    ids = mask_from_prompts(frame, boxes=[tight_box(RED)])
    assert ids.dtype == np.uint8 and ids.shape == (H, W) and set(np.unique(ids)) <= {0, 1}
    assert jaccard(ids == 1, RED) > 0.9


def test_loose_box_still_finds_the_object_and_nothing_outside_it():
    frame = scene([(RED, (200, 40, 40))])
    x0, y0, x1, y1 = tight_box(RED)
    box = (x0 - 8, y0 - 6, x1 + 8, y1 + 6)
    ids = mask_from_prompts(frame, boxes=[box])
    assert jaccard(ids == 1, RED) > 0.9
    outside = np.ones((H, W), bool)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert not ids[outside].any()


def test_a_click_alone_finds_the_object():
    frame = scene([(RED, (200, 40, 40))])
    ids = mask_from_prompts(frame, points=[[(50, 45, 1)]])
    assert jaccard(ids == 1, RED) > 0.85


def test_negative_click_removes_a_same_coloured_part():
    """A box over the object and a same-coloured blob next to it; a negative click on the blob drops it."""
    blob = ellipse(45, 100, 10, 10)
    frame = scene([(RED, (200, 40, 40)), (blob, (200, 40, 40))])
    box = tight_box(RED | blob)
    with_blob = mask_from_prompts(frame, boxes=[box])
    assert (with_blob == 1)[blob].mean() > 0.8
    without = mask_from_prompts(frame, boxes=[box], points=[[(50, 45, 1), (100, 45, 0)]])
    assert (without == 1)[blob].mean() < 0.2 and jaccard(without == 1, RED) > 0.85


def test_two_objects_with_overlapping_boxes_keep_their_own_pixels():
    frame = scene([(RED, (200, 40, 40)), (BLUE & ~RED, (40, 60, 210))])
    blue = BLUE & ~RED
    ids = mask_from_prompts(frame, boxes=[tight_box(RED), tight_box(blue)])
    assert set(np.unique(ids)) == {0, 1, 2}
    assert jaccard(ids == 1, RED) > 0.85 and jaccard(ids == 2, blue) > 0.85
    # the same objects in the other order: object 1 (blue) is not erased by object 2 (red), nor the reverse
    swapped = mask_from_prompts(frame, boxes=[tight_box(blue), tight_box(RED)])
    assert jaccard(swapped == 1, blue) > 0.85 and jaccard(swapped == 2, RED) > 0.85


def test_clicks_of_one_object_are_background_for_the_others():
    """Two boxes both covering both objects: each object's click decides which one it gets."""
    frame = scene([(RED, (200, 40, 40)), (BLUE & ~RED, (40, 60, 210))])
    both = tight_box(RED | BLUE)
    ids = mask_from_prompts(frame, boxes=[both, both], points=[[(45, 45, 1)], [(100, 50, 1)]])
    assert ids[45, 45] == 1 and ids[50, 100] == 2
    assert jaccard(ids == 2, BLUE & ~RED) > 0.7


def test_resolve_overlaps_gives_a_shared_pixel_to_the_stronger_evidence():
    first, second = np.zeros((2, 3), bool), np.zeros((2, 3), bool)
    first[:, :2], second[:, 1:] = True, True
    s1 = np.array([[5.0, 1.0, 0.0], [5.0, 3.0, 0.0]])
    s2 = np.array([[0.0, 2.0, 4.0], [0.0, 2.0, 4.0]])
    assert resolve_overlaps([first, second], [s1, s2]).tolist() == [[1, 2, 2], [1, 1, 2]]


# --------------------------------------------------------------------------------------------- with models


@pytest.fixture(scope="module")
def tiny_mug():
    torch.manual_seed(0)
    return selfvos.create_model("mug", **{"backbone.return_layers": ("layer2",), "embed_dim": 16}).eval()


@pytest.fixture(scope="module")
def tiny_stm():
    torch.manual_seed(0)
    return selfvos.create_model("stm", decoder_dim=8).eval()


def test_mug_evidence_has_a_head_probability_and_features(tiny_mug):
    frame = scene([(RED, (200, 40, 40))])
    evidence = model_evidence(tiny_mug, frame, PromptConfig(feature_weight=1.0, evidence_short_side=64))
    assert evidence.probability.shape == (H, W) and 0 <= evidence.probability.min() <= evidence.probability.max() <= 1
    assert evidence.features.shape[0] == tiny_mug.feature_channels
    assert np.allclose(np.linalg.norm(evidence.features, axis=0), 1, atol=1e-4)
    assert model_evidence(tiny_mug, frame, PromptConfig(head_weight=0.0)) == (None, None)


def test_a_head_without_frame_head_gives_features_only(tiny_stm):
    frame = scene([(RED, (200, 40, 40))])
    evidence = model_evidence(tiny_stm, frame, PromptConfig(feature_weight=1.0, evidence_short_side=64))
    assert evidence.probability is None and evidence.features.ndim == 3
    ids = mask_from_prompts(frame, boxes=[tight_box(RED)], model=tiny_stm,
                            cfg=PromptConfig(feature_weight=0.3, evidence_short_side=64))
    assert jaccard(ids == 1, RED) > 0.8


def test_model_evidence_joins_the_colour_model(tiny_mug):
    """A random frame head is noise, yet at a small weight the colours still win; at a huge weight the
    head decides alone, so the result must change: the evidence is used."""
    frame = scene([(RED, (200, 40, 40))])
    light = mask_from_prompts(frame, boxes=[tight_box(RED)], model=tiny_mug,
                              cfg=PromptConfig(head_weight=0.1, evidence_short_side=64))
    assert jaccard(light == 1, RED) > 0.85
    heavy = mask_from_prompts(frame, boxes=[tight_box(RED)], model=tiny_mug,
                              cfg=PromptConfig(head_weight=1e4, evidence_short_side=64))
    assert not np.array_equal(heavy, light)


# ------------------------------------------------------------------------------------------------- output


def test_prompt_mask_and_preview_are_written(tmp_path):
    frame = scene([(RED, (200, 40, 40))])
    ids = np.zeros((H, W), np.uint8)
    ids[RED] = 1
    path = save_prompt_mask(ids, tmp_path / "sub" / "prompt.png")
    assert Image.open(path).mode == "P" and np.array_equal(read_mask(path), ids)
    box, click, negative = (10, 12, 90, 80), (50, 45, 1), (20, 70, 0)
    preview = prompt_preview(frame, ids, [box], [[click, negative]])
    assert preview.shape == (H, W, 3) and preview.dtype == np.uint8
    colour = DAVIS_PALETTE[1]
    assert np.array_equal(preview[40, box[0]], colour) and np.array_equal(preview[box[1], 30], colour)
    assert np.array_equal(preview[45, 50], colour) and np.array_equal(preview[70, 20], (0, 0, 0))
    written = save_preview(preview, tmp_path / "preview.png")
    assert np.array_equal(np.array(Image.open(written).convert("RGB")), preview)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png", "sub"]


# ---------------------------------------------------------------------------------------------- Segmenter


def test_segmenter_step_makes_the_first_mask_from_prompts(tiny_mug):
    frame = scene([(RED, (200, 40, 40))])
    seg = Segmenter(tiny_mug, max_side=64, prompt=PromptConfig(head_weight=0.1, evidence_short_side=64))
    probabilities = seg.step(frame, boxes=[tight_box(RED)])
    assert seg.active_task == "one-shot" and probabilities.shape == (2, H, W)
    assert jaccard(seg.prompt_mask == 1, RED) > 0.85
    with pytest.raises(ValueError, match="first step only"):
        seg.step(frame, boxes=[tight_box(RED)])
    seg.reset()
    assert seg.prompt_mask is None
    with pytest.raises(ValueError, match="not both"):
        seg.step(frame, np.zeros((H, W), np.uint8), points=[[(50, 45, 1)]])
    with pytest.raises(ValueError, match="zero-shot"):
        Segmenter(tiny_mug, "zero-shot").step(frame, boxes=[tight_box(RED)])
    with pytest.raises(SelfvosInputError, match="reaches outside"):
        seg.step(frame, boxes=[(0, 0, W + 5, 10)])


def test_segment_video_from_prompts_equals_segment_video_from_that_mask(tiny_stm):
    from selfvos.data.video import InMemoryVideo, VideoSample

    frames = np.stack([scene([(RED, (200, 40, 40))], seed=t) for t in range(3)])
    video = InMemoryVideo(VideoSample(frames=frames, frame_names=[f"{t:05d}" for t in range(3)], name="v"))
    seg = Segmenter(tiny_stm)
    prompted = list(seg.segment_video(video, progress=False, boxes=[tight_box(RED)], points=[[(50, 45, 1)]]))
    first = seg.prompt_mask
    assert jaccard(first == 1, RED) > 0.85
    assert all(np.array_equal(a, b) for a, b in zip(prompted, seg.segment_video(video, first, progress=False)))
    with pytest.raises(ValueError, match="not both"):
        next(seg.segment_video(video, first, progress=False, boxes=[tight_box(RED)]))


def test_gaussian_mixture_of_fewer_than_two_samples_is_flat():
    from selfvos.inference.prompts import gaussian_mixture_nll

    values = np.random.default_rng(0).random((10, 3))
    select = np.zeros(10, bool)
    select[4] = True
    assert np.array_equal(gaussian_mixture_nll(values, select, 5), np.zeros(10))
    select[7] = True
    assert np.isfinite(gaussian_mixture_nll(values, select, 5)).all()
