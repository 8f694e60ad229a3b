"""Video instance segmentation (VIS) inference: instance sources and the tracking core of a VIS head (MaskTrack).

Instance source (:class:`InstanceSource`): any callable ``source(frame, frame_index) -> FrameInstances`` with
``frame`` (H, W, 3) uint8 RGB; ``FrameInstances`` holds ``masks`` (N, H, W) bool, ``boxes`` (N, 4) float xyxy
pixel edges (x1, y1 one past the last pixel), ``scores`` (N,) detection scores in [0, 1] and optionally
``class_scores`` (N, C) (then used instead of the head's class head). Built in:

- :class:`GivenInstances`: masks given per frame, as (H, W) id maps (0 background, 255 void, any other value one
  instance) from a folder of indexed PNGs ``<frame name>.png`` or from arrays; scores 1; optionally the instance
  order shuffled per frame and the boxes jittered (ground truth as a stand-in detector);
- :class:`RVOSInstances`: the zero-shot instances of an RVOS model (``RVOSZeroShotCore.frame_ids``), score 1
  (the core exposes no per-instance confidence).

A detector plugs in as a function::

    def detector_source(frame, frame_index):
        masks, scores, probs = my_detector(frame)                  # (N, H, W) bool, (N,), (N, C)
        return FrameInstances(masks, mask_boxes_np(masks), scores, probs)

    core = create_vis_core(selfvos.from_pretrained("runs/masktrack/model"), detector_source)
    tracks = core.segment_video(video); records = core.to_vis_results(video_id=1, tracks=tracks)

:class:`VISCore` (frame by frame, state flat in the video length except the output tracks): instances below
``score_threshold`` are dropped; frames are shrunk to ``max_side`` and padded to the head's stride, masks area-
resized with them; each instance gets an embedding and class probabilities; with the memory (per identity its
latest embedding, box and class, for ``retain_frames`` frames after it was last seen) the assignment scores v
(:func:`~selfvos.heads.masktrack.assignment_scores`) are assigned one-to-one (Hungarian, one "new" column per
instance); new identities are numbered 1, 2, ... in the order of their instances' scores.

A :class:`Track` holds per frame the identity's mask or None, its instance scores and the mean of its class
probabilities; ``category`` = argmax of that mean, ``score`` = mean instance score x the mean probability of the
category. ``to_vis_results`` writes one YouTube-VIS result per track (category id = class index + 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from selfvos.errors import SelfvosInputError
from selfvos.heads.masktrack import assign_identities, assignment_scores, box_iou, identity_logits, jitter_boxes


@dataclass
class FrameInstances:
    """The instances of one frame (module docstring); shapes are checked (``ValueError``)."""

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_scores: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = len(self.masks)
        if self.masks.ndim != 3 or len(self.boxes) != n or len(self.scores) != n:
            raise ValueError(f"instances need masks (N, H, W), boxes (N, 4), scores (N,); got {self.masks.shape}, "
                             f"{self.boxes.shape}, {self.scores.shape}")
        if self.class_scores is not None:
            self.class_scores = np.asarray(self.class_scores, dtype=np.float32)
            if self.class_scores.ndim != 2 or len(self.class_scores) != n:
                raise ValueError(f"class_scores must be (N, C) with N = {n}, got {self.class_scores.shape}")

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def from_ids(cls, ids: np.ndarray) -> "FrameInstances":
        """(H, W) id map -> one instance per id other than 0 and 255, in increasing id order, score 1."""
        ids = np.asarray(ids)
        values = [v for v in np.unique(ids) if v not in (0, 255)]
        masks = np.stack([ids == v for v in values]) if values else np.zeros((0, *ids.shape), bool)
        return cls(masks, mask_boxes_np(masks), np.ones(len(values), np.float32))


class InstanceSource(Protocol):
    """``source(frame (H, W, 3) uint8, frame_index) -> FrameInstances`` of that frame."""

    def __call__(self, frame: np.ndarray, frame_index: int) -> FrameInstances: ...


def mask_boxes_np(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 xyxy pixel-edge boxes (zeros for an empty mask)."""
    from selfvos.heads.masktrack import mask_boxes

    masks = np.asarray(masks, dtype=bool)
    if not len(masks):
        return np.zeros((0, 4), np.float32)
    return mask_boxes(torch.from_numpy(masks)).numpy()


class GivenInstances:
    """Instances from per-frame (H, W) id maps: ``maps`` a sequence of arrays or ``maps(frame_index) -> array``.
    ``shuffle``: the instances' order is a random permutation per frame; ``box_jitter``: boxes moved as in
    training (:func:`~selfvos.heads.masktrack.jitter_boxes`); both seeded by ``(seed, frame_index)``."""

    def __init__(self, maps: Union[Sequence[np.ndarray], Callable[[int], np.ndarray]], shuffle: bool = False,
                 box_jitter: float = 0.0, seed: int = 0, name: str = "instances") -> None:
        self.maps, self.shuffle, self.box_jitter, self.seed, self.name = maps, shuffle, box_jitter, seed, name

    @classmethod
    def from_folder(cls, folder: Union[str, Path], frame_names: Sequence[str], **options: Any) -> "GivenInstances":
        """Indexed PNGs ``folder/<frame name>.png`` (palette or grey; pixel value = instance), one per frame;
        a missing folder or PNG is a ``SelfvosInputError`` naming it (checked now, read lazily)."""
        from selfvos.data.image_io import read_mask

        folder = Path(folder)
        if not folder.is_dir():
            raise SelfvosInputError(folder, "instance folder does not exist" if not folder.exists()
                                    else "is not a folder of per-frame instance PNGs")
        paths = [folder / f"{name}.png" for name in frame_names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise SelfvosInputError(missing[0], f"no instance PNG for frame {missing[0].stem} ({len(missing)} of "
                                                f"{len(paths)} frames missing); name them <frame name>.png")
        return cls(lambda index: read_mask(paths[index]), name=str(folder), **options)

    def __call__(self, frame: np.ndarray, frame_index: int) -> FrameInstances:
        ids = self.maps(frame_index) if callable(self.maps) else self.maps[frame_index]
        ids = np.asarray(ids)
        if ids.shape != tuple(frame.shape[:2]):
            raise SelfvosInputError(self.name, f"frame {frame_index}: instance map is {ids.shape[1]}x{ids.shape[0]} "
                                               f"(WxH) but the frame is {frame.shape[1]}x{frame.shape[0]}")
        found = FrameInstances.from_ids(ids)
        rng = np.random.default_rng([self.seed, frame_index])
        order = rng.permutation(len(found)) if self.shuffle else np.arange(len(found))
        boxes = torch.from_numpy(found.boxes[order])
        if self.box_jitter > 0:
            generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
            boxes = jitter_boxes(boxes, self.box_jitter, ids.shape, generator)
        return FrameInstances(found.masks[order], boxes.numpy(), found.scores[order])


class RVOSInstances:
    """The zero-shot instances of an RVOS model trained zero-shot (``mode="zero_shot"``); the RVOS state is
    reset when a video starts (``frame_index`` 0 or not the previous index + 1)."""

    def __init__(self, model: Any, max_side: Optional[int] = None) -> None:
        from selfvos.inference.core import create_core

        if getattr(model, "architecture", None) != "rvos" or getattr(model.config, "mode", None) != "zero_shot":
            raise SelfvosInputError("--instances", f"needs an RVOS model trained zero-shot (mode zero_shot), got a "
                                                   f"{getattr(model, 'architecture', type(model).__name__)} model"
                                                   + (f" in mode {model.config.mode}" if hasattr(model.config, 'mode')
                                                      else ""))
        self.core = create_core(model, "zero-shot", {} if max_side is None else {"max_side": max_side})
        self._next = 0

    def __call__(self, frame: np.ndarray, frame_index: int) -> FrameInstances:
        if frame_index == 0 or frame_index != self._next:
            self.core.reset()
        self._next = frame_index + 1
        return FrameInstances.from_ids(self.core.frame_ids(frame))


@dataclass
class Track:
    """One identity over a video: ``masks`` per frame ((H, W) bool or None), ``scores`` of its instances,
    ``class_sum`` the sum of their class probabilities (C,)."""

    identity: int
    masks: List[Optional[np.ndarray]]
    scores: List[float] = field(default_factory=list)
    class_sum: Optional[np.ndarray] = None

    @property
    def class_scores(self) -> np.ndarray:
        """Mean class probabilities over the frames the identity is present in."""
        return self.class_sum / max(len(self.scores), 1)

    @property
    def category(self) -> int:
        return int(np.argmax(self.class_scores))

    @property
    def score(self) -> float:
        """Mean instance score x the mean probability of the track's category."""
        return float(np.mean(self.scores)) * float(self.class_scores[self.category])


class VISCore:
    """Per-video tracking state of a VIS head (module docstring). ``segment_video(video) -> [Track]``."""

    def __init__(self, model: Any, config: Any, source: InstanceSource) -> None:
        self.model, self.config, self.source = model.eval(), config, source
        self.reset()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def object_ids(self) -> List[int]:
        return sorted(self._tracks)

    def reset(self) -> None:
        self._tracks: Dict[int, Track] = {}
        self._memory: Dict[int, Dict[str, Any]] = {}  # identity -> embedding, box, class, last frame
        self._frames = 0

    def step(self, frame: np.ndarray, mask: Optional[np.ndarray] = None) -> torch.Tensor:
        raise SelfvosInputError(self.model.architecture, "the vis core tracks instances through whole videos; use "
                                                         "segment_video (or `selfvos segment --task vis`)")

    @torch.inference_mode()
    def _describe(self, frame: np.ndarray, found: FrameInstances) -> tuple:
        """Embeddings (N, E) and class probabilities (N, C) of the frame's instances."""
        from selfvos.data.image_io import shrink_frame

        small = shrink_frame(frame, self.config.max_side or None)
        h, w = small.shape[:2]
        stride = self.model.stride
        ph, pw = h + (-h) % stride, w + (-w) % stride
        image = torch.from_numpy(np.ascontiguousarray(small)).to(self.device).permute(2, 0, 1)[None].float() / 255
        image = F.pad(image, (0, pw - w, 0, ph - h), mode="replicate")
        masks = torch.from_numpy(found.masks).to(self.device)[:, None].float()
        masks = F.pad(F.interpolate(masks, size=(h, w), mode="area")[:, 0], (0, pw - w, 0, ph - h))
        scale = torch.tensor([w / frame.shape[1], h / frame.shape[0]], device=self.device).repeat(2)
        boxes = torch.from_numpy(found.boxes).to(self.device) * scale
        emb, logits = self.model.embed(self.model.features(image), torch.zeros(len(found), dtype=torch.long,
                                                                               device=self.device), boxes, masks)
        probs = found.class_scores if found.class_scores is not None else torch.softmax(logits, 1).cpu().numpy()
        return emb.float(), np.asarray(probs, dtype=np.float32)

    def track_frame(self, frame: np.ndarray, frame_index: int) -> Dict[int, int]:
        """Track one frame: returns {identity: instance index in the source's output} (and extends the tracks)."""
        cfg, t = self.config, self._frames
        found = self.source(frame, frame_index)
        if found.masks.shape[1:] != tuple(frame.shape[:2]):
            raise SelfvosInputError(getattr(self.source, "name", "instances"), f"frame {frame_index}: instance masks "
                                    f"are {found.masks.shape[1:]} but the frame is {frame.shape[:2]}")
        for track in self._tracks.values():
            track.masks.append(None)
        self._frames += 1
        keep = np.flatnonzero((found.scores >= cfg.score_threshold) & found.masks.reshape(len(found), -1).any(1))
        keep = keep[np.argsort(-found.scores[keep], kind="stable")]
        if cfg.retain_frames:
            self._memory = {n: m for n, m in self._memory.items() if t - m["frame"] <= cfg.retain_frames}
        if not len(keep):
            return {}
        found = FrameInstances(found.masks[keep], found.boxes[keep], found.scores[keep],
                               None if found.class_scores is None else found.class_scores[keep])
        emb, probs = self._describe(frame, found)
        classes = probs.argmax(1)
        ids = list(self._memory)
        choice = torch.full((len(found),), -1, dtype=torch.long)
        if ids:
            log_p = torch.log_softmax(identity_logits(emb, torch.stack([self._memory[n]["embedding"] for n in ids])), 1)
            ious = box_iou(torch.from_numpy(found.boxes), torch.stack([self._memory[n]["box"] for n in ids]))
            same = torch.from_numpy(classes[:, None] == np.array([self._memory[n]["class"] for n in ids])[None])
            v = assignment_scores(log_p.cpu(), torch.from_numpy(found.scores), ious, same, cfg.alpha, cfg.beta,
                                  cfg.gamma)
            choice = assign_identities(v)
        result = {}
        for i in range(len(found)):
            identity = ids[int(choice[i])] if choice[i] >= 0 else max(self._tracks, default=0) + 1
            if identity not in self._tracks:
                self._tracks[identity] = Track(identity, [None] * (t + 1), class_sum=np.zeros(probs.shape[1]))
            track = self._tracks[identity]
            track.masks[t] = found.masks[i]
            track.scores.append(float(found.scores[i]))
            track.class_sum = track.class_sum + probs[i]
            self._memory[identity] = {"embedding": emb[i], "box": torch.from_numpy(found.boxes[i]),
                                      "class": int(classes[i]), "frame": t}
            result[identity] = int(keep[i])
        return result

    def segment_video(self, video: Any, progress: bool = False) -> List[Track]:
        """Every frame of ``video`` (``len``, ``frame(i)``) tracked from a fresh state; tracks by identity."""
        from tqdm.auto import tqdm

        self.reset()
        for index in tqdm(range(len(video)), desc=f"vis {getattr(video, 'name', '')}", unit="frame",
                          disable=not progress):
            self.track_frame(video.frame(index), index)
        return [self._tracks[n] for n in sorted(self._tracks)]

    @staticmethod
    def to_vis_results(video_id: int, tracks: Sequence[Track],
                       category_ids: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
        """YouTube-VIS result records (:func:`selfvos.eval.vis.result_record`), one per track; class index c is
        category ``category_ids[c]`` (default c + 1)."""
        from selfvos.eval.vis import result_record

        records = []
        for track in tracks:
            shape = next(m.shape for m in track.masks if m is not None)
            stack = np.stack([m if m is not None else np.zeros(shape, bool) for m in track.masks])
            category = category_ids[track.category] if category_ids is not None else track.category + 1
            records.append(result_record(video_id, category, track.score, stack, [m is not None for m in track.masks]))
        return records


def create_vis_core(model: Any, source: InstanceSource, head: Optional[Mapping[str, Any]] = None,
                    max_side: Optional[int] = None) -> VISCore:
    """The VIS core of a model whose ``tasks`` include ``"vis"``, through the ``CORES`` factory of its
    architecture (``head``: inference-setting overrides; ``max_side``: longest side frames are processed at)."""
    from selfvos.inference.core import architecture_of, supported_tasks
    from selfvos.registry import CORES

    name = architecture_of(model)
    if "vis" not in supported_tasks(model):
        raise SelfvosInputError(name, f"the {name} model runs {' / '.join(supported_tasks(model))} only; video "
                                      "instance segmentation needs a VIS head (e.g. masktrack)")
    return CORES.get(name)(model, "vis", {"instances": source, "head": dict(head or {}), "max_side": max_side})


def track_id_map(tracks: Sequence[Track], t: int, shape: tuple) -> np.ndarray:
    """(H, W) uint8 ids of frame t: identity n painted as ``(n - 1) % 254 + 1`` (255 stays void), later tracks on
    top."""
    ids = np.zeros(shape, np.uint8)
    for track in tracks:
        if track.masks[t] is not None:
            ids[track.masks[t]] = (track.identity - 1) % 254 + 1
    return ids


def render_tracks(frame: np.ndarray, tracks: Sequence[Track], t: int, names: Sequence[str]) -> np.ndarray:
    """Frame t with each present track blended in its palette colour, outlined and labelled
    ``"id <n> <class name>"`` at its box's top-left corner."""
    import cv2

    from selfvos.data.writers import DAVIS_PALETTE
    from selfvos.inference.io import render_overlay

    ids = track_id_map(tracks, t, frame.shape[:2])
    image = np.ascontiguousarray(render_overlay(frame, ids))
    for track in tracks:
        if track.masks[t] is None:
            continue
        x0, y0 = (int(v) for v in mask_boxes_np(track.masks[t][None])[0][:2])
        label = f"id {track.identity} {names[track.category] if track.category < len(names) else track.category}"
        colour = tuple(int(c) for c in DAVIS_PALETTE[(track.identity - 1) % 254 + 1])
        origin = (x0, max(y0 - 3, 10))
        cv2.putText(image, label, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, label, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return image


__all__ = ["FrameInstances", "GivenInstances", "InstanceSource", "RVOSInstances", "Track", "VISCore",
           "create_vis_core", "mask_boxes_np", "render_tracks", "track_id_map"]
