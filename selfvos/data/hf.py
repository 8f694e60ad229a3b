"""Videos as a Hugging Face ``datasets`` dataset: one row per video, frames stored as lossless PNG.

Schema (:data:`SCHEMA`, one row = one video):

- ``name`` ``Value("string")``: video / sequence name, unique in the dataset.
- ``frames`` ``List(Image())``: every frame in temporal order as RGB PNG bytes (lossless round trip).
- ``masks`` ``List(Image())``: palette PNGs of object ids (DAVIS palette; 0 = background, 255 = void);
  ``[]`` for an unlabeled video.
- ``mask_frame_indices`` ``List(Value("int32"))``: the frame index of each mask (same length as ``masks``;
  sparse is fine, e.g. every 5th frame for YouTube-VOS).
- ``frame_names`` ``List(Value("string"))``: frame stems such as ``"00000"`` (same length as ``frames``).
- ``fps`` ``Value("float32")``: frames per second, null when unknown.
- ``source`` ``Value("string")``: where the video came from (path or generator spec).
- ``height`` / ``width`` ``Value("int32")``: frame size (after ``max_side`` shrinking).
- ``num_objects`` ``Value("int32")``: distinct object ids in the masks (0 and void excluded).

The ``Video`` feature of ``datasets`` needs torchcodec, which does not work with the CPU torch build here,
hence ``List(Image())``. Writing streams videos through ``Dataset.from_generator`` (one video's encoded row in
memory at a time) and builds the result under ``dst.tmp-*`` before renaming it to ``dst``. Reading memory-maps the Arrow files and decodes one frame's PNG only
when that frame is asked for (:class:`HFVideo`).
"""
from __future__ import annotations

import io
import re
import shutil
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.exceptions import DatasetGenerationError
from PIL import Image as PILImage

from selfvos.atomic import staging_path
from selfvos.data.video import VOID, LazyVideo, VideoCollection
from selfvos.data.writers import commit_staged, decode_id_png, encode_palette_png, fit_max_side
from selfvos.errors import PathLike, SelfvosInputError
from selfvos.registry import SOURCES

SCHEMA = datasets.Features(
    {
        "name": datasets.Value("string"),
        "frames": datasets.List(datasets.Image()),
        "masks": datasets.List(datasets.Image()),
        "mask_frame_indices": datasets.List(datasets.Value("int32")),
        "frame_names": datasets.List(datasets.Value("string")),
        "fps": datasets.Value("float32"),
        "source": datasets.Value("string"),
        "height": datasets.Value("int32"),
        "width": datasets.Value("int32"),
        "num_objects": datasets.Value("int32"),
    }
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_META_COLUMNS = ["name", "mask_frame_indices", "frame_names", "fps", "source", "height", "width", "num_objects"]


def encode_rgb_png(frame: np.ndarray, compress_level: int = 1) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes (lossless; level 1 is ~3x faster than 6 for ~10% more bytes)."""
    buffer = io.BytesIO()
    PILImage.fromarray(frame).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _decode_frame(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> (H, W, 3) uint8 RGB. The single place frames are decoded (tests count calls)."""
    image = PILImage.open(io.BytesIO(data))
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)


def video_to_row(video: LazyVideo, max_side: Optional[int] = None) -> dict:
    """Encode one video as a :data:`SCHEMA` row, reading its frames one at a time."""
    annotated = set(video.annotated_indices()) if video.has_masks else set()
    frames: List[dict] = []
    masks: List[dict] = []
    mask_indices: List[int] = []
    object_ids: set = set()
    size = None
    for i in range(len(video)):
        mask = video.mask(i) if i in annotated else None
        frame, mask = fit_max_side(video.frame(i), mask, max_side)
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise SelfvosInputError(
                video.source or video.name,
                f"frame {i} is {frame.shape[1]}x{frame.shape[0]} (WxH) but frame 0 is {size[1]}x{size[0]}",
            )
        frames.append({"bytes": encode_rgb_png(frame), "path": None})
        if mask is not None:
            masks.append({"bytes": encode_palette_png(mask), "path": None})
            mask_indices.append(i)
            object_ids.update(int(v) for v in np.unique(mask) if v not in (0, video.void_value))
    height, width = size if size is not None else (0, 0)
    return {
        "name": video.name,
        "frames": frames,
        "masks": masks,
        "mask_frame_indices": mask_indices,
        "frame_names": list(video.frame_names),
        "fps": None if video.fps is None else float(video.fps),
        "source": getattr(video, "origin", None) or video.source,
        "height": int(height),
        "width": int(width),
        "num_objects": len(object_ids),
    }


def to_hf_dataset(
    collection: VideoCollection, dst: PathLike, *, max_side: Optional[int] = None, overwrite: bool = False
) -> Path:
    """Write ``collection`` to ``dst`` as a saved :class:`datasets.Dataset` (``load_from_disk``-able).

    Videos stream through ``Dataset.from_generator`` (writer batch of one row), the build cache and the
    saved copy live under ``dst.tmp-*`` and only a complete dataset is renamed to ``dst``. ``max_side``
    shrinks frames (bilinear) and masks (nearest) so that max(H, W) <= max_side. Returns ``dst``.
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise SelfvosInputError(dst, "already exists (pass overwrite=True / --overwrite to replace it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    workspace = staging_path(dst)
    try:
        try:
            dataset = datasets.Dataset.from_generator(
                lambda: iter_rows(collection, max_side),
                features=SCHEMA,
                cache_dir=str(workspace / "cache"),
                fingerprint=uuid.uuid4().hex,  # skips hashing the generator's closure (the whole collection)
                writer_batch_size=1,
            )
        except DatasetGenerationError as err:  # surface the reader's own error (it names the bad file)
            raise (err.__cause__ or err) from None
        dataset.save_to_disk(str(workspace / "dataset"))
        del dataset
        commit_staged(workspace / "dataset", dst, overwrite=overwrite)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return dst


class HFVideo(LazyVideo):
    """One row of a video dataset; frames and masks are PNG-decoded one at a time, on demand.

    ``rows`` is the dataset formatted as Arrow (memory-mapped); only this row's list of image structs is
    referenced (zero-copy), so no other frame is decoded or copied.
    """

    def __init__(self, rows: datasets.Dataset, row: int, meta: dict, dataset_source: str) -> None:
        self._rows, self._row = rows, row
        self.name = meta["name"]
        self.source = f"{dataset_source}[{self.name}]"
        self.origin = meta["source"] or ""
        self.fps = None if meta["fps"] is None else round(float(meta["fps"]), 4)
        self.void_value = VOID
        self.height, self.width, self.num_objects = meta["height"], meta["width"], meta["num_objects"]
        self._frame_names = list(meta["frame_names"])
        self._mask_slot: Dict[int, int] = {int(f): k for k, f in enumerate(meta["mask_frame_indices"])}
        self._images: Dict[str, pa.StructArray] = {}

    @property
    def frame_names(self) -> List[str]:
        return self._frame_names

    @property
    def has_masks(self) -> bool:
        return bool(self._mask_slot)

    def annotated_indices(self) -> List[int]:
        return sorted(self._mask_slot)

    def _image_bytes(self, column: str, position: int) -> bytes:
        if column not in self._images:
            table: pa.Table = self._rows.select_columns([column])[self._row]
            self._images[column] = table.column(column)[0].values  # StructArray<bytes, path>, a zero-copy view
        return self._images[column][position]["bytes"].as_py()

    def _read_frame(self, index: int) -> np.ndarray:
        return _decode_frame(self._image_bytes("frames", index))

    def _read_mask(self, index: int) -> Optional[np.ndarray]:
        slot = self._mask_slot.get(index)
        return None if slot is None else decode_id_png(self._image_bytes("masks", slot))


def _load_hub_dataset(repo_id: str, split: str, cache_dir: Optional[str]):
    """``load_dataset(repo_id)``; when that fails (offline with no prepared copy in the datasets cache),
    fall back to a snapshot already in the hub cache (``hf download --repo-type dataset`` puts it there)."""
    try:
        return datasets.load_dataset(repo_id, split=split, cache_dir=cache_dir)
    except Exception as first_error:
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
        except Exception:
            raise first_error from None
        return datasets.load_dataset(local, split=split, cache_dir=cache_dir)


def _open_dataset(path_or_repo: str, split: str, cache_dir: Optional[str]) -> datasets.Dataset:
    """A saved dataset folder (``save_to_disk``), a folder of data files, or a hub id from the local cache."""
    path = Path(path_or_repo).expanduser()
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_dir():  # parquet / arrow data files, e.g. a downloaded hub snapshot
            loaded = datasets.load_dataset(str(path), split=split, cache_dir=cache_dir)
        elif path.exists() or not _HUB_ID.match(path_or_repo):
            raise SelfvosInputError(path, "not found (expected a saved dataset folder or a hub dataset id)")
        else:  # "owner/name": the hub (or, offline, the datasets cache), else a hub-cache snapshot
            loaded = _load_hub_dataset(path_or_repo, split, cache_dir)
    except SelfvosInputError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ValueError)
        raise SelfvosInputError(path_or_repo, f"cannot load as a video dataset ({type(err).__name__}: {err})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise SelfvosInputError(path_or_repo, f"no split {split!r}; splits: {sorted(loaded)}")
        loaded = loaded[split]
    return loaded


def _check_rows(dataset: datasets.Dataset, source: str) -> None:
    missing = [c for c in SCHEMA if c not in dataset.column_names]
    if missing:
        raise SelfvosInputError(source, f"not a selfvos video dataset: missing columns {missing} (see selfvos.data.hf)")
    columns = ["name", "frames", "frame_names", "masks", "mask_frame_indices"]
    table = dataset.select_columns(columns).with_format("arrow")[:]  # zero-copy slice of the memory map
    names = table.column("name").to_pylist()
    for a, b in (("frames", "frame_names"), ("masks", "mask_frame_indices")):
        bad = pc.not_equal(pc.list_value_length(table.column(a)), pc.list_value_length(table.column(b)))
        row = next((i for i, v in enumerate(bad.to_pylist()) if v), None)
        if row is not None:
            raise SelfvosInputError(source, f"video {names[row]!r}: {a} and {b} have different lengths")


@SOURCES.register("hf")
def load_hf_collection(
    path_or_repo: PathLike,
    split: str = "train",
    *,
    sequences: Optional[Sequence[str]] = None,
    cache_dir: Optional[str] = None,
) -> VideoCollection:
    """Open a video dataset lazily as a :class:`VideoCollection` of :class:`HFVideo` (``kind="hf"``).

    ``path_or_repo``: a ``save_to_disk`` folder (a ``DatasetDict`` picks ``split``), a folder of
    parquet/arrow files, or a hub dataset id (with ``HF_HUB_OFFLINE=1`` it is read from the local cache).
    ``sequences`` keeps only those videos. Only metadata columns are read here.
    """
    spec = str(path_or_repo)
    dataset = _open_dataset(spec, split, cache_dir)
    _check_rows(dataset, spec)
    rows = dataset.with_format("arrow")
    metas = dataset.select_columns(_META_COLUMNS).with_format("arrow")[:].to_pylist()
    videos = [HFVideo(rows, i, meta, spec) for i, meta in enumerate(metas)]
    return VideoCollection(videos, source=spec, kind="hf").select(sequences)


def iter_rows(collection: VideoCollection, max_side: Optional[int] = None) -> Iterator[dict]:
    """Schema rows of every video, one at a time (for custom writers, e.g. ``push_to_hub`` via a generator)."""
    for video in collection:
        yield video_to_row(video, max_side)
