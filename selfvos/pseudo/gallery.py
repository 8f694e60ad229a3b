"""A PNG gallery for eyeballing pseudo-masks: a header band naming the columns, then one row per frame,
columns frame | pseudo-mask overlay (red) | human mask overlay (green; shown for comparison, never trained on;
left out when the collection has no masks). Plain PIL, no display."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from selfvos.atomic import atomic_write_bytes
from selfvos.data.video import VOID, VideoCollection

MasksFn = Callable[[str, int], Optional[np.ndarray]]
COLUMNS = ("frame", "pseudo-mask (red)", "human mask (green, not trained on)")
HEADER_HEIGHT = 14


def overlay(frame: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int] = (255, 40, 40),
            alpha: float = 0.5) -> np.ndarray:
    """Tint ``frame`` (H, W, 3) uint8 where ``mask`` (H, W) bool is set; returns (H, W, 3) uint8."""
    out = frame.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def pick_frames(collection: VideoCollection, per_video: int, max_rows: int,
                videos: Optional[Sequence[str]] = None) -> list:
    """``(video_name, frame_index)`` pairs: ``per_video`` evenly spaced frames per video, at most ``max_rows``."""
    rows = []
    for name in videos or collection.names:
        n = len(collection[name])
        rows += [(name, int(i)) for i in np.unique(np.linspace(0, n - 1, per_video).round().astype(int))]
    return rows[:max_rows]


def make_gallery(collection: VideoCollection, masks_fn: MasksFn, out_path: Union[str, Path], *,
                 videos: Optional[Sequence[str]] = None, per_video: int = 1, max_rows: int = 12,
                 row_height: int = 160, threshold: float = 0.5) -> Path:
    """Write the gallery PNG to ``out_path`` (atomically) and return it. Frames without a pseudo-mask show an
    empty overlay. The image is ``HEADER_HEIGHT`` + rows x ``row_height`` pixels high."""
    rows = pick_frames(collection, per_video, max_rows, videos)
    if not rows:
        raise ValueError("gallery: no frames to show")
    with_gt = any(collection[name].has_masks for name, _ in rows)
    tiles = []
    for name, index in rows:
        video = collection[name]
        frame = video.frame(index)
        soft = masks_fn(name, index)
        pseudo = soft >= threshold if soft is not None else np.zeros(frame.shape[:2], bool)
        cells = [frame, overlay(frame, pseudo)]
        if with_gt:
            gt = video.mask(index)
            cells.append(overlay(frame, (gt > 0) & (gt != VOID), (40, 220, 40)) if gt is not None else frame)
        row = Image.fromarray(np.concatenate(cells, axis=1))
        width = round(row.width * row_height / row.height)
        row = row.resize((width, row_height), Image.BILINEAR)
        ImageDraw.Draw(row).text((4, 4), f"{name} #{index}", fill=(255, 255, 0))
        tiles.append(row)
    canvas = Image.new("RGB", (max(t.width for t in tiles), HEADER_HEIGHT + sum(t.height for t in tiles)))
    cell_width = tiles[0].width / (3 if with_gt else 2)
    draw = ImageDraw.Draw(canvas)
    for column, label in enumerate(COLUMNS[:3 if with_gt else 2]):
        draw.text((round(column * cell_width) + 4, 2), label, fill=(255, 255, 255))
    y = HEADER_HEIGHT
    for tile in tiles:
        canvas.paste(tile, (0, y))
        y += tile.height
    return atomic_write_bytes(Path(out_path), lambda fh: canvas.save(fh, format="PNG"))
