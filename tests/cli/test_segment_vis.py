"""``selfvos segment --task vis``: a MaskTrack checkpoint tracks the instances of a folder of instance PNGs (or of an
RVOS zero-shot checkpoint) into identity PNGs, a YouTube-VIS results JSON and a labelled overlay; bad inputs are one
clear error line and leave no output."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

import selfvos
from selfvos.cli import main
from selfvos.data.sources import open_source
from selfvos.data.writers import save_palette_png
from selfvos.eval.vis import check_results, davis_to_vis, evaluate_vis

SMALL = {"feature_dim": 8, "hidden": 16, "embed_dim": 8}
RVOS_SMALL = {"skip_dim": 8, "hidden": (8, 8, 8, 8)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    masktrack = selfvos.create_model("masktrack", categories=("thing",), **SMALL).save_pretrained(root / "mt")
    zero_shot = selfvos.create_model("rvos", mode="zero_shot", max_instances=2, **RVOS_SMALL).save_pretrained(root / "zs")
    one_shot = selfvos.create_model("rvos", **RVOS_SMALL).save_pretrained(root / "os")
    return {"masktrack": str(masktrack), "rvos_zs": str(zero_shot), "rvos_os": str(one_shot)}


@pytest.fixture
def video(tmp_path):
    """A synthetic video: frames/<t>.jpg, instances/<t>.png (its object ids) and its collection."""
    collection = open_source("synthetic", num_videos=1, num_frames=5, size=(48, 64), min_objects=2, seed=4)
    sample = collection[0].load()
    (tmp_path / "frames").mkdir()
    (tmp_path / "instances").mkdir()
    for t, frame in enumerate(sample.frames):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{t:05d}.jpg")
        save_palette_png(tmp_path / "instances" / f"{t:05d}.png", np.where(sample.masks[t] == 255, 0, sample.masks[t]))
    return tmp_path / "frames", tmp_path / "instances", collection


def vis_args(checkpoint, frames, instances, out, *more) -> list:
    return ["segment", "--task", "vis", "--checkpoint", checkpoint, "--input", str(frames), "--instances",
            str(instances), "--out", str(out), *more]


def test_vis_writes_identities_results_and_a_labelled_overlay(checkpoints, video, tmp_path, capsys):
    frames, instances, collection = video
    out, results, overlay = tmp_path / "out", tmp_path / "results.json", tmp_path / "overlay.mp4"
    assert main(vis_args(checkpoints["masktrack"], frames, instances, out, "--vis-json", str(results), "--overlay",
                         str(overlay), "--head-option", "beta=50", "--max-side", "64")) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{t:05d}.png" for t in range(5)]
    truth = [np.array(Image.open(instances / f"{t:05d}.png")) for t in range(5)]
    first = np.array(Image.open(out / "00000.png"))
    assert len(np.unique(first)) == len(np.unique(truth[0]))  # one identity per instance
    gt = davis_to_vis(collection)
    records = json.loads(results.read_text())
    assert check_results(records, gt) == records and {r["category_id"] for r in records} == {1}
    assert len(records) == len(gt["annotations"]) and evaluate_vis(gt, records).stats["AP"] == pytest.approx(1.0)
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5
    assert "vis: 2 identities in 5 frames" in capsys.readouterr().out


def test_vis_with_rvos_zero_shot_instances(checkpoints, video, tmp_path):
    frames, _, _ = video
    results = tmp_path / "r.json"
    assert main(vis_args(checkpoints["masktrack"], frames, f"rvos:{checkpoints['rvos_zs']}", tmp_path / "out",
                         "--vis-json", str(results), "--video-id", "3")) == 0
    records = json.loads(results.read_text())
    assert isinstance(records, list) and all(r["video_id"] == 3 for r in records)
    assert all(0 < r["score"] < 1 for r in records)  # 1 - the slots' stop probabilities
    assert len(list((tmp_path / "out").glob("*.png"))) == 5


@pytest.mark.parametrize("case, message", [
    ("no_instances", "--instances: required with --task vis"),
    ("missing_folder", "instance folder does not exist"),
    ("missing_png", "no instance PNG for frame 00004"),
    ("wrong_size", "instance PNG is 10x10 (WxH) but the frames are 64x48"),
    ("missing_rvos", "none: no such checkpoint directory"),
    ("one_shot_rvos", "needs an RVOS model trained zero-shot"),
    ("not_a_vis_head", "--task vis needs a video instance segmentation head"),
    ("first_mask", "--first-mask: not used by --task vis"),
    ("json_in_out", "--vis-json lies inside --out"),
    ("vis_json_without_vis", "--vis-json: applies to --task vis only"),
])
def test_bad_vis_inputs_are_one_clear_error(checkpoints, video, tmp_path, capsys, case, message):
    frames, instances, _ = video
    out = tmp_path / "out"
    args = vis_args(checkpoints["masktrack"], frames, instances, out)
    if case == "no_instances":
        args = [a for a in args if a not in ("--instances", str(instances))]
    elif case == "missing_folder":
        args = vis_args(checkpoints["masktrack"], frames, tmp_path / "nowhere", out)
    elif case == "missing_png":
        (instances / "00004.png").unlink()
    elif case == "wrong_size":
        save_palette_png(instances / "00002.png", np.zeros((10, 10), np.uint8))
    elif case == "missing_rvos":
        args = vis_args(checkpoints["masktrack"], frames, f"rvos:{tmp_path / 'none'}", out)
    elif case == "one_shot_rvos":
        args = vis_args(checkpoints["masktrack"], frames, f"rvos:{checkpoints['rvos_os']}", out)
    elif case == "not_a_vis_head":
        args = vis_args(checkpoints["rvos_zs"], frames, instances, out)
    elif case == "first_mask":
        args += ["--first-mask", str(instances / "00000.png")]
    elif case == "json_in_out":
        args += ["--vis-json", str(out / "r.json")]
    elif case == "vis_json_without_vis":
        args = ["segment", "--checkpoint", checkpoints["masktrack"], "--input", str(frames), "--out", str(out),
                "--vis-json", str(tmp_path / "r.json")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "r.json").exists()
