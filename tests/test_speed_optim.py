"""benchmarks/speed_optim.py: input errors, the batches the cores encode, mask IoU, the int8 backbone, and the rows
without the DAVIS data (tiny sizes only; the benchmark itself is measured on an idle machine)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import speed_optim  # noqa: E402

from selfvos.errors import SelfvosInputError  # noqa: E402


def test_bad_options_are_input_errors():
    with pytest.raises(SelfvosInputError, match="--variants"):
        speed_optim.optim_rows("absent", 1, variants=["fp32", "fp8"])
    with pytest.raises(SelfvosInputError, match="--frames"):
        speed_optim.optim_rows("absent", 0)


def test_core_batches_are_what_the_cores_encode():
    frame = np.random.default_rng(0).integers(0, 256, (480, 854, 3), np.uint8)
    one = speed_optim.core_batch(frame, "one-shot")
    assert one.shape == (2, 3, 480, 854) and torch.equal(one[1], one[0].flip(-1))
    assert speed_optim.core_batch(frame, "zero-shot").shape == (1, 3, 243, 432)  # input_max_side 432


def test_mask_iou_averages_objects():
    a, b = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    assert speed_optim.mask_iou(a, b) == 1.0
    a[:2], b[:1] = 1, 1  # object 1: IoU 4 / 8
    a[3, 3] = 2  # object 2 only in a: IoU 0
    assert speed_optim.mask_iou(a, b) == pytest.approx(0.25)


def test_int8_backbone_keeps_features_close():
    from selfvos.pretrain import MuGModel

    torch.manual_seed(0)
    model = MuGModel().eval()
    frames = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), np.uint8) for i in range(2)]
    int8 = speed_optim.prepare(model, speed_optim.VARIANTS["int8"], frames)
    assert isinstance(int8.backbone, speed_optim.Int8Trunk) and isinstance(model.backbone, torch.nn.Module)
    batch = speed_optim.core_batch(frames[0], "one-shot")
    with torch.no_grad():
        reference, quantized = model.encode(batch), int8.encode(batch)
    assert quantized.shape == reference.shape and quantized.dtype == torch.float32
    assert torch.corrcoef(torch.stack([reference.flatten(), quantized.flatten()]))[0, 1] > 0.95


def test_rows_without_data_time_the_encode_and_skip_the_steps(monkeypatch, tmp_path):
    monkeypatch.setattr(speed_optim, "DATA", tmp_path / "absent")
    rows = speed_optim.optim_rows(str(tmp_path / "no_model"), 1, size=(32, 48), variants=["inference_mode"])
    assert [(r["variant"], r["task"]) for r in rows] == [(v, t) for v in ("fp32", "inference_mode")
                                                         for t in speed_optim.TASKS]
    for row in rows:
        assert "seed 0" in row["model"]
        if row["task"].startswith("encode"):
            assert row["seconds_per_frame"] > 0 and row["feature_max_abs_diff"] == 0.0
        else:
            assert "not found" in row["skipped"] and "seconds_per_frame" not in row
