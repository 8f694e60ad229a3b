"""What each inference optimisation buys for the MuG model: the backbone encode and the whole ``Segmenter.step``.

Rows per variant (a fresh copy of the model each; frames of a davis2016-val-dev sequence resized to ``size``):
``encode one-shot`` / ``encode zero-shot``: ``model.encode`` of the batch that core encodes (:func:`core_batch`);
``zero-shot`` / ``one-shot``: ``Segmenter.step`` with the default ``ZeroShotConfig`` / label propagation
(``OneShotConfig(short_side=None)``: the same as the default 480 at 854x480, and a small ``--size`` stays small).
The first :data:`WARMUP` frames (the annotated one + ``num_previous`` = 3: a full context bank) are not timed.
Variants: :data:`VARIANTS` (each row carries its ``what``; ``fp32`` is the reference). An optimisation that fails
here (``torch.compile`` without a compiler, no quantized engine) is the row's ``error``, not a crash. Per row: median seconds per frame over ``frames`` timed steps, speedup = fp32 seconds / variant seconds,
fidelity: ``feature_max_abs_diff`` = max |phi_variant - phi_fp32| over the timed frames (encode rows, with
``feature_max_abs`` = max |phi_fp32| for scale) and ``mask_iou`` = mean over timed frames of the object-averaged
IoU of the step's ids against the fp32 run's (step rows; each run feeds back its own outputs, so drift counts).

    python benchmarks/speed_optim.py [--frames 10] [--size 480 854] [--variants fp32 int8] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "davis2016-val-dev"
RESULTS = REPO / "benchmarks" / "results" / "speed_optim.json"
WARMUP = 4  # untimed frames: the annotated one + OneShotConfig.num_previous
TASKS = ("encode one-shot", "encode zero-shot", "zero-shot", "one-shot")


@dataclass(frozen=True)
class Variant:
    """How a variant changes the run: the one-shot core's dtypes, ``context`` (+ bf16 ``autocast``) around every
    call, a model change."""

    what: str
    encode_dtype: str = "float32"
    affinity_dtype: str = "float32"
    context: Callable[[], ContextManager] = torch.no_grad
    autocast: bool = False
    transform: Optional[str] = None  # "channels_last" | "compile" | "int8"

    def one_shot_config(self) -> Any:
        from selfvos.inference.one_shot import OneShotConfig

        return OneShotConfig(short_side=None, encode_dtype=self.encode_dtype, affinity_dtype=self.affinity_dtype)


VARIANTS: Dict[str, Variant] = {
    "fp32": Variant("float32, torch.no_grad; one-shot OneShotConfig(encode_dtype=affinity_dtype='float32')"),
    "default": Variant("the cores as shipped: one-shot encode_dtype=affinity_dtype='auto' (bf16 encode autocast + bf16 "
                       "affinity where bf16 is native, else fp32); zero-shot fp32", "auto", "auto"),
    "inference_mode": Variant("fp32 under torch.inference_mode() instead of no_grad", context=torch.inference_mode),
    "channels_last": Variant("fp32, model.to(memory_format=torch.channels_last) (MuGModel.encode then feeds NHWC)",
                             transform="channels_last"),
    "bf16_autocast": Variant("every call in torch.autocast('cpu', dtype=torch.bfloat16) (convs, affinity baddbmm); "
                             "one-shot encode_dtype='bfloat16' (the core's own autocast(enabled=False) would switch "
                             "the outer one off)", "bfloat16", autocast=True),
    "compile": Variant("fp32, model.encode = torch.compile(model.encode, dynamic=False) (inductor)", transform="compile"),
    "int8": Variant("FX static quantization of the backbone up to its feature layer (get_default_qconfig_mapping('x86'):"
                    " per-channel int8 weights, uint8 activations, BN folded), calibrated through MuGModel.encode on "
                    "the warm-up frames at both cores' input sizes; heads and affinity fp32", transform="int8")}


class Int8Trunk(torch.nn.Module):
    """Backbone stand-in: normalised (B, 3, H, W) -> ``{feature_layer: (B, C, h, w)}`` through one FX graph of conv1 ..
    feature layer (observing until ``convert_fx``). ``conv1`` (float) is kept for ``MuGModel.encode``'s layout check."""

    def __init__(self, backbone: torch.nn.Module, example: torch.Tensor) -> None:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import prepare_fx

        super().__init__()
        self.layer, self.in_chans, self.conv1 = backbone.return_layers[-1], backbone.in_chans, backbone.conv1
        names = ["conv1", "bn1", "relu", "maxpool", *[f"layer{i}" for i in range(1, int(self.layer[-1]) + 1)]]
        trunk = copy.deepcopy(torch.nn.Sequential(*(getattr(backbone, n) for n in names))).eval()
        self.graph = prepare_fx(trunk, get_default_qconfig_mapping("x86"), example_inputs=(example,))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {self.layer: self.graph(x)}


def core_batch(frame: np.ndarray, task: str) -> torch.Tensor:
    """(H, W, 3) uint8 -> the batch the ``task`` core hands to ``model.encode``: one-shot (2, 3, H, W), the frame +
    its mirror image (``flip_average``); zero-shot (1, 3, h, w) area-shrunk to ``input_max_side``."""
    from selfvos.data.image_io import shrink_frame
    from selfvos.inference.zero_shot import ZeroShotConfig

    if task == "one-shot":
        image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
        return torch.cat([image, image.flip(-1)])
    small = np.ascontiguousarray(shrink_frame(frame, ZeroShotConfig().input_max_side))
    return torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255


def prepare(model: torch.nn.Module, variant: Variant, calibration: Sequence[np.ndarray]) -> torch.nn.Module:
    """A copy of ``model`` changed as ``variant`` says."""
    model = copy.deepcopy(model).eval()
    if variant.transform == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    elif variant.transform == "compile":
        model.encode = torch.compile(model.encode, dynamic=False)
    elif variant.transform == "int8":
        from torch.ao.quantization.quantize_fx import convert_fx

        batches = [core_batch(f, task) for task in ("one-shot", "zero-shot") for f in calibration]
        model.backbone = Int8Trunk(model.backbone, (batches[0] - model.pixel_mean) / model.pixel_std)
        with torch.no_grad():
            for batch in batches:
                model.encode(batch)
        model.backbone.graph = convert_fx(model.backbone.graph)
    return model


def dtype_resolution() -> Dict[str, Any]:
    """What the cores' ``"auto"`` dtypes resolve to on this machine."""
    from selfvos.inference.one_shot import bfloat16_is_native

    native = bfloat16_is_native(torch.device("cpu"))
    return {"bfloat16_native": native, "one_shot_auto_encode_and_affinity": "bfloat16" if native else "float32",
            "zero_shot_encode": "float32 (no dtype setting)"}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the object ids in either (H, W) id mask of IoU(a == i, b == i); 1.0 when both have none."""
    ids = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
    return float(np.mean([((a == i) & (b == i)).sum() / ((a == i) | (b == i)).sum() for i in ids])) if ids else 1.0


def timed_calls(call: Callable[[int], Any], count: int) -> Tuple[float, List[float], List[Any]]:
    """Run ``call(t)`` for t < count: (seconds of the first call, seconds of calls >= WARMUP, their outputs)."""
    seconds, outputs = [], []
    for t in range(count):
        start = time.perf_counter()
        out = call(t)
        seconds.append(time.perf_counter() - start)
        outputs.append(out if t >= WARMUP else None)
    return seconds[0], seconds[WARMUP:], outputs[WARMUP:]


def run_task(model: torch.nn.Module, variant: Variant, task: str, frames: Sequence[np.ndarray],
             first_mask: Optional[np.ndarray]) -> Tuple[float, List[float], List[Any]]:
    """One row's calls: encode rows give the float32 features phi (B, C, h, w) of each timed frame, step rows its
    (H, W) uint8 ids."""
    from selfvos.inference import Segmenter
    from selfvos.inference.one_shot import FeatureEmbedding

    if task.startswith("encode"):
        core = task.split()[1]
        # the variant's autocast, or the one-shot core's own (FeatureEmbedding: encode_dtype "bfloat16" / native "auto")
        autocast = variant.autocast or core == "one-shot" and FeatureEmbedding(model, variant.one_shot_config()).bfloat16
        batches = [core_batch(f, core) for f in frames]
        with variant.context(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return timed_calls(lambda t: model.encode(batches[t]).float().clone(), len(frames))
    segmenter = Segmenter(model, task, one_shot=variant.one_shot_config())
    with variant.context(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.autocast):
        return timed_calls(lambda t: segmenter.to_ids(segmenter.step(
            frames[t], mask=first_mask if t == 0 and task == "one-shot" else None)), len(frames))


def load_frames(sequence: str, count: int, size: Tuple[int, int]) -> Tuple[List[np.ndarray], Optional[np.ndarray],
                                                                           Optional[str]]:
    """``count`` frames of ``sequence`` resized to ``size`` (H, W) + its first mask; without the data: seeded
    noise frames, no mask and the reason the step rows are skipped."""
    import cv2

    from selfvos.data.sources import open_source
    from selfvos.data.video import first_frame_mask
    from selfvos.errors import SelfvosInputError

    if not DATA.is_dir():
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (*size, 3), np.uint8) for _ in range(count)], None, f"{DATA}: not found"
    videos = open_source(f"davis:{DATA}")
    if sequence not in videos.names:
        raise SelfvosInputError("--sequence", f"no {sequence!r} in {DATA}; available: {videos.names}")
    video, height, width = videos[sequence], *size
    mask = first_frame_mask(video)
    if mask is None:
        raise SelfvosInputError(str(DATA / sequence), "frame 0 has no annotation (one-shot needs it)")
    if len(video) < count:
        raise SelfvosInputError("--frames", f"{sequence} has {len(video)} frames; {WARMUP} warm-up + --frames = {count}")
    frames = [cv2.resize(video.frame(t), (width, height), interpolation=cv2.INTER_AREA) for t in range(count)]
    return frames, cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST), None


def describe(err: Exception) -> str:
    """``"<type>: <first line of the message>"``, at most 400 characters."""
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"[:400]


def cpu_description() -> str:
    """``"<model name> (avx2, avx512f, avx512_bf16, amx_bf16 when present)"`` from /proc/cpuinfo (Linux)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return f"{name} ({', '.join(f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16') if f in flags)})"


def load_model(checkpoint: str) -> Tuple[torch.nn.Module, str]:
    import selfvos
    from selfvos.pretrain import MuGModel

    if Path(checkpoint).exists():
        return selfvos.from_pretrained(checkpoint).eval(), checkpoint
    torch.manual_seed(0)
    return MuGModel().eval(), f"MuGModel() seed 0 ({checkpoint} absent)"


def optim_rows(checkpoint: str, frames: int, size: Tuple[int, int] = (480, 854),
               variants: Optional[Sequence[str]] = None, sequence: str = "blackswan") -> List[Dict[str, Any]]:
    """One dict per (variant, task in :data:`TASKS`); ``fp32`` always runs first (the reference)."""
    from selfvos.errors import SelfvosInputError

    names = list(variants or VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SelfvosInputError("--variants", f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if frames < 1:
        raise SelfvosInputError("--frames", f"need at least 1 timed frame, got {frames}")
    names = ["fp32"] + [n for n in names if n != "fp32"]
    model, source = load_model(checkpoint)
    clip, first_mask, skip = load_frames(sequence, WARMUP + frames, tuple(size))
    reference: Dict[str, Tuple[float, List[Any]]] = {}
    rows = []
    for name in names:
        variant, error = VARIANTS[name], None
        try:
            variant_model = prepare(model, variant, clip[:WARMUP])
        except Exception as err:  # noqa: BLE001 - an unavailable optimisation is a result, not a crash
            error = describe(err)
        for task in TASKS:
            row: Dict[str, Any] = {"variant": name, "task": task, "what": variant.what, "model": source,
                                   "sequence": sequence, "size": list(size), "frames": frames, "error": error}
            rows.append(row)
            if error or (skip and not task.startswith("encode")):
                row["skipped"] = error or skip
                continue
            try:
                first, seconds, outputs = run_task(variant_model, variant, task, clip, first_mask)
            except Exception as err:  # noqa: BLE001 - e.g. torch.compile without a working compiler
                row["error"] = row["skipped"] = describe(err)
                error = row["error"] if task.startswith("encode") else None  # a failed encode fails every row
                continue
            median = statistics.median(seconds)
            if name == "fp32":
                reference[task] = (median, outputs)
            row.update(seconds_per_frame=median, frames_per_s=1 / median, first_call_seconds=first)
            if name == "compile":
                row["compile_seconds"] = first - median
            if task not in reference:
                continue
            base, base_outputs = reference[task]
            row["speedup"] = base / median
            if task.startswith("encode"):
                row["feature_max_abs_diff"] = max(float((o - r).abs().max()) for o, r in zip(outputs, base_outputs))
                row["feature_max_abs"] = max(float(r.abs().max()) for r in base_outputs)
            else:
                row["mask_iou"] = float(np.mean([mask_iou(o, r) for o, r in zip(outputs, base_outputs)]))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    from selfvos.atomic import atomic_write_json
    from selfvos.errors import SelfvosInputError
    from selfvos.utils.profiling import matmul_peak_gflops

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "runs" / "mug_davis16_cpu" / "model"))
    parser.add_argument("--frames", type=int, default=10, help=f"timed frames per row (after {WARMUP} warm-up)")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 854], metavar=("H", "W"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"of {list(VARIANTS)}")
    parser.add_argument("--sequence", default="blackswan")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own, OMP_NUM_THREADS)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = optim_rows(args.checkpoint, args.frames, tuple(args.size), args.variants, args.sequence)
    except SelfvosInputError as err:
        print(err, file=sys.stderr)
        return 2
    resolution = dtype_resolution()
    peaks = {str(d).split(".")[1]: matmul_peak_gflops(repeats=5, dtype=d)
             for d in (torch.float32, torch.bfloat16) if d == torch.float32 or resolution["bfloat16_native"]}
    about = {"machine": platform.platform(), "processor": cpu_description(), "torch": torch.__version__,
             "threads": torch.get_num_threads(), "matmul_peak_gflops": peaks, "dtype_resolution": resolution,
             "warmup_frames": WARMUP, "date": time.strftime("%Y-%m-%d")}
    atomic_write_json(args.out, {"_about": about, "rows": rows})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul peak "
          + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) + f" GFLOP/s; {resolution}")
    columns = (("seconds_per_frame", "s/frame", "8.3f"), ("frames_per_s", "frames/s", "8.2f"),
               ("speedup", "speedup", "7.2f"), ("first_call_seconds", "first s", "8.2f"),
               ("feature_max_abs_diff", "feat |d|", "9.3g"), ("mask_iou", "IoU", "6.3f"))
    print(f"{'variant':<15} {'task':<17} " + " ".join(f"{title:>{spec.split('.')[0]}}" for _, title, spec in columns))
    for r in rows:
        cells = [f"{r[k]:{spec}}" if k in r else " " * int(spec.split(".")[0]) for k, _, spec in columns]
        print(f"{r['variant']:<15} {r['task']:<17} " + (f"skipped: {r['skipped']}" if "skipped" in r else " ".join(cells)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
