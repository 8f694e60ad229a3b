"""``selfvos data inspect`` / ``selfvos data convert`` end to end through ``selfvos.cli.main``."""
from __future__ import annotations

import numpy as np
from PIL import Image

from selfvos.cli import main
from selfvos.data.hf import load_hf_collection
from selfvos.data.sources import open_source
from tests.conftest import shared_path


def _table_rows(out: str) -> dict:
    """video name -> [frames, size, fps, objects, annotated] from the inspect table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("video")) + 2
    rows = {}
    for line in lines[start:]:
        if line.startswith("total:"):
            break
        name, *cells = line.split()
        rows[name] = cells
    return rows


def test_synthetic_to_hf_to_davis_and_inspect(tmp_path, capsys):
    source = open_source("synthetic:3")
    keep = [source.names[0], source.names[2]]
    ds = tmp_path / "syn-hf"
    assert main(["data", "convert", "synthetic:3", str(ds), "--sequences", ",".join(keep)]) == 0
    assert "wrote 2 videos" in capsys.readouterr().out

    assert main(["data", "inspect", str(ds)]) == 0
    out = capsys.readouterr().out
    assert "kind: hf" in out and "videos: 2" in out
    rows = _table_rows(out)
    assert sorted(rows) == keep
    first = source[keep[0]]
    h, w = first.frame(0).shape[:2]
    expected_objects = len(set(np.unique(first.load().masks).tolist()) - {0, 255})
    assert rows[keep[0]] == [str(len(first)), f"{w}x{h}", "-" if first.fps is None else f"{first.fps:g}",
                                     str(expected_objects), str(len(first))]

    davis = tmp_path / "syn-davis"
    assert main(["data", "convert", str(ds), str(davis)]) == 0  # a dataset source defaults to --to davis
    capsys.readouterr()
    back = open_source(str(davis))
    assert back.names == keep
    for name in back.names:
        np.testing.assert_array_equal(back[name].mask(3), source[name].mask(3))


def test_inspect_counts_objects_of_a_davis_folder(capsys):
    root = shared_path("davis2017-multi")
    assert main(["data", "inspect", str(root)]) == 0
    out = capsys.readouterr().out
    assert "kind: davis" in out
    assert _table_rows(out)["schoolgirls"] == ["80", "432x240", "24", "7", "80"]
    assert "total: 1 videos, 80 frames, 80 annotated frames" in out


def test_convert_real_davis16_with_max_side_keeps_binary_masks(tmp_path, capsys):
    root = shared_path("davis2016-val-dev")
    dst = tmp_path / "dev-hf"
    argv = ["data", "convert", str(root), str(dst), "--to", "hf", "--max-side", "214", "--sequences", "blackswan"]
    assert main(argv) == 0
    capsys.readouterr()
    video = load_hf_collection(dst)["blackswan"]
    assert (video.height, video.width, video.num_objects) == (120, 214, 1)
    assert len(video) == 50 and video.annotated_indices() == list(range(50))
    gt = np.asarray(Image.open(root / "Annotations" / "480p" / "blackswan" / "00010.png")) > 0  # 0/255 as shipped
    small = np.asarray(Image.fromarray(gt.astype(np.uint8)).resize((214, 120), Image.NEAREST))
    np.testing.assert_array_equal(video.mask(10), small)


def test_errors_are_one_line_naming_the_path(tmp_path, capsys):
    dst = tmp_path / "out"
    dst.mkdir()
    assert main(["data", "convert", "synthetic:1", str(dst)]) == 2
    err = capsys.readouterr().err
    expected = f"selfvos: error: {dst}: already exists (pass overwrite=True / --overwrite to replace it)"
    assert err.strip() == expected
    assert main(["data", "convert", "synthetic:1", str(dst), "--overwrite"]) == 0
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
