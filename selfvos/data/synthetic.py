"""Procedural synthetic videos: the built-in default dataset (no download, exact masks).

Each video is a panning / zooming textured background seen through a moving camera, with 1..N textured
objects (smooth blobs, ellipses or polygons) that translate and bounce inside the frame, rotate, pulse in
scale and wobble elastically. Objects are painted far-to-near in a random depth order, so nearer objects
occlude farther ones, and the id mask is exact: a pixel carries id ``k`` iff object ``k`` painted it.

Everything is drawn from ``numpy.random.default_rng(seed)`` and rendered with OpenCV, so the same seed
gives identical bytes and different seeds give different videos.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, fields
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from selfvos.data.video import LazyVideo, VideoCollection, VideoSample
from selfvos.errors import SelfvosInputError
from selfvos.registry import SOURCES

_ANGLES = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)  # outline resolution of blobs / ellipses
_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision (1/16 px)


@dataclass
class SyntheticConfig:
    """How many synthetic videos, their size, and how much everything moves (fractions of min(H, W))."""

    num_videos: int = 8
    num_frames: int = 32
    height: int = 128
    width: int = 128
    min_objects: int = 1
    max_objects: int = 3
    seed: int = 0
    object_radius: Tuple[float, float] = (0.10, 0.22)  # mean outline radius / min(H, W)
    object_speed: Tuple[float, float] = (0.006, 0.03)  # centre speed / min(H, W) per frame
    rotation_speed: float = 0.06  # max |rad| per frame
    scale_amplitude: float = 0.2  # relative size pulsation
    wobble: float = 0.12  # elastic outline deformation (relative radius)
    background_pan: Tuple[float, float] = (0.004, 0.015)  # camera speed / min(H, W) per frame
    background_zoom: float = 0.004  # max |relative zoom change| per frame (zoom stays in [1, 1.4])
    fps: float = 24.0

    def validate(self) -> "SyntheticConfig":
        where = "synthetic config"
        if self.num_videos < 0 or self.num_frames < 1:
            raise SelfvosInputError(where, f"need num_videos >= 0 and num_frames >= 1, got {self.num_videos}, {self.num_frames}")
        if self.height < 8 or self.width < 8:
            raise SelfvosInputError(where, f"frames must be at least 8x8, got {self.height}x{self.width}")
        if not 1 <= self.min_objects <= self.max_objects <= 254:
            raise SelfvosInputError(where, f"need 1 <= min_objects <= max_objects <= 254, got {self.min_objects}, {self.max_objects}")
        return self


def _bounce(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect a free trajectory into [lo, hi] (a triangle wave): motion bounces off the walls."""
    span = hi - lo
    y = np.mod(x - lo, 2.0 * span)
    return lo + np.where(y > span, 2.0 * span - y, y)


def _random_color(rng: np.random.Generator, saturation: Tuple[float, float], value: Tuple[float, float]) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, np.float32) * 255.0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: Sequence[int]) -> np.ndarray:
    """Multi-octave value noise (h, w) float32 in [0, 1]: coarse random grids upsampled bicubically."""
    out = np.zeros((h, w), np.float32)
    for octave, c in enumerate(cells):
        grid = rng.random((c + 1, c + 1)).astype(np.float32)
        out += 0.5**octave * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _texture(rng: np.random.Generator, h: int, w: int, *, vivid: bool) -> np.ndarray:
    """A (h, w, 3) uint8 texture: two colours blended by noise, a gradient or stripes, plus fine grain.
    ``vivid`` textures (objects) are more saturated than the muted background ones."""
    sat, val = ((0.55, 1.0), (0.45, 1.0)) if vivid else ((0.05, 0.5), (0.15, 0.9))
    c1, c2 = _random_color(rng, sat, val), _random_color(rng, sat, val)
    for _ in range(16):  # keep some contrast inside every texture (a flat texture carries no motion cue)
        if np.linalg.norm(c1 - c2) > 70.0:
            break
        c2 = _random_color(rng, sat, val)
    noise = _smooth_noise(rng, h, w, (3, 6, 12, 24))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0.0, np.pi)
    proj = (xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w)
    kind = rng.integers(3)
    if kind == 0:
        t = noise
    elif kind == 1:
        t = np.clip(0.7 * (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6) + 0.3 * noise, 0, 1)
    else:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2.0, 6.0) * proj + 4.0 * noise)
    img = c1 * (1.0 - t[..., None]) + c2 * t[..., None]
    img += rng.normal(0.0, 6.0, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _outline(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Unit outline in polar form: (angles (K,), radii (K,)) of a blob, an ellipse or a polygon."""
    kind = rng.integers(3)
    if kind == 0:  # smooth blob: low harmonics of the radius
        r = np.ones_like(_ANGLES)
        for k in (2, 3, 4, 5):
            r += rng.uniform(0.0, 0.3) / k * np.cos(k * _ANGLES + rng.uniform(0, 2 * np.pi))
        return _ANGLES, r
    if kind == 1:  # ellipse with aspect ratio in [0.45, 1]
        ax, ay = 1.0, rng.uniform(0.45, 1.0)
        r = 1.0 / np.sqrt((np.cos(_ANGLES) / ax) ** 2 + (np.sin(_ANGLES) / ay) ** 2)
        return _ANGLES, r / np.sqrt(ay)
    n = int(rng.integers(3, 8))  # polygon with 3..7 jittered vertices
    angles = np.sort(rng.uniform(0, 2 * np.pi / n, n) * 0.6 + np.arange(n) * 2 * np.pi / n)
    return angles, rng.uniform(0.7, 1.15, n)


@dataclass
class _ObjectTrack:
    """Per-frame pose and deformation of one object: centre (T, 2), scale (T,), angle (T,), outline (T, K, 2)."""

    texture: np.ndarray
    centre: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    outline: np.ndarray  # polygon vertices in frame pixels, float


def _object_track(rng: np.random.Generator, cfg: SyntheticConfig) -> _ObjectTrack:
    t = np.arange(cfg.num_frames, dtype=np.float64)
    side = min(cfg.height, cfg.width)
    radius = rng.uniform(*cfg.object_radius) * side
    angles, base_r = _outline(rng)
    direction = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(*cfg.object_speed) * side
    start = rng.uniform([0.15 * cfg.width, 0.15 * cfg.height], [0.85 * cfg.width, 0.85 * cfg.height])
    free = start[None] + speed * t[:, None] * np.array([np.cos(direction), np.sin(direction)])[None]
    centre = np.stack([_bounce(free[:, 0], 0.1 * cfg.width, 0.9 * cfg.width),
                       _bounce(free[:, 1], 0.1 * cfg.height, 0.9 * cfg.height)], axis=1)
    scale = 1.0 + cfg.scale_amplitude * np.sin(rng.uniform(0.05, 0.25) * t + rng.uniform(0, 2 * np.pi))
    angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-cfg.rotation_speed, cfg.rotation_speed) * t
    wobble = np.ones((cfg.num_frames, len(angles)))
    for k in (2, 3):  # travelling harmonics of the outline radius: an elastic wobble
        phase = rng.uniform(0, 2 * np.pi) + rng.uniform(0.1, 0.35) * t[:, None]
        wobble += cfg.wobble / (k - 1) * rng.uniform(0.3, 1.0) * np.sin(k * angles[None] + phase)
    r = radius * scale[:, None] * base_r[None] * np.clip(wobble, 0.3, None)  # (T, K)
    theta = angles[None] + angle[:, None]
    outline = centre[:, None, :] + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)
    size = int(np.ceil(2.0 * radius * 1.2)) + 8
    return _ObjectTrack(_texture(rng, size, size, vivid=True), centre, scale, angle, outline)


def _camera(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    """(T, 3) camera (cx, cy, zoom) over a canvas of size (2H, 2W): panning and zooming, bouncing at the edges."""
    t = np.arange(cfg.num_frames, dtype=np.float64)
    h, w = cfg.height, cfg.width
    direction = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(*cfg.background_pan) * min(h, w)
    cx = _bounce(rng.uniform(0.5 * w, 1.5 * w) + speed * np.cos(direction) * t, 0.5 * w + 2, 1.5 * w - 2)
    cy = _bounce(rng.uniform(0.5 * h, 1.5 * h) + speed * np.sin(direction) * t, 0.5 * h + 2, 1.5 * h - 2)
    zoom = _bounce(rng.uniform(1.0, 1.4) + rng.uniform(-1, 1) * cfg.background_zoom * t, 1.0, 1.4)
    return np.stack([cx, cy, zoom], axis=1)


@dataclass
class RenderedVideo:
    """A synthetic video plus the ground truth behind it (for tests and diagnostics)."""

    sample: VideoSample  # frames (T, H, W, 3) uint8, masks (T, H, W) uint8 ids
    background: np.ndarray  # (T, H, W, 3) uint8, the background alone
    amodal: np.ndarray  # (N, T, H, W) bool, full (unoccluded) extent of object id n + 1
    depth_order: List[int]  # object ids from farthest to nearest
    camera: np.ndarray  # (T, 3) background camera (cx, cy, zoom) in canvas pixels


def render_video(seed: int, cfg: SyntheticConfig, name: Optional[str] = None) -> RenderedVideo:
    """Render one video deterministically from ``seed`` (frame/mask sizes from ``cfg``)."""
    cfg.validate()
    rng = np.random.default_rng(seed)
    h, w, n_frames = cfg.height, cfg.width, cfg.num_frames
    num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    canvas = _texture(rng, 2 * h, 2 * w, vivid=False)
    camera = _camera(rng, cfg)
    tracks = [_object_track(rng, cfg) for _ in range(num_objects)]
    depth_order = [int(i) + 1 for i in rng.permutation(num_objects)]

    frames = np.empty((n_frames, h, w, 3), np.uint8)
    background = np.empty_like(frames)
    masks = np.zeros((n_frames, h, w), np.uint8)
    amodal = np.zeros((num_objects, n_frames, h, w), bool)
    inverse = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for t in range(n_frames):
        cx, cy, zoom = camera[t]  # output pixel p -> canvas (c + (p - centre) / zoom)
        m = np.array([[1 / zoom, 0, cx - 0.5 * w / zoom], [0, 1 / zoom, cy - 0.5 * h / zoom]])
        background[t] = cv2.warpAffine(canvas, m, (w, h), flags=inverse, borderMode=cv2.BORDER_REFLECT_101)
        frame = background[t].copy()
        for obj_id in depth_order:
            track = tracks[obj_id - 1]
            poly = track.outline[t]
            x0, y0 = np.clip(np.floor(poly.min(0)).astype(int) - 1, 0, [w, h])
            x1, y1 = np.clip(np.ceil(poly.max(0)).astype(int) + 2, 0, [w, h])
            if x1 <= x0 or y1 <= y0:
                continue
            layer = np.zeros((y1 - y0, x1 - x0), np.uint8)
            pts = np.round((poly - [x0, y0]) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
            cv2.fillPoly(layer, [pts], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
            inside = layer.astype(bool)
            # texture pixel u <- frame pixel x: u = c_tex + R(-angle) (x - centre) / scale
            s, a = track.scale[t], track.angle[t]
            rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) / s
            c_tex = 0.5 * np.array(track.texture.shape[1::-1], np.float64)
            shift = c_tex - rot @ (track.centre[t] - [x0, y0])
            warped = cv2.warpAffine(track.texture, np.hstack([rot, shift[:, None]]), (x1 - x0, y1 - y0),
                                    flags=inverse, borderMode=cv2.BORDER_REFLECT_101)
            frame[y0:y1, x0:x1][inside] = warped[inside]
            masks[t, y0:y1, x0:x1][inside] = obj_id
            amodal[obj_id - 1, t, y0:y1, x0:x1] = inside
        frames[t] = frame
    sample = VideoSample(
        frames=frames, frame_names=[f"{i:05d}" for i in range(n_frames)], name=name or f"synthetic_seed{seed}",
        masks=masks, fps=cfg.fps, source=f"synthetic://seed={seed}/{n_frames}x{h}x{w}",
        meta={"seed": seed, "num_objects": num_objects, "depth_order": depth_order},
    )
    return RenderedVideo(sample, background, amodal, depth_order, camera)


def make_video(seed: int, cfg: SyntheticConfig, name: Optional[str] = None) -> VideoSample:
    """One synthetic :class:`VideoSample`; identical bytes for the same ``(seed, cfg)``."""
    return render_video(seed, cfg, name).sample


def video_seed(base_seed: int, index: int) -> int:
    """Seed of video ``index`` in a collection: independent streams via ``numpy.random.SeedSequence``."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


class SyntheticVideo(LazyVideo):
    """A synthetic video rendered on first access and cached (frame names are known without rendering)."""

    def __init__(self, seed: int, cfg: SyntheticConfig, name: str) -> None:
        self.seed, self.cfg, self.name, self.fps = seed, cfg, name, cfg.fps
        self.source = f"synthetic://seed={seed}/{cfg.num_frames}x{cfg.height}x{cfg.width}"
        self._sample: Optional[VideoSample] = None

    @property
    def sample(self) -> VideoSample:
        if self._sample is None:
            self._sample = make_video(self.seed, self.cfg, self.name)
        return self._sample

    @property
    def is_rendered(self) -> bool:
        return self._sample is not None

    @property
    def frame_names(self) -> List[str]:
        return [f"{i:05d}" for i in range(self.cfg.num_frames)]

    @property
    def has_masks(self) -> bool:
        return True

    def _read_frame(self, index: int) -> np.ndarray:
        return self.sample.frames[index]

    def _read_mask(self, index: int) -> Optional[np.ndarray]:
        return self.sample.masks[index]

    def load(self, indices: Optional[Sequence[int]] = None, *, with_masks: bool = True) -> VideoSample:
        idx = range(len(self)) if indices is None else [int(i) % len(self) for i in indices]
        sub = self.sample.subset(idx)
        if not with_masks:
            sub.masks = sub.annotated = None
        return sub


def synthetic_collection(cfg: SyntheticConfig) -> VideoCollection:
    """``cfg.num_videos`` lazy synthetic videos named ``synthetic_0000`` ...; video i uses ``video_seed(cfg.seed, i)``."""
    cfg.validate()
    videos = [SyntheticVideo(video_seed(cfg.seed, i), cfg, f"synthetic_{i:04d}") for i in range(cfg.num_videos)]
    return VideoCollection(videos, source=f"synthetic://seed={cfg.seed}", kind="synthetic")


@SOURCES.register("synthetic")
def synthetic_source(num_videos: int = 8, num_frames: int = 32, size: Union[int, Sequence[int]] = (128, 128),
                     min_objects: int = 1, max_objects: int = 3, seed: int = 0, **options: Any) -> VideoCollection:
    """Registry entry: ``SOURCES.create("synthetic", num_videos=4, size=(96, 128))``. ``size`` is (H, W) or an int;
    other keyword options are :class:`SyntheticConfig` fields (``object_speed``, ``wobble``, ...)."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    known = {f.name for f in fields(SyntheticConfig)} - {"height", "width"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SelfvosInputError("synthetic source", f"unknown option(s) {unknown}; known: {sorted(known)}")
    cfg = SyntheticConfig(num_videos=num_videos, num_frames=num_frames, height=height, width=width,
                          min_objects=min_objects, max_objects=max_objects, seed=seed, **options)
    return synthetic_collection(cfg)
