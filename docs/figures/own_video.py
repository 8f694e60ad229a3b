"""The README's "your own video" picture: the CLI path on an mp4 with a box prompt, drawn as a strip.

    python docs/figures/own_video.py [--checkpoint runs/mug_davis16_cpu/model] [--video ../shared/data/videos/dog.mp4]

Runs exactly the README command (``selfvos segment --box ... --overlay ...``) into a temporary folder, then puts
the prompt preview (the box and the mask made from it) beside three propagated frames and writes
``docs/figures/own_video_dog.jpg``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
BOX = "445,375,705,550"  # the dog in the first frame of dog.mp4 (1280x720)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "runs" / "mug_davis16_cpu" / "model"))
    parser.add_argument("--video", default=str(REPO.parent / "shared" / "data" / "videos" / "dog.mp4"))
    parser.add_argument("--box", default=BOX)
    parser.add_argument("--out", default=str(REPO / "docs" / "figures" / "own_video_dog.jpg"))
    parser.add_argument("--tile-width", type=int, default=320)
    args = parser.parse_args(argv)

    from selfvos.cli import main as cli_main
    from selfvos.data.image_io import read_mask
    from selfvos.data.sources import open_source
    from selfvos.inference.io import render_overlay

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dog"
        command = ["segment", "--checkpoint", args.checkpoint, "--input", args.video, "--box", args.box,
                   "--out", str(out)]
        print(" ".join(["selfvos", *command]))
        if cli_main(command) != 0:
            return 1
        video = open_source(f"video:{args.video}")[0]
        picks = np.linspace(0, len(video) - 1, 4).round().astype(int)[1:]
        tiles = [np.asarray(Image.open(f"{out}.prompt_preview.png").convert("RGB"))]
        for t in picks:
            mask = read_mask(out / f"{video.frame_names[t]}.png")
            tiles.append(render_overlay(video.frame(int(t)), mask))
    height = round(tiles[0].shape[0] * args.tile_width / tiles[0].shape[1])
    strip = np.concatenate([np.asarray(Image.fromarray(t).resize((args.tile_width, height), Image.BILINEAR))
                            for t in tiles], axis=1)
    Image.fromarray(strip).save(args.out, quality=85)
    print(f"wrote {args.out} (frames 0 with the box, then {', '.join(str(int(t)) for t in picks)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
