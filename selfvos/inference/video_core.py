"""The generic inference core of the zero-shot heads (COSNet, LVO, FusionSeg, MP-Net, PDB, AGS, ...).

A zero-shot head segments a whole clip at once: ``model({"frames": (1, T, 3, h, w)[, "flows": (1, T, 2, h, w)]},
offline=...)`` returns ``{"logits": (1, T, 2, h', w'), "frames": arange(T)}`` (background / foreground). This
module never imports a head; each head registers it with one line::

    CORES.register("lvo")(video_head_core)

:class:`VideoHeadCore` is a *video core*: it has ``segment_video`` (what ``Segmenter`` calls for it) and no
per-frame ``step``. For a video of T frames of size (H, W) it

1. shrinks every frame to ``max_side`` (area, :func:`~selfvos.data.image_io.shrink_frame`) -> (h, w);
2. when ``type(model).needs_flow``: the motion input of frame t is the optical flow t -> t + 1 (the last frame:
   T - 1 -> T - 2; a one-frame video: zeros) at (h, w), in pixels of (h, w), from a
   :class:`~selfvos.pseudo.flow.FlowField` (cached on disk under ``flow_cache`` when set), see
   :func:`~selfvos.pseudo.flow.neighbour_flows`; the last frame of a window that is not the video's last gets
   its real forward flow (the next window's first frame is read for it);
3. runs the model on consecutive, non-overlapping windows of ``window`` frames (0: the whole video in one call)
   under ``torch.inference_mode()`` with ``offline = (mode == "offline")``; a recurrent head's state does not
   carry over from one window to the next;
4. ``p_t = softmax(logits_t)[1]`` upsampled bilinearly to (H, W); the mask is ``p_t > threshold`` (uint8 0 / 1).

Reads: a window [s, e) reads frames s .. e (frame e only for the flow of frame e - 1) before its masks are
yielded, so ``mode="online"`` with ``window=1`` is streaming (mask t after reading at most frame t + 1). In
online mode the head is causal (``offline=False``: output t depends on frames <= t + 1 only), whatever the window.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from selfvos.data.image_io import shrink_frame
from selfvos.data.video import LazyVideo, VideoView
from selfvos.errors import SelfvosInputError
from selfvos.inference.core import inference_settings

MODES = ("offline", "online")
FLOW_METHODS = ("dis", "raft")


@dataclass
class ZeroShotHeadInference:
    """Inference settings of a zero-shot head (its config's ``inference`` field; ``Segmenter(head={...})`` and
    ``selfvos segment --head-option`` override them per run).

    Attributes:
        mode: ``"offline"`` (the head sees the whole window, bidirectional recurrences run both ways) or
            ``"online"`` (causal: output t never depends on frames after t + 1).
        window: frames per forward call, 0 = the whole video; windows do not overlap.
        threshold: foreground when softmax channel 1 > threshold, in (0, 1).
        max_side: longest side the frames (and flows) are processed at; 0 = the frame size.
            ``Segmenter(max_side=...)`` overrides it.
        flow_preset: OpenCV DIS preset of the optical flow (``ultrafast`` / ``fast`` / ``medium``).
        flow_cache: folder of the on-disk flow cache (``<flow_cache>/<video>/<method>-...-v<N>/``); None = no cache.
        flow_method: ``"dis"`` (OpenCV DIS, what the training data uses) or ``"raft"`` (torchvision RAFT, needs
            ``raft_weights``, a local state-dict file).
        raft_model: ``"raft_small"`` or ``"raft_large"`` (RAFT only).
        raft_weights: path of the RAFT state dict (RAFT only; nothing is downloaded).
    """

    mode: str = "offline"
    window: int = 0
    threshold: float = 0.5
    max_side: int = 432
    flow_preset: str = "medium"
    flow_cache: Optional[str] = None
    flow_method: str = "dis"
    raft_model: str = "raft_small"
    raft_weights: Optional[str] = None

    def __post_init__(self) -> None:
        from selfvos.pseudo.flow import DIS_PRESETS, RAFT_MODELS

        if self.mode not in MODES:
            raise ValueError(f"inference mode must be one of {MODES}, got {self.mode!r}")
        if int(self.window) != self.window or self.window < 0:
            raise ValueError(f"inference window must be an integer >= 0 (0 = whole video), got {self.window!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"inference threshold must be in (0, 1), got {self.threshold!r}")
        if int(self.max_side) != self.max_side or self.max_side < 0:
            raise ValueError(f"inference max_side must be an integer >= 0 (0 = frame size), got {self.max_side!r}")
        if self.flow_preset not in DIS_PRESETS:
            raise ValueError(f"flow_preset must be one of {sorted(DIS_PRESETS)}, got {self.flow_preset!r}")
        if self.flow_method not in FLOW_METHODS:
            raise ValueError(f"flow_method must be one of {FLOW_METHODS}, got {self.flow_method!r}")
        if self.raft_model not in RAFT_MODELS:
            raise ValueError(f"raft_model must be one of {RAFT_MODELS}, got {self.raft_model!r}")


class _RecentFrames(VideoView):
    """``video`` with its last ``keep`` decoded frames kept, so frame t is decoded once for the model and the
    flows t - 1 -> t and t -> t + 1."""

    def __init__(self, video: LazyVideo, keep: int = 4) -> None:
        super().__init__(video)
        self.keep = keep
        self._frames: "OrderedDict[int, np.ndarray]" = OrderedDict()

    def _read_frame(self, index: int) -> np.ndarray:
        if index in self._frames:
            self._frames.move_to_end(index)
            return self._frames[index]
        frame = self.video.frame(index)
        self._frames[index] = frame
        while len(self._frames) > self.keep:
            self._frames.popitem(last=False)
        return frame


class VideoHeadCore:
    """Segments whole videos with a zero-shot head (see the module docstring); one object, id 1."""

    def __init__(self, model: Any, config: ZeroShotHeadInference) -> None:
        self.model = model.eval()
        self.config = config
        self.needs_flow = bool(getattr(type(model), "needs_flow", False))
        self._field: Any = None

    @property
    def object_ids(self) -> List[int]:
        return [1]

    def reset(self) -> None:
        """Nothing to forget: every video is segmented in one :meth:`segment_video` call."""

    @property
    def architecture(self) -> str:
        return str(getattr(type(self.model), "architecture", type(self.model).__name__))

    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        raise SelfvosInputError(self.architecture, f"the {self.architecture} head segments whole videos, not single "
                                                   "frames; use Segmenter.segment_video (or `selfvos segment`)")

    def flow_field(self) -> Any:
        """The :class:`~selfvos.pseudo.flow.FlowField` of this core's settings (made once)."""
        if self._field is None:
            from selfvos.pseudo.flow import FlowField

            cfg = self.config
            self._field = FlowField(method=cfg.flow_method, preset=cfg.flow_preset, max_side=cfg.max_side,
                                    cache_dir=cfg.flow_cache, raft_model=cfg.raft_model, raft_weights=cfg.raft_weights)
        return self._field

    def to_mask(self, probabilities: torch.Tensor) -> np.ndarray:
        """(2, H, W) probabilities (or (H, W) foreground probability) -> (H, W) uint8 0 / 1."""
        probabilities = torch.as_tensor(probabilities)
        foreground = probabilities[1] if probabilities.dim() == 3 else probabilities
        return (foreground > self.config.threshold).to(torch.uint8).cpu().numpy()

    def _inputs(self, video: LazyVideo, start: int, stop: int, device: torch.device) -> Tuple[dict, List[tuple]]:
        """The model's batch for frames [start, stop) and each frame's (H, W)."""
        from selfvos.pseudo.flow import neighbour_flows

        frames, flows, sizes = [], [], []
        for t in range(start, stop):
            frame = video.frame(t)
            sizes.append(tuple(frame.shape[:2]))
            frames.append(shrink_frame(frame, self.config.max_side))
            if self.needs_flow:
                flows.append(neighbour_flows(self.flow_field(), video, [t])[0])
        batch = {"frames": torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2)[None].float() / 255.0}
        if self.needs_flow:
            flow = torch.from_numpy(np.stack(flows)).to(device).permute(0, 3, 1, 2)[None].float()
            if flow.shape[-2:] != batch["frames"].shape[-2:]:
                raise RuntimeError(f"flow is {tuple(flow.shape[-2:])} but frames are {tuple(batch['frames'].shape[-2:])}")
            batch["flows"] = flow
        return batch, sizes

    def probabilities(self, video: LazyVideo, start: int, stop: int) -> Tuple[torch.Tensor, List[tuple]]:
        """Foreground probabilities of frames [start, stop) of ``video`` at the model's output size, (n, h', w')
        float32, and each frame's (H, W)."""
        device = next(self.model.parameters()).device
        batch, sizes = self._inputs(video, start, stop, device)
        with torch.inference_mode():
            logits = self.model(batch, offline=self.config.mode == "offline")["logits"]
        if logits.dim() != 5 or logits.shape[:3] != (1, stop - start, 2):
            raise RuntimeError(f"{self.architecture} returned logits of shape {tuple(logits.shape)}, expected "
                               f"(1, {stop - start}, 2, H, W)")
        return torch.softmax(logits[0].float(), dim=1)[:, 1], sizes

    def segment_video(self, video: LazyVideo, progress: bool = False) -> Iterator[np.ndarray]:
        """(H, W) uint8 masks (1 = the foreground object) for every frame of ``video``, in order."""
        from tqdm.auto import tqdm

        length = len(video)
        if length == 0:
            return
        video = _RecentFrames(video)
        window = int(self.config.window) or length
        with tqdm(total=length, desc=f"zero-shot {video.name}", unit="frame", disable=not progress) as bar:
            for start in range(0, length, window):
                stop = min(start + window, length)
                foreground, sizes = self.probabilities(video, start, stop)
                for probability, size in zip(foreground, sizes):
                    probability = probability[None, None]
                    if tuple(probability.shape[-2:]) != size:
                        probability = F.interpolate(probability, size=size, mode="bilinear", align_corners=False)
                    yield self.to_mask(probability[0, 0].cpu())
                    bar.update(1)


def video_head_core(model: Any, task: str, options: Mapping[str, Any]) -> VideoHeadCore:
    """The ``CORES`` factory of a zero-shot head: :class:`VideoHeadCore` with the model's ``config.inference``
    (a :class:`ZeroShotHeadInference`) whose fields ``options["head"]`` overrides (an unknown field is a
    :class:`SelfvosInputError` listing the known ones) and whose ``max_side`` ``options["max_side"]`` (the
    ``Segmenter``'s) overrides when given."""
    config = inference_settings(model, options)
    if options.get("max_side") is not None:
        config = dataclasses.replace(config, max_side=int(options["max_side"]))
    return VideoHeadCore(model, config)
