"""Bootstrapped relabeling: the model's prediction, momentum with the previous round, clean-up."""
import numpy as np
import pytest
import torch

from selfvos.data.video import InMemoryVideo, VideoSample
from selfvos.pretrain import MuGConfig, MuGModel
from selfvos.pretrain.bootstrap import BootstrapConfig, ModelRelabeler, predict_foreground


class SquareModel(torch.nn.Module):
    """Stands in for MuGModel: the frame head says 'foreground' exactly where the frame is bright."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def encode(self, images):  # (N, 3, H, W) -> (N, 1, H/8, W/8) brightness
        return torch.nn.functional.avg_pool2d(images.mean(1, keepdim=True), 8)

    def frame_logits(self, feats):
        return (feats - 0.5) * 40.0


def square_video(n=5, size=64):
    frames = np.zeros((n, size, size, 3), np.uint8)
    frames[:, 16:48, 16:48] = 255
    return InMemoryVideo(VideoSample(frames=frames, frame_names=[f"{i:05d}" for i in range(n)], name="sq"))


def test_predict_foreground_shapes_and_flip_invariance():
    video = square_video()
    prob = predict_foreground(SquareModel(), video.load().frames, (64, 64), flip_tta=True)
    assert prob.shape == (5, 64, 64) and prob.dtype == np.float32
    assert prob[:, 24:40, 24:40].min() > 0.99 and prob[:, :8, :8].max() < 0.01
    np.testing.assert_allclose(prob, prob[:, :, ::-1], atol=1e-5)  # symmetric scene, flip-averaged


def test_relabel_recovers_the_object_and_respects_threshold_contract():
    cfg = BootstrapConfig(previous_weight=0.0, motion_weight=0.0, grabcut_iterations=0, temporal_radius=1)
    relabel = ModelRelabeler(SquareModel(), (64, 64), cfg)
    soft = relabel(square_video(), 2)
    truth = np.zeros((64, 64), bool)
    truth[16:48, 16:48] = True
    iou = ((soft >= 0.5) & truth).sum() / ((soft >= 0.5) | truth).sum()
    assert iou > 0.9
    assert soft.min() >= 0 and soft.max() <= 1


def test_previous_round_momentum_and_component_cleanup():
    video = square_video()
    square = np.zeros((64, 64), np.float32)
    square[16:48, 16:48] = 1.0
    with_blob = square.copy()
    with_blob[0:6, 58:64] = 1.0  # the previous round also saw a small blob in a corner
    cfg = BootstrapConfig(previous_weight=0.6, motion_weight=0.0, grabcut_iterations=0)
    soft = ModelRelabeler(SquareModel(), (64, 64), cfg, previous=lambda name, i: with_blob)(video, 0)
    # blob: 0.4 * model(0) + 0.6 * 1 = 0.6 >= 0.5, but tiny next to the square: the clean-up drops it
    assert soft[2, 61] < 0.5 and soft[32, 32] >= 0.5
    # a previous round that missed the object outvotes a model that is only 40% of the mix ...
    empty = np.zeros((64, 64), np.float32)
    soft = ModelRelabeler(SquareModel(), (64, 64), cfg, previous=lambda name, i: empty)(video, 0)
    assert soft[32, 32] < 0.5
    # ... but not one that is 80% of it
    cfg_low = BootstrapConfig(previous_weight=0.2, motion_weight=0.0, grabcut_iterations=0)
    soft = ModelRelabeler(SquareModel(), (64, 64), cfg_low, previous=lambda name, i: empty)(video, 0)
    assert soft[32, 32] >= 0.5


def test_relabeler_batches_forward_passes():
    calls = []

    class Counting(SquareModel):
        def encode(self, images):
            calls.append(images.shape[0])
            return super().encode(images)

    video = square_video(n=10)
    relabel = ModelRelabeler(Counting(), (64, 64), BootstrapConfig(flip_tta=False, motion_weight=0.0, grabcut_iterations=0, batch_size=4))
    for i in range(10):
        relabel(video, i)
    assert sum(calls) == 10  # every frame encoded exactly once


def test_motion_fusion_finds_a_moving_object_the_model_misses():
    """A model that sees nothing plus camera-compensated motion: the moving square is relabeled foreground."""
    rng = np.random.default_rng(0)
    background = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    texture = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    frames = np.repeat(background[None], 6, axis=0)
    for t in range(6):
        frames[t, 24:40, 8 + 4 * t:24 + 4 * t] = texture
    video = InMemoryVideo(VideoSample(frames=frames, frame_names=[f"{i:05d}" for i in range(6)], name="mv"))

    class Blind(SquareModel):
        def frame_logits(self, feats):
            return torch.full_like(feats, -20.0)

    cfg = BootstrapConfig(motion_weight=0.9, grabcut_iterations=0)
    soft = ModelRelabeler(Blind(), (64, 64), cfg)(video, 3)
    truth = np.zeros((64, 64), bool)
    truth[24:40, 20:36] = True
    iou = ((soft >= 0.5) & truth).sum() / max(((soft >= 0.5) | truth).sum(), 1)
    assert iou > 0.5
    blind = ModelRelabeler(Blind(), (64, 64), BootstrapConfig(motion_weight=0.0, grabcut_iterations=0))(video, 3)
    assert (blind >= 0.5).sum() == 0


def test_real_mug_model_runs_and_config_is_validated():
    model = MuGModel(MuGConfig()).eval()
    soft = ModelRelabeler(model, (64, 64), BootstrapConfig())(square_video(n=3), 1)
    assert soft.shape == (64, 64) and np.isfinite(soft).all()
    with pytest.raises(ValueError, match="rounds"):
        BootstrapConfig(rounds=0)
    with pytest.raises(ValueError, match="motion_weight"):
        BootstrapConfig(motion_weight=1.0)
    with pytest.raises(ValueError, match="previous_weight"):
        BootstrapConfig(previous_weight=1.0)
