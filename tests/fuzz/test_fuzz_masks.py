"""Mask PNGs: random bytes, any image mode, damaged files, hand-made headers and other formats named ``.png``.

Property: :func:`selfvos.data.image_io.read_mask` returns an ``(H, W)`` uint8 array of the file's size, or raises
``SelfvosInputError`` naming the file; nothing else. Masks of the supported modes keep their ids.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from selfvos.data.image_io import read_mask
from tests.fuzz._props import PNG_SIGNATURE, damaged, input_error_or, listing, raw_png, run_cli, write_bytes

MODES = ("P", "L", "1", "RGB", "RGBA", "LA", "I;16", "I")
VALUE_RANGE = {"P": 255, "L": 255, "1": 1, "RGB": 255, "RGBA": 255, "LA": 255, "I;16": 65535, "I": 2 ** 31 - 1}


def check_mask(path: Path, *, binary: bool = False):
    """read_mask's contract: ``(H, W)`` uint8 of the header's size (ids 0/1/255 when ``binary``), or an error
    that names ``path``. Returns the array or None."""
    mask, err = input_error_or(lambda: read_mask(path, binary=binary))
    if err is not None:
        assert err.path == str(path)
        return None
    with Image.open(path) as image:
        width, height = image.size
    assert mask.dtype == np.uint8 and mask.shape == (height, width) and height > 0 and width > 0
    if binary:
        assert set(np.unique(mask).tolist()) <= {0, 1, 255}
    return mask


@st.composite
def images(draw: st.DrawFn) -> Image.Image:
    """A small image of any mode, random pixel values over the mode's range (huge ids included), and for
    palette images a palette of any length (1 to 256 entries)."""
    mode = draw(st.sampled_from(MODES))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    channels = {"RGB": 3, "RGBA": 4, "LA": 2}.get(mode, 1)
    top = VALUE_RANGE[mode]
    values = draw(st.lists(st.integers(0, top), min_size=height * width * channels,
                           max_size=height * width * channels))
    array = np.asarray(values).reshape((height, width, channels) if channels > 1 else (height, width))
    dtype = {"I;16": np.uint16, "I": np.int32}.get(mode, np.uint8)
    if mode == "1":
        image = Image.fromarray(array.astype(bool))
    else:
        image = Image.fromarray(array.astype(dtype), mode=None if mode in ("I;16", "I") else mode)
    if mode == "P":
        entries = draw(st.integers(1, 256))
        image.putpalette(draw(st.binary(min_size=3 * entries, max_size=3 * entries)))
    return image


def png_of(image: Image.Image) -> bytes:
    """``image`` encoded as PNG bytes (examples PIL itself cannot encode are skipped)."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG")
    except (OSError, ValueError, KeyError):
        assume(False)
    return buffer.getvalue()


@settings(max_examples=80)
@given(data=st.binary(max_size=600), signed=st.booleans(), binary=st.booleans())
def test_random_bytes_named_png(data, signed, binary):
    """Noise (with or without the PNG signature in front) is rejected, never a crash."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bytes(Path(tmp) / "00000.png", (PNG_SIGNATURE if signed else b"") + data)
        check_mask(path, binary=binary)


@settings(max_examples=120)
@given(image=images(), binary=st.booleans())
def test_masks_of_every_mode(image, binary):
    """Palette / grey / 1-bit masks load with their ids; colour, alpha, 16-bit and float masks are refused."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bytes(Path(tmp) / "mask.png", png_of(image))
        with Image.open(path) as stored:
            stored_mode, stored_ids = stored.mode, np.asarray(stored)
        mask = check_mask(path, binary=binary)
        if stored_mode not in ("P", "L", "1"):
            assert mask is None, f"a {stored_mode} mask was accepted"
        elif not binary and stored_mode == "P":
            np.testing.assert_array_equal(mask, stored_ids)
        elif not binary:
            assert mask is not None and mask.max() <= max(1, int(stored_ids.max()))


@settings(max_examples=120)
@given(data=st.data(), binary=st.booleans())
def test_damaged_pngs(data, binary):
    """A valid mask truncated, overwritten, shortened or with a span repeated loads fully or is refused."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    height, width = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    ids = rng.integers(0, data.draw(st.sampled_from([2, 8, 256])), (height, width)).astype(np.uint8)
    image = Image.fromarray(ids, mode=data.draw(st.sampled_from(["P", "L"])))
    if image.mode == "P":
        image.putpalette(bytes(range(256)) * 3)
    broken = data.draw(damaged(png_of(image)))
    with tempfile.TemporaryDirectory() as tmp:
        check_mask(write_bytes(Path(tmp) / "00003.png", broken), binary=binary)


@settings(max_examples=120)
@given(
    width=st.sampled_from([0, 1, 2, 7, 2 ** 15, 2 ** 31 - 1, 2 ** 32 - 1]),
    height=st.sampled_from([0, 1, 3, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1]),
    bit_depth=st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]),
    color_type=st.sampled_from([0, 3, 2, 4, 6, 1, 5, 7]),
    interlace=st.sampled_from([0, 0, 1, 2]),
    pixels=st.binary(max_size=300),
    palette=st.one_of(st.none(), st.binary(max_size=800)),
    transparency=st.one_of(st.none(), st.binary(max_size=300)),
)
def test_hand_made_headers(width, height, bit_depth, color_type, interlace, pixels, palette, transparency):
    """Zero-size, huge (decompression bomb), odd bit depths / colour types and odd palettes: no crash."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bytes(Path(tmp) / "mask.png", raw_png(width, height, bit_depth, color_type, pixels,
                                                           interlace=interlace, palette=palette,
                                                           transparency=transparency))
        check_mask(path)


@settings(max_examples=40)
@given(fmt=st.sampled_from(["JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO"]), size=st.integers(1, 16),
       seed=st.integers(0, 1000))
def test_other_formats_named_png_are_refused(fmt, size, seed):
    """A JPEG / GIF / BMP / ... file named ``.png`` is not read as a mask (lossy or not, it is not a PNG)."""
    ids = np.random.default_rng(seed).integers(0, 3, (size, size)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(ids, mode="L").save(buffer, format=fmt)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bytes(Path(tmp) / "00000.png", buffer.getvalue())
        mask, err = input_error_or(lambda: read_mask(path))
        assert mask is None and "PNG" in err.problem, f"{fmt} data named .png was read as a mask"


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """Three 24x32 frames to segment one-shot."""
    folder = tmp_path_factory.mktemp("frames") / "clip"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((24, 32, 3), 70 * i, np.uint8)).save(folder / f"{i:05d}.png")
    return folder


@st.composite
def first_masks(draw: st.DrawFn) -> bytes:
    """A first-frame mask: right-sized ids in any mode, possibly damaged, or noise."""
    kind = draw(st.sampled_from(["good", "good", "damaged", "noise", "mode"]))
    ids = np.zeros((24, 32), np.uint8)
    ids[4:12, 6:20] = draw(st.integers(0, 255))
    image = Image.fromarray(ids, mode="P")
    if kind == "noise":
        return draw(st.binary(max_size=200))
    if kind == "mode":
        image = image.convert(draw(st.sampled_from(["RGB", "RGBA", "LA", "I", "1", "L"])))
    data = png_of(image)
    return draw(damaged(data)) if kind == "damaged" else data


@settings(max_examples=20)
@given(mask=first_masks())
def test_cli_segment_one_shot_with_a_fuzzed_first_mask(mask, frames_dir, tiny_checkpoint):
    """``selfvos segment --first-mask``: every mask written and exit 0, or one error line and no ``--out``."""
    with tempfile.TemporaryDirectory() as tmp:
        first, out = write_bytes(Path(tmp) / "first.png", mask), Path(tmp) / "masks"
        code, _, _ = run_cli(["segment", "--checkpoint", str(tiny_checkpoint), "--input", str(frames_dir),
                              "--first-mask", str(first), "--out", str(out), "--max-side", "32"])
        assert listing(out) == (["00000.png", "00001.png", "00002.png"] if code == 0 else [])
