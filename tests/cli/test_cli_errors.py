"""Every ``selfvos`` failure ends in one ``selfvos: error: <file or option>: <problem>`` line and a non-zero exit,
without a traceback, and leaves no partial output: ``segment`` (masks and overlay) and ``segment-dataset``
(per sequence) are all or nothing, bad options are refused before any work, a full disk names the path.

A tiny STM head (one-shot, fast on CPU) segments 4-frame 24x32 videos.
"""
from __future__ import annotations

import errno
import os

import av
import numpy as np
import pytest
import torch
from PIL import Image

import selfvos
from selfvos.cli import listing, main
from selfvos.config import ConfigError
from selfvos.data.video import LazyVideo
from selfvos.data.writers import save_palette_png
from selfvos.errors import SelfvosInputError
from selfvos.inference.segmenter import Segmenter

H, W, T = 24, 32, 4


@pytest.fixture(scope="module")
def stm_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = selfvos.create_model("stm", decoder_dim=16)
    return str(model.save_pretrained(tmp_path_factory.mktemp("stm") / "ckpt"))


def write_frames(folder, count: int = T, size=(H, W), ext: str = "jpg", seed: int = 0):
    """``count`` smooth random RGB frames ``00000.<ext>`` ... in ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for t in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{t:05d}.{ext}")
    return folder


def first_mask(path, size=(H, W)):
    mask = np.zeros(size, np.uint8)
    mask[5:15, 6:20] = 1
    save_palette_png(path, mask)
    return path


@pytest.fixture
def inputs(tmp_path):
    """(frames folder, first mask) of one 4-frame video."""
    return write_frames(tmp_path / "frames"), first_mask(tmp_path / "first.png")


def segment_args(checkpoint, inputs, out, *extra):
    frames, mask = inputs
    return ["segment", "--checkpoint", checkpoint, "--input", str(frames), "--first-mask", str(mask),
            "--out", str(out), *map(str, extra)]


def error_line(err: str, *fragments: str) -> str:
    """The single ``selfvos: error:`` line, checked to end stderr, to contain ``fragments`` and to come
    without a traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("selfvos: error: "), err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def tree(folder) -> dict:
    """{relative path: bytes} of every file below ``folder`` ({} when absent)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder) -> list:
    """Names of temporary siblings (staging folders, moved-aside outputs, overlay temp files) in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def fail_fsync_at(monkeypatch, call: int) -> None:
    """``os.fsync`` fails like a full disk from its ``call``-th use on (the atomic writer's flush)."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def interrupt_after(monkeypatch, frames: int, error: BaseException) -> None:
    """The segmenter raises ``error`` after yielding ``frames`` masks."""
    real = Segmenter.segment_video

    def segment_video(self, video, first_mask=None, progress=True):
        for t, ids in enumerate(real(self, video, first_mask=first_mask, progress=progress)):
            if t == frames:
                raise error
            yield ids

    monkeypatch.setattr(Segmenter, "segment_video", segment_video)


# ---------------------------------------------------------------------------------------------- segment


def test_segment_writes_masks_and_playable_overlay(stm_checkpoint, inputs, tmp_path, capsys):
    out, overlay = tmp_path / "out", tmp_path / "overlay.mkv"
    assert main(segment_args(stm_checkpoint, inputs, out, "--overlay", overlay)) == 0
    assert sorted(tree(out)) == [f"{t:05d}.png" for t in range(T)]
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == T
    assert leftovers(tmp_path) == [] and "wrote 4 masks" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["overlay.gif", "overlay.png", "overlay.webm", "overlay.h264", "overlay"])
def test_unsupported_overlay_is_refused_before_any_work(stm_checkpoint, inputs, tmp_path, capsys, name):
    out, overlay = tmp_path / "out", tmp_path / name
    assert main(segment_args(stm_checkpoint, inputs, out, "--overlay", overlay)) == 2
    error_line(capsys.readouterr().err, str(overlay))
    assert not out.exists() and not overlay.exists() and leftovers(tmp_path) == []


def test_supported_overlay_extensions_are_what_pyav_writes():
    from selfvos.inference.io import overlay_extensions, pick_codec

    works = overlay_extensions(pick_codec())
    assert {".mp4", ".mkv", ".mov", ".avi"} <= set(works)
    assert not {".gif", ".webm"} & set(works)


@pytest.mark.parametrize("value, problem", [("0", "--max-side: must be >= 1"), ("-3", "--max-side: must be >= 1"),
                                            ("abc", "--max-side: expected an integer")])
def test_bad_max_side_is_a_usage_error(stm_checkpoint, inputs, tmp_path, capsys, value, problem):
    out = tmp_path / "out"
    assert main(segment_args(stm_checkpoint, inputs, out, "--max-side", value)) == 2
    error_line(capsys.readouterr().err, problem)
    assert not out.exists()


@pytest.mark.parametrize("option, value", [("--object-gain", "nan"), ("--object-gain", "0"),
                                           ("--refine-radius", "-1"), ("--prior-weight", "inf")])
def test_non_finite_or_negative_settings_are_usage_errors(stm_checkpoint, inputs, tmp_path, capsys, option, value):
    assert main(segment_args(stm_checkpoint, inputs, tmp_path / "out", option, value)) == 2
    error_line(capsys.readouterr().err, option)
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(stm_checkpoint, inputs, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    assert main(segment_args(stm_checkpoint, inputs, out)) == 2
    error_line(capsys.readouterr().err, f"{out}: --out exists and is not a folder")
    assert out.read_text() == "keep me"


def test_out_holding_other_files_or_the_input_is_refused(stm_checkpoint, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(segment_args(stm_checkpoint, inputs, out)) == 2
    error_line(capsys.readouterr().err, str(out), "notes.txt")
    assert tree(out) == {"notes.txt": b"mine"}
    png_frames = write_frames(tmp_path / "png_frames", ext="png")
    before = tree(png_frames)
    assert main(segment_args(stm_checkpoint, (png_frames, inputs[1]), png_frames)) == 2
    error_line(capsys.readouterr().err, "would overwrite the input")
    assert tree(png_frames) == before


def test_overlay_inside_out_or_over_the_input_is_refused(stm_checkpoint, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(segment_args(stm_checkpoint, inputs, out, "--overlay", out / "overlay.mp4")) == 2
    error_line(capsys.readouterr().err, "--overlay lies inside --out")
    assert main(segment_args(stm_checkpoint, inputs, out, "--overlay", inputs[1])) == 2
    error_line(capsys.readouterr().err, "would overwrite the input")
    assert not out.exists()


def test_frames_of_mixed_sizes_name_the_first_that_differs(stm_checkpoint, inputs, tmp_path, capsys):
    frames, _ = inputs
    Image.fromarray(np.zeros((H + 6, W, 3), np.uint8)).save(frames / "00002.jpg")
    Image.fromarray(np.zeros((H, W + 8, 3), np.uint8)).save(frames / "00003.jpg")
    out = tmp_path / "out"
    assert main(segment_args(stm_checkpoint, inputs, out)) == 2
    error_line(capsys.readouterr().err, str(frames / "00002.jpg"), "frame is 32x30 (WxH)", "00000.jpg is 32x24")
    assert not out.exists()


class RaggedVideo(LazyVideo):
    """A decoded video (no image files to check up front) whose third frame is 2 px wider."""

    name, source = "clip", "clip.mp4"

    @property
    def frame_names(self) -> list:
        return ["a", "b", "c"]

    def _read_frame(self, index: int) -> np.ndarray:
        return np.full((H, W + 2 * (index == 2), 3), 90, np.uint8)


def test_a_frame_of_another_size_found_while_segmenting_is_named(stm_checkpoint):
    mask = np.zeros((H, W), np.uint8)
    mask[4:12, 4:12] = 1
    segmenter = Segmenter(selfvos.from_pretrained(stm_checkpoint), "one-shot")
    with pytest.raises(SelfvosInputError, match="frame is 34x24 .* frame 'a' is 32x24") as err:
        list(segmenter.segment_video(RaggedVideo(), first_mask=mask, progress=False))
    assert err.value.path == "clip.mp4:c"


@pytest.mark.parametrize("case", ["empty folder", "garbage mask", "mask of another size", "mask is a folder"])
def test_bad_inputs_are_one_line(stm_checkpoint, inputs, tmp_path, capsys, case):
    frames, mask = inputs
    if case == "empty folder":
        frames = tmp_path / "empty"
        frames.mkdir()
        where = str(frames)
    elif case == "garbage mask":
        mask.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        where = str(mask)
    elif case == "mask of another size":
        first_mask(mask, size=(H // 2, W))
        where = f"{mask}: mask is 32x12 (WxH) but the video's frames are 32x24"
    else:
        mask = tmp_path / "mask_dir"
        mask.mkdir()
        where = f"{mask}: --first-mask is a folder"
    out = tmp_path / "out"
    assert main(segment_args(stm_checkpoint, (frames, mask), out)) == 2
    error_line(capsys.readouterr().err, where)
    assert not out.exists()


def test_full_disk_names_the_mask_and_keeps_the_earlier_output(stm_checkpoint, inputs, tmp_path, capsys,
                                                               monkeypatch):
    out = tmp_path / "out"
    assert main(segment_args(stm_checkpoint, inputs, out)) == 0
    before = tree(out)
    fail_fsync_at(monkeypatch, call=3)  # the third mask's flush fails
    assert main(segment_args(stm_checkpoint, inputs, out)) == 1
    error_line(capsys.readouterr().err, f"selfvos: error: {out / '00002.png'}: no space left on device")
    assert tree(out) == before and leftovers(tmp_path) == []


def test_full_disk_while_writing_the_overlay(stm_checkpoint, inputs, tmp_path, capsys, monkeypatch):
    from selfvos.inference.io import OverlayVideoWriter

    real, out, overlay = OverlayVideoWriter.write, tmp_path / "out", tmp_path / "overlay.mp4"

    def write(self, frame, mask=None):
        if self.frames_written == 2:
            with self._naming_target():
                raise OSError(errno.ENOSPC, "No space left on device")
        real(self, frame, mask)

    monkeypatch.setattr(OverlayVideoWriter, "write", write)
    assert main(segment_args(stm_checkpoint, inputs, out, "--overlay", overlay)) == 1
    error_line(capsys.readouterr().err, f"{overlay}: no space left on device")
    assert not out.exists() and not overlay.exists() and leftovers(tmp_path) == []


def test_interrupt_mid_run_leaves_nothing_and_exits_130(stm_checkpoint, inputs, tmp_path, capsys, monkeypatch):
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    interrupt_after(monkeypatch, 2, KeyboardInterrupt())
    assert main(segment_args(stm_checkpoint, inputs, out, "--overlay", overlay)) == 130
    assert error_line(capsys.readouterr().err) == "selfvos: error: interrupted"
    assert not out.exists() and not overlay.exists() and leftovers(tmp_path) == []


def test_unexpected_exception_is_one_line_and_v_shows_the_traceback(stm_checkpoint, inputs, tmp_path, capsys,
                                                                    monkeypatch):
    out = tmp_path / "out"
    interrupt_after(monkeypatch, 1, RuntimeError("boom\nsecond line"))
    assert main(segment_args(stm_checkpoint, inputs, out)) == 1
    line = error_line(capsys.readouterr().err)
    assert line == "selfvos: error: internal error: RuntimeError: boom second line (rerun with -v for the traceback)"
    assert main(segment_args(stm_checkpoint, inputs, out, "-v")) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "selfvos: error: internal error: RuntimeError: " \
                                                                    "boom second line"
    assert not out.exists()


def test_rerun_replaces_the_output_and_cleans_a_killed_runs_leftovers(stm_checkpoint, inputs, tmp_path):
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    (out / "stale.png").parent.mkdir()
    save_palette_png(out / "stale.png", np.zeros((H, W), np.uint8))  # a mask of an earlier run
    (tmp_path / "out.tmp-0123abcd").mkdir()  # staging folder of a killed run
    (tmp_path / "out.tmp-0123abcd" / "00000.png").write_bytes(b"partial")
    (tmp_path / ".overlay.tmp-89abcdef.mp4").write_bytes(b"partial")
    assert main(segment_args(stm_checkpoint, inputs, out, "--overlay", overlay)) == 0
    assert sorted(tree(out)) == [f"{t:05d}.png" for t in range(T)]  # no mix of two runs
    assert leftovers(tmp_path) == [] and overlay.is_file()


def test_an_output_moved_aside_by_a_killed_run_is_restored(tmp_path):
    from selfvos.atomic import clean_stale_staging

    (tmp_path / ".out.old-0123abcd").mkdir()
    (tmp_path / ".out.old-0123abcd" / "00000.png").write_bytes(b"complete")
    (tmp_path / "out.tmp-89abcdef").mkdir()
    clean_stale_staging(tmp_path, "out")
    assert tree(tmp_path) == {"out/00000.png": b"complete"}


# -------------------------------------------------------------------------------------- segment-dataset


@pytest.fixture
def dataset(tmp_path):
    """A folder of two sequences (4 frames each) with DAVIS-style annotations."""
    root = tmp_path / "DAVIS"
    for seq, seed in (("aa", 1), ("bb", 2)):
        write_frames(root / "JPEGImages" / "480p" / seq, seed=seed)
        first_mask(root / "Annotations" / "480p" / seq / "00000.png")
    return root


def dataset_args(checkpoint, root, out, *extra):
    return ["segment-dataset", "--checkpoint", checkpoint, "--data", f"davis:{root}", "--task", "one-shot",
            "--out", str(out), *map(str, extra)]


def test_segment_dataset_keeps_finished_sequences_and_drops_the_broken_one(stm_checkpoint, dataset, tmp_path,
                                                                           capsys, monkeypatch):
    out = tmp_path / "pred"
    fail_fsync_at(monkeypatch, call=T + 2)  # the second mask of the second sequence
    assert main(dataset_args(stm_checkpoint, dataset, out)) == 1
    error_line(capsys.readouterr().err, f"{out / 'bb' / '00001.png'}: no space left on device")
    assert sorted(tree(out)) == [f"aa/{t:05d}.png" for t in range(T)]  # complete, or not there at all
    monkeypatch.undo()
    (out / "bb.tmp-0123abcd").mkdir()  # as a kill would leave it
    assert main(dataset_args(stm_checkpoint, dataset, out)) == 0
    assert sorted(tree(out)) == [f"{seq}/{t:05d}.png" for seq in ("aa", "bb") for t in range(T)]
    assert leftovers(out) == []


def test_segment_dataset_checks_every_sequence_before_any_work(stm_checkpoint, dataset, tmp_path, capsys):
    out = tmp_path / "pred"
    bad = dataset / "JPEGImages" / "480p" / "bb" / "00003.jpg"
    Image.fromarray(np.zeros((H, W + 2, 3), np.uint8)).save(bad)
    assert main(dataset_args(stm_checkpoint, dataset, out)) == 2
    error_line(capsys.readouterr().err, str(bad), "must have the same size")
    assert not out.exists() or tree(out) == {}
    out_file = tmp_path / "pred.txt"
    out_file.write_text("x")
    assert main(dataset_args(stm_checkpoint, dataset, out_file)) == 2
    error_line(capsys.readouterr().err, f"{out_file}: --out exists and is not a folder")


def test_segment_dataset_interrupted_keeps_only_complete_sequences(stm_checkpoint, dataset, tmp_path, capsys,
                                                                   monkeypatch):
    out = tmp_path / "pred"
    calls = []
    real = Segmenter.segment_video

    def segment_video(self, video, first_mask=None, progress=True):
        calls.append(video.name)
        for t, ids in enumerate(real(self, video, first_mask=first_mask, progress=progress)):
            if len(calls) == 2 and t == 1:
                raise KeyboardInterrupt
            yield ids

    monkeypatch.setattr(Segmenter, "segment_video", segment_video)
    assert main(dataset_args(stm_checkpoint, dataset, out)) == 130
    assert error_line(capsys.readouterr().err) == "selfvos: error: interrupted"
    assert sorted(p.name for p in out.iterdir()) == ["aa"] and len(tree(out / "aa")) == T


# ------------------------------------------------------------------------------------- the error handler


@pytest.mark.parametrize("error, code, expected", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/00003.png"), 1,
     "/data/out/00003.png: no space left on device"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/out"), 2, "/data/out: permission denied"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/x.json"), 2, "/data/x.json: is a directory"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/f/x"), 2, "/data/f/x: not a directory"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), 1, "/a -> /b: invalid cross-device link"),
    (FileNotFoundError("cfg.yaml: config file not found"), 2, "cfg.yaml: config file not found"),
    (ConfigError("train.max_steps", "expected int, got 'x' (str)", "run.yaml"), 2,
     "run.yaml: train.max_steps: expected int, got 'x' (str)"),
    (ConfigError(None, "not valid YAML"), 2, "config: not valid YAML"),
    (SelfvosInputError("--out", "multi\nline problem"), 2, "--out: multi line problem"),
    (KeyError("unknown model 'x'; registered models: stm"), 2, "unknown model 'x'; registered models: stm"),
    (KeyError("x"), 1, "internal error: KeyError: 'x' (rerun with -v for the traceback)"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (ZeroDivisionError("division by zero"), 1, "internal error: ZeroDivisionError: division by zero (rerun"),
])
def test_every_failure_is_one_line_with_its_exit_code(monkeypatch, capsys, error, code, expected):
    def run(args):
        raise error

    monkeypatch.setattr(listing, "run", run)
    assert main(["list"]) == code
    assert error_line(capsys.readouterr().err).startswith(f"selfvos: error: {expected}")


def test_usage_errors_end_with_the_error_line(capsys):
    assert main(["segment", "--checkpoint", "x"]) == 2
    error_line(capsys.readouterr().err, "the following arguments are required: --input, --out")
    assert main(["list", "nope"]) == 2
    error_line(capsys.readouterr().err, "what: invalid choice: 'nope'")
    assert main(["list", "--bogus"]) == 2
    error_line(capsys.readouterr().err, "unrecognized arguments: --bogus")


def test_config_errors_are_one_line(tmp_path, capsys):
    assert main(["pretrain", "--print-config", "--train.max_steps", "abc"]) == 2
    error_line(capsys.readouterr().err, "selfvos: error: train.max_steps: expected int, got 'abc' (str)")
    assert main(["pretrain", "--print-config", "--config", str(tmp_path / "missing.yaml")]) == 2
    error_line(capsys.readouterr().err, "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert main(["finetune", "--print-config", "--config", str(bad)]) == 2
    error_line(capsys.readouterr().err, "bad.yaml")


def test_a_progress_bar_left_open_is_closed_before_the_error_line(monkeypatch, capsys):
    from tqdm.auto import tqdm

    def run(args):
        bar = tqdm(total=3, desc="work", disable=False)
        bar.update(1)
        raise SelfvosInputError("in.mp4", "damaged")

    monkeypatch.setattr(listing, "run", run)
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("\nselfvos: error: in.mp4: damaged\n") and "work" in err
