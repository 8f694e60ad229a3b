"""CAM: with hand-set fc weights the map equals the weighted feature sum; normalisation; weight loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from selfvos.data.video import InMemoryVideo, VideoSample
from selfvos.errors import SelfvosInputError
from selfvos.pseudo.cam import (CamPseudoLabeler, ClassActivationMapper, class_activation_map,
                                load_classifier_weights, normalise_maps)


class TinyClassifier(nn.Module):
    """conv features (``layer4``, stride 1) -> global average pool -> ``fc`` (ResNet layout)."""

    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.layer4 = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(x).mean((2, 3)))


def test_cam_equals_weighted_feature_sum_for_the_top_class():
    torch.manual_seed(0)
    model = TinyClassifier()
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, -1.0, 0], [0, 0, 0, 0.5]]))
        model.fc.bias.copy_(torch.tensor([0.0, 100.0, 0.0]))  # class 1 wins
    images = torch.rand(2, 3, 8, 10)
    cams, top = ClassActivationMapper(model)(images)
    assert top.tolist() == [1, 1] and cams.shape == (2, 8, 10)
    features = model.layer4(images)
    expected = normalise_maps(2.0 * features[:, 1] - features[:, 2])
    torch.testing.assert_close(cams, expected, atol=1e-5, rtol=0)
    assert cams.flatten(1).min(1).values.abs().max() < 1e-6 and (cams.flatten(1).max(1).values - 1).abs().max() < 1e-5


def test_raw_cam_and_constant_map():
    features = torch.arange(8.0).view(1, 2, 2, 2)
    weight = torch.tensor([[1.0, 0.0], [0.5, -1.0]])
    raw = class_activation_map(features, weight, torch.tensor([1]))
    torch.testing.assert_close(raw, 0.5 * features[:, 0] - features[:, 1])
    assert normalise_maps(torch.ones(1, 3, 3)).eq(0).all()


def test_labeler_loads_safetensors_and_returns_frame_sized_map(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    path = tmp_path / "clf.safetensors"
    save_file(TinyClassifier().state_dict(), str(path))
    frames = np.random.default_rng(0).integers(0, 255, (2, 12, 16, 3), dtype=np.uint8)
    video = InMemoryVideo(VideoSample(frames=frames, frame_names=["0", "1"]))
    labeler = CamPseudoLabeler(TinyClassifier(), checkpoint=str(path), max_side=8)
    soft = labeler(video, 1)
    assert soft.shape == (12, 16) and soft.dtype == np.float32 and soft.min() >= 0 and soft.max() <= 1
    assert labeler.config()["checkpoint"] == str(path)
    save_file({"fc.weight": torch.zeros(3, 4)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(SelfvosInputError, match="partial.safetensors: weights do not fit"):
        load_classifier_weights(TinyClassifier(), tmp_path / "partial.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SelfvosInputError, match="junk.safetensors: not a readable safetensors"):
        load_classifier_weights(TinyClassifier(), tmp_path / "junk.safetensors")
