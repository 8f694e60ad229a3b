"""Checkpoint folders: ``config.json`` that is not JSON, random JSON, or the real config with a field deleted,
retyped or added; ``model.safetensors`` that is noise, truncated anywhere, or holds tensors of the wrong shapes
or dtypes.

Property: ``selfvos.from_pretrained(folder)`` returns a model in eval mode or raises ``SelfvosInputError``; the CLI
``selfvos segment --checkpoint folder`` exits 0 with every mask written, or non-zero with a ``selfvos: error:``
line, no traceback, and no output folder (or a complete one).
"""
from __future__ import annotations

import copy
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import selfvos
from tests.fuzz._props import damaged, input_error_or, listing, run_cli, write_bytes

torch.set_num_threads(1)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 600) | st.floats(allow_nan=False, width=32) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# a new value for a config field: mostly right-typed but out of range or unknown, sometimes any JSON
FIELD_VALUE = st.one_of(st.integers(-3, 600), st.integers(-3, 600), st.sampled_from(["resnet18", "resnet999", "layer2",
                                                                                     "layer9", "", "mug", "stm"]),
                        st.lists(st.sampled_from(["layer1", "layer2", "layer4", "fc", ""]), max_size=3),
                        st.floats(-1e3, 1e3), st.booleans(), st.none(), JSON)
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "XYZ"]
FRAMES = 3


class Checkpoint:
    """The real tiny checkpoint: its folder, parsed config.json, weights bytes and safetensors header."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = json.loads((folder / "config.json").read_text())
        self.weights = (folder / "model.safetensors").read_bytes()
        size = struct.unpack("<Q", self.weights[:8])[0]
        self.header = json.loads(self.weights[8:8 + size])
        self.data = self.weights[8 + size:]

    def __repr__(self) -> str:
        return f"Checkpoint({self.folder})"


@pytest.fixture(scope="module")
def real(tiny_checkpoint) -> Checkpoint:
    """The tiny MuG checkpoint of conftest.py, parsed."""
    return Checkpoint(Path(tiny_checkpoint))


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """Three 32x40 frames to segment."""
    folder = tmp_path_factory.mktemp("frames") / "clip"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(FRAMES):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


# -- config.json ----------------------------------------------------------------------------------------
def paths_of(node, prefix=()) -> list:
    """Every key path into a nested dict (``("config", "backbone", "name")``, ...)."""
    out = []
    for key, value in node.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out += paths_of(value, prefix + (key,))
    return out


@st.composite
def mutated_config(draw: st.DrawFn, config: dict) -> bytes:
    """The real config with 1-3 fields deleted, given another JSON value (wrong types), or an extra key."""
    doc = copy.deepcopy(config)
    for _ in range(draw(st.integers(1, 3))):
        paths = paths_of(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent, dict) and isinstance(parent.get(key), dict) else None
            if parent is None:
                break
        if parent is None:
            continue
        how = draw(st.sampled_from(["delete", "retype", "retype", "add"]))
        if how == "delete":
            parent.pop(path[-1], None)
        elif how == "retype":
            parent[path[-1]] = draw(FIELD_VALUE)
        else:
            parent[draw(st.text(min_size=1, max_size=8))] = draw(FIELD_VALUE)
    return json.dumps(doc).encode()


@st.composite
def config_bytes(draw: st.DrawFn, config: dict) -> bytes:
    """Not JSON, any JSON, or a mutated real config."""
    kind = draw(st.sampled_from(["noise", "json", "mutated", "mutated", "mutated"]))
    if kind == "noise":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    return draw(mutated_config(config))


# -- model.safetensors ----------------------------------------------------------------------------------
def safetensors_bytes(header: dict, data: bytes) -> bytes:
    """A safetensors file from a header dict and the data buffer."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@st.composite
def wrong_tensors(draw: st.DrawFn, real: Checkpoint) -> bytes:
    """A small, self-consistent safetensors file: a few of the model's tensor names (or unknown ones) with random
    shapes and dtypes."""
    names = [k for k in real.header if k != "__metadata__"]
    header, offset = {}, 0
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(names), st.text(min_size=1, max_size=6)))
        shape = draw(st.lists(st.integers(0, 5), max_size=4))
        dtype = draw(st.sampled_from(["F32", "F16", "I64", "U8"]))
        nbytes = int(np.prod(shape, dtype=np.int64)) * {"F32": 4, "F16": 2, "I64": 8, "U8": 1}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    return safetensors_bytes(header, bytes(offset))


@st.composite
def edited_header(draw: st.DrawFn, real: Checkpoint) -> bytes:
    """The real file with one tensor's header entry changed: dims permuted or resized, dtype replaced, offsets
    moved, or the entry replaced by random JSON (the data stays the real data)."""
    header = copy.deepcopy(real.header)
    name = draw(st.sampled_from([k for k in header if k != "__metadata__"]))
    entry = header[name]
    how = draw(st.sampled_from(["permute", "resize", "dtype", "offsets", "json"]))
    if how == "permute":
        entry["shape"] = draw(st.permutations(entry["shape"]))
    elif how == "resize":
        entry["shape"] = draw(st.lists(st.integers(0, 70), max_size=4))
    elif how == "dtype":
        entry["dtype"] = draw(st.sampled_from(DTYPES))
    elif how == "offsets":
        entry["data_offsets"] = draw(st.lists(st.integers(-5, len(real.data) + 5), min_size=0, max_size=3))
    else:
        header[name] = draw(JSON)
    return safetensors_bytes(header, real.data)


@st.composite
def weights_bytes(draw: st.DrawFn, real: Checkpoint) -> bytes:
    """Noise, the real file damaged (mostly within its first 64 KiB: header and first tensors), wrong tensors,
    or an edited header."""
    kind = draw(st.sampled_from(["noise", "damaged-head", "damaged-anywhere", "wrong", "wrong", "edited"]))
    if kind == "noise":
        return draw(st.binary(max_size=2000))
    if kind == "damaged-head":
        return draw(damaged(real.weights[:65536])) + real.weights[65536:]
    if kind == "damaged-anywhere":
        return draw(damaged(real.weights))
    if kind == "wrong":
        return draw(wrong_tensors(real))
    return draw(edited_header(real))


def make_folder(root: Path, real: Checkpoint, config: Optional[bytes] = None, weights: Optional[bytes] = None) -> Path:
    """A checkpoint folder with the given files; the real ones (linked, not copied) for those not given."""
    folder = root / "ckpt"
    folder.mkdir()
    write_bytes(folder / "config.json", config if config is not None else (real.folder / "config.json").read_bytes())
    if weights is None:
        os.symlink(real.folder / "model.safetensors", folder / "model.safetensors")
    else:
        write_bytes(folder / "model.safetensors", weights)
    return folder


def check_load(folder: Path) -> None:
    """from_pretrained's contract: a model in eval mode, or SelfvosInputError naming a file of the folder."""
    model, err = input_error_or(lambda: selfvos.from_pretrained(str(folder)))
    if err is not None:
        assert str(folder) in err.path, err
        return
    assert isinstance(model, torch.nn.Module) and not model.training and model.architecture == "mug"


@settings(max_examples=90)
@given(data=st.data())
def test_from_pretrained_with_a_bad_config(data, real):
    with tempfile.TemporaryDirectory() as tmp:
        check_load(make_folder(Path(tmp), real, config=data.draw(config_bytes(real.config))))


@settings(max_examples=45)
@given(data=st.data())
def test_from_pretrained_with_bad_weights(data, real):
    with tempfile.TemporaryDirectory() as tmp:
        check_load(make_folder(Path(tmp), real, weights=data.draw(weights_bytes(real))))


@settings(max_examples=35)
@given(data=st.data())
def test_cli_segment_with_a_bad_checkpoint(data, real, frames_dir):
    """The CLI end to end: a bad checkpoint is one error line and leaves no output folder."""
    which = data.draw(st.sampled_from(["config", "weights", "both", "missing-config", "missing-weights"]))
    config = data.draw(config_bytes(real.config)) if which in ("config", "both") else None
    weights = data.draw(weights_bytes(real)) if which in ("weights", "both") else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), real, config=config, weights=weights)
        if which.startswith("missing"):
            (folder / ("config.json" if which == "missing-config" else "model.safetensors")).unlink()
        out = Path(tmp) / "masks"
        code, _, _ = run_cli(["segment", "--checkpoint", str(folder), "--input", str(frames_dir), "--out", str(out),
                              "--max-side", "32"])
        expected = [f"{i:05d}.png" for i in range(FRAMES)]
        assert listing(out) == (expected if code == 0 else listing(out)) and listing(out) in ([], expected), \
            f"exit {code} left {listing(out)} in --out"
