"""``selfvos segment``: segment one video (file or folder of frames) with a pretrained checkpoint.

    selfvos segment --checkpoint CKPT --input VIDEO_OR_FRAMES_DIR --out OUT_DIR [--first-mask MASK.png]
                    [--overlay OUT.mp4] [--task auto|zero-shot|one-shot] [--max-side N] [--device cpu|cuda]
                    [--mode online|offline] [--references N] [--reference-weight W] [--motion-weight W]
                    [--grabcut ITERATIONS] [--prior-weight W] [--refine-radius PIXELS]
                    [--object-gain G]

Writes ``OUT_DIR/<frame name>.png`` (DAVIS-palette PNG of object ids) for every frame, named like the
input frames (``00000`` ... for a video file). With ``--first-mask`` the mask of the first frame is
propagated (one-shot); without it the primary object is segmented from the model alone (zero-shot).
``--overlay`` also writes the frames with the masks blended in and outlined (H.264 mp4).

Example::

    selfvos segment --checkpoint runs/mug/final --input ../shared/data/videos/dog.mp4 --out out/dog \\
        --overlay out/dog.mp4 --max-side 432
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="segment one video with a pretrained checkpoint (zero-shot or one-shot)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors) or Hub id")
    p.add_argument("--input", required=True, help="video file, folder of frames, or any open_source spec")
    p.add_argument("--out", required=True, help="folder for the palette PNG masks")
    p.add_argument("--first-mask", default=None, help="first frame's mask (palette/grey PNG of ids): one-shot")
    p.add_argument("--overlay", default=None, help="also write an overlay video here (e.g. out.mp4)")
    add_common_options(p)
    p.set_defaults(func=run)


def add_common_options(p: argparse.ArgumentParser, tasks: tuple = ("auto", "zero-shot", "one-shot"),
                       default_task: Optional[str] = "auto") -> None:
    """Options shared with ``segment-dataset``."""
    task_help = ("auto: one-shot when a first mask is given, zero-shot otherwise" if "auto" in tasks
                 else "zero-shot: no annotation is read; one-shot: the first frame's annotation is propagated")
    p.add_argument("--task", choices=tasks, default=default_task, required=default_task is None, help=task_help)
    p.add_argument("--max-side", type=int, default=None,
                   help="longest side frames are processed at (default: zero-shot 432, one-shot short side 480)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs (default cpu)")
    p.add_argument("--mode", choices=("online", "offline"), default="online",
                   help="zero-shot references: online = past frames only, offline = spread over the whole video")
    p.add_argument("--references", type=int, default=5, help="zero-shot reference frames N (default 5)")
    p.add_argument("--reference-weight", type=float, default=None,
                   help="zero-shot: weight of the co-attention references against the frame head, 0 = off "
                        "(default: ZeroShotConfig.reference_weight)")
    p.add_argument("--motion-weight", type=float, default=None,
                   help="zero-shot: weight of the camera-compensated optical-flow motion cue, 0 = off "
                        "(default: ZeroShotConfig.motion_weight)")
    p.add_argument("--grabcut", type=int, default=None, metavar="ITERATIONS",
                   help="zero-shot: GrabCut refinement iterations, 0 = off (default: ZeroShotConfig.grabcut_iterations)")
    p.add_argument("--prior-weight", type=float, default=None,
                   help="zero-shot: weight of the previous outputs propagated to the frame by feature affinity, "
                        "0 = off (default: ZeroShotConfig.propagation_weight)")
    p.add_argument("--refine-radius", type=int, default=None, metavar="PIXELS",
                   help="one-shot: guided-filter refinement radius at the working size, 0 = plain bilinear "
                        "upsampling (default: OneShotConfig.refine_radius)")
    p.add_argument("--head-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a head's inference setting, repeatable (e.g. STM: --head-option memory_every=5 "
                        "--head-option max_memory=8); see the head's inference config")
    p.add_argument("--object-gain", type=float, default=None, metavar="G",
                   help="one-shot: object probabilities are multiplied by G before the argmax; > 1 favours recall "
                        "(default: OneShotConfig.object_gain)")


def load_model(checkpoint: str, device: str) -> Any:
    """``selfvos.from_pretrained(checkpoint)`` on ``device``, checked to have an inference core (a pretrained
    MuG model or a fine-tuned head)."""
    import torch

    import selfvos
    from selfvos.errors import SelfvosInputError
    from selfvos.registry import CORES

    if device == "cuda" and not torch.cuda.is_available():
        raise SelfvosInputError("--device", "cuda requested but torch sees no CUDA device")
    model = selfvos.from_pretrained(checkpoint, map_location=device)
    if model.architecture not in CORES:
        raise SelfvosInputError(checkpoint, f"a {model.architecture!r} checkpoint cannot segment video (models that "
                                            f"can: {', '.join(CORES.names())})")
    return model


def make_segmenter(model: Any, args: argparse.Namespace, task: str) -> Any:
    from selfvos.inference.one_shot import OneShotConfig
    from selfvos.inference.segmenter import Segmenter
    from selfvos.inference.zero_shot import ZeroShotConfig

    optional = {"reference_weight": args.reference_weight, "motion_weight": args.motion_weight,
                "grabcut_iterations": args.grabcut, "propagation_weight": args.prior_weight}
    zero_shot = ZeroShotConfig(mode=args.mode, num_references=args.references,
                               **{k: v for k, v in optional.items() if v is not None})
    one_shot = OneShotConfig(**{k: v for k, v in {"refine_radius": args.refine_radius,
                                                  "object_gain": args.object_gain}.items() if v is not None})
    return Segmenter(model, task, zero_shot=zero_shot, one_shot=one_shot, head=head_options(args.head_option),
                     max_side=args.max_side)


def head_options(pairs: list) -> dict:
    """``["memory_every=5", "dtype=float32"]`` -> ``{"memory_every": 5, "dtype": "float32"}`` (values as YAML)."""
    import yaml

    from selfvos.errors import SelfvosInputError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SelfvosInputError("--head-option", f"{pair!r} is not KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


def check_task(model: Any, task: str, checkpoint: str) -> None:
    """A clear error before any frame is read when the model cannot run ``task`` (e.g. STM without a mask)."""
    from selfvos.errors import SelfvosInputError
    from selfvos.inference.core import supported_tasks

    if task not in supported_tasks(model):
        hint = "give --first-mask" if task == "zero-shot" else "drop --first-mask"
        raise SelfvosInputError(checkpoint, f"the {model.architecture} model runs "
                                            f"{' / '.join(supported_tasks(model))} only ({hint})")


def read_first_mask(path: str, frame_shape: tuple) -> Any:
    """The first frame's ids; grey 0/255 becomes {0, 1}; void (255) is set to background."""
    from selfvos.data.image_io import read_mask
    from selfvos.errors import SelfvosInputError

    mask = read_mask(path)
    if mask.shape != tuple(frame_shape[:2]):
        raise SelfvosInputError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the video's frames are "
                                      f"{frame_shape[1]}x{frame_shape[0]}")
    mask = mask.copy()
    mask[mask == 255] = 0
    if not mask.any():
        raise SelfvosInputError(path, "first mask has no object (all background)")
    return mask


def run(args: argparse.Namespace) -> int:
    import time

    from selfvos.data.sources import open_source
    from selfvos.data.writers import save_palette_png
    from selfvos.errors import SelfvosInputError
    from selfvos.inference.io import OverlayVideoWriter

    if args.task == "one-shot" and not args.first_mask:
        raise SelfvosInputError("--first-mask", "required with --task one-shot")
    if args.task == "zero-shot" and args.first_mask:
        raise SelfvosInputError("--first-mask", "not used by --task zero-shot (drop it or use --task one-shot)")
    collection = open_source(args.input)
    if len(collection) != 1:
        raise SelfvosInputError(args.input, f"holds {len(collection)} videos; segment one at a time "
                                            "or use segment-dataset")
    video = collection[0]
    first_mask = read_first_mask(args.first_mask, video.frame(0).shape) if args.first_mask else None
    task = "one-shot" if first_mask is not None else "zero-shot"
    model = load_model(args.checkpoint, args.device)
    check_task(model, task, args.checkpoint)
    segmenter = make_segmenter(model, args, task)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = OverlayVideoWriter(args.overlay, fps=video.fps) if args.overlay else None
    names, start, count = video.frame_names, time.perf_counter(), 0
    try:
        for t, ids in enumerate(segmenter.segment_video(video, first_mask=first_mask, progress=True)):
            save_palette_png(out_dir / f"{names[t]}.png", ids)
            if writer is not None:
                writer.write(video.frame(t), ids)
            count += 1
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        print(f"wrote overlay {writer.close()} ({writer.codec})")
    seconds = time.perf_counter() - start
    print(f"{task}: wrote {count} masks to {out_dir} in {seconds:.1f} s ({count / max(seconds, 1e-9):.2f} frames/s)")
    return 0
