"""Reading DAVIS-style PNG folders (``ROOT/<sequence>/<frame>.png``) and scoring them, in parallel.

Every bad input raises one ``SelfvosInputError`` naming the file or folder: a GT sequence without a
prediction folder, a prediction of another size than its GT, a non-single-channel (e.g. RGB) mask, a corrupt
PNG, an empty GT folder. Prediction folders without GT are logged as a warning and ignored.

As the official DAVIS code, every ground-truth frame needs its prediction ``PRED/<seq>/<frame>.png`` (the first
and last too, though the official protocol does not score them): a missing frame, a sequence saved as
``.jpg``, a misnamed file (``0.png`` for ``00000.png``) or any other visible file in a prediction sequence
folder is an error naming the sequence and the frame, never an empty mask scored 0. With
``missing_as_empty=True`` a missing frame (or a missing sequence folder) is scored as an empty mask instead,
and counted (``SequenceResult.missing``); files that match no frame stay an error. Every prediction's size and
channels are checked, scored or not.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from selfvos.errors import SelfvosInputError
from selfvos.eval.davis import (
    BOUND_TH,
    PROTOCOLS,
    DatasetResult,
    SequenceResult,
    evaluate_sequence,
    first_frame_objects,
    protocol_frames,
)

log = logging.getLogger(__name__)

SINGLE_CHANNEL_MODES = ("1", "L", "P")  # PIL modes accepted as masks
PathLike = Union[str, "os.PathLike[str]"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> channels (3 = palette)


def _png_header(path: PathLike) -> Tuple[int, int, int, int]:
    """(height, width, bit depth, colour type) from a PNG's IHDR chunk, without decoding."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError as err:
        raise SelfvosInputError(path, f"cannot read file ({err.strerror})") from None
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise SelfvosInputError(path, "not a PNG file (bad signature or header)")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return height, width, head[24], head[25]


def _decode_with_pil(path: PathLike) -> np.ndarray:
    from PIL import Image  # only palette PNGs and odd bit depths need it

    try:
        with Image.open(path) as img:
            if img.mode not in SINGLE_CHANNEL_MODES:
                raise SelfvosInputError(path, f"mask must be a palette or grayscale PNG, got mode {img.mode!r}")
            return np.asarray(img).astype(np.uint8, copy=False)
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, SelfvosInputError):
            raise
        raise SelfvosInputError(path, f"corrupt PNG ({err})") from None


def check_mask_header(path: PathLike, shape: Optional[Tuple[int, int]] = None) -> Tuple[int, int, int, int]:
    """(height, width, bit depth, colour type) of a mask PNG, checked from its header alone to be a
    single-channel PNG of size ``shape`` (H, W) when given."""
    height, width, depth, colour = _png_header(path)
    channels = PNG_CHANNELS.get(colour)
    if channels != 1:
        kind = {2: "RGB", 4: "grey+alpha", 6: "RGBA"}.get(colour, f"colour type {colour}")
        raise SelfvosInputError(
            path, f"mask must be a single-channel palette or grayscale PNG, got {kind} ({channels} channels)")
    if shape is not None and (height, width) != tuple(shape):
        raise SelfvosInputError(
            path, f"size {width}x{height} differs from the ground truth {shape[1]}x{shape[0]}")
    return height, width, depth, colour


def read_mask(path: PathLike, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Read a palette / grayscale / 1-bit PNG as uint8 (H, W) ids (1-bit: 0/1), checking size against ``shape``.

    8-bit and 1-bit grayscale PNGs are decoded by OpenCV (about twice as fast as PIL); palette PNGs by PIL,
    which keeps the palette indices.
    """
    height, width, depth, colour = check_mask_header(path, shape)
    array = None
    if colour == 0 and depth in (1, 8):
        array = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
        if array is not None and depth == 1:
            array = array >> 7  # OpenCV expands 1-bit to 0/255; ids are 0/1 as PIL reads them
    if array is None:  # palette, other bit depths, or a file OpenCV could not decode (PIL names the error)
        array = _decode_with_pil(path)
    if array.shape != (height, width):
        raise SelfvosInputError(path, f"decoded shape {array.shape} does not match the PNG header")
    return array


def frame_names(folder: Path) -> List[str]:
    """Sorted stems of the ``*.png`` files in a folder."""
    return sorted(p.stem for p in folder.glob("*.png"))


def is_palette_annotation(path: PathLike) -> bool:
    """Whether an annotation PNG stores object ids in a palette (DAVIS-2017 style)."""
    return _png_header(path)[3] == 3


def resolve_sequences(pred_dir: Path, gt_dir: Path, sequences: Optional[Sequence[str]] = None,
                      missing_as_empty: bool = False) -> List[str]:
    """GT sequences to score (all, or the requested ones), each checked to have frames and a prediction folder
    (with ``missing_as_empty`` a missing prediction folder is a warning: all its frames count as missing)."""
    if not gt_dir.is_dir():
        raise SelfvosInputError(gt_dir, "ground-truth folder does not exist")
    if not pred_dir.is_dir():
        raise SelfvosInputError(pred_dir, "prediction folder does not exist")
    available = sorted(p.name for p in gt_dir.iterdir() if p.is_dir())
    if not available:
        raise SelfvosInputError(gt_dir, "ground-truth folder holds no sequence folders")
    names = list(sequences) if sequences else available
    for name in names:
        if name not in available:
            raise SelfvosInputError(gt_dir / name, "no ground truth for this requested sequence")
        if not frame_names(gt_dir / name):
            raise SelfvosInputError(gt_dir / name, "ground-truth sequence folder holds no PNG annotations")
        _check_prediction_folder(pred_dir / name, name, missing_as_empty)
    if not sequences:
        for extra in sorted(p.name for p in pred_dir.iterdir() if p.is_dir() and p.name not in available):
            log.warning("%s: predictions for a sequence with no ground truth; ignored", pred_dir / extra)
    return names


def _check_prediction_folder(pred_seq: Path, name: str, missing_as_empty: bool) -> None:
    """A ground-truth sequence's prediction folder exists (or, with ``missing_as_empty``, is absent: warned)."""
    if pred_seq.is_dir():
        return
    if pred_seq.exists():
        raise SelfvosInputError(pred_seq, f"prediction for sequence {name!r} is not a folder")
    if not missing_as_empty:
        raise SelfvosInputError(pred_seq, f"no prediction folder for ground-truth sequence {name!r} "
                                          "(--missing-as-empty scores its frames as empty masks)")
    log.warning("%s: no prediction folder for sequence %r; all its frames are scored as empty masks",
                pred_seq, name)


def prediction_files(pred_seq: Path) -> List[str]:
    """Names of the visible (not dot-) files in a prediction sequence folder; none when it is absent."""
    if not pred_seq.is_dir():
        return []
    return sorted(p.name for p in pred_seq.iterdir() if not p.name.startswith(".") and not p.is_dir())


def _span(names: Sequence[str]) -> str:
    """``"00000.png .. 00049.png"``: the PNG names of the first and last frame."""
    return f"{names[0]}.png" if len(names) == 1 else f"{names[0]}.png .. {names[-1]}.png"


def missing_predictions(name: str, pred_seq: Path, gt_names: Sequence[str], missing_as_empty: bool) -> List[str]:
    """The ground-truth frames of sequence ``name`` without a prediction PNG in ``pred_seq``.

    A file that matches no ground-truth frame (``0.png``, ``00000.jpg``, ``00099.png`` past the last frame) is
    an error naming it; so is a missing frame unless ``missing_as_empty``.
    """
    files = prediction_files(pred_seq)
    expected = [f"{n}.png" for n in gt_names]
    present = set(files)
    missing = [n for n, f in zip(gt_names, expected) if f not in present]
    extra = sorted(set(files) - set(expected))
    if extra:
        gap = f"; {len(missing)} frame(s) have no prediction, e.g. {missing[0]}.png" if missing else ""
        raise SelfvosInputError(pred_seq / extra[0], f"sequence {name!r}: {extra[0]!r} is not a ground-truth "
                                                     f"frame name ({len(extra)} such file(s); predictions must be "
                                                     f"named like the ground truth, {_span(gt_names)}{gap})")
    if missing and not missing_as_empty:
        raise SelfvosInputError(pred_seq / f"{missing[0]}.png",
                                f"sequence {name!r}: no prediction for frame {missing[0]!r} ({len(missing)} of "
                                f"{len(gt_names)} frames missing); every ground-truth frame needs one "
                                "(--missing-as-empty scores missing frames as empty masks)")
    return missing


def load_and_evaluate(
    name: str, pred_dir: Path, gt_dir: Path, multi_object: bool, protocol: str, bound_th: float = BOUND_TH,
    missing_as_empty: bool = False,
) -> SequenceResult:
    """Read one sequence's GT (only the frames the protocol scores) and predictions and score it; every
    prediction file is checked (names, size, channels), unscored ones from their header alone."""
    gt_seq, pred_seq = gt_dir / name, pred_dir / name
    names = frame_names(gt_seq)
    scored = list(protocol_frames(len(names), protocol))
    if not scored:
        raise SelfvosInputError(gt_seq, f"{len(names)} annotated frames leave none to score with protocol {protocol!r}")
    missing = set(missing_predictions(name, pred_seq, names, missing_as_empty))
    needed = sorted(set(scored) | ({0} if multi_object else set()))
    gt: List[Optional[np.ndarray]] = [None] * len(names)
    pred: List[Optional[np.ndarray]] = [None] * len(names)
    shape = None
    for i in needed:
        gt[i] = read_mask(gt_seq / f"{names[i]}.png", shape)
        shape = gt[i].shape
        if names[i] not in missing:
            pred[i] = read_mask(pred_seq / f"{names[i]}.png", shape)
    for i in sorted(set(range(len(names))) - set(needed)):
        if names[i] not in missing:
            check_mask_header(pred_seq / f"{names[i]}.png", shape)
    if multi_object and not first_frame_objects(gt[0]):
        raise SelfvosInputError(gt_seq / f"{names[0]}.png", "first-frame annotation holds no object id")
    result = evaluate_sequence(name, names, gt, pred, multi_object, protocol, bound_th)
    result.missing = [n for n in names if n in missing]
    return result


def _score_or_error(job: tuple) -> Union[SequenceResult, Tuple[str, str]]:
    """Worker entry point; returns (path, problem) instead of raising so the error survives pickling."""
    try:
        return load_and_evaluate(*job)
    except SelfvosInputError as err:
        return (err.path, err.problem)


def _single_threaded_worker() -> None:
    """One OpenCV thread per worker process: the processes already use every core."""
    cv2.setNumThreads(1)


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def evaluate_folders(
    pred_dir: PathLike,
    gt_dir: PathLike,
    sequences: Optional[Sequence[str]] = None,
    protocol: str = "official",
    multi_object: Union[str, bool] = "auto",
    workers: Optional[int] = None,
    bound_th: float = BOUND_TH,
    missing_as_empty: bool = False,
) -> DatasetResult:
    """Score ``pred_dir/<seq>/<frame>.png`` against ``gt_dir/<seq>/<frame>.png``.

    ``multi_object``: ``"auto"`` (palette GT -> multi-object, grayscale -> binary), ``"yes"``/True, ``"no"``/False.
    ``workers``: processes (default: one per available core, at most one per sequence; 1 = in-process).
    ``missing_as_empty``: score a ground-truth frame without prediction as an empty mask (counted in
    ``DatasetResult.missing_frames()``) instead of raising; see the module docstring.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if multi_object not in ("auto", "yes", "no", True, False, None):
        raise ValueError(f"multi_object must be 'auto', 'yes' or 'no', got {multi_object!r}")
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    names = resolve_sequences(pred_dir, gt_dir, sequences, missing_as_empty)
    if multi_object in ("auto", None):
        first_seq = gt_dir / names[0]
        multi = is_palette_annotation(first_seq / f"{frame_names(first_seq)[0]}.png")
    else:
        multi = multi_object in (True, "yes")
    # longest sequences first so the pool stays balanced
    names_by_size = sorted(names, key=lambda n: -len(frame_names(gt_dir / n)))
    jobs = [(n, pred_dir, gt_dir, multi, protocol, bound_th, missing_as_empty) for n in names_by_size]
    n_workers = min(workers or available_cores(), len(jobs))
    if n_workers <= 1:
        outcomes = [_score_or_error(job) for job in jobs]
    else:
        methods = multiprocessing.get_all_start_methods()
        if "torch" in sys.modules or "fork" not in methods:
            # forking a process whose torch thread pools already ran can deadlock the children (evaluating
            # inside a training or segmentation script); OpenCV and numpy release the GIL, so threads scale too
            with ThreadPoolExecutor(n_workers) as pool:
                outcomes = list(pool.map(_score_or_error, jobs))
        else:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_single_threaded_worker) as pool:
                outcomes = list(pool.map(_score_or_error, jobs))
    results: Dict[str, SequenceResult] = {}
    for outcome in outcomes:
        if isinstance(outcome, tuple):
            raise SelfvosInputError(*outcome)
        results[outcome.name] = outcome
    return DatasetResult({n: results[n] for n in names}, multi, protocol, missing_as_empty)
