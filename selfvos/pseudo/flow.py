"""Dense optical flow (OpenCV DIS; torchvision RAFT as an option) with a versioned on-disk cache, shared by the
motion pseudo-labeler (:mod:`selfvos.pseudo.motion`) and the motion-stream zero-shot heads
(:func:`neighbour_flows`, :mod:`selfvos.inference.video_core`).

Flow convention: ``flow[y, x] = (dx, dy)`` such that pixel (x, y) of the *reference* frame moves to
``(x + dx, y + dy)`` in the *target* frame; shape (H, W, 2) float32, in pixels of the working
resolution.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from selfvos.atomic import atomic_write_bytes
from selfvos.data.video import LazyVideo
from selfvos.errors import SelfvosInputError
from selfvos.pseudo.base import downscale

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
FLOW_METHODS = ("dis", "raft")
RAFT_MODELS = ("raft_small", "raft_large")
# Bumped whenever the flow computed for the same parameters changes (part of every cache folder name).
FLOW_CACHE_VERSION = 2
# OpenCV's DIS raises (and after that may crash the process) on images under about 12x12 pixels or whose short
# side is far below the long one; such images are padded (edge pixels repeated) to this size before the flow.
DIS_MIN_SIDE = 16
DIS_MAX_ASPECT = 4


def pad_for_dis(grey: np.ndarray) -> np.ndarray:
    """``grey`` (H, W) grown at the bottom / right by repeating its edge so that both sides are at least
    ``DIS_MIN_SIDE`` and at least 1 / ``DIS_MAX_ASPECT`` of the other side; unchanged when already so."""
    height, width = grey.shape[:2]
    new_h = max(height, DIS_MIN_SIDE, -(-width // DIS_MAX_ASPECT))
    new_w = max(width, DIS_MIN_SIDE, -(-height // DIS_MAX_ASPECT))
    if (new_h, new_w) == (height, width):
        return grey
    return cv2.copyMakeBorder(grey, 0, new_h - height, 0, new_w - width, cv2.BORDER_REPLICATE)


def dis_flow(reference: np.ndarray, target: np.ndarray, preset: str = "medium") -> np.ndarray:
    """DIS optical flow from ``reference`` to ``target``, both (H, W, 3) uint8 RGB or (H, W) grey.

    Returns (H, W, 2) float32 ``(dx, dy)``. Tiny or very elongated frames are padded for DIS (see
    :func:`pad_for_dis`) and the flow cropped back to (H, W).
    """
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
    grey = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) if im.ndim == 3 else im for im in (reference, target)]
    height, width = grey[0].shape[:2]
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    flow = dis.calc(pad_for_dis(grey[0]), pad_for_dis(grey[1]), None)
    return np.ascontiguousarray(flow[:height, :width]).astype(np.float32)


class FlowField:
    """Flow between frames of one video at a fixed working resolution, optionally cached on disk.

    ``FlowField(max_side=480, preset="medium", cache_dir="flow_cache")(video, i, j)`` returns the (h, w, 2) flow
    from frame ``i`` to frame ``j`` of ``video`` where (h, w) is the frame downscaled (area) so that its longest
    side is at most ``max_side`` (0 = the frame size), in pixels of (h, w).

    Methods: ``"dis"`` (OpenCV DIS, ``preset``) or ``"raft"`` (torchvision ``raft_small`` / ``raft_large``
    with a local state dict ``raft_weights``, nothing is downloaded; on ``device``, default CUDA when present).

    Cache: one float16 ``.npy`` per pair, written atomically, under the folder :meth:`cache_folder` =
    ``<cache_dir>/<video>/<method>-<preset or RAFT model>-side<max_side>-v<FLOW_CACHE_VERSION>/<i>_<j>.npy``: every
    parameter that changes the flow is in the folder name, so flows of other settings never mix, and a killed
    run recomputes only the pairs it had not written. With a cache, a freshly computed flow is returned
    float16-rounded as well, so a cache hit returns exactly what the miss returned.
    """

    def __init__(self, *, method: str = "dis", preset: str = "medium", max_side: int = 0,
                 cache_dir: Optional[Union[str, Path]] = None, raft_model: str = "raft_small",
                 raft_weights: Optional[Union[str, Path]] = None, raft_iterations: int = 12,
                 device: Optional[str] = None) -> None:
        if method not in FLOW_METHODS:
            raise SelfvosInputError("flow method", f"unknown flow method {method!r}; choose one of {FLOW_METHODS}")
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
        if raft_model not in RAFT_MODELS:
            raise SelfvosInputError("raft model", f"unknown RAFT model {raft_model!r}; choose one of {RAFT_MODELS}")
        self.method, self.preset, self.max_side = method, preset, int(max_side)
        self.raft_model, self.raft_iterations = raft_model, int(raft_iterations)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._raft: Optional[RaftFlow] = None
        if method == "raft":
            self._raft = RaftFlow(raft_model, raft_weights, iterations=self.raft_iterations, device=device)

    @property
    def version_name(self) -> str:
        """The cache folder name of these settings, e.g. ``dis-medium-side432-v2``."""
        variant = self.preset if self.method == "dis" else f"{self.raft_model}-it{self.raft_iterations}"
        return f"{self.method}-{variant}-side{self.max_side}-v{FLOW_CACHE_VERSION}"

    def cache_folder(self, video_name: str) -> Optional[Path]:
        """``<cache_dir>/<video>/<version_name>`` (None without a cache)."""
        return None if self.cache_dir is None else self.cache_dir / video_name / self.version_name

    def cache_path(self, video_name: str, i: int, j: int) -> Optional[Path]:
        folder = self.cache_folder(video_name)
        return None if folder is None else folder / f"{i:06d}_{j:06d}.npy"

    def working_frame(self, video: LazyVideo, index: int) -> np.ndarray:
        """Frame ``index`` at the working resolution, (h, w, 3) uint8."""
        return downscale(video.frame(index), self.max_side)

    def compute(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The flow from ``reference`` to ``target`` (working-size (h, w, 3) uint8 frames), (h, w, 2) float32."""
        if self._raft is not None:
            return self._raft(reference, target)
        return dis_flow(reference, target, self.preset)

    def __call__(self, video: LazyVideo, i: int, j: int) -> np.ndarray:
        path = self.cache_path(video.name, i, j)
        if path is not None and path.is_file():
            try:
                cached = np.load(path)
            except (OSError, ValueError, EOFError):  # unreadable (e.g. a disk error): computed and written again
                cached = None
            if cached is not None and cached.ndim == 3 and cached.shape[-1] == 2:
                return cached.astype(np.float32)
        flow = self.compute(self.working_frame(video, i), self.working_frame(video, j))
        if path is not None:
            half = flow.astype(np.float16)
            atomic_write_bytes(path, lambda fh: np.save(fh, half))
            flow = half.astype(np.float32)
        return flow


class RaftFlow:
    """torchvision RAFT (``raft_small`` / ``raft_large``) from a local state dict: ``(reference, target)`` (h, w, 3)
    uint8 -> (h, w, 2) float32 flow, same convention as :func:`dis_flow`. Frames are padded (edge) to a multiple
    of 8 and scaled to [-1, 1] as RAFT expects; ``iterations`` refinement steps (torchvision's default 12)."""

    def __init__(self, model: str, weights: Optional[Union[str, Path]], *, iterations: int = 12,
                 device: Optional[str] = None) -> None:
        import torch

        try:
            from torchvision.models import optical_flow
        except ImportError:
            raise SelfvosInputError("flow method", "RAFT needs torchvision (with torchvision.models.optical_flow), "
                                                   "which is not installed; use the 'dis' flow") from None
        if weights is None:
            raise SelfvosInputError("raft_weights", f"the RAFT flow needs a local {model} state-dict file "
                                                    "(nothing is downloaded); give its path")
        if not Path(weights).is_file():
            raise SelfvosInputError(weights, f"no such RAFT weights file (a {model} state dict)")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.iterations = int(iterations)
        self.net = getattr(optical_flow, model)(weights=None)
        try:
            self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (RuntimeError, KeyError) as err:
            raise SelfvosInputError(weights, f"not a {model} state dict: {str(err).splitlines()[0]}") from None
        self.net.eval().to(self.device)

    def __call__(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        height, width = reference.shape[:2]
        pad_h, pad_w = -height % 8, -width % 8
        images = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float().to(self.device)
                  for im in (reference, target)]
        images = [F.pad(im, (0, pad_w, 0, pad_h), mode="replicate") / 127.5 - 1.0 for im in images]
        with torch.inference_mode():
            flow = self.net(images[0], images[1], num_flow_updates=self.iterations)[-1]
        return np.ascontiguousarray(flow[0, :, :height, :width].permute(1, 2, 0).float().cpu().numpy())

def neighbour_flows(field: "FlowField", video: LazyVideo, indices: Sequence[int]) -> np.ndarray:
    """The motion input of frames ``indices`` of ``video`` (the zero-shot heads' convention), (T, h, w, 2) float32.

    Frame ``t`` gets the flow ``t -> t + 1``; the video's last frame gets ``T - 1 -> T - 2`` (so every frame has
    a motion input); a one-frame video gets zeros. (h, w) is the field's working resolution.
    """
    length = len(video)
    flows = []
    for t in indices:
        t = int(t) % length if length else int(t)
        if length < 2:
            height, width = field.working_frame(video, t).shape[:2]
            flows.append(np.zeros((height, width, 2), np.float32))
        else:
            flows.append(field(video, t, t + 1 if t + 1 < length else t - 1))
    if not flows:
        return np.zeros((0, 0, 0, 2), np.float32)
    return np.stack(flows).astype(np.float32, copy=False)
