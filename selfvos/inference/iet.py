"""IET-style zero-shot video object segmentation: instance embeddings + motion + seeds + a graph cut.

After Li et al., "Instance Embedding Transfer to Unsupervised Video Object Segmentation" (CVPR 2018), as
the source survey (``seeds/000_*``) describes it: embeddings from an image network, a motion-based bilateral
network that separates the background from moving objects using motion and embeddings, foreground /
background seed embeddings, and a graph cut that propagates the seed labels to every pixel. No label and no
training: everything below runs on one video at inference time.

Per video, at a working size (longest side ``IETConfig.max_side``, downscaled only):

1. **Instance embeddings** ``e_t`` (C, h, w): ``embed(frames (T, H, W, 3) uint8) -> (T, C, h', w')`` (the selfvos
   backbone through :func:`model_embedder`, or any callable), L2-normalised over C, optionally reduced to
   ``pca_dim`` principal components of the whole video (then re-normalised), bilinearly upsampled to the
   working size and normalised again.
2. **Motion saliency, bilaterally filtered**: the initial score ``m_t`` is the camera-compensated motion
   residual of :class:`selfvos.pseudo.motion.MotionSaliency` (DIS flow to frames t-1 and t+1, RANSAC affine
   camera fit, soft Otsu score, geometric mean of the two directions). It is smoothed by a joint bilateral
   filter in the space ``f = (e / sigma_embedding, xy / (sigma_position * max(h, w)), Lab / sigma_colour)``:
   the score and the features are averaged over ``bilateral_cell`` x ``bilateral_cell`` cells (splat), and every
   pixel reads the Gaussian-kernel-weighted mean ``sum_j k(f_i, g_j) m_j / sum_j k(f_i, g_j)`` of the cell
   scores (slice). Pixels of one object (close in embedding and position) therefore share a score, so a
   textureless object interior where flow is weak inherits its edges' motion and flow noise on the background
   is voted away.
3. **Seeds**: per frame the pixels whose filtered score is in the top ``fg_seed_fraction`` and at least
   ``fg_min_score`` are foreground seeds, the bottom ``bg_seed_fraction`` background seeds (at most
   ``max_seeds`` of each, drawn with a fixed generator). A frame without foreground seeds (no reliable motion)
   borrows the seeds of the nearest frame that has them. Per pixel
   ``p_seed = softmax([max_s cos(e, s_fg), max_s cos(e, s_bg)] / seed_temperature)[0]`` and the foreground
   probability is ``p_fg = (1 - motion_weight) p_seed + motion_weight m~`` with ``m~`` the filtered motion score
   (``motion_weight`` 0 is the survey's pure seed-similarity unary).
4. **Graph cut** per frame with PyMaxflow (Boykov-Kolmogorov max-flow on the 4-connected pixel grid):
   unary ``-log p`` (clipped at ``unary_eps``), contrast-sensitive Potts pairwise
   ``pairwise_weight * exp(-||d||^2 / (2 <||d||^2>))`` on Lab colour (or embedding) differences ``d``, and,
   for temporal consistency, the previous frame's segmentation warped to frame t by the flow t -> t-1 as a
   further unary: disagreeing with it costs ``temporal_weight`` per pixel (frames are cut in order).

Differences from the paper (from the paper as recalled; not re-checked line by line):

- The paper's embeddings come from an instance-embedding network trained on static images with instance
  labels, and it also scores seeds with an *objectness* branch (semantic segmentation). Here the embeddings are
  the label-free selfvos backbone features and there is no objectness term: seeds are chosen by motion alone.
- The paper's motion-based bilateral network is a *learned* bilateral filter (permutohedral lattice, filter
  weights trained on DAVIS-2016 train masks) that predicts the background from optical flow and embeddings.
  Here the filter is a fixed Gaussian kernel with hand-set widths, evaluated densely between pixels and a
  grid of cell averages (no lattice, no learning), and its input is the RANSAC camera-motion residual rather
  than raw flow.
- ``motion_weight`` mixes the filtered motion score into the per-pixel probability. With the label-free
  selfvos backbone (much weaker instance embeddings than the paper's) the seed similarity alone misses object
  parts: on 10 DAVIS-2016 train sequences (first 40 frames, ``runs/mug_davis16_cpu`` weights, J at 240p) the
  defaults reach mean J 0.485 against 0.398 with ``motion_weight`` 0 (0.34 with 0 and 64 seeds / a 0.4
  background fraction). Defaults were chosen there, never on val-dev.
- The paper samples seeds at embedding-edge minima and links seeds across frames; here seeds are the extreme
  quantiles of the filtered score, and frames are linked by the flow-warped temporal unary instead.
- The paper refines its per-pixel foreground probability with a graph-based model; the contrast-sensitive
  grid graph cut and its temporal unary here are the standard GrabCut-style choices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple, Union

import cv2
import maxflow
import numpy as np
import torch
import torch.nn.functional as F

from selfvos.pseudo.base import downscale
from selfvos.pseudo.flow import DIS_PRESETS, dis_flow
from selfvos.pseudo.motion import MotionSaliency

if TYPE_CHECKING:
    from selfvos.pretrain.model import MuGModel

Embedder = Callable[[np.ndarray], Union[np.ndarray, torch.Tensor]]
PAIRWISE_FEATURES = ("colour", "embedding")


@dataclass
class IETConfig:
    """Every constant of the IET zero-shot method (see the module docstring for where each one acts).

    Sizes are in pixels of the working frame unless named relative; fractions are of the frame's pixels.
    """

    max_side: int = 160  # working size: longest side (frames are only ever downscaled); 0 = input size
    pca_dim: int = 32  # embedding channels kept (principal components of the video); 0 = all
    flow_preset: str = "medium"  # DIS preset of the flow
    camera_model: str = "affine"  # camera-motion model of the residual ("affine" or "homography")
    min_motion_px: float = 0.5  # motion floor at a 480-px longest side (MotionSaliency's)
    bilateral_cell: int = 4  # splat cell side of the bilateral filter
    sigma_embedding: float = 0.3  # kernel width on unit embeddings (squared distance 2 - 2 cos)
    sigma_position: float = 0.15  # kernel width on position, relative to the working longest side
    sigma_colour: float = 0.2  # kernel width on Lab / 100; 0 = colour not used by the filter
    fg_seed_fraction: float = 0.05  # top fraction of filtered motion that gives foreground seeds
    fg_min_score: float = 0.3  # a foreground seed's filtered motion score is at least this
    bg_seed_fraction: float = 0.6  # bottom fraction of filtered motion that gives background seeds
    max_seeds: int = 256  # seeds kept per class and frame
    seed_temperature: float = 0.1  # softmax temperature on the max cosine similarities
    motion_weight: float = 0.7  # share of the filtered motion score in the foreground probability (0 = seeds only)
    unary_eps: float = 1e-3  # probabilities are clipped to [eps, 1 - eps] before -log
    pairwise_weight: float = 1.0  # Potts weight of the contrast-sensitive pairwise term
    pairwise_feature: str = "colour"  # "colour" (Lab) or "embedding" differences drive the contrast
    temporal_weight: float = 1.0  # per-pixel cost of disagreeing with the warped previous segmentation
    seed: int = 0  # generator seed of the seed subsampling

    def __post_init__(self) -> None:
        if self.flow_preset not in DIS_PRESETS:
            raise ValueError(f"flow_preset {self.flow_preset!r}: choose one of {sorted(DIS_PRESETS)}")
        if self.pairwise_feature not in PAIRWISE_FEATURES:
            raise ValueError(f"pairwise_feature {self.pairwise_feature!r}: choose one of {PAIRWISE_FEATURES}")
        for name in ("fg_seed_fraction", "bg_seed_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("bilateral_cell", "max_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.motion_weight <= 1.0:
            raise ValueError(f"motion_weight must be in [0, 1], got {self.motion_weight}")
        for name in ("sigma_embedding", "sigma_position", "seed_temperature", "unary_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_side", "pca_dim", "sigma_colour", "pairwise_weight", "temporal_weight", "min_motion_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------- input


def check_frames(frames: Union[np.ndarray, Sequence[np.ndarray]]) -> np.ndarray:
    """Validate a video and return it as one (T, H, W, 3) uint8 array; ValueError naming the problem."""
    shapes = {np.shape(frame) for frame in frames}
    if len(shapes) > 1:
        raise ValueError(f"IET needs frames of one size; got mixed shapes {sorted(shapes)}")
    video = np.asarray(frames)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"IET needs frames (T, H, W, 3); got shape {video.shape}")
    if video.shape[0] < 2:
        raise ValueError(f"IET needs at least 2 frames (motion); got {video.shape[0]}")
    if video.dtype != np.uint8:
        raise ValueError(f"IET needs uint8 RGB frames; got dtype {video.dtype}")
    return video


def working_frames(video: np.ndarray, max_side: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8 with the longest side at most ``max_side`` (area resize)."""
    return np.stack([downscale(frame, max_side) for frame in video])


def lab_image(frame: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (h, w, 3) float32 CIE Lab divided by 100 (L in [0, 1], a/b about [-1, 1])."""
    return cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB) / 100.0


# ------------------------------------------------------------------------------------------ embeddings


def model_embedder(model: "MuGModel", *, batch_size: int = 8, device: Optional[Union[str, torch.device]] = None) -> Embedder:
    """Wrap a model with ``encode((1, T, 3, H, W) in [0, 1]) -> (1, T, C, h, w)`` as an IET ``embed`` callable.

    The callable maps (T, H, W, 3) uint8 to (T, C, h, w) float32 torch features, ``batch_size`` frames per call.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device

    @torch.no_grad()
    def embed(frames: np.ndarray) -> torch.Tensor:
        chunks = []
        for start in range(0, len(frames), batch_size):
            images = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch_size])).to(device)
            images = images.permute(0, 3, 1, 2).float().div(255.0).unsqueeze(0)
            chunks.append(model.encode(images)[0].float().cpu())
        return torch.cat(chunks)

    return embed


def principal_projection(features: torch.Tensor, dim: int) -> torch.Tensor:
    """(T, C, h, w) -> (T, dim, h, w): projection on the video's top ``dim`` principal components.

    Unchanged when ``dim`` is 0 or not below C. Components come from an SVD of the centred pixel features.
    """
    t, c, h, w = features.shape
    if dim <= 0 or dim >= c:
        return features
    flat = features.permute(0, 2, 3, 1).reshape(-1, c)
    mean = flat.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(flat - mean, full_matrices=False)
    projected = (flat - mean) @ v[:dim].T
    return projected.reshape(t, h, w, dim).permute(0, 3, 1, 2).contiguous()


def instance_embeddings(frames: np.ndarray, embed: Embedder, pca_dim: int = 0) -> torch.Tensor:
    """Video embeddings at the embedder's own resolution: (T, h, w, 3) uint8 -> (T, D, h', w') float32.

    L2-normalised over channels before and after the optional projection to ``pca_dim`` components.
    """
    raw = embed(frames)
    features = torch.as_tensor(raw).detach().float().cpu()
    if features.ndim != 4 or features.shape[0] != len(frames):
        raise ValueError(f"embed must return (T={len(frames)}, C, h, w); got shape {tuple(features.shape)}")
    features = F.normalize(features, dim=1)
    return F.normalize(principal_projection(features, pca_dim), dim=1)


def upsample_embedding(embedding: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    """(D, h', w') -> (D, H, W) float32 numpy, bilinear and re-normalised to unit length per pixel."""
    up = F.interpolate(embedding[None], size=size, mode="bilinear", align_corners=False)[0]
    return F.normalize(up, dim=0).numpy()


# ------------------------------------------------------------------------------------- motion saliency


def pair_flows(frames: np.ndarray, preset: str = "medium") -> Tuple[np.ndarray, np.ndarray]:
    """DIS flows between consecutive frames of (T, h, w, 3) uint8.

    Returns ``forward`` (T-1, h, w, 2) with ``forward[t]`` = flow t -> t+1 and ``backward`` (T-1, h, w, 2)
    with ``backward[t]`` = flow t+1 -> t, in ``(dx, dy)`` pixels (see :mod:`selfvos.pseudo.flow`).
    """
    forward = [dis_flow(frames[t], frames[t + 1], preset) for t in range(len(frames) - 1)]
    backward = [dis_flow(frames[t + 1], frames[t], preset) for t in range(len(frames) - 1)]
    return np.stack(forward), np.stack(backward)


def motion_scores(forward: np.ndarray, backward: np.ndarray, config: IETConfig) -> np.ndarray:
    """Initial per-pixel motion saliency (T, h, w) in [0, 1] from ``pair_flows`` output.

    Frame t uses its flows to t+1 and to t-1 where they exist, through
    :meth:`selfvos.pseudo.motion.MotionSaliency.score_from_flows` (camera residual, soft Otsu, geometric mean).
    """
    saliency = MotionSaliency(model=config.camera_model, min_motion_px=config.min_motion_px, preset=config.flow_preset)
    count = len(forward) + 1
    scores = []
    for t in range(count):
        flows = ([forward[t]] if t < count - 1 else []) + ([backward[t - 1]] if t > 0 else [])
        scores.append(saliency.score_from_flows(flows))
    return np.stack(scores).astype(np.float32)


def bilateral_features(embedding: np.ndarray, lab: Optional[np.ndarray], config: IETConfig) -> np.ndarray:
    """Joint bilateral space per pixel, (h, w, F) float32 with F = D + 2 (+ 3 with colour).

    ``embedding`` (D, h, w) unit vectors / sigma_embedding, ``(y, x) / (sigma_position * max(h, w))``, and
    ``lab`` (h, w, 3) / sigma_colour when ``sigma_colour`` > 0 and ``lab`` is given.
    """
    _, h, w = embedding.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / (config.sigma_position * max(h, w))
    parts = [embedding.transpose(1, 2, 0) / config.sigma_embedding, yy[..., None], xx[..., None]]
    if lab is not None and config.sigma_colour > 0:
        parts.append(lab / config.sigma_colour)
    return np.concatenate(parts, axis=-1).astype(np.float32)


def bilateral_filter(score: np.ndarray, features: np.ndarray, cell: int, chunk: int = 4096) -> np.ndarray:
    """Joint bilateral filtering of ``score`` (h, w) in the space ``features`` (h, w, F) -> (h, w) float32.

    Splat: score and features averaged over ``cell`` x ``cell`` blocks (N nodes). Slice: each pixel i gets
    ``sum_j k_ij m_j / sum_j k_ij`` with ``k_ij = exp(-||f_i - g_j||^2 / 2)`` over the N nodes j (features
    already divided by their kernel widths). Computed in chunks of ``chunk`` pixels.
    """
    h, w = score.shape
    grid = (max(1, -(-h // cell)), max(1, -(-w // cell)))
    feats = torch.from_numpy(features).permute(2, 0, 1)[None]
    nodes = F.adaptive_avg_pool2d(feats, grid)[0].flatten(1).T  # (N, F)
    values = F.adaptive_avg_pool2d(torch.from_numpy(score.astype(np.float32))[None, None], grid).flatten()  # (N,)
    pixels = feats[0].flatten(1).T  # (P, F)
    out = torch.empty(pixels.shape[0])
    node_sq = (nodes**2).sum(1)
    for start in range(0, pixels.shape[0], chunk):
        block = pixels[start : start + chunk]
        dist2 = ((block**2).sum(1, keepdim=True) + node_sq[None] - 2.0 * block @ nodes.T).clamp_min(0.0)
        logits = -0.5 * dist2
        weights = torch.exp(logits - logits.max(1, keepdim=True).values)  # stable: the nearest node weighs 1
        out[start : start + chunk] = (weights @ values) / weights.sum(1)
    return out.reshape(h, w).numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------- seeds


def select_seeds(filtered: np.ndarray, config: IETConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Foreground / background seed masks, each (h, w) bool, from the filtered motion score (h, w).

    Foreground: score >= max(fg_min_score, its (1 - fg_seed_fraction) quantile); background: score <= its
    bg_seed_fraction quantile and not foreground. The foreground mask is empty when no pixel qualifies.
    """
    high = max(config.fg_min_score, float(np.quantile(filtered, 1.0 - config.fg_seed_fraction)))
    fg = filtered >= high
    bg = (filtered <= float(np.quantile(filtered, config.bg_seed_fraction))) & ~fg
    return fg, bg


def seed_embeddings(embedding: np.ndarray, mask: np.ndarray, max_seeds: int, rng: np.random.Generator) -> np.ndarray:
    """Embeddings (S, D) at the pixels of ``mask`` (h, w) in ``embedding`` (D, h, w), S <= ``max_seeds``."""
    ys, xs = np.nonzero(mask)
    if len(ys) > max_seeds:
        keep = np.sort(rng.choice(len(ys), size=max_seeds, replace=False))
        ys, xs = ys[keep], xs[keep]
    return embedding[:, ys, xs].T.astype(np.float32)


def fill_missing_seeds(seeds: List[Optional[Tuple[np.ndarray, np.ndarray]]]) -> List[Optional[Tuple[np.ndarray, np.ndarray]]]:
    """Give each frame without seeds (``None``) those of the nearest frame that has them (earlier on a tie).

    All-``None`` input (no reliable motion anywhere) is returned unchanged.
    """
    have = [t for t, s in enumerate(seeds) if s is not None]
    if not have:
        return list(seeds)
    return [s if s is not None else seeds[min(have, key=lambda k: (abs(k - t), k))] for t, s in enumerate(seeds)]


def seed_unary(embedding: np.ndarray, fg_seeds: np.ndarray, bg_seeds: np.ndarray, temperature: float) -> np.ndarray:
    """Foreground probability (h, w) from seed similarity.

    ``embedding`` (D, h, w) and seeds (S, D) are unit vectors; per pixel the largest cosine similarity to a
    foreground seed and to a background seed go through a 2-way softmax at ``temperature``. With no
    background seed the probability is 1, with no foreground seed 0.
    """
    d, h, w = embedding.shape
    if len(fg_seeds) == 0 or len(bg_seeds) == 0:
        return np.full((h, w), float(len(fg_seeds) > 0), np.float32)
    flat = embedding.reshape(d, -1)
    sim_fg = (fg_seeds @ flat).max(0)
    sim_bg = (bg_seeds @ flat).max(0)
    prob = 1.0 / (1.0 + np.exp(-(sim_fg - sim_bg) / temperature))
    return prob.reshape(h, w).astype(np.float32)


# ----------------------------------------------------------------------------------------- graph cut


def pairwise_weights(features: np.ndarray, weight: float) -> Tuple[np.ndarray, np.ndarray]:
    """Contrast-sensitive Potts weights to the right and lower neighbour, each (h, w) float64.

    ``weight * exp(-||d||^2 / (2 <||d||^2>))`` with ``d`` the difference of ``features`` (h, w, F) between
    neighbours and ``<.>`` its mean over the frame; the last column / row (no neighbour) is 0.
    """
    right = np.zeros(features.shape[:2])
    down = np.zeros(features.shape[:2])
    d_right = ((features[:, 1:] - features[:, :-1]) ** 2).sum(-1)
    d_down = ((features[1:] - features[:-1]) ** 2).sum(-1)
    mean = (d_right.sum() + d_down.sum()) / max(1, d_right.size + d_down.size)
    beta = 1.0 / (2.0 * mean) if mean > 0 else 0.0
    right[:, :-1] = weight * np.exp(-beta * d_right)
    down[:-1] = weight * np.exp(-beta * d_down)
    return right, down


def unary_costs(p_fg: np.ndarray, eps: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(-log p_fg, -log (1 - p_fg))``, each (h, w) float64, with ``p_fg`` clipped to [eps, 1 - eps]."""
    p = np.clip(p_fg.astype(np.float64), eps, 1.0 - eps)
    return -np.log(p), -np.log1p(-p)


def graph_cut(cost_fg: np.ndarray, cost_bg: np.ndarray, right: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Minimum of ``sum cost(label) + sum_{neighbours, labels differ} w`` on the 4-connected grid, (h, w) bool.

    ``cost_fg`` / ``cost_bg`` (h, w) are the per-pixel costs of the two labels; ``right`` / ``down`` (h, w)
    the weights of the edge to the right / lower neighbour. True = foreground (the sink side of the cut).
    """
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(cost_fg.shape)
    graph.add_grid_edges(nodes, weights=right, structure=np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]]), symmetric=True)
    graph.add_grid_edges(nodes, weights=down, structure=np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]]), symmetric=True)
    # a node on the sink side cuts its source edge: the source capacity is the cost of the sink label (fg)
    graph.add_grid_tedges(nodes, cost_fg, cost_bg)
    graph.maxflow()
    return graph.get_grid_segments(nodes)


def warp_previous(mask: np.ndarray, flow_to_previous: np.ndarray) -> np.ndarray:
    """Previous frame's mask (h, w) carried to the current frame, (h, w) float32 in [0, 1].

    ``flow_to_previous`` (h, w, 2) is the flow current -> previous: pixel (x, y) reads the previous mask at
    ``(x + dx, y + dy)`` (bilinear; outside the frame reads 0.5, i.e. no opinion).
    """
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = xx + flow_to_previous[..., 0]
    map_y = yy + flow_to_previous[..., 1]
    return cv2.remap(mask.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.5)


def temporal_graph_cuts(
    p_fg: np.ndarray, contrast: Sequence[np.ndarray], backward: np.ndarray, config: IETConfig
) -> np.ndarray:
    """Graph cuts of a video in frame order with the temporal unary, (T, h, w) uint8 {0, 1}.

    ``p_fg`` (T, h, w) foreground probabilities, ``contrast[t]`` (h, w, F) the features of the pairwise term,
    ``backward`` (T-1, h, w, 2) with ``backward[t]`` = flow t+1 -> t. Frame t > 0 adds
    ``temporal_weight * (1 - prev)`` to its foreground cost and ``temporal_weight * prev`` to its background
    cost, ``prev`` the previous segmentation warped to frame t.
    """
    masks = np.zeros(p_fg.shape, np.uint8)
    for t in range(len(p_fg)):
        cost_fg, cost_bg = unary_costs(p_fg[t], config.unary_eps)
        if t > 0 and config.temporal_weight > 0:
            prev = warp_previous(masks[t - 1], backward[t - 1]).astype(np.float64)
            cost_fg = cost_fg + config.temporal_weight * (1.0 - prev)
            cost_bg = cost_bg + config.temporal_weight * prev
        right, down = pairwise_weights(contrast[t], config.pairwise_weight)
        masks[t] = graph_cut(cost_fg, cost_bg, right, down)
    return masks


# ------------------------------------------------------------------------------------------- a video


def filtered_motion(score: np.ndarray, embedding: np.ndarray, lab: np.ndarray, config: IETConfig) -> np.ndarray:
    """Step 2 of one frame: motion saliency ``score`` (h, w) bilaterally filtered with ``embedding`` (D, h, w)
    and ``lab`` (h, w, 3) from :func:`lab_image`, (h, w) float32 in [0, 1]."""
    return bilateral_filter(score, bilateral_features(embedding, lab, config), config.bilateral_cell)


def frame_seeds(
    filtered: np.ndarray, embedding: np.ndarray, config: IETConfig, rng: np.random.Generator
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Step 3 of one frame: (fg seeds (S, D), bg seeds (S', D)) or None when no foreground seed exists.

    ``filtered`` (h, w) filtered motion score, ``embedding`` (D, h, w).
    """
    fg, bg = select_seeds(filtered, config)
    if not fg.any():
        return None
    return seed_embeddings(embedding, fg, config.max_seeds, rng), seed_embeddings(embedding, bg, config.max_seeds, rng)


def foreground_probability(p_seed: np.ndarray, filtered: np.ndarray, motion_weight: float) -> np.ndarray:
    """``(1 - motion_weight) * p_seed + motion_weight * filtered``, both (h, w) in [0, 1] -> (h, w) float32."""
    return ((1.0 - motion_weight) * p_seed + motion_weight * filtered).astype(np.float32)


def upsample_masks(masks: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """(T, h, w) {0, 1} -> (T, H, W) uint8 {0, 1}: bilinear resize of each mask, threshold 0.5."""
    if masks.shape[1:] == tuple(size):
        return masks.astype(np.uint8)
    resized = [cv2.resize(m.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for m in masks]
    return (np.stack(resized) >= 0.5).astype(np.uint8)


def segment_video(
    frames: Union[np.ndarray, Sequence[np.ndarray]], embed: Embedder, config: Optional[IETConfig] = None
) -> np.ndarray:
    """IET zero-shot segmentation: frames (T, H, W, 3) uint8 RGB -> masks (T, H, W) uint8 {0, 1}.

    ``embed`` maps the working-size frames (T, h, w, 3) uint8 to features (T, C, h', w') (numpy or torch);
    use :func:`model_embedder` for a selfvos model. ValueError on mixed frame sizes, T < 2 or non-uint8 input.
    """
    config = config or IETConfig()
    video = check_frames(frames)
    work = working_frames(video, config.max_side)
    size = work.shape[1:3]
    low = instance_embeddings(work, embed, config.pca_dim)
    forward, backward = pair_flows(work, config.flow_preset)
    scores = motion_scores(forward, backward, config)
    rng = np.random.default_rng(config.seed)
    embeddings = [upsample_embedding(low[t], size) for t in range(len(work))]
    labs = [lab_image(frame) for frame in work]
    filtered = [filtered_motion(scores[t], embeddings[t], labs[t], config) for t in range(len(work))]
    seeds = fill_missing_seeds([frame_seeds(filtered[t], embeddings[t], config, rng) for t in range(len(work))])
    empty = np.zeros((0, low.shape[1]), np.float32)
    p_seed = [seed_unary(embeddings[t], *(seeds[t] or (empty, empty)), config.seed_temperature) for t in range(len(work))]
    p_fg = np.stack([foreground_probability(p_seed[t], filtered[t], config.motion_weight) for t in range(len(work))])
    contrast = labs if config.pairwise_feature == "colour" else [e.transpose(1, 2, 0) for e in embeddings]
    masks = temporal_graph_cuts(p_fg, contrast, backward, config)
    return upsample_masks(masks, video.shape[1:3])
