"""The shard format of the ``stream:`` source: listing shards (:func:`list_shards`) and writing them
(:func:`write_shards`, ``selfvos shard SRC DST``).

A *shard* is one uncompressed tar archive of video files (their original bytes) or one plain video file (a shard
of one video). :func:`list_shards` accepts

- a folder written by :func:`write_shards`: ``index.json`` + ``shard-00000.tar`` and its listing
  ``shard-00000.json``, ...; every shard's size is checked against the index, so a truncated shard is named at
  once;
- a folder, a glob (``/data/*.tar``) or one file of tar archives and/or video files (an archive without a listing
  is listed from its tar headers; nothing is decoded).

Layout written by :func:`write_shards` (the folder appears complete or not at all)::

    DST/index.json         {"format": "selfvos-video-shards", "version": 1, "videos": N, "frames": F,
                            "shards": [{"file": "shard-00000.tar", "videos": n, "frames": f, "bytes": b}, ...]}
    DST/shard-00000.tar    the video files of shard 0, members "<name><ext>", in natural name order
    DST/shard-00000.json   {"shard": "shard-00000.tar", "videos": [{"name", "member", "offset", "size",
                            "frames", "width", "height", "fps"}, ...]}  (offset/size: the member's bytes)

Opening reads ``index.json`` only (one line per shard); a shard's listing is read when its videos are needed.
"""
from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selfvos.atomic import atomic_write_json, staged_folder
from selfvos.data.frames import natural_key
from selfvos.data.video_file import VIDEO_EXTENSIONS, VideoFileVideo
from selfvos.errors import PathLike, SelfvosInputError

STREAM_FORMAT = "selfvos-video-shards"
INDEX_FILE = "index.json"
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ShardEntry:
    """One video of a shard: name, tar member (file name for a video shard), byte range of the member in the
    archive, and its frame count and rate when the listing records them (None: known once opened)."""

    name: str
    member: str
    offset: int = 0
    size: int = 0
    frames: Optional[int] = None
    fps: Optional[float] = None


class Shard:
    """One shard file: a tar archive of videos (``kind="tar"``) or one video file (``kind="video"``)."""

    def __init__(self, path: Path, kind: str, count: Optional[int] = None, listing: Optional[Path] = None) -> None:
        self.path, self.kind, self.listing = Path(path), kind, listing
        self._count = count

    @property
    def count(self) -> int:
        """Number of videos (from ``index.json``, else from the entries)."""
        if self._count is None:
            self._count = len(self.entries())
        return self._count

    def entries(self) -> List[ShardEntry]:
        """The videos of this shard, in listing order (read from disk on every call)."""
        if self.kind == "video":
            return [ShardEntry(self.path.stem, self.path.name)]
        if self.listing is None:
            return scan_tar(self.path)
        data = _read_json(self.listing)
        try:
            return [ShardEntry(str(v["name"]), str(v["member"]), int(v["offset"]), int(v["size"]),
                               None if v.get("frames") is None else int(v["frames"]),
                               None if v.get("fps") is None else float(v["fps"])) for v in data["videos"]]
        except (KeyError, TypeError, ValueError) as err:
            raise SelfvosInputError(self.listing, f"malformed shard listing ({type(err).__name__}: {err})") from None

    def __repr__(self) -> str:
        return f"Shard({str(self.path)!r}, kind={self.kind!r})"


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SelfvosInputError(path, f"cannot read shard metadata ({type(err).__name__}: {err})") from None


def scan_tar(path: Path) -> List[ShardEntry]:
    """The video members of an uncompressed tar (headers only; nothing decoded), with their byte ranges."""
    try:
        with tarfile.open(path, "r:") as tar:
            return [ShardEntry(Path(m.name).stem, m.name, m.offset_data, m.size) for m in tar
                    if m.isfile() and Path(m.name).suffix.lower() in VIDEO_EXTENSIONS]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise SelfvosInputError(path, f"not a readable uncompressed tar shard ({type(err).__name__}: {err})") from None


def list_shards(location: PathLike) -> List[Shard]:
    """The shards at ``location`` (see the module docstring), in natural path order."""
    text = os.fspath(location)
    path = Path(text).expanduser()
    if path.is_dir() and (path / INDEX_FILE).is_file():
        return _indexed_shards(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    elif path.is_file():
        files = [path]
    elif _GLOB.search(text):
        files = [Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file()]
    else:
        raise SelfvosInputError(text, "no such shard folder, file or glob")
    shards = []
    for file in sorted(files, key=lambda p: natural_key(str(p))):
        suffix = file.suffix.lower()
        if suffix == ".tar":
            shards.append(Shard(file, "tar"))
        elif suffix in VIDEO_EXTENSIONS:
            shards.append(Shard(file, "video", 1))
    if not shards:
        raise SelfvosInputError(text, f"no shards: expected tar archives of videos or video files "
                                      f"({', '.join(VIDEO_EXTENSIONS)}), or a folder written by `selfvos shard`")
    return shards


def _indexed_shards(root: Path) -> List[Shard]:
    index_path = root / INDEX_FILE
    index = _read_json(index_path)
    if index.get("format") != STREAM_FORMAT:
        raise SelfvosInputError(index_path, f"not a shard index (format {index.get('format')!r}, "
                                            f"expected {STREAM_FORMAT!r})")
    shards = []
    try:
        for item in index["shards"]:
            file = root / str(item["file"])
            if not file.is_file():
                raise SelfvosInputError(file, "shard listed in index.json is missing")
            size = file.stat().st_size
            if size != int(item["bytes"]):
                raise SelfvosInputError(file, f"shard is {size} bytes but index.json says {int(item['bytes'])}: "
                                              "truncated or replaced (write the shards again)")
            shards.append(Shard(file, "tar", int(item["videos"]), file.with_suffix(".json")))
    except (KeyError, TypeError, ValueError) as err:
        raise SelfvosInputError(index_path, f"malformed shard index ({type(err).__name__}: {err})") from None
    if not shards:
        raise SelfvosInputError(index_path, "the index lists no shards")
    return shards


def video_files(src: PathLike) -> List[Path]:
    """The video files of a folder (not recursive), a glob or one file, in natural name order."""
    text = os.fspath(src)
    path = Path(text).expanduser()
    if path.is_dir():
        files = list(path.iterdir())
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in glob.glob(os.path.expanduser(text))] if _GLOB.search(text) else []
    found = sorted((p for p in files if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS),
                   key=lambda p: natural_key(p.name))
    if not found:
        raise SelfvosInputError(text, f"no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return found


def write_shards(src: PathLike, dst: PathLike, *, videos_per_shard: int = 64, overwrite: bool = False) -> Path:
    """Write the video files of ``src`` (folder, glob or file) as tar shards of ``videos_per_shard`` videos into
    ``dst`` (layout in the module docstring); the folder is built under a staging name and moved into place
    complete. Every video is opened once (header only) for its frame count; one that cannot be opened is a
    ``SelfvosInputError`` naming it, and nothing is written. Returns ``dst``."""
    if videos_per_shard < 1:
        raise SelfvosInputError("--videos-per-shard", f"must be >= 1, got {videos_per_shard}")
    files, dst = video_files(src), Path(dst)
    seen: Dict[str, Path] = {}
    for file in files:
        if file.stem in seen:
            raise SelfvosInputError(file, f"two videos named {file.stem!r} ({seen[file.stem]} and {file})")
        seen[file.stem] = file
    if dst.exists() and not overwrite:
        raise SelfvosInputError(dst, "already exists (pass overwrite=True / --overwrite to replace it)")
    records, frames = [], 0
    with staged_folder(dst) as stage:
        for k in range(0, len(files), videos_per_shard):
            name = f"shard-{k // videos_per_shard:05d}.tar"
            record, count = _write_shard(files[k:k + videos_per_shard], stage / name)
            records.append(record)
            frames += count
        atomic_write_json(stage / INDEX_FILE, {"format": STREAM_FORMAT, "version": 1, "videos": len(files),
                                               "frames": frames, "shards": records}, sort_keys=False)
    return dst


def _write_shard(files: Sequence[Path], path: Path) -> Tuple[Dict[str, Any], int]:
    """One archive + its listing; returns its ``index.json`` record and its frame count."""
    metas = []
    with open(path, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for file in files:
                video = VideoFileVideo(file)
                metas.append({"name": file.stem, "member": file.name, "frames": len(video),
                              "width": video.native_size[0], "height": video.native_size[1], "fps": video.native_fps})
                info = tarfile.TarInfo(file.name)
                info.size, info.mtime, info.mode = file.stat().st_size, 0, 0o644
                with open(file, "rb") as data:
                    tar.addfile(info, data)
        fh.flush()
        os.fsync(fh.fileno())
    ranges = {e.member: (e.offset, e.size) for e in scan_tar(path)}
    for meta in metas:
        meta["offset"], meta["size"] = ranges[meta["member"]]
    atomic_write_json(path.with_suffix(".json"), {"shard": path.name, "videos": metas}, sort_keys=False)
    frames = sum(m["frames"] for m in metas)
    return {"file": path.name, "videos": len(metas), "frames": frames, "bytes": path.stat().st_size}, frames
