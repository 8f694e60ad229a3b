"""Zero-shot VOS with a pretrained :class:`~selfvos.pretrain.MuGModel`: frame head + COSNet-style co-attention.

Per frame t (features at 1/stride of the encode size, ``Q`` query cells, ``R`` cells per reference):

1. encode ONCE at ``input_max_side`` and cache ``x_t = embed(phi)`` (D, h, w) and ``p_t = sigmoid(rho(phi))``
   (with ``flip_average`` the frame-head logit is the mean of the frame's and its mirror image's, mirrored
   back: the two share one batched backbone call);
2. for each of N reference frames r of the same video, the raw co-attention logits
   ``A = x_t^T W x_r`` (``MuGModel.coattention``, (Q, R)) get ONE softmax over the reference positions
   (COSNet's ``S^c``, no extra temperature: the learned W is the temperature) and carry the reference
   foreground to the query: ``c_r = softmax_R(A) p_r`` (Q,). Because rho is a linear 1x1 conv this is the
   COSNet attention summary ``Z = V_r S^c`` read by the frame head (``carry="logit"`` carries the logits,
   i.e. exactly ``sigmoid(rho(Z))``; ``"probability"`` carries probabilities);
3. ``s_t = (1 - lambda) p_t + lambda mean_r c_r`` with ``lambda = reference_weight``: the untrained COSNet
   gate/fusion head is replaced by this constant gate until a fusion head is trained;
4. motion cue (``motion_weight`` mu > 0): bilinear upsampling to the encoded frame, then
   ``s_t = (1 - mu) s_t + mu M_t`` with ``M_t`` the camera-compensated motion saliency of
   :class:`selfvos.pseudo.MotionSaliency` from DIS flow to the previous frame (online; the next one too
   offline, geometric mean) -- the same classical, label-free cue the pseudo-labels and the bootstrap
   relabeling fuse with the frame head; the first frame of an online run has no motion and uses ``s_t``;
5. temporal consistency: EMA ``q_t = (1 - m) s_t + m q_{t-1}`` (``temporal_momentum`` m, 0 = off), then
   the propagated prior of ``temporal.py``: ``q_t = (1 - w) q_t + w P_t`` (``propagation_weight`` w) with
   ``P_t`` the *refined outputs* of the first and the last ``propagation_frames`` frames carried to frame t
   by top-k local-window feature affinity (the one-shot propagation, with zero-shot's own answers as labels);
6. optional refinement (``grabcut_iterations`` > 0): threshold + largest components + hole filling, then
   GrabCut on the encoded frame (:func:`selfvos.pseudo.fusion.grabcut_refine`, as the relabeling does)
   snaps the stride-8 mask to image edges; when the refined mask overlaps the coarse one by less than
   ``grabcut_min_iou`` (IoU) GrabCut has lost the object to a background of the same colours and the
   coarse mask is kept; the soft map is made consistent with the chosen mask;
7. bilinear upsampling to the frame, threshold, keep the ``max_components`` largest connected components.

Modes: ``online`` (causal; the references are the last ``num_references`` cached frames, one taken every
``reference_stride`` frames, a bounded deque) and ``offline`` (``num_references`` frames evenly spaced over
the whole video; a query never uses itself). COSNet's reference code re-encodes the query for every
reference (40 s/frame on CPU); here each frame is encoded once and its embedding/probability cached.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from selfvos.data.image_io import shrink_frame
from selfvos.data.video import LazyVideo
from selfvos.eval.davis import jaccard
from selfvos.inference.temporal import PropagatedPrior
from selfvos.pseudo import fusion
from selfvos.pseudo.base import upsample_map
from selfvos.pseudo.flow import dis_flow
from selfvos.pseudo.motion import MotionSaliency

if TYPE_CHECKING:
    from selfvos.pretrain.model import MuGModel

MODES = ("online", "offline")
CARRY = ("probability", "logit")


@dataclass
class ZeroShotConfig:
    """Zero-shot inference settings (see the module docstring for the formula).

    input_max_side: frames are shrunk (area) so the longer side is at most this before encoding; outputs
        are upsampled back to the frame size; None encodes at full size. The motion cue and GrabCut work
        at this size too.
    motion_weight, grabcut_iterations: the label-free cues (steps 4 and 6); the defaults 0.5 and 3 are
        the bootstrap relabeling's. 0 switches either off.
    flip_average: mirror test-time averaging of the frame head (step 1). Off: on DAVIS-2016 train it scored
        60.3 against 60.1 at three quarters of the speed (one-shot, where it helps, has it on).

    The defaults were chosen on DAVIS-2016 *train* (all 30 sequences, GT used only to choose) with the
    52-minute CPU model of ``recipes/configs/mug_davis16_cpu.yaml``: train J&F 56.4 with the earlier
    defaults (reference_weight 0.5, temporal_momentum 0.5, no IoU guard) -> 58.3 with reference_weight 0
    -> 59.2 with grabcut_min_iou 0.3 -> 59.7 with temporal_momentum 0.25 (in the search; re-measured by
    ``benchmarks/davis16_train.py --task zero-shot``: 56.4 -> 60.1). One decision saw the evaluation set:
    on train threshold 0.4 scored higher (61.1; 0.3 / 0.35 / 0.6: 57.4 / 59.7 / 55.8), but on
    davis2016-val-dev it lost 9 points (50.2 against 59.3), so a choice that fragile was not adopted and
    the threshold stays at the relabel rule's 0.5 (both rows are in ``benchmarks/davis16.py``).
    The co-attention references stay available (``reference_weight`` > 0, ``num_references``): with a
    frame head this weak they carry its mistakes from other frames (train: 57.1 at 0.25, 56.4 at 0.5).
    The propagated prior (``propagation_weight``, ``temporal.py``) is off by default for the same reason as
    threshold 0.4: on train it scored higher (60.1 -> 61.9 at weight 0.25 with the EMA kept, the
    benchmark's row; in the search 62.1 at 0.5 without the EMA, 59.3 at 0.65), on davis2016-val-dev it
    lost 2 points (59.3 -> 57.3: blackswan 71.9 -> 64.8; also without the first frame as anchor), and it
    costs ~0.2 s per frame (radius 12 on 2 cores). Left at the relabel rule's values after a train sweep
    (``benchmarks/davis16_train.py --task zero-shot --vary motion_weight=0.35,0.65 --vary max_components=1``):
    motion_weight 0.35 / 0.5 / 0.65: 60.1 / 60.1 / 59.2; max_components 1: 59.1.
    grabcut_margin: GrabCut runs on the box around the object's uncertain band grown by this many pixels
        (None: the whole frame). Train, with the 1,600-step model retrained on an AVX2 machine
        (``--vary grabcut_margin=30,60``, benchmarks/results/zero_shot_train_grabcut_margin.json): whole
        frame / 60 / 30 px: J&F 60.11 / 60.11 / 59.30 at 3.50 / 4.16 / 4.38 frames/s, so 60.
    """

    mode: str = "online"
    num_references: int = 5
    reference_stride: int = 5
    reference_weight: float = 0.0
    carry: str = "probability"
    temporal_momentum: float = 0.25
    propagation_weight: float = 0.0
    propagation_frames: int = 5
    propagation_topk: int = 10
    propagation_temperature: float = 0.07
    propagation_radius: int = 12
    threshold: float = 0.5
    max_components: int = 2
    min_component_ratio: float = 0.1
    input_max_side: Optional[int] = 432
    flip_average: bool = False
    motion_weight: float = 0.5
    grabcut_iterations: int = 3
    grabcut_min_iou: float = 0.3
    grabcut_margin: Optional[int] = 60

    def validate(self) -> "ZeroShotConfig":
        if self.mode not in MODES:
            raise ValueError(f"zero-shot mode must be one of {MODES}, got {self.mode!r}")
        if self.carry not in CARRY:
            raise ValueError(f"zero-shot carry must be one of {CARRY}, got {self.carry!r}")
        if self.num_references < 0 or self.reference_stride < 1:
            raise ValueError("num_references must be >= 0 and reference_stride >= 1")
        if self.grabcut_iterations < 0 or (self.grabcut_margin is not None and self.grabcut_margin < 0):
            raise ValueError(f"grabcut_iterations and grabcut_margin must be >= 0, got {self.grabcut_iterations}, "
                             f"{self.grabcut_margin}")
        if self.propagation_frames < 0 or self.propagation_topk < 1 or self.propagation_temperature <= 0 \
                or self.propagation_radius < 0:
            raise ValueError("propagation_frames/radius must be >= 0, propagation_topk >= 1, temperature > 0")
        for name in ("reference_weight", "temporal_momentum", "threshold", "motion_weight", "grabcut_min_iou",
                     "propagation_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        return self


class EncodedFrame(NamedTuple):
    """What the cache keeps of one frame: unit-norm backbone features (C, h, w) (for the propagated prior;
    None when it is off), embedding (D, h, w), frame-head logit and probability (h, w), and the frame as
    encoded, (H', W', 3) uint8 (for the motion cue and the refinement)."""

    features: Optional[torch.Tensor]
    embedding: torch.Tensor
    logit: torch.Tensor
    probability: torch.Tensor
    size: Tuple[int, int]  # (H, W) of the original frame
    image: np.ndarray


def carry_reference_foreground(model: "MuGModel", query: torch.Tensor, references: torch.Tensor,
                               reference_scores: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """Attention-weighted reference scores, averaged over references.

    query (D, h, w), references (N, D, h', w'), reference_scores (N, h', w') -> (h, w):
    ``mean_n softmax_over_cells_of_n(x_q^T W x_n) @ scores_n``. All references go through one
    ``MuGModel.coattention`` call per chunk of query rows; chunks keep the (rows, N, R) logits under
    ``max_elements`` floats.
    """
    n, d = references.shape[:2]
    cells = references.shape[-2] * references.shape[-1]
    keys = references.permute(1, 0, 2, 3).reshape(1, d, n * cells, 1)  # every reference cell as one column
    scores = reference_scores.reshape(n, cells)
    rows = query.reshape(d, -1, 1)
    out = []
    for chunk in torch.split(torch.arange(rows.shape[1], device=query.device), max(1, max_elements // (n * cells))):
        logits = model.coattention(rows[None, :, chunk], keys)[0].reshape(len(chunk), n, cells)  # raw A
        attention = torch.softmax(logits, dim=-1)  # over each reference's cells (S^c)
        out.append(torch.einsum("qnr,nr->q", attention, scores) / n)
    return torch.cat(out).reshape(query.shape[-2:])


def offline_reference_indices(num_frames: int, num_references: int) -> List[int]:
    """``num_references`` frame indices evenly spaced over ``[0, num_frames - 1]`` (unique, sorted)."""
    if num_frames <= 0 or num_references <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(num_references, num_frames))})


def keep_largest_components(mask: np.ndarray, max_components: int, min_ratio: float = 0.0) -> np.ndarray:
    """(H, W) bool/uint8 -> uint8 {0, 1} keeping the ``max_components`` largest 8-connected components
    whose area is at least ``min_ratio`` x the largest one (``max_components <= 0`` keeps all)."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if max_components <= 0 or not binary.any():
        return binary
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable")[:max_components]
    keep = [i + 1 for i in order if areas[i] >= min_ratio * areas[order[0]]]
    return np.isin(labels, keep).astype(np.uint8)


class ZeroShotSegmenter:
    """Frame head + co-attention (+ motion) zero-shot segmentation; holds the per-video state, never weights.

    >>> seg = ZeroShotSegmenter(model, ZeroShotConfig(mode="online"))
    >>> probs = seg.step(frame)                      # (2, H, W): background, foreground
    >>> masks = list(seg.segment_video(video))       # (H, W) uint8 {0, 1} per frame (either mode)

    The model is switched to eval mode (batch-norm statistics are never updated at inference).
    """

    def __init__(self, model: "MuGModel", cfg: Optional[ZeroShotConfig] = None) -> None:
        self.model = model.eval()
        self.cfg = (cfg or ZeroShotConfig()).validate()
        self.motion = None
        if self.cfg.motion_weight > 0:
            self.motion = MotionSaliency()
        self.prior = None
        if self.cfg.propagation_weight > 0:
            self.prior = PropagatedPrior(self.cfg.propagation_frames, self.cfg.propagation_topk,
                                         self.cfg.propagation_temperature, self.cfg.propagation_radius)
        self.reset()

    def reset(self) -> None:
        """Forget the video: empty the reference cache, the temporal state and the propagated prior."""
        self._cache: Deque[EncodedFrame] = deque(maxlen=max(self.cfg.num_references, 1))
        self._previous: Optional[np.ndarray] = None
        self._previous_image: Optional[np.ndarray] = None
        self._index = 0
        if self.prior is not None:
            self.prior.reset()

    @property
    def _uses_references(self) -> bool:
        """Whether co-attention references are read at all (otherwise none are cached or encoded ahead)."""
        return self.cfg.num_references > 0 and self.cfg.reference_weight > 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, frame: np.ndarray) -> EncodedFrame:
        """(H, W, 3) uint8 RGB -> :class:`EncodedFrame` (one backbone call at ``input_max_side``)."""
        small = np.ascontiguousarray(shrink_frame(np.asarray(frame), self.cfg.input_max_side))
        image = torch.from_numpy(small).to(self.device).permute(2, 0, 1)[None].float() / 255
        if self.cfg.flip_average:
            image = torch.cat([image, image.flip(-1)])
        features = self.model.encode(image)  # (1 or 2, C, h, w)
        logits = self.model.frame_logits(features)[:, 0].float()
        logit = logits[0] if len(logits) == 1 else (logits[0] + logits[1].flip(-1)) / 2
        features = features[:1]
        embedding = self.model.embed(features)[0]
        unit = None if self.prior is None else torch.nn.functional.normalize(features[0].float(), dim=0)
        return EncodedFrame(unit, embedding, logit, torch.sigmoid(logit), tuple(frame.shape[:2]), small)

    @torch.no_grad()
    def score(self, query: EncodedFrame, references: Sequence[EncodedFrame]) -> torch.Tensor:
        """Fused foreground probability of frame head and co-attention, (h, w) at feature resolution."""
        if not references or self.cfg.reference_weight == 0:
            return query.probability
        embeddings = torch.stack([r.embedding for r in references])
        use_logit = self.cfg.carry == "logit"
        scores = torch.stack([r.logit if use_logit else r.probability for r in references])
        carried = carry_reference_foreground(self.model, query.embedding, embeddings, scores)
        carried = torch.sigmoid(carried) if use_logit else carried
        weight = self.cfg.reference_weight
        return (1 - weight) * query.probability + weight * carried

    def _motion(self, query: EncodedFrame, neighbours: Sequence[np.ndarray]) -> Optional[np.ndarray]:
        """Step 4's motion saliency (H', W') against the encoded ``neighbours`` images, or None (off / no neighbour)."""
        if self.motion is None or not neighbours:
            return None
        return self.motion.score_from_flows([dis_flow(query.image, n, self.motion.preset) for n in neighbours])

    def _fuse(self, query: EncodedFrame, references: Sequence[EncodedFrame],
              motion: Optional[np.ndarray]) -> np.ndarray:
        """Steps 2-5 of the module docstring: (H', W') float32 foreground map at the encoded size, before
        refinement. Updates the EMA state and reads the prior, so frames must come in order, each after the
        previous one's output was remembered (:meth:`_remember`)."""
        cfg = self.cfg
        p = upsample_map(self.score(query, references).cpu().numpy(), query.image.shape[:2])
        if motion is not None:
            p = (1 - cfg.motion_weight) * p + cfg.motion_weight * motion
        m = cfg.temporal_momentum
        if self._previous is not None and m > 0 and self._previous.shape == p.shape:
            p = (1 - m) * p + m * self._previous
        self._previous = p
        prior = None if self.prior is None else self.prior.predict(query.features)
        if prior is not None:
            w = cfg.propagation_weight
            p = (1 - w) * p + w * upsample_map(prior.cpu().numpy(), p.shape)
        return p

    def _refine(self, query: EncodedFrame, p: np.ndarray) -> np.ndarray:
        """Step 6: GrabCut refinement (if on) of the fused map -> (H', W') output foreground at the encoded size.
        Stateless, so it may run in a worker thread while the next frame is encoded."""
        cfg = self.cfg
        if cfg.grabcut_iterations > 0:
            coarse = fusion.fill_holes(fusion.keep_largest_components(p >= cfg.threshold, cfg.min_component_ratio))
            binary = fusion.grabcut_refine(query.image, coarse, p, iterations=cfg.grabcut_iterations,
                                           margin_px=cfg.grabcut_margin)
            binary = fusion.fill_holes(fusion.keep_largest_components(binary, cfg.min_component_ratio))
            if jaccard(coarse, binary) < cfg.grabcut_min_iou:  # IoU, 1 when both are empty
                binary = coarse  # GrabCut lost the object (background of the same colours): keep the coarse mask
            # consistent with the refined mask at `threshold` (soft_from_binary's boundary is 0.5)
            p = fusion.soft_from_binary(np.clip(p - cfg.threshold + 0.5, 0, 1), binary) + cfg.threshold - 0.5
        return p

    def _remember(self, query: EncodedFrame, output: np.ndarray) -> torch.Tensor:
        """Store the output for the propagated prior; step 7's upsampling -> (2, H, W) probabilities."""
        if self.prior is not None:
            self.prior.remember(query.features, output)
        fg = torch.from_numpy(upsample_map(output, query.size))
        return torch.stack([1 - fg, fg])

    def _online_prepare(self, frame: np.ndarray) -> Tuple[EncodedFrame, List[EncodedFrame], Optional[np.ndarray]]:
        """Encode one frame causally, compute its motion cue, update the reference cache and the motion state."""
        encoded = self.encode(frame)
        references = list(self._cache)
        motion = self._motion(encoded, [] if self._previous_image is None else [self._previous_image])
        if self._uses_references and self._index % self.cfg.reference_stride == 0:
            self._cache.append(encoded)
        self._previous_image = encoded.image
        self._index += 1
        return encoded, references, motion

    def step(self, frame: np.ndarray) -> torch.Tensor:
        """Online (causal) step: (H, W, 3) uint8 -> (2, H, W) float32 probabilities (background, foreground)."""
        encoded, references, motion = self._online_prepare(frame)
        return self._remember(encoded, self._refine(encoded, self._fuse(encoded, references, motion)))

    def to_mask(self, probabilities: torch.Tensor) -> np.ndarray:
        """(2, H, W) probabilities -> (H, W) uint8 {0, 1}: threshold + largest-components clean-up."""
        foreground = probabilities[1].numpy() > self.cfg.threshold
        return keep_largest_components(foreground, self.cfg.max_components, self.cfg.min_component_ratio)

    def segment_video(self, video: LazyVideo, progress: bool = False) -> Iterator[np.ndarray]:
        """(H, W) uint8 {0, 1} mask per frame, in order, in the configured mode (state is reset first).

        The refinement of frame t runs in a worker thread while frame t + 1 is encoded and its motion cue
        computed (OpenCV releases the GIL); the fusion of t + 1 then waits for t's output (the propagated
        prior reads it). The masks are identical to stepping frame by frame.
        """
        from concurrent.futures import Future, ThreadPoolExecutor

        from tqdm.auto import tqdm

        self.reset()
        frames = tqdm(range(len(video)), desc=f"zero-shot {video.name}", unit="frame", disable=not progress)
        if self.cfg.mode == "online":
            prepared = (self._online_prepare(video.frame(t)) for t in frames)
        else:
            prepared = self._offline_prepare(video, frames)
        pending: Optional[Tuple[EncodedFrame, Future]] = None
        with ThreadPoolExecutor(max_workers=1) as pool:
            for encoded, references, motion in prepared:
                if pending is not None:
                    yield self.to_mask(self._remember(pending[0], pending[1].result()))
                p = self._fuse(encoded, references, motion)
                pending = (encoded, pool.submit(self._refine, encoded, p))
            if pending is not None:
                yield self.to_mask(self._remember(pending[0], pending[1].result()))

    def _offline_prepare(self, video: LazyVideo, frames: Iterable[int]
                         ) -> Iterator[Tuple[EncodedFrame, List[EncodedFrame], Optional[np.ndarray]]]:
        """Offline mode: references spread over the whole video, motion to both neighbours."""
        wanted = self.cfg.num_references if self._uses_references else 0
        cache: Dict[int, EncodedFrame] = {
            i: self.encode(video.frame(i)) for i in offline_reference_indices(len(video), wanted)
        }
        shrunk: Dict[int, np.ndarray] = {}  # encoded-size images of t - 1 .. t + 1 for the motion cue

        def small(i: int) -> np.ndarray:
            if i not in shrunk:
                shrunk[i] = shrink_frame(video.frame(i), self.cfg.input_max_side)
            return shrunk[i]

        for t in frames:
            current = cache[t] if t in cache else self.encode(video.frame(t))
            shrunk[t] = current.image
            neighbours = [] if self.motion is None else [small(j) for j in (t - 1, t + 1) if 0 <= j < len(video)]
            shrunk.pop(t - 1, None)
            references = [e for i, e in cache.items() if i != t]
            yield current, references, self._motion(current, neighbours)
