"""``selfvos segment --task vis``: video instance segmentation of one video with a VIS head (e.g. MaskTrack).

    selfvos segment --task vis --checkpoint CKPT --input VIDEO --instances rvos:RVOS_CKPT|INSTANCE_DIR
                    --out OUT_DIR [--vis-json OUT.json] [--video-id N] [--overlay OUT.mp4] [--max-side N]
                    [--head-option alpha=1 --head-option beta=2 ...]

Instances per frame come from ``--instances``: ``rvos:<checkpoint>`` (an RVOS model trained zero-shot) or a
folder of indexed PNGs ``<frame name>.png`` (pixel value = instance, 0 background, 255 void), e.g. a detector's
output. The head links them into identities (:mod:`selfvos.heads.vis_core`). Writes:

- ``OUT_DIR/<frame name>.png``: palette PNG of identity ids (identity n stored as ``(n - 1) % 254 + 1``);
- ``--vis-json``: the YouTube-VIS results JSON (one record per identity, video id ``--video-id``), written
  atomically, scored by ``selfvos evaluate --task vis``;
- ``--overlay``: the video with each identity in its colour, outlined and labelled ``id <n> <class name>`` (the
  class of its track so far).

Frames are written as they are tracked (the tracks keep only per-frame RLEs, :mod:`selfvos.heads.vis_core`), so
memory does not grow with the video's pixels.

Outputs are all or nothing as for the other tasks; every option and input is checked before a model is loaded.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

VIS_ONLY = (("instances", "--instances"), ("vis_json", "--vis-json"))


def add_vis_options(p: argparse.ArgumentParser) -> None:
    """``--instances``, ``--vis-json`` and ``--video-id`` (used by ``--task vis`` only)."""
    from selfvos.cli.segment import bounded

    p.add_argument("--instances", default=None, metavar="rvos:CKPT|FOLDER",
                   help="--task vis: per-frame instances, from an RVOS zero-shot checkpoint (rvos:PATH) or a folder "
                        "of indexed PNGs <frame name>.png (pixel value = instance)")
    p.add_argument("--vis-json", default=None, help="--task vis: write the YouTube-VIS results JSON here")
    p.add_argument("--video-id", type=bounded(int, low=1), default=1, help="--task vis: video id in the JSON (1)")


def check_vis_options(args: argparse.Namespace) -> None:
    """The vis-only options are refused for the other tasks."""
    from selfvos.errors import SelfvosInputError

    for attr, option in VIS_ONLY:
        if getattr(args, attr, None) is not None:
            raise SelfvosInputError(option, "applies to --task vis only")


def check_vis_outputs(args: argparse.Namespace, instance_folder: Any) -> None:
    """``--out``, ``--overlay`` and ``--vis-json`` can be written without touching an input or each other."""
    from selfvos.cli.evaluate import check_output_file
    from selfvos.cli.segment import check_not_overwritten, check_outputs
    from selfvos.errors import SelfvosInputError

    check_outputs(args)
    check_not_overwritten(args.out, "--out", [instance_folder], as_folder=True)
    if args.overlay:
        check_not_overwritten(args.overlay, "--overlay", [instance_folder], as_folder=False)
    if args.vis_json:
        if Path(args.vis_json).resolve().is_relative_to(Path(args.out).resolve()):
            raise SelfvosInputError(args.vis_json, "--vis-json lies inside --out, which is replaced as a whole; "
                                                   "write it next to --out")
        check_output_file(args.vis_json, "--vis-json")
        check_not_overwritten(args.vis_json, "--vis-json", [args.input, args.checkpoint, instance_folder, args.overlay],
                              as_folder=False)


def instance_source_spec(args: argparse.Namespace) -> tuple:
    """(RVOS checkpoint or None, instance folder or None) from ``--instances``."""
    from selfvos.errors import SelfvosInputError

    for option, value in (("--first-mask", args.first_mask), ("--box", args.box), ("--points", args.points)):
        if value is not None:
            raise SelfvosInputError(option, "not used by --task vis (instances come from --instances)")
    spec = args.instances
    if not spec:
        raise SelfvosInputError("--instances", "required with --task vis: rvos:<checkpoint> or a folder of "
                                               "per-frame instance PNGs")
    if spec.startswith("rvos:"):
        if not spec[5:]:
            raise SelfvosInputError("--instances", "rvos: needs a checkpoint, e.g. rvos:runs/rvos_zs/model")
        return spec[5:], None
    return None, spec


def check_instance_sizes(folder: str, names: list, size: tuple) -> None:
    """Every instance PNG has the frames' (H, W) (file headers only)."""
    from selfvos.data.image_io import image_size
    from selfvos.errors import SelfvosInputError

    for name in names:
        path = Path(folder) / f"{name}.png"
        found = image_size(path)
        if tuple(found) != tuple(size):
            raise SelfvosInputError(path, f"instance PNG is {found[1]}x{found[0]} (WxH) but the frames are "
                                          f"{size[1]}x{size[0]}")


def write_vis_outputs(core: Any, video: Any, args: argparse.Namespace, names: list) -> list:
    """Track ``video`` frame by frame (``core.frames``) and write each frame's identity PNG (staged folder) and
    overlay frame as it is tracked, then the results JSON from the tracks' RLEs; returns the tracks. On an error
    the destinations are left as they were (the JSON is written last)."""
    from selfvos.data.writers import save_palette_png
    from selfvos.eval.vis import write_vis_json
    from selfvos.heads.vis_core import render_frame
    from selfvos.inference.io import staged_outputs

    with staged_outputs(Path(args.out), args.overlay, video.fps) as (staged, writer):
        for tracked in core.frames(video, progress=True):
            save_palette_png(staged / f"{video.frame_names[tracked.index]}.png", tracked.ids)
            if writer is not None:
                writer.write(render_frame(tracked, names))
    tracks = core.tracks
    if args.vis_json:
        write_vis_json(args.vis_json, core.to_vis_results(args.video_id, tracks))
        print(f"wrote {args.vis_json}")
    return tracks


def run_vis(args: argparse.Namespace) -> int:
    import time

    from selfvos.cli.segment import check_frame_sizes, head_options, load_model, open_video
    from selfvos.errors import SelfvosInputError
    from selfvos.heads.vis_core import GivenInstances, RVOSInstances, create_vis_core
    from selfvos.inference.core import supported_tasks
    from selfvos.inference.io import check_overlay_path

    rvos, folder = instance_source_spec(args)
    check_vis_outputs(args, folder)
    video = open_video(args.input)
    size = check_frame_sizes(video)
    if args.overlay:
        check_overlay_path(args.overlay, size, video.fps)
    source = None
    if folder is not None:
        source = GivenInstances.from_folder(folder, video.frame_names)
        check_instance_sizes(folder, video.frame_names, size)
    model = load_model(args.checkpoint, args.device)
    if "vis" not in supported_tasks(model):
        raise SelfvosInputError(args.checkpoint, f"the {model.architecture} model runs "
                                                 f"{' / '.join(supported_tasks(model))} only; --task vis needs a "
                                                 "video instance segmentation head (e.g. masktrack)")
    if rvos is not None:
        source = RVOSInstances(load_model(rvos, args.device), max_side=args.max_side)
    core = create_vis_core(model, source, head_options(args.head_option), args.max_side)
    start = time.perf_counter()
    tracks = write_vis_outputs(core, video, args, list(getattr(model.config, "categories", ())))
    seconds = time.perf_counter() - start
    print(f"vis: {len(tracks)} identities in {len(video)} frames, masks in {args.out} ({seconds:.1f} s, "
          f"{len(video) / max(seconds, 1e-9):.2f} frames/s)")
    return 0
