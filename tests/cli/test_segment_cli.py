"""``selfvos segment`` / ``selfvos segment-dataset`` end to end through ``selfvos.cli.main`` with a tiny checkpoint."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

import selfvos.data.frames as frames_module
from selfvos.backbones import BackboneConfig
from selfvos.cli import main
from selfvos.data.sources import open_source
from selfvos.data.writers import export_davis, save_palette_png
from selfvos.inference import label_free
from selfvos.pretrain import MuGConfig, MuGModel
from tests.conftest import shared_path

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    if not hasattr(MuGModel, "save_pretrained"):
        pytest.skip("MuGModel has no hub mixin yet (save_pretrained)")
    torch.manual_seed(0)
    model = MuGModel(MuGConfig(backbone=BackboneConfig(return_layers=("layer2",)), embed_dim=32))
    return str(model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny-mug"))


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    """Two synthetic sequences written as a DAVIS-2017 folder (every frame annotated)."""
    root = tmp_path_factory.mktemp("davis") / "DAVIS"
    return export_davis(open_source("synthetic", num_videos=2, num_frames=6, size=(64, 80), seed=5), root)


class CopyFirstMask:
    """Stand-in one-shot core: returns the first mask's one-hot probabilities at every step."""

    def __init__(self, model, cfg) -> None:
        self.object_ids: list = []

    def step(self, frame, mask=None):
        if mask is not None:
            self.object_ids = [int(i) for i in np.unique(mask) if i]
            self.first = torch.as_tensor(mask)
        return torch.stack([(self.first == i).float() for i in [0] + self.object_ids])


def record_mask_reads(monkeypatch) -> list:
    reads: list = []
    original = frames_module.read_mask
    monkeypatch.setattr(frames_module, "read_mask", lambda path, **kw: reads.append(path) or original(path, **kw))
    return reads


def test_segment_video_file_zero_shot_writes_pngs_and_playable_overlay(checkpoint, tmp_path, capsys):
    video = shared_path("videos", "cutie_example.mp4")
    out, overlay = tmp_path / "masks", tmp_path / "overlay.mp4"
    code = main(["segment", "--checkpoint", checkpoint, "--input", str(video), "--out", str(out),
                 "--overlay", str(overlay), "--max-side", "160"])
    assert code == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 117 and pngs[0].name == "00000.png" and pngs[-1].name == "00116.png"
    first = Image.open(pngs[0])
    assert first.mode == "P" and first.size == (640, 480) and set(np.unique(np.array(first))) <= {0, 1}
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 117
    assert "zero-shot: wrote 117 masks" in capsys.readouterr().out


def test_segment_frames_folder_one_shot_keeps_frame_names_and_ids(checkpoint, tmp_path):
    """Real label propagation through the CLI: frame 0 is the given mask, later frames carry its ids."""
    sample = open_source("synthetic", num_videos=1, num_frames=4, size=(40, 52), min_objects=2, seed=2)[0].load()
    folder = tmp_path / "frames"
    folder.mkdir()
    names = [f"shot_{i:03d}" for i in range(10, 14)]
    for name, frame in zip(names, sample.frames):
        Image.fromarray(frame).save(folder / f"{name}.png")
    save_palette_png(tmp_path / "first.png", sample.masks[0])
    out = tmp_path / "out"
    assert main(["segment", "--checkpoint", checkpoint, "--input", str(folder), "--out", str(out),
                 "--first-mask", str(tmp_path / "first.png")]) == 0
    assert sorted(p.stem for p in out.glob("*.png")) == names
    assert np.array_equal(np.array(Image.open(out / f"{names[0]}.png")), sample.masks[0])
    ids = set(np.unique(sample.masks[0]).tolist())
    for name in names[1:]:
        predicted = np.array(Image.open(out / f"{name}.png"))
        assert predicted.shape == (40, 52) and set(np.unique(predicted).tolist()) <= ids


def test_segment_reports_bad_input(checkpoint, tmp_path, capsys):
    sample = open_source("synthetic", num_videos=1, num_frames=2, size=(40, 52))[0].load()
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(sample.frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg")
    save_palette_png(tmp_path / "small.png", np.ones((10, 10), np.uint8))
    base = ["segment", "--checkpoint", checkpoint, "--input", str(folder), "--out", str(tmp_path / "o")]
    assert main(base + ["--task", "one-shot"]) == 2
    assert "--first-mask: required with --task one-shot" in capsys.readouterr().err
    assert main(base + ["--first-mask", str(tmp_path / "small.png")]) == 2
    assert "small.png: mask is 10x10 (WxH) but the video's frames are 52x40" in capsys.readouterr().err
    assert main(["segment", "--checkpoint", str(tmp_path / "nope"), "--input", str(folder), "--out", "o"]) == 2
    assert "nope" in capsys.readouterr().err


def test_segment_dataset_one_shot_reads_only_first_annotations(checkpoint, davis_root, tmp_path, monkeypatch):
    monkeypatch.setattr(label_free, "one_shot_core", CopyFirstMask)
    reads = record_mask_reads(monkeypatch)
    out = tmp_path / "pred"
    assert main(["segment-dataset", "--checkpoint", checkpoint, "--data", str(davis_root), "--task", "one-shot",
                 "--out", str(out)]) == 0
    # each first annotation is read when checked (before any work) and when segmented; no other one ever
    assert sorted({(p.parent.name, p.name) for p in reads}) == [("synthetic_0000", "00000.png"),
                                                                ("synthetic_0001", "00000.png")]
    for seq in ("synthetic_0000", "synthetic_0001"):
        assert len(list((out / seq).glob("*.png"))) == 6
    # in-process evaluation: a forked worker pool after torch/cv2 threads have started can deadlock
    gt = davis_root / "Annotations" / "480p"
    assert main(["evaluate", "--pred", str(out), "--gt", str(gt), "--workers", "1"]) == 0


def test_one_shot_flags_reach_the_one_shot_config(checkpoint, davis_root, tmp_path, monkeypatch):
    configs = []

    def recording(model, cfg):
        configs.append(cfg)
        return CopyFirstMask(model, cfg)

    monkeypatch.setattr(label_free, "one_shot_core", recording)
    base = ["segment-dataset", "--checkpoint", checkpoint, "--data", str(davis_root), "--task", "one-shot",
            "--sequences", "synthetic_0000"]
    assert main(base + ["--out", str(tmp_path / "a"), "--refine-radius", "0", "--object-gain", "1.5"]) == 0
    assert main(base + ["--out", str(tmp_path / "b")]) == 0
    assert [(c.refine_radius, c.object_gain) for c in configs] == [(0, 1.5), (16, 1.0)]


def test_segment_dataset_zero_shot_reads_no_annotation(checkpoint, davis_root, tmp_path, monkeypatch):
    reads = record_mask_reads(monkeypatch)
    out = tmp_path / "pred"
    assert main(["segment-dataset", "--checkpoint", checkpoint, "--data", str(davis_root), "--task", "zero-shot",
                 "--out", str(out), "--sequences", "synthetic_0001", "--mode", "offline", "--references", "3"]) == 0
    assert reads == []
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_0001"]
    assert sorted(p.stem for p in (out / "synthetic_0001").glob("*.png")) == [f"{i:05d}" for i in range(6)]


def test_segment_dataset_one_shot_with_the_real_propagator(checkpoint, tmp_path, monkeypatch):
    root = shared_path("davis2017-multi")
    reads = record_mask_reads(monkeypatch)
    out = tmp_path / "pred"
    assert main(["segment-dataset", "--checkpoint", checkpoint, "--data", str(root), "--task", "one-shot",
                 "--out", str(out), "--max-side", "160"]) == 0
    assert {p.name for p in reads} == {"00000.png"}  # the first annotation only (checked, then segmented)
    first = np.array(Image.open(out / "schoolgirls" / "00000.png"))
    assert len(list((out / "schoolgirls").glob("*.png"))) == 80 and first.shape == (240, 432)


def test_zero_shot_flags_reach_the_zero_shot_config():
    """--prior-weight / --motion-weight / --grabcut set the ZeroShotConfig; left out, its defaults stay."""
    import argparse

    from selfvos.cli.segment import add_common_options, make_segmenter
    from selfvos.inference.zero_shot import ZeroShotConfig

    parser = argparse.ArgumentParser()
    add_common_options(parser)
    given = parser.parse_args(["--prior-weight", "0.25", "--motion-weight", "0.3", "--grabcut", "0"])
    cfg = make_segmenter(torch.nn.Linear(1, 1), given, "zero-shot").zero_shot_config
    assert (cfg.propagation_weight, cfg.motion_weight, cfg.grabcut_iterations) == (0.25, 0.3, 0)
    default = make_segmenter(torch.nn.Linear(1, 1), parser.parse_args([]), "zero-shot").zero_shot_config
    assert default == ZeroShotConfig()
