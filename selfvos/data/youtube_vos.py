"""YouTube-VOS folders -> a :class:`VideoCollection` with sparse annotations.

Layout: ``ROOT/JPEGImages/<vid>/*.jpg``, ``ROOT/Annotations/<vid>/*.png`` (palette PNGs, usually every
5th frame of the 30 fps footage) and ``ROOT/meta.json``::

    {"videos": {"<vid>": {"objects": {"1": {"category": "dog", "frames": ["00000", "00005", ...]}}}}}

``annotated_indices()`` lists the frames that have a PNG. ``video.meta["objects"]`` holds meta.json's
objects as ``{id: {"category": str | None, "frames": [stems]}}`` and ``video.meta["first_frame"]``
maps each object id to the index of the first frame it is listed in (where one-shot starts it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from selfvos.data.davis import davis_sequence
from selfvos.data.frames import ImageSequenceVideo, natural_key, select_folders
from selfvos.data.video import VideoCollection
from selfvos.errors import SelfvosInputError


def read_meta(path: Path) -> Dict[str, dict]:
    """Parse ``meta.json`` into ``{video: {object id (int): {"category", "frames"}}}``; any other layout is one
    ``SelfvosInputError`` naming the file and the offending entry."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SelfvosInputError(path, f"not valid JSON ({err})") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise SelfvosInputError(path, 'expected {"videos": {<video>: {"objects": {...}}}}')
    return {vid: _read_objects(path, vid, entry) for vid, entry in videos.items()}


def _read_objects(path: Path, vid: str, entry: object) -> Dict[int, dict]:
    """One video's ``{"objects": {id: {"category": str, "frames": [stem, ...]}}}`` entry of meta.json."""
    entry = {} if entry is None else entry
    objects = entry.get("objects") if isinstance(entry, dict) else entry
    objects = {} if objects is None else objects
    if not isinstance(objects, dict):
        raise SelfvosInputError(path, f'video {vid!r}: expected {{"objects": {{<id>: {{...}}}}}}, got '
                                      f"{json.dumps(entry)[:80]}")
    parsed = {}
    for key, obj in objects.items():
        if not str(key).isdecimal() or not 0 < int(key) < 255:
            raise SelfvosInputError(path, f"video {vid!r}: object id {key!r} is not an integer in 1..254")
        obj = obj if obj is not None else {}
        frames = obj.get("frames", []) if isinstance(obj, dict) else None
        category = obj.get("category") if isinstance(obj, dict) else None
        if not isinstance(frames, list) or not isinstance(category, (str, type(None))):
            raise SelfvosInputError(path, f"video {vid!r} object {key}: expected {{\"category\": str, \"frames\": "
                                          f"[frame names]}}, got {json.dumps(obj)[:80]}")
        parsed[int(key)] = {"category": category, "frames": [str(f) for f in frames]}
    return parsed


def _attach_meta(video: ImageSequenceVideo, objects: dict, meta_path: Path) -> None:
    index_of = {s: i for i, s in enumerate(video.frame_names)}
    first_frame = {}
    for obj_id, obj in objects.items():
        missing = [f for f in obj["frames"] if f not in index_of]
        if missing:
            raise SelfvosInputError(
                meta_path, f"video {video.name!r} object {obj_id} lists frame {missing[0]!r} that has no image"
            )
        if obj["frames"]:
            first_frame[obj_id] = min(index_of[f] for f in obj["frames"])
    video.meta = {"objects": objects, "first_frame": first_frame}


def open_youtube_vos(
    root: Union[str, Path],
    *,
    sequences: Optional[Sequence[str]] = None,
    binary: bool = False,
    check_gaps: bool = True,
    fps: Optional[float] = None,
    max_side: Optional[int] = None,
) -> VideoCollection:
    """Open a YouTube-VOS split folder (``train``, ``valid``, ``valid_all_frames`` style)."""
    root = Path(root)
    frames_root = root / "JPEGImages"
    if not frames_root.is_dir():
        raise SelfvosInputError(root, "not a YouTube-VOS folder: JPEGImages/ is missing")
    meta_path = root / "meta.json"
    meta = read_meta(meta_path) if meta_path.is_file() else {}
    folders = sorted((p for p in frames_root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    if not folders:
        raise SelfvosInputError(frames_root, "empty folder: no video folders")
    unknown = sorted(set(meta) - {f.name for f in folders})
    if unknown:
        raise SelfvosInputError(meta_path, f"lists video {unknown[0]!r} that has no folder in {frames_root}")
    if sequences:
        folders = select_folders(frames_root, folders, sequences)
    videos = []
    for folder in folders:
        masks = root / "Annotations" / folder.name
        video = davis_sequence(folder, masks, binary=binary, check_gaps=check_gaps, fps=fps, max_side=max_side)
        _attach_meta(video, meta.get(folder.name, {}), meta_path)
        videos.append(video)
    return VideoCollection(videos, source=str(root), kind="youtube-vos")
