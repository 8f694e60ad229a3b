"""Synthetic scenes with a known answer: a centred object on a textured background, and a clip in which
an object moves one way while the camera pans the other."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from selfvos.data.video import InMemoryVideo, VideoSample


def smooth_texture(h: int, w: int, seed: int, base: tuple, amplitude: float = 40.0) -> np.ndarray:
    """(h, w, 3) uint8 low-frequency colour texture around ``base`` (trackable by optical flow)."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 3)
    noise /= noise.std() + 1e-6
    return np.clip(np.asarray(base, np.float32) + amplitude * noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def centred_object_image():
    """(120, 160, 3) image: grey-green textured background, red ellipse in the centre; and its bool mask."""
    h, w = 120, 160
    image = smooth_texture(h, w, 0, (110, 130, 110), 15)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (30, 24), 0, 0, 360, 1, -1)
    image[mask > 0] = smooth_texture(h, w, 1, (220, 40, 40), 10)[mask > 0]
    return image, mask > 0


@pytest.fixture(scope="session")
def panning_clip():
    """8-frame clip, 96x128: the background pans (+2, +1) px/frame, a 28x28 textured square moves
    (-3, +2) px/frame. Returns an InMemoryVideo whose masks mark the square."""
    h, w, t = 96, 128, 8
    world = smooth_texture(h + 40, w + 40, 2, (120, 120, 120), 45)
    patch = smooth_texture(28, 28, 3, (120, 120, 120), 45)
    frames, masks = [], []
    for k in range(t):
        cx, cy = 4 + 2 * k, 4 + 1 * k
        frame = world[cy:cy + h, cx:cx + w].copy()
        x0, y0 = 70 - 3 * k, 30 + 2 * k
        frame[y0:y0 + 28, x0:x0 + 28] = patch
        m = np.zeros((h, w), np.uint8)
        m[y0:y0 + 28, x0:x0 + 28] = 1
        frames.append(frame)
        masks.append(m)
    sample = VideoSample(frames=np.stack(frames), frame_names=[f"{k:05d}" for k in range(t)], name="pan",
                         masks=np.stack(masks), source="synthetic-pan")
    return InMemoryVideo(sample)
