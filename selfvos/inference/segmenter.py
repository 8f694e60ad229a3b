"""``Segmenter``: one entry point for zero-shot and one-shot VOS with any selfvos model.

The model holds weights only; every per-video state (reference caches, memories, previous masks) lives in
the inference core registered for the model's architecture (``selfvos.inference.core``): label propagation
or the zero-shot pipeline for a pretrained MuG model, the head's own core for a fine-tuned head (STM, ...),
so one model can serve several segmenters::

    seg = Segmenter(model)                          # task="auto"
    probs = seg.step(frame0, mask=first_mask)       # a mask at the first step -> one-shot, (K+1, H, W)
    probs = seg.step(frame1)                        # ...
    seg.reset()
    for ids in seg.segment_video(video):            # no mask -> zero-shot; (H, W) uint8 object ids
        ...
    probs = seg.step(frame0, boxes=[(x0, y0, x1, y1)])   # prompts at the first step -> one-shot from
    seg.prompt_mask                                     # the mask made from them (selfvos.inference.prompts)

``max_side`` shrinks frames (area) and the given masks (nearest) so the core works at that size;
probabilities come back bilinearly upsampled to the input frame size.

A *video core* (one with ``segment_video``: MuG's zero-shot ``ZeroShotSegmenter``, a zero-shot head's
:class:`~selfvos.inference.video_core.VideoHeadCore`) segments whole videos itself and sizes its input
itself: ``max_side`` reaches it as ``ZeroShotConfig.input_max_side`` (MuG) or ``options["max_side"]`` (a
zero-shot head, overriding its ``inference.max_side``); :meth:`Segmenter.segment_video` hands it the video.

Every frame of a video must have the same size: :meth:`Segmenter.segment_video` reads the video through
:class:`UniformSizeVideo`, so a frame of another size is a ``SelfvosInputError`` naming it, not a tensor error.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from selfvos.data.image_io import shrink_frame, shrink_mask
from selfvos.data.video import LazyVideo, VideoView
from selfvos.errors import SelfvosInputError
from selfvos.inference.core import create_core
from selfvos.inference.zero_shot import ZeroShotConfig

TASKS = ("auto", "zero-shot", "one-shot")


def is_video_core(core: Any) -> bool:
    """A core that segments whole videos itself (``segment_video``), not frame by frame through ``step``."""
    return callable(getattr(core, "segment_video", None))


def frame_location(video: LazyVideo, index: int) -> str:
    """Where frame ``index`` of ``video`` comes from: its image file, or ``<video source>:<frame name>``."""
    paths = getattr(video, "frame_paths", None)
    if paths is not None and 0 <= index < len(paths):
        return str(paths[index])
    return f"{video.source or video.name}:{video.frame_names[index]}"


class UniformSizeVideo(VideoView):
    """``video`` read through a check that every frame has the size of the first frame read: one of another
    size raises a ``SelfvosInputError`` naming that frame and the size expected."""

    def __init__(self, video: LazyVideo) -> None:
        super().__init__(video)
        self._reference: Optional[tuple] = None  # (index, (H, W)) of the first frame read

    def _read_frame(self, index: int) -> np.ndarray:
        frame = self.video.frame(index)
        size = tuple(frame.shape[:2])
        if self._reference is None:
            self._reference = (index, size)
        elif size != self._reference[1]:
            first, (height, width) = self._reference
            raise SelfvosInputError(frame_location(self.video, index),
                                    f"frame is {size[1]}x{size[0]} (WxH) but frame {self.video.frame_names[first]!r} "
                                    f"is {width}x{height}; every frame of a video must have the same size")
        return frame


class Segmenter:
    """Segment a video frame by frame; the task is fixed at the first :meth:`step` after :meth:`reset`.

    Args:
        model: any registered selfvos model with an inference core: a pretrained
            :class:`~selfvos.pretrain.MuGModel` or a fine-tuned head (shared, never modified except ``eval()``).
        task: ``"auto"`` (one-shot when the first step has a mask, zero-shot otherwise), ``"zero-shot"``
            (a mask is an error) or ``"one-shot"`` (the first step must have a mask).
        zero_shot: MuG zero-shot settings (mode, references, clean-up); ``max_side`` overrides its input size.
        one_shot: ``OneShotConfig`` for MuG label propagation (default settings when None); its
            ``object_gain`` also applies to a head's probabilities.
        head: keyword overrides of a head's inference settings (e.g. ``{"memory_every": 5}`` for STM).
        max_side: longer side the core works at (None: each core's default scale; MuG zero-shot
            ``ZeroShotConfig.input_max_side``, MuG one-shot ``OneShotConfig.short_side``, one-shot heads the frame
            size, zero-shot heads their ``inference.max_side``, which ``max_side`` overrides).
        prompt: ``PromptConfig`` for first-frame masks made from boxes / clicks (default settings when None).
        online: ``OnlineFinetuneConfig``: before a one-shot video is propagated, a copy of the model is
            fine-tuned on its first frame and mask (:func:`selfvos.inference.online.finetune_on_frames`) and
            segments that video (kept as :attr:`video_model`; ``model`` itself is never changed). None: off.

    Prompts (``boxes`` / ``points`` of :meth:`step` and :meth:`segment_video`, see
    :func:`selfvos.inference.prompts.mask_from_prompts`) make the first frame's mask with the model's own
    evidence; it is kept as :attr:`prompt_mask` ((H, W) uint8 ids) and propagated as a given mask would be.
    """

    def __init__(self, model: Any, task: str = "auto", *, zero_shot: Optional[ZeroShotConfig] = None,
                 one_shot: Any = None, head: Optional[Dict[str, Any]] = None, max_side: Optional[int] = None,
                 prompt: Any = None, online: Any = None) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.model, self.task, self.max_side, self.prompt_config = model, task, max_side, prompt
        self.online_config = online
        self.head_options = dict(head or {})
        self.zero_shot_config = dataclasses.replace(zero_shot or ZeroShotConfig())
        if max_side is not None:
            self.zero_shot_config.input_max_side = max_side
        self.one_shot_config = one_shot
        if max_side is not None:  # the propagator works at the size given to it (no short-side rescaling)
            from selfvos.inference.one_shot import OneShotConfig

            self.one_shot_config = dataclasses.replace(one_shot or OneShotConfig(), short_side=None)
        self.reset()

    def reset(self) -> None:
        """Forget the current video; the next :meth:`step` picks the task again."""
        self._core: Any = None
        self.active_task: Optional[str] = None
        self.prompt_mask: Optional[np.ndarray] = None
        self.video_model: Any = None  # the model of this video: ``model``, or its copy fine-tuned online

    @property
    def object_ids(self) -> List[int]:
        """Object id of each probability channel after the background (channel 0)."""
        if self._core is None:
            return []
        return [int(i) for i in getattr(self._core, "object_ids", [1])]

    def _start(self, has_mask: bool, frame: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None) -> None:
        if has_mask and self.task == "zero-shot":
            raise ValueError("zero-shot segmentation takes no mask; use task='one-shot' or 'auto'")
        if not has_mask and self.task == "one-shot":
            raise ValueError("one-shot segmentation needs the first frame's mask at the first step")
        self.active_task = "one-shot" if has_mask else "zero-shot"
        self.video_model = self.model
        if self.online_config is not None and has_mask:
            from selfvos.inference.online import finetune_on_frames

            self.video_model = finetune_on_frames(self.model, [np.asarray(frame)], [np.asarray(mask, np.uint8)],
                                                  self.online_config)
        self._core = create_core(self.video_model, self.active_task, {
            "zero_shot": self.zero_shot_config, "one_shot": self.one_shot_config, "head": self.head_options,
            "max_side": self.max_side})

    def mask_from_prompts(self, frame: np.ndarray, boxes: Any = None, points: Any = None) -> np.ndarray:
        """The first frame's (H, W) uint8 ids from prompts (``boxes`` [(x0, y0, x1, y1)], ``points`` [[(x, y,
        label)]] per object), made with this model's evidence; kept as :attr:`prompt_mask`. A zero-shot task
        takes no prompts (``ValueError``); bad prompts are a ``SelfvosInputError``."""
        from selfvos.inference.prompts import mask_from_prompts

        if self.task == "zero-shot":
            raise ValueError("zero-shot segmentation takes no prompts; use task='one-shot' or 'auto'")
        self.prompt_mask = mask_from_prompts(np.asarray(frame), boxes=boxes, points=points, model=self.model,
                                             cfg=self.prompt_config)
        return self.prompt_mask

    def _prompted_mask(self, frame: np.ndarray, mask: Optional[np.ndarray], boxes: Any, points: Any
                       ) -> Optional[np.ndarray]:
        """``mask``, or the mask made from the prompts when there are any (first step only, never with a mask)."""
        if boxes is None and points is None:
            return mask
        if mask is not None:
            raise ValueError("give the first frame's mask or prompts (boxes / points), not both")
        if self._core is not None:
            raise ValueError("prompts are taken at the first step only; reset() to start a new video")
        return self.mask_from_prompts(frame, boxes, points)

    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None, *, boxes: Any = None,
             points: Any = None) -> torch.Tensor:
        """(H, W, 3) uint8 RGB [+ (H, W) uint8 ids, or prompts at the first step] -> (K+1, H, W) float32
        probabilities (channel 0 = background). ``boxes`` / ``points``: see :meth:`mask_from_prompts`."""
        frame = np.asarray(frame)
        mask = self._prompted_mask(frame, mask, boxes, points)
        if self._core is None:
            self._start(mask is not None, frame, mask)
        if self.active_task == "zero-shot" and mask is not None:
            raise ValueError("a zero-shot run takes no masks; reset() and start with the mask for one-shot")
        if is_video_core(self._core):  # sizes its input itself (a zero-shot head's core refuses single frames)
            return self._core.step(frame)
        size = frame.shape[:2]
        small = shrink_frame(frame, self.max_side)
        if mask is not None:
            mask = np.asarray(mask, dtype=np.uint8)
            if mask.shape != size:
                raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the frame is {size[1]}x{size[0]}")
            mask = shrink_mask(mask, self.max_side)
        probabilities = torch.as_tensor(self._core.step(small, mask) if mask is not None else self._core.step(small))
        probabilities = probabilities.float().cpu()
        if tuple(probabilities.shape[-2:]) != size:
            probabilities = F.interpolate(probabilities[None], size=size, mode="bilinear", align_corners=False)[0]
        return probabilities

    def to_ids(self, probabilities: torch.Tensor) -> np.ndarray:
        """(K+1, H, W) probabilities -> (H, W) uint8 object ids (zero-shot: threshold + component clean-up)."""
        if is_video_core(self._core):
            return self._core.to_mask(probabilities)
        from selfvos.inference.one_shot import ids_from_probabilities

        return ids_from_probabilities(probabilities, self.object_ids, getattr(self.one_shot_config, "object_gain", 1.0))

    def segment_video(self, video: LazyVideo, first_mask: Optional[np.ndarray] = None, progress: bool = True, *,
                      boxes: Any = None, points: Any = None) -> Iterator[np.ndarray]:
        """(H, W) uint8 ids for every frame of ``video`` in order; one-shot iff ``first_mask`` or prompts
        (``boxes`` / ``points`` on frame 0, see :meth:`mask_from_prompts`; the mask made is :attr:`prompt_mask`)
        are given.

        Only ``video.frame(t)`` is read: ground-truth masks of the video are never looked at.
        Zero-shot runs in the configured mode (``offline`` sees the whole video first). A frame whose size
        differs from the others is a ``SelfvosInputError`` naming it (:class:`UniformSizeVideo`).
        """
        from tqdm.auto import tqdm

        video = UniformSizeVideo(video)
        self.reset()
        if boxes is not None or points is not None:
            if first_mask is not None:
                raise ValueError("give the first frame's mask or prompts (boxes / points), not both")
            first_mask = self.mask_from_prompts(video.frame(0), boxes, points)
        self._start(first_mask is not None, video.frame(0) if first_mask is not None else None, first_mask)
        if is_video_core(self._core):  # offline mode sees the whole video first
            yield from self._core.segment_video(video, progress=progress)
            return
        desc = f"{self.active_task} {video.name}"
        for t in tqdm(range(len(video)), desc=desc, unit="frame", disable=not progress):
            yield self.to_ids(self.step(video.frame(t), first_mask if t == 0 else None))
