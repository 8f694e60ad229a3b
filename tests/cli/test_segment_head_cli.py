"""A fine-tuned head checkpoint segments a video through the same ``selfvos segment`` CLI as a MuG model."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

import selfvos
from selfvos.cli import main
from selfvos.data.sources import open_source
from selfvos.data.writers import save_palette_png


@pytest.fixture(scope="module")
def stm_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = selfvos.create_model("stm", decoder_dim=16)
    return str(model.save_pretrained(tmp_path_factory.mktemp("stm") / "ckpt"))


@pytest.fixture
def frames_folder(tmp_path):
    sample = open_source("synthetic", num_videos=1, num_frames=5, size=(48, 64), min_objects=2, seed=4)[0].load()
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(sample.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg")
    first = np.where(sample.masks[0] == 255, 0, sample.masks[0]).astype(np.uint8)
    save_palette_png(tmp_path / "first.png", first)
    return folder, tmp_path / "first.png", first


def test_head_checkpoint_segments_with_first_mask_and_overlay(stm_checkpoint, frames_folder, tmp_path, capsys):
    folder, first_png, first = frames_folder
    out, overlay = tmp_path / "masks", tmp_path / "overlay.mp4"
    assert main(["segment", "--checkpoint", stm_checkpoint, "--input", str(folder), "--first-mask", str(first_png),
                 "--out", str(out), "--overlay", str(overlay), "--head-option", "memory_every=2"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(5)]
    assert np.array_equal(np.array(Image.open(pngs[0])), first)  # frame 0 is the given mask
    ids = set(np.unique(np.concatenate([np.array(Image.open(p)).ravel() for p in pngs])))
    assert ids <= set(np.unique(first).tolist())  # only the first mask's ids (and background)
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5
    assert "one-shot: wrote 5 masks" in capsys.readouterr().out


def test_one_shot_head_without_a_mask_is_a_clear_error(stm_checkpoint, frames_folder, tmp_path, capsys):
    folder, _, _ = frames_folder
    assert main(["segment", "--checkpoint", stm_checkpoint, "--input", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "runs one-shot only (give --first-mask)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_head_option_names_the_known_ones(stm_checkpoint, frames_folder, tmp_path, capsys):
    folder, first_png, _ = frames_folder
    assert main(["segment", "--checkpoint", stm_checkpoint, "--input", str(folder), "--first-mask", str(first_png),
                 "--out", str(tmp_path / "o"), "--head-option", "memory_evry=2"]) == 2
    assert "memory_evry" in capsys.readouterr().err
