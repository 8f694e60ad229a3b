"""The tracking core of a VIS head (MaskTrack): instances of each frame linked into identities, streamed frame by
frame with a state that holds no full-resolution mask.

Instances come from an instance source (:mod:`selfvos.inference.vis`: :class:`FrameInstances`,
:class:`GivenInstances`, any detector function) or :class:`RVOSInstances`: the zero-shot instances of an RVOS model
(``RVOSZeroShotCore.frame_instances``), instance score ``s = 1 - p_stop`` of its slot (RSIS ranks its instances by
their objectness, the complement of the stop probability, times the class probability; RVOS has no class branch).

:class:`VISCore` per frame (:meth:`~VISCore.track_frame`): instances below ``score_threshold`` are dropped; frames
are shrunk to ``max_side`` and padded to the head's stride, masks area-resized with them; each instance gets an
embedding and class probabilities; with the memory (per identity its latest embedding, box and class, for
``retain_frames`` frames after it was last seen) the assignment scores v
(:func:`~selfvos.heads.masktrack.assignment_scores`) are assigned one-to-one (Hungarian, one "new" column per
instance); new identities are numbered 1, 2, ... in the order of their instances' scores.

State (bounded): a :class:`Track` keeps per frame the compressed RLE of the identity's mask
(:func:`selfvos.eval.vis.encode_rle`) or None, its instance scores and the sum of its class probabilities; the
memory is flat in the video length. After T frames the state has grown by the RLEs of the instances kept plus one
list entry per track and frame, never by an (H, W) array. The masks of a frame are handed out once, as it is
tracked: :meth:`~VISCore.frames` yields a :class:`VISFrame` per frame (its identities' masks and the (H, W) id map)
for writers that stream; :meth:`~VISCore.segment_video` runs the same loop and returns the tracks.

``category`` of a track = argmax of its mean class probabilities, ``score`` = mean instance score x the mean
probability of the category. ``to_vis_results`` writes one YouTube-VIS result per track (category id = class
index + 1) from the stored RLEs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from selfvos.errors import SelfvosInputError
from selfvos.heads.masktrack import assign_identities, assignment_scores, box_iou, identity_logits
from selfvos.inference.vis import (
    FrameInstances,
    GivenInstances,
    InstanceSource,
    create_vis_core,
    mask_boxes_np,
)

RLE = Dict[str, Any]


class RVOSInstances:
    """The zero-shot instances of an RVOS model trained zero-shot (``mode="zero_shot"``), score ``1 - p_stop`` of
    each instance's slot; the RVOS state is reset when a video starts (``frame_index`` 0 or not the previous
    index + 1)."""

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
        ids, stop = self.core.frame_instances(frame)
        slots = FrameInstances.ids_of(ids).astype(np.int64) - 1  # instance id i + 1 is slot i
        return FrameInstances.from_ids(ids, 1.0 - np.asarray(stop, np.float32)[slots])


@dataclass
class Track:
    """One identity over a video: ``segmentations`` per frame (compressed RLE of its (H, W) mask, or None where
    absent), ``size`` (H, W), ``scores`` of its instances, ``class_sum`` the sum of their class probabilities (C,)."""

    identity: int
    size: Tuple[int, int]
    segmentations: List[Optional[RLE]] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    class_sum: Optional[np.ndarray] = None

    @property
    def present(self) -> List[bool]:
        return [s is not None for s in self.segmentations]

    def mask(self, t: int) -> Optional[np.ndarray]:
        """(H, W) bool mask of frame t (decoded from its RLE), None where the identity is absent."""
        from selfvos.eval.vis import decode_rle

        rle = self.segmentations[t]
        return None if rle is None else decode_rle(rle, *self.size).astype(bool)

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


@dataclass
class VISFrame:
    """One tracked frame: ``frame`` (H, W, 3), ``masks`` {identity: (H, W) bool} of the identities present,
    ``categories`` {identity: class index so far (argmax of the track's mean class probabilities up to this
    frame)}, ``instances`` {identity: index of its instance in the source's output}."""

    index: int
    frame: np.ndarray
    masks: Dict[int, np.ndarray]
    categories: Dict[int, int]
    instances: Dict[int, int]

    @property
    def ids(self) -> np.ndarray:
        """(H, W) uint8 identity map (:func:`paint_ids`)."""
        return paint_ids(self.masks, self.frame.shape[:2])


def paint_ids(masks: Mapping[int, np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 ids: identity n painted as ``(n - 1) % 254 + 1`` (255 stays void), in increasing identity
    order (a larger identity on top)."""
    ids = np.zeros(shape, np.uint8)
    for identity in sorted(masks):
        ids[masks[identity]] = (identity - 1) % 254 + 1
    return ids


class VISCore:
    """Per-video tracking state of a VIS head (module docstring). ``segment_video(video) -> [Track]``,
    ``frames(video) -> iterator of VISFrame``."""

    def __init__(self, model: Any, config: Any, source: InstanceSource) -> None:
        self.model, self.config, self.source = model.eval(), config, source
        self.reset()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def object_ids(self) -> List[int]:
        return sorted(self._tracks)

    @property
    def tracks(self) -> List[Track]:
        """The tracks of the current video so far, by identity."""
        return [self._tracks[n] for n in sorted(self._tracks)]

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

    def track_frame(self, frame: np.ndarray, frame_index: int) -> VISFrame:
        """Track one frame: extends the tracks (one RLE per identity present) and returns the frame's masks."""
        from selfvos.eval.vis import encode_rle

        cfg, t = self.config, self._frames
        found = self.source(frame, frame_index)
        if found.masks.shape[1:] != tuple(frame.shape[:2]):
            raise SelfvosInputError(getattr(self.source, "name", "instances"), f"frame {frame_index}: instance masks "
                                    f"are {found.masks.shape[1:]} but the frame is {frame.shape[:2]}")
        for track in self._tracks.values():
            track.segmentations.append(None)
        self._frames += 1
        out = VISFrame(frame_index, frame, {}, {}, {})
        keep = np.flatnonzero((found.scores >= cfg.score_threshold) & found.masks.reshape(len(found), -1).any(1))
        keep = keep[np.argsort(-found.scores[keep], kind="stable")]
        if cfg.retain_frames:
            self._memory = {n: m for n, m in self._memory.items() if t - m["frame"] <= cfg.retain_frames}
        if not len(keep):
            return out
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
        for i in range(len(found)):
            identity = ids[int(choice[i])] if choice[i] >= 0 else max(self._tracks, default=0) + 1
            if identity not in self._tracks:
                self._tracks[identity] = Track(identity, tuple(frame.shape[:2]), [None] * (t + 1),
                                               class_sum=np.zeros(probs.shape[1]))
            track = self._tracks[identity]
            track.segmentations[t] = encode_rle(found.masks[i])
            track.scores.append(float(found.scores[i]))
            track.class_sum = track.class_sum + probs[i]
            self._memory[identity] = {"embedding": emb[i].clone(), "box": torch.from_numpy(found.boxes[i].copy()),
                                      "class": int(classes[i]), "frame": t}
            out.masks[identity], out.categories[identity] = found.masks[i], track.category
            out.instances[identity] = int(keep[i])
        return out

    def frames(self, video: Any, progress: bool = False) -> Iterator[VISFrame]:
        """Every frame of ``video`` (``len``, ``frame(i)``) tracked from a fresh state, yielded as it is tracked;
        afterwards ``tracks`` holds the video's tracks."""
        from tqdm.auto import tqdm

        self.reset()
        for index in tqdm(range(len(video)), desc=f"vis {getattr(video, 'name', '')}", unit="frame",
                          disable=not progress):
            yield self.track_frame(video.frame(index), index)

    def segment_video(self, video: Any, progress: bool = False) -> List[Track]:
        """Every frame of ``video`` tracked from a fresh state (:meth:`frames`); the tracks by identity."""
        for _ in self.frames(video, progress):
            pass
        return self.tracks

    @staticmethod
    def to_vis_results(video_id: int, tracks: Sequence[Track],
                       category_ids: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
        """YouTube-VIS result records (the fields of :func:`selfvos.eval.vis.result_record`), one per track, from
        the tracks' RLEs; class index c is category ``category_ids[c]`` (default c + 1)."""
        records = []
        for track in tracks:
            category = category_ids[track.category] if category_ids is not None else track.category + 1
            records.append({"video_id": int(video_id), "category_id": int(category), "score": float(track.score),
                            "segmentations": list(track.segmentations)})
        return records


def track_id_map(tracks: Sequence[Track], t: int, shape: Tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 ids of frame t decoded from the tracks' RLEs (:func:`paint_ids`)."""
    return paint_ids({track.identity: track.mask(t) for track in tracks if track.segmentations[t] is not None}, shape)


def render_frame(tracked: VISFrame, names: Sequence[str]) -> np.ndarray:
    """The frame with each identity present blended in its palette colour, outlined and labelled
    ``"id <n> <class name>"`` (its class so far) at its box's top-left corner."""
    import cv2

    from selfvos.data.writers import DAVIS_PALETTE
    from selfvos.inference.io import render_overlay

    image = np.ascontiguousarray(render_overlay(tracked.frame, tracked.ids))
    for identity in sorted(tracked.masks):
        x0, y0 = (int(v) for v in mask_boxes_np(tracked.masks[identity][None])[0][:2])
        category = tracked.categories[identity]
        label = f"id {identity} {names[category] if category < len(names) else category}"
        colour = tuple(int(c) for c in DAVIS_PALETTE[(identity - 1) % 254 + 1])
        origin = (x0, max(y0 - 3, 10))
        cv2.putText(image, label, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, label, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return image


__all__ = ["FrameInstances", "GivenInstances", "InstanceSource", "RVOSInstances", "Track", "VISCore", "VISFrame",
           "create_vis_core", "mask_boxes_np", "paint_ids", "render_frame", "track_id_map"]
