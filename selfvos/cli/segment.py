"""``selfvos segment``: segment one video (file or folder of frames) with a pretrained checkpoint.

    selfvos segment --checkpoint CKPT --input VIDEO_OR_FRAMES_DIR --out OUT_DIR
                    [--first-mask MASK.png | --box "x0,y0,x1,y1[;...]" --points "x,y[,label][;...]" ...]
                    [--overlay OUT.mp4] [--task auto|zero-shot|one-shot] [--max-side N] [--device cpu|cuda]
                    [--mode online|offline] [--references N] [--reference-weight W] [--motion-weight W]
                    [--grabcut ITERATIONS] [--prior-weight W] [--refine-radius PIXELS]
                    [--object-gain G] [--online-steps N]
    selfvos segment --task vis --checkpoint CKPT --input VIDEO --instances rvos:CKPT|FOLDER --out OUT_DIR
                    [--vis-json OUT.json] [--overlay OUT.mp4]      (video instance segmentation, see segment_vis)

Writes ``OUT_DIR/<frame name>.png`` (DAVIS-palette PNG of object ids) for every frame, named like the
input frames (``00000`` ... for a video file). With ``--first-mask`` the mask of the first frame is
propagated (one-shot); without it the primary object is segmented from the model alone (zero-shot).
``--overlay`` also writes the frames with the masks blended in and outlined (H.264; .mp4, .mkv, .mov, .avi).

Without an annotation tool, prompt the first frame instead of ``--first-mask`` (pixels of the input frame,
x = column, y = row):

- ``--box "x0,y0,x1,y1;x0,y0,x1,y1"``: one box per object (x1, y1 exclusive), object k = the k-th box;
- ``--points "x,y[,label];x,y[,label]"``: the clicks of ONE object (label 1 = on the object, the default;
  0 = not on it); repeat ``--points`` for each object: the k-th ``--points`` is object k, and with ``--box``
  the k-th box and the k-th ``--points`` belong to the same object.

The first-frame mask is then made from the prompts with the model's evidence
(:func:`selfvos.inference.prompts.mask_from_prompts`), written as ``<OUT_DIR>.prompt.png`` (palette PNG of
ids) with a picture of it, the boxes and the clicks as ``<OUT_DIR>.prompt_preview.png`` (beside OUT_DIR, not
in it), both before propagation starts so they can be checked while it runs, and propagated as
``--first-mask`` is. Bad prompts (syntax, outside the frame) are refused before the model is loaded.

Outputs are all or nothing: the masks are written into a temporary sibling of OUT_DIR that replaces
OUT_DIR (an earlier output there) only when every frame is done, and the overlay under a temporary name;
after an error or a kill OUT_DIR and the overlay are as they were (temporary files of a killed run are
deleted by the next run). OUT_DIR must be new, empty or hold only masks. Every option and input is checked
before the model is loaded.

Example::

    selfvos segment --checkpoint runs/mug/final --input ../shared/data/videos/dog.mp4 --out out/dog \\
        --overlay out/dog.mp4 --max-side 432
    selfvos segment --checkpoint runs/mug/final --input ../shared/data/videos/dog.mp4 --out out/dog \\
        --box "400,150,900,700"        # -> out/dog.prompt.png, out/dog.prompt_preview.png, out/dog/*.png
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Tuple

from selfvos.cli.segment_vis import add_vis_options, check_vis_options, run_vis


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="segment one video with a pretrained checkpoint (zero-shot or one-shot)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors) or Hub id")
    p.add_argument("--input", required=True, help="video file, folder of frames, or any open_source spec")
    p.add_argument("--out", required=True, help="folder for the palette PNG masks")
    p.add_argument("--first-mask", default=None, help="first frame's mask (palette/grey PNG of ids): one-shot")
    p.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1[;...]",
                   help="first-frame box of each object (pixels, x1/y1 exclusive), ';' between objects; "
                        "instead of --first-mask")
    p.add_argument("--points", action="append", default=None, metavar="X,Y[,LABEL][;...]",
                   help="first-frame clicks of one object (label 1 = object, default; 0 = not the object); "
                        "repeat per object: the k-th --points is object k (with --box: the k-th box's object)")
    p.add_argument("--overlay", default=None, help="also write an overlay video here (e.g. out.mp4)")
    add_common_options(p, tasks=("auto", "zero-shot", "one-shot", "vis"))
    add_vis_options(p)
    p.set_defaults(func=run)


def add_common_options(p: argparse.ArgumentParser, tasks: tuple = ("auto", "zero-shot", "one-shot"),
                       default_task: Optional[str] = "auto") -> None:
    """Options shared with ``segment-dataset``."""
    task_help = ("auto: one-shot when a first mask is given, zero-shot otherwise" if "auto" in tasks
                 else "zero-shot: no annotation is read; one-shot: the first frame's annotation is propagated")
    p.add_argument("--task", choices=tasks, default=default_task, required=default_task is None, help=task_help)
    p.add_argument("--max-side", type=bounded(int, low=1), default=None,
                   help="longest side frames are processed at (default: zero-shot 432, one-shot short side 480)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs (default cpu)")
    p.add_argument("--mode", choices=("online", "offline"), default="online",
                   help="zero-shot references: online = past frames only, offline = spread over the whole video")
    p.add_argument("--references", type=bounded(int, low=0), default=5, help="zero-shot reference frames N (default 5)")
    p.add_argument("--reference-weight", type=bounded(float, low=0), default=None,
                   help="zero-shot: weight of the co-attention references against the frame head, 0 = off "
                        "(default: ZeroShotConfig.reference_weight)")
    p.add_argument("--motion-weight", type=bounded(float, low=0), default=None,
                   help="zero-shot: weight of the camera-compensated optical-flow motion cue, 0 = off "
                        "(default: ZeroShotConfig.motion_weight)")
    p.add_argument("--grabcut", type=bounded(int, low=0), default=None, metavar="ITERATIONS",
                   help="zero-shot: GrabCut refinement iterations, 0 = off "
                        "(default: ZeroShotConfig.grabcut_iterations)")
    p.add_argument("--prior-weight", type=bounded(float, low=0), default=None,
                   help="zero-shot: weight of the previous outputs propagated to the frame by feature affinity, "
                        "0 = off (default: ZeroShotConfig.propagation_weight)")
    p.add_argument("--refine-radius", type=bounded(int, low=0), default=None, metavar="PIXELS",
                   help="one-shot: guided-filter refinement radius at the working size, 0 = plain bilinear "
                        "upsampling (default: OneShotConfig.refine_radius)")
    p.add_argument("--online-steps", type=bounded(int, low=0), default=0, metavar="N",
                   help="one-shot: fine-tune a copy of the model for N steps on the first frame and its mask before "
                        "propagating (OSVOS-style; selfvos.inference.online.OnlineFinetuneConfig), 0 = off (default)")
    p.add_argument("--head-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a head's inference setting, repeatable (e.g. STM: --head-option memory_every=5 "
                        "--head-option max_memory=8); see the head's inference config")
    p.add_argument("--object-gain", type=bounded(float, low=0, inclusive=False), default=None, metavar="G",
                   help="one-shot: object probabilities are multiplied by G before the argmax; > 1 favours recall "
                        "(default: OneShotConfig.object_gain)")


def bounded(kind: Callable[[str], Any], low: float, inclusive: bool = True) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)`` that must be finite and >= ``low`` (> ``low`` unless ``inclusive``);
    anything else is a usage error naming the option."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low:g}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


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
    online = None
    if getattr(args, "online_steps", 0):
        from selfvos.inference.online import OnlineFinetuneConfig

        online = OnlineFinetuneConfig(steps=args.online_steps)
    return Segmenter(model, task, zero_shot=zero_shot, one_shot=one_shot, head=head_options(args.head_option),
                     max_side=args.max_side, online=online)


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
        if "vis" in supported_tasks(model):
            hint = "use --task vis --instances ..."
        raise SelfvosInputError(checkpoint, f"the {model.architecture} model runs "
                                            f"{' / '.join(supported_tasks(model))} only ({hint})")


def read_first_mask(path: str, frame_shape: tuple) -> Any:
    """The first frame's ids; grey 0/255 becomes {0, 1}; void (255) is set to background."""
    from selfvos.data.image_io import read_mask
    from selfvos.errors import SelfvosInputError

    if Path(path).is_dir():
        raise SelfvosInputError(path, "--first-mask is a folder; give the first frame's mask (a PNG file)")
    mask = read_mask(path)
    if mask.shape != tuple(frame_shape[:2]):
        raise SelfvosInputError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the video's frames are "
                                      f"{frame_shape[1]}x{frame_shape[0]}")
    mask = mask.copy()
    mask[mask == 255] = 0
    if not mask.any():
        raise SelfvosInputError(path, "first mask has no object (all background)")
    return mask


def check_task_options(task: str, first_mask: Optional[str], prompt_option: Optional[str] = None) -> None:
    """``--task`` and ``--first-mask`` (or the prompt option ``prompt_option``, ``--box`` / ``--points``) agree."""
    from selfvos.errors import SelfvosInputError

    if task == "one-shot" and not first_mask and not prompt_option:
        raise SelfvosInputError("--first-mask", "required with --task one-shot (or prompt with --box / --points)")
    if task == "zero-shot" and first_mask:
        raise SelfvosInputError("--first-mask", "not used by --task zero-shot (drop it or use --task one-shot)")
    if task == "zero-shot" and prompt_option:
        raise SelfvosInputError(prompt_option, "prompts are not used by --task zero-shot (drop them or use "
                                               "--task one-shot)")


def parse_prompt_options(args: argparse.Namespace) -> Tuple[Optional[list], Optional[list]]:
    """(boxes, points) from ``--box`` / ``--points`` (None when absent), their syntax checked: a bad one is a
    ``SelfvosInputError`` naming the option; prompts with ``--first-mask`` are refused."""
    from selfvos.errors import SelfvosInputError
    from selfvos.inference.prompts import parse_boxes, parse_points

    if args.box is None and args.points is None:
        return None, None
    if args.first_mask:
        option = "--box" if args.box is not None else "--points"
        raise SelfvosInputError(option, "give --first-mask or prompts (--box / --points), not both")
    try:
        boxes = parse_boxes(args.box) if args.box is not None else None
    except ValueError as err:
        raise SelfvosInputError("--box", str(err)) from None
    points = None
    if args.points is not None:
        points = []
        for k, text in enumerate(args.points):
            try:
                points.append(parse_points(text))
            except ValueError as err:
                raise SelfvosInputError("--points", f"object {k + 1}: {err}") from None
    return boxes, points


def prompt_paths(out: str) -> Tuple[Path, Path]:
    """``<OUT>.prompt.png`` and ``<OUT>.prompt_preview.png``, beside the output folder."""
    folder = Path(out)
    return folder.with_name(f"{folder.name}.prompt.png"), folder.with_name(f"{folder.name}.prompt_preview.png")


def write_prompt_outputs(frame: Any, ids: Any, boxes: Optional[list], points: Optional[list], out: str,
                         objects: int) -> None:
    """Write the prompt mask and its preview beside ``out`` (atomically) and say where they are, and which of
    the ``objects`` prompted came out empty."""
    from selfvos.inference.prompts import prompt_preview, save_preview, save_prompt_mask

    mask_path, preview_path = prompt_paths(out)
    save_prompt_mask(ids, mask_path)
    save_preview(prompt_preview(frame, ids, boxes, points), preview_path)
    found = [int(i) for i in sorted(set(ids.ravel().tolist())) if i]
    print(f"prompt mask ({len(found)} object{'s' if len(found) != 1 else ''}): {mask_path}, preview: {preview_path}")
    empty = [k for k in range(1, objects + 1) if k not in found]
    if empty and found:
        print(f"warning: the prompts of object(s) {', '.join(map(str, empty))} gave no pixel; they are not followed",
              file=sys.stderr)


def check_not_overwritten(output: Optional[str], option: str, inputs: Iterable[Optional[str]],
                          as_folder: bool) -> None:
    """An output never replaces an input: ``output`` (a folder replaced as a whole when ``as_folder``, else a
    file) may not be, or with ``as_folder`` contain, any existing path of ``inputs``."""
    from selfvos.errors import SelfvosInputError

    if output is None:
        return
    target = Path(output).resolve()
    for given in inputs:
        if not given or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if source == target or (as_folder and source.is_relative_to(target)):
            raise SelfvosInputError(output, f"{option} would overwrite the input {given}; write elsewhere")


def check_outputs(args: argparse.Namespace) -> None:
    """``--out`` and ``--overlay`` can be written without touching an input or another output (before any
    input is read)."""
    from selfvos.data.writers import check_output_folder
    from selfvos.errors import SelfvosInputError

    check_output_folder(args.out, "--out")
    check_not_overwritten(args.out, "--out", [args.input, args.first_mask, args.checkpoint], as_folder=True)
    if getattr(args, "box", None) is not None or getattr(args, "points", None) is not None:
        for path in prompt_paths(args.out):
            check_not_overwritten(str(path), "--out", [args.input, args.checkpoint], as_folder=False)
            if path.is_dir():
                raise SelfvosInputError(path, "the prompt mask / preview would go here but it is a folder")
    if args.overlay:
        check_not_overwritten(args.overlay, "--overlay", [args.input, args.first_mask], as_folder=False)
        if Path(args.overlay).resolve().is_relative_to(Path(args.out).resolve()):
            raise SelfvosInputError(args.overlay, "--overlay lies inside --out, which is replaced as a whole; "
                                                  "write it next to --out")


def check_frame_sizes(video: Any) -> Tuple[int, int]:
    """(H, W) of the video's frames, checked to be one size for every frame; the file headers are read when
    the frames are image files (a frame of another size is an error naming the first one that differs),
    otherwise the first frame is decoded (the segmenter checks the others as it reads them)."""
    from selfvos.data.image_io import image_size
    from selfvos.errors import SelfvosInputError

    if not len(video):
        raise SelfvosInputError(video.source or video.name, "the video has no frames")
    paths = getattr(video, "frame_paths", None)
    if not paths:
        return tuple(video.frame(0).shape[:2])
    size = image_size(paths[0])
    for path in paths[1:]:
        other = image_size(path)
        if other != size:
            raise SelfvosInputError(path, f"frame is {other[1]}x{other[0]} (WxH) but the first frame "
                                          f"{paths[0].name} is {size[1]}x{size[0]}; every frame of a video "
                                          "must have the same size")
    return size


def open_video(spec: str) -> Any:
    """The one video of an ``open_source`` spec."""
    from selfvos.data.sources import open_source
    from selfvos.errors import SelfvosInputError

    collection = open_source(spec)
    if len(collection) != 1:
        raise SelfvosInputError(spec, f"holds {len(collection)} videos; segment one at a time or use segment-dataset")
    return collection[0]


def write_outputs(segmenter: Any, video: Any, first_mask: Any, out_dir: Path, overlay: Optional[str]) -> int:
    """Segment ``video`` into ``out_dir/<frame>.png`` (and the ``overlay`` video), all or nothing: masks go to a
    staging folder that replaces ``out_dir`` once complete, the overlay is moved into place right after;
    on any error both destinations are left as they were. Returns the number of masks."""
    from contextlib import closing

    from selfvos.data.writers import save_palette_png
    from selfvos.inference.io import staged_outputs

    names, count = video.frame_names, 0
    # closing(): the progress bar ends before an error is reported, not when the generator is collected
    with staged_outputs(out_dir, overlay, video.fps) as (staged, writer), \
            closing(segmenter.segment_video(video, first_mask=first_mask, progress=True)) as masks:
        for t, ids in enumerate(masks):
            save_palette_png(staged / f"{names[t]}.png", ids)
            if writer is not None:
                writer.write(video.frame(t), ids)
            count += 1
        if count != len(names):
            raise RuntimeError(f"{video.source or video.name}: {count} masks for {len(names)} frames")
    return count


def run(args: argparse.Namespace) -> int:
    import time

    from selfvos.inference.io import check_overlay_path
    from selfvos.inference.prompts import check_prompts

    if args.task == "vis":
        return run_vis(args)
    check_vis_options(args)
    boxes, points = parse_prompt_options(args)
    prompted = boxes is not None or points is not None
    prompt_option = ("--box" if boxes is not None else "--points") if prompted else None
    check_task_options(args.task, args.first_mask, prompt_option)
    check_outputs(args)
    video = open_video(args.input)
    size = check_frame_sizes(video)
    first_mask = read_first_mask(args.first_mask, size) if args.first_mask else None
    objects = check_prompts(boxes, points, size) if prompted else 0
    if args.overlay:
        check_overlay_path(args.overlay, size, video.fps)
    task = "one-shot" if first_mask is not None or prompted else "zero-shot"
    model = load_model(args.checkpoint, args.device)
    check_task(model, task, args.checkpoint)
    segmenter = make_segmenter(model, args, task)
    if prompted:
        frame = video.frame(0)
        first_mask = segmenter.mask_from_prompts(frame, boxes, points)
        write_prompt_outputs(frame, first_mask, boxes, points, args.out, objects)
        if not first_mask.any():
            from selfvos.errors import SelfvosInputError

            raise SelfvosInputError(prompt_option, "the prompts gave an empty first-frame mask; see the preview "
                                                   "and adjust them")
    out_dir, start = Path(args.out), time.perf_counter()
    count = write_outputs(segmenter, video, first_mask, out_dir, args.overlay)
    seconds = time.perf_counter() - start
    print(f"{task}: wrote {count} masks to {out_dir} in {seconds:.1f} s ({count / max(seconds, 1e-9):.2f} frames/s)")
    return 0
