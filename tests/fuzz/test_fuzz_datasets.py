"""Dataset folders: a DAVIS root whose annotation folder holds fuzzed masks (damaged, other modes and sizes, odd
names) and whose ``ImageSets`` list is random text, and a YouTube-VOS root whose ``meta.json`` is random or a
mutated valid one.

Property: ``open_source(root)`` raises ``SelfvosInputError`` or gives videos whose every frame reads as
``(H, W, 3)`` uint8 and every annotated frame's mask as ``(H, W)`` uint8 of the same size, or fails reading with
``SelfvosInputError`` naming a file of the root.
"""
from __future__ import annotations

import copy
import io
import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from selfvos.data.sources import open_source
from tests.fuzz._props import damaged, input_error_or, write_bytes

FRAMES, SIZE = 4, (8, 10)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 300) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def png(ids: np.ndarray, mode: str) -> bytes:
    """``ids`` as a PNG of ``mode`` (palette masks get a DAVIS-like palette)."""
    image = Image.fromarray(ids.astype(np.uint8), mode="L").convert(mode) if mode != "P" else Image.fromarray(
        ids.astype(np.uint8), mode="P")
    if mode == "P":
        image.putpalette(bytes(range(256)) * 3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@st.composite
def mask_file(draw: st.DrawFn) -> bytes:
    """A mask PNG: right or wrong size, palette / grey / RGB, possibly damaged."""
    size = draw(st.sampled_from([SIZE, SIZE, (SIZE[1], SIZE[0]), (1, 1)]))
    ids = np.random.default_rng(draw(st.integers(0, 99))).integers(0, draw(st.sampled_from([2, 4, 256])), size)
    data = png(ids, draw(st.sampled_from(["P", "P", "L", "RGB"])))
    return draw(damaged(data)) if draw(st.booleans()) else data


def write_frames(folder: Path) -> None:
    """FRAMES good JPEG frames named 00000.jpg, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(FRAMES):
        Image.fromarray(np.full(SIZE + (3,), 50 * i, np.uint8)).save(folder / f"{i:05d}.jpg")


def check_dataset(root: Path, **options) -> None:
    """The property of the module docstring."""
    collection, err = input_error_or(lambda: open_source(str(root), **options))
    if err is not None:
        assert str(root) in err.path
        return
    for video in collection:
        for index in range(len(video)):
            frame, err = input_error_or(partial(video.frame, index))
            if err is not None:
                assert str(root) in err.path
                break
            mask, err = input_error_or(partial(video.mask, index))
            if err is not None:
                assert str(root) in err.path
                break
            assert frame.dtype == np.uint8 and frame.shape[2] == 3
            assert mask is None or (mask.dtype == np.uint8 and mask.shape == frame.shape[:2])


@settings(max_examples=60)
@given(masks=st.lists(st.tuples(st.sampled_from(["00000", "00001", "00003", "00004", "0", "x", "00002"]),
                                st.sampled_from([".png", ".PNG"]), mask_file()), max_size=5),
       split=st.one_of(st.none(), st.text(max_size=40)))
def test_davis_root_with_fuzzed_annotations(masks, split):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "DAVIS"
        write_frames(root / "JPEGImages" / "480p" / "seq")
        annotations = root / "Annotations" / "480p" / "seq"
        annotations.mkdir(parents=True)
        for stem, ext, data in masks:
            write_bytes(annotations / f"{stem}{ext}", data)
        if split is not None:
            write_bytes(root / "ImageSets" / "2017" / "val.txt", split.encode())
        check_dataset(root, **({"split": "val"} if split is not None else {}))


def valid_meta() -> dict:
    """meta.json of one video with two objects."""
    return {"videos": {"vid": {"objects": {"1": {"category": "dog", "frames": ["00000", "00002"]},
                                           "2": {"category": "cat", "frames": ["00001"]}}}}}


@st.composite
def meta_bytes(draw: st.DrawFn) -> bytes:
    """Not JSON, any JSON, or the valid meta with one node replaced by any JSON value."""
    kind = draw(st.sampled_from(["noise", "json", "mutated", "mutated", "mutated"]))
    if kind == "noise":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    meta = copy.deepcopy(valid_meta())
    nodes = [(meta, "videos"), (meta["videos"], "vid"), (meta["videos"]["vid"], "objects"),
             (meta["videos"]["vid"]["objects"], "1"), (meta["videos"]["vid"]["objects"]["1"], "category"),
             (meta["videos"]["vid"]["objects"]["1"], "frames"), (meta["videos"]["vid"]["objects"], "300")]
    parent, key = draw(st.sampled_from(nodes))
    parent[key] = draw(JSON)
    return json.dumps(meta).encode()


@settings(max_examples=70)
@given(meta=meta_bytes())
def test_youtube_vos_root_with_fuzzed_meta(meta):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ytvos"
        write_frames(root / "JPEGImages" / "vid")
        annotations = root / "Annotations" / "vid"
        annotations.mkdir(parents=True)
        ids = np.zeros(SIZE, np.uint8)
        ids[2:5, 3:7] = 1
        write_bytes(annotations / "00000.png", png(ids, "P"))
        write_bytes(root / "meta.json", meta)
        check_dataset(root)
