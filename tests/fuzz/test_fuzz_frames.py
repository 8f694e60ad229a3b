"""Folders of frames: mixed sizes, modes and extensions, non-images, empty files, gaps and duplicates in the
numbering, odd names, symlinks (dangling, looping, to folders) and sub-folders.

Property: ``open_source(folder)`` (what the CLI calls) either raises ``SelfvosInputError`` or returns videos whose
frame names are unique and whose frames all decode to ``(H, W, 3)`` uint8 of ONE size; a frame that cannot be
used raises ``SelfvosInputError`` naming a path inside the folder.
"""
from __future__ import annotations

import io
import os
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from selfvos.data.frames import open_frames
from selfvos.data.sources import open_source
from tests.fuzz._props import input_error_or, listing, run_cli, write_bytes

EXTENSIONS = [".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".txt", "", ".png.bak", ".gif", ".mp4"]
KINDS = ["image", "image", "image", "image", "empty", "noise", "text", "truncated", "link", "dangling", "loop",
         "dirlink", "subdir"]
SIZES = [(8, 8), (8, 10), (6, 8)]
ODD_NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x00"),
                    min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@st.composite
def names(draw: st.DrawFn) -> str:
    """Frame-like names (numbered with gaps and duplicates, prefixed, odd unicode) with any extension."""
    number = draw(st.integers(0, 12))
    stem = draw(st.one_of(st.just(f"{number:05d}"), st.just(f"frame{number}"), st.just(f"img_{number:03d}"),
                          st.just(str(number)), ODD_NAMES))
    return stem + draw(st.sampled_from(EXTENSIONS))


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """A small frame of a random size, mode and encoding (JPEG or PNG, whatever its name says)."""
    height, width = draw(st.sampled_from(SIZES))
    mode = draw(st.sampled_from(["RGB", "RGB", "L", "P", "RGBA", "LA", "I;16", "CMYK", "1"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    if fmt == "JPEG" and mode not in ("RGB", "L", "CMYK"):
        fmt = "PNG"
    if mode == "CMYK" and fmt == "PNG":
        mode = "RGB"
    seed = draw(st.integers(0, 255))
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))
    image = image.convert(mode) if mode != "I;16" else Image.fromarray(
        (np.asarray(image.convert("L"), np.uint16) * 257), mode=None)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@st.composite
def entries(draw: st.DrawFn, depth: int = 0) -> list:
    """``[(name, kind, payload)]`` for one folder; ``subdir`` entries hold a nested list (one level deep)."""
    out = []
    for _ in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(KINDS if depth == 0 else KINDS[:8]))
        payload = None
        if kind in ("image", "truncated"):
            payload = draw(image_bytes())
            if kind == "truncated":
                payload = payload[: draw(st.integers(0, max(0, len(payload) - 1)))]
        elif kind == "noise":
            payload = draw(st.binary(min_size=1, max_size=200))
        elif kind == "subdir":
            payload = draw(entries(depth=1))
        out.append((draw(names()), kind, payload))
    return out


@st.composite
def mostly_good_entries(draw: st.DrawFn) -> list:
    """Three good numbered frames of one size plus up to two fuzzed entries (so that some runs succeed)."""
    good = []
    for i in range(3):
        image = Image.fromarray(np.full((8, 10, 3), 60 * i, np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        good.append((f"{i:05d}.png", "image", buffer.getvalue()))
    return good + draw(entries())[:draw(st.integers(0, 2))]


def build(folder: Path, spec: list) -> None:
    """Create the files, links and sub-folders of ``spec`` in ``folder`` (name clashes: the first one wins)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, kind, payload in spec:
        path = folder / name
        if os.path.lexists(path):
            continue
        if kind in ("image", "truncated", "noise"):
            write_bytes(path, payload)
        elif kind == "empty":
            write_bytes(path, b"")
        elif kind == "text":
            write_bytes(path, b"not an image\n")
        elif kind == "link":
            target = next((n for n, k, _ in spec if k == "image" and n != name), "missing.png")
            os.symlink(target, path)
        elif kind == "dangling":
            os.symlink("does-not-exist.png", path)
        elif kind == "loop":
            os.symlink(name, path)
        elif kind == "dirlink":
            os.symlink(".", path)
        else:
            build(path, payload)


def check_videos(collection, folder: Path) -> None:
    """Every video: unique names, and all frames decode to one (H, W, 3) uint8 size or fail naming a file."""
    for video in collection:
        names = video.frame_names
        assert len(video) == len(names) > 0 and len(set(names)) == len(names), names
        sizes = set()
        for index in range(len(video)):
            frame, err = input_error_or(partial(video.frame, index))
            if err is not None:
                assert Path(err.path).resolve().is_relative_to(folder.resolve()) or str(folder) in err.path
                break
            assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and min(frame.shape[:2]) > 0
            sizes.add(frame.shape)
        assert len(sizes) <= 1, f"{video.name}: frames of sizes {sorted(sizes)} were handed on as one video"


@settings(max_examples=110)
@given(spec=entries())
def test_frame_folders_through_open_source(spec):
    """The CLI's reader: auto-detects the folder kind, then every frame of every video is read."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clip"
        build(folder, spec)
        collection, _ = input_error_or(lambda: open_source(str(folder)))
        if collection is not None:
            check_videos(collection, folder)


@settings(max_examples=50)
@given(spec=entries(), check_gaps=st.booleans())
def test_frame_folders_through_open_frames(spec, check_gaps):
    """The frames reader directly (with and without the gap check), and ``load()`` of the whole video."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        build(folder, spec)
        collection, _ = input_error_or(lambda: open_frames(folder, check_gaps=check_gaps))
        if collection is None:
            return
        check_videos(collection, folder)
        for video in collection:
            sample, _ = input_error_or(video.load)
            assert sample is None or sample.frames.shape[0] == len(video)


@settings(max_examples=20)
@given(spec=mostly_good_entries())
def test_cli_segment_on_frame_folders(spec, tiny_checkpoint):
    """``selfvos segment`` on a fuzzed folder: every frame's mask written and exit 0, or one error line, no
    traceback, and no partial ``--out`` folder."""
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "clip", Path(tmp) / "masks"
        build(folder, spec)
        code, _, _ = run_cli(["segment", "--checkpoint", str(tiny_checkpoint), "--input", str(folder),
                              "--out", str(out), "--max-side", "16"])
        written = listing(out)
        if code == 0:
            collection = open_source(str(folder))
            assert written == sorted(f"{name}.png" for name in collection[0].frame_names)
        else:
            assert written == [], f"exit {code} left {len(written)} files in --out"
