"""Data sources by name, and ``open_source(spec)`` that turns a spec string into a :class:`VideoCollection`.

Registered here: ``davis``, ``youtube-vos``, ``video`` (a file or a folder of files), ``frames`` (a
folder of images or of image folders). ``synthetic`` and ``hf`` register themselves in
``selfvos/data/synthetic.py`` and ``selfvos/data/hf.py``, imported below when present.

A source is a callable ``source(location, **options) -> VideoCollection``; ``location`` is the part
of the spec after ``NAME:`` (an ``int`` when it is all digits, as in ``synthetic:4``) and is left out
when the spec is the bare name (``synthetic``).

Specs: ``NAME:LOCATION`` (``davis:/data/DAVIS``, ``video:clip.mp4``, ``synthetic:4``), ``NAME``, or a
bare path that is auto-detected (see :func:`detect_source`).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional, Tuple, Union

from selfvos.data.davis import open_davis
from selfvos.data.frames import list_images, open_frames
from selfvos.data.video import VideoCollection
from selfvos.data.video_file import VIDEO_EXTENSIONS, is_video_file, open_video
from selfvos.data.youtube_vos import open_youtube_vos
from selfvos.errors import SelfvosInputError
from selfvos.registry import SOURCES

SOURCES.register("davis")(open_davis)
SOURCES.register("youtube-vos")(open_youtube_vos)
SOURCES.register("video")(open_video)
SOURCES.register("frames")(open_frames)

for _module in ("selfvos.data.synthetic", "selfvos.data.hf", "selfvos.data.streaming"):
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as _err:  # only the module itself may be absent, not its dependencies
        if _err.name != _module:
            raise

HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def detect_source(path: Union[str, Path]) -> str:
    """Name of the source that reads ``path``.

    A video file -> ``video``; a folder with ``JPEGImages/`` -> ``youtube-vos`` when it has
    ``meta.json``, else ``davis``; a ``datasets`` folder (``dataset_info.json`` / ``state.json`` /
    ``dataset_dict.json``) -> ``hf``; a folder of images or of image folders -> ``frames``; a folder of
    video files -> ``video``.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return "video"
        raise SelfvosInputError(path, f"not a video file (expected one of {', '.join(VIDEO_EXTENSIONS)}) or a folder")
    if not path.is_dir():
        raise SelfvosInputError(path, "no such file or folder")
    if (path / "JPEGImages").is_dir():
        return "youtube-vos" if (path / "meta.json").is_file() else "davis"
    if any((path / marker).is_file() for marker in HF_MARKERS):
        return "hf"
    if list_images(path):
        return "frames"
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if any(is_video_file(p) for p in entries):
        return "video"
    if any(p.is_dir() and list_images(p) for p in entries):
        return "frames"
    if not entries:
        raise SelfvosInputError(path, "empty folder: no videos, images or dataset files")
    raise SelfvosInputError(
        path, "cannot tell what this folder holds (no JPEGImages/, dataset files, images or video files)"
    )


def parse_spec(spec: Union[str, Path]) -> Tuple[str, Optional[Union[str, int]]]:
    """``"davis:/x"`` -> ``("davis", "/x")``; ``"synthetic:4"`` -> ``("synthetic", 4)``;
    ``"synthetic"`` -> ``("synthetic", None)``; a bare path -> ``(detected name, path)``."""
    text = str(spec)
    name, sep, location = text.partition(":")
    if sep and name in SOURCES and not Path(text).exists():
        return name, (int(location) if location.isdigit() else location) if location else None
    if not sep and text in SOURCES and not Path(text).exists():
        return text, None
    return detect_source(text), text


def open_source(spec: Union[str, Path], **options: Any) -> VideoCollection:
    """Open a data source from a spec string; ``options`` go to the source (``max_side``, ``sequences``, ...)."""
    name, location = parse_spec(spec)
    factory = SOURCES.get(name)
    try:
        return factory(**options) if location is None else factory(location, **options)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise SelfvosInputError(str(spec), f"option not supported by source {name!r}: {err}") from None
        if location is None and "required positional argument" in str(err):
            raise SelfvosInputError(str(spec), f"source {name!r} needs a location: {name}:PATH") from None
        raise
