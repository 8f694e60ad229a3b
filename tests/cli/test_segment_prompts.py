"""``selfvos segment --box / --points``: the first-frame mask from prompts, written beside the output folder with
its preview, then propagated; bad prompts are refused before the model is loaded (one error line, exit 2)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import selfvos
from selfvos.cli import main
from selfvos.data.image_io import read_mask
from selfvos.eval.davis import jaccard
from tests.cli.test_cli_errors import error_line, first_mask

pytestmark = pytest.mark.usefixtures("one_thread")
H, W, T = 48, 64, 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = selfvos.create_model("mug", **{"backbone.return_layers": ("layer2",), "embed_dim": 16})
    return str(model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny-mug"))


def two_objects() -> np.ndarray:
    """(H, W) ids: a red rectangle (1) and a blue square (2)."""
    ids = np.zeros((H, W), np.uint8)
    ids[10:30, 6:26] = 1
    ids[14:38, 38:58] = 2
    return ids


@pytest.fixture
def frames(tmp_path):
    """A T-frame folder of the two objects on a noisy green background, drifting one pixel per frame."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for t in range(T):
        ids = np.roll(two_objects(), t, axis=1)
        frame = rng.normal((80, 120, 70), 10, (H, W, 3))
        frame[ids == 1] = rng.normal((210, 40, 40), 10, (int((ids == 1).sum()), 3))
        frame[ids == 2] = rng.normal((40, 60, 210), 10, (int((ids == 2).sum()), 3))
        Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).save(folder / f"{t:05d}.png")
    return folder


def segment(checkpoint, frames, out, *extra):
    return main(["segment", "--checkpoint", str(checkpoint), "--input", str(frames), "--out", str(out),
                 "--max-side", "64", *map(str, extra)])


def test_clicks_of_two_objects_make_the_first_mask_and_propagate(checkpoint, frames, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment(checkpoint, frames, out, "--points", "15,20", "--points", "48,25;45,5,0") == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{t:05d}.png" for t in range(T)]
    prompt, preview = tmp_path / "out.prompt.png", tmp_path / "out.prompt_preview.png"
    ids = read_mask(prompt)
    truth = two_objects()
    assert jaccard(ids == 1, truth == 1) > 0.85 and jaccard(ids == 2, truth == 2) > 0.85
    assert np.array_equal(read_mask(out / "00000.png"), ids)  # frame 0 is the prompt mask
    assert Image.open(preview).mode == "RGB" and Image.open(preview).size == (W, H)
    printed = capsys.readouterr().out
    assert f"prompt mask (2 objects): {prompt}, preview: {preview}" in printed and "one-shot: wrote 3 masks" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out", "out.prompt.png", "out.prompt_preview.png"]


def test_box_and_points_of_the_same_object_combine(checkpoint, frames, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment(checkpoint, frames, out, "--box", "2,6,30,34;34,10,62,42", "--points", "15,20", "--task",
                   "one-shot") == 0
    ids = read_mask(tmp_path / "out.prompt.png")
    assert set(np.unique(ids)) == {0, 1, 2} and jaccard(ids == 2, two_objects() == 2) > 0.85


def test_real_clip_with_a_box(checkpoint, shared_data, tmp_path, capsys):
    """The first 3 frames of a DAVIS sequence (854x480) from the tight box of its first annotation."""
    source = shared_data / "davis2016-val-dev" / "JPEGImages" / "480p" / "blackswan"
    if not source.is_dir():
        pytest.skip(f"real data not found: {source}")
    frames = tmp_path / "blackswan"
    frames.mkdir()
    for path in sorted(source.glob("*.jpg"))[:3]:
        shutil.copy(path, frames / path.name)
    truth = read_mask(shared_data / "davis2016-val-dev" / "Annotations" / "480p" / "blackswan" / "00000.png") > 0
    rows, cols = np.nonzero(truth)
    box = f"{cols.min()},{rows.min()},{cols.max() + 1},{rows.max() + 1}"
    out = tmp_path / "masks"
    assert main(["segment", "--checkpoint", checkpoint, "--input", str(frames), "--out", str(out), "--box", box,
                 "--max-side", "96"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{t:05d}.png" for t in range(3)]
    ids = read_mask(tmp_path / "masks.prompt.png")
    assert ids.shape == (480, 854) and set(np.unique(ids)) == {0, 1}
    inside = np.zeros_like(truth)
    inside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    assert not ids[~inside].any() and (ids[truth] == 1).mean() > 0.5
    assert Image.open(tmp_path / "masks.prompt_preview.png").size == (854, 480)
    assert "one-shot: wrote 3 masks" in capsys.readouterr().out


@pytest.mark.parametrize("extra, fragments", [
    (["--box", "1,2,3"], ["--box: box 1 '1,2,3': expected x0,y0,x1,y1"]),
    (["--box", "0,0,65,10"], ["--box: box 1 (0, 0, 65, 10) reaches outside the 64x48"]),
    (["--points", "10,10", "--points", "70,10"], ["--points: click (70,10) of object 2 lies outside"]),
    (["--points", "10,10,0"], ["--points: object 1 has only negative clicks"]),
    (["--points", "10,10,5"], ["--points: object 1: click 1 '10,10,5': label must be"]),
    (["--box", "1,2,30,40", "--task", "zero-shot"], ["--box: prompts are not used by --task zero-shot"]),
])
def test_bad_prompts_are_refused_before_the_model_is_loaded(frames, tmp_path, capsys, extra, fragments):
    missing_checkpoint = tmp_path / "no-such-checkpoint"
    out = tmp_path / "out"
    assert segment(missing_checkpoint, frames, out, *extra) == 2
    error_line(capsys.readouterr().err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_prompts_with_a_first_mask_are_refused(checkpoint, frames, tmp_path, capsys):
    mask = first_mask(tmp_path / "first.png", size=(H, W))
    assert segment(checkpoint, frames, tmp_path / "out", "--first-mask", mask, "--box", "1,2,30,40") == 2
    error_line(capsys.readouterr().err, "--box: give --first-mask or prompts (--box / --points), not both")
    assert segment(checkpoint, frames, tmp_path / "out", "--first-mask", mask, "--points", "3,4") == 2
    error_line(capsys.readouterr().err, "--points: give --first-mask or prompts")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.prompt.png").exists()
