"""COSNet inference speed at 473x473 with N = 5 references: the selfvos feature cache versus the reference
code's per-pair evaluation, on the same network and frames.

The reference implementation (COSNet's ``test_iteration_conf.py``) runs the Siamese network once per (query,
reference) pair, so each query frame costs 2 N backbone passes (query and reference encoded again in every pair)
and N co-attentions. selfvos encodes every frame of a window once and reuses the features for all pairs
(``COSNet.forward`` in eval mode, what ``selfvos segment`` runs): one backbone pass per frame + N co-attentions.

Both paths run here on the same weights, frames (the first ``--frames`` frames of a DAVIS-2016 val-dev sequence,
resized to the reference's 473x473 input) and threads, so the ratio is what the cache buys; the issue's reference
figure (about 40 s per frame on 2 cores, DeepLabv3-ResNet-101 at 473 px) is printed beside the absolute time, and
the fp32 matmul peak of the same run puts the machine's load in context. Speed does not depend on the weights:
a fine-tuned ``--checkpoint`` or the default COSNet config with random weights.

    python benchmarks/cosnet_speed.py [--checkpoint runs/finetune_cosnet_mug/best] [--frames 20] [--threads 2]

Writes ``benchmarks/results/cosnet_speed.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
VAL_DEV = REPO.parent / "shared" / "data" / "davis2016-val-dev"
OUT = REPO / "benchmarks" / "results" / "cosnet_speed.json"
REFERENCE_S_PER_FRAME = 40.0  # the figure for the reference code on 2 cores at 473 px, 5 references
SIZE = 473


def load_frames(sequence: str, count: int) -> torch.Tensor:
    """The first ``count`` frames of ``sequence`` as (T, 3, 473, 473) float in [0, 1]."""
    from selfvos.data.sources import open_source

    video = open_source(f"davis:{VAL_DEV}")[sequence]
    frames = np.stack([video.frame(t) for t in range(min(count, len(video)))])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


@torch.inference_mode()
def cached(model, frames: torch.Tensor) -> torch.Tensor:
    """selfvos: the whole window in one eval-mode forward (each frame encoded once) -> (T, 2, H, W) logits."""
    return model({"frames": frames[None]}, offline=True)["logits"][0]


@torch.inference_mode()
def per_pair(model, frames: torch.Tensor) -> torch.Tensor:
    """The reference code's loop: for each query, each of its N references is a new (query, reference) pass of
    the Siamese network (both frames encoded again); the N gated summaries are averaged -> (T, 2, H, W)."""
    from selfvos.heads.cosnet import select_references

    references = select_references(frames.shape[0], offline=True, limit=model.config.num_references)
    outputs = []
    for i, refs in enumerate(references):
        summaries, query_features, query_skip = [], None, None
        for j in refs:
            encoded = model.encode(torch.stack([frames[i], frames[j]]))
            query_features, query_skip = encoded["features"][:1], encoded["skip"][:1]
            summaries.append(model.summary(query_features, encoded["features"][1:2, None]))
        logits = model.segment(torch.stack(summaries).mean(dim=0), query_features, query_skip)
        outputs.append(F.interpolate(logits, size=frames.shape[-2:], mode="bilinear", align_corners=False)[0])
    return torch.stack(outputs)


def timed(fn, *args) -> tuple:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a COSNet model folder (default: random weights)")
    parser.add_argument("--sequence", default="blackswan")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if not VAL_DEV.is_dir():
        raise SystemExit(f"{VAL_DEV}: davis2016-val-dev not found")
    torch.set_num_threads(args.threads)

    import selfvos
    from selfvos.atomic import atomic_write_json
    from selfvos.heads.cosnet import COSNet
    from selfvos.utils.profiling import matmul_peak_gflops

    model = (selfvos.from_pretrained(args.checkpoint) if args.checkpoint else COSNet()).eval()
    frames = load_frames(args.sequence, args.frames)
    peak = matmul_peak_gflops()
    cached(model, frames[:2])  # warm-up (allocator, kernels)
    fast, fast_s = timed(cached, model, frames)
    slow, slow_s = timed(per_pair, model, frames)
    agree = float((fast.argmax(1) == slow.argmax(1)).float().mean())
    t = frames.shape[0]
    result = {
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": args.threads,
        "checkpoint": args.checkpoint or "random weights (default COSNetConfig)", "sequence": args.sequence,
        "frames": t, "size": [SIZE, SIZE], "num_references": model.config.num_references,
        "matmul_peak_gflops": peak,
        "cached_s_per_frame": fast_s / t, "per_pair_s_per_frame": slow_s / t, "cache_speedup": slow_s / fast_s,
        "reference_s_per_frame": REFERENCE_S_PER_FRAME, "speedup_vs_reference_figure": REFERENCE_S_PER_FRAME * t / fast_s,
        "pixel_agreement_cached_vs_per_pair": agree,
        "command": "python benchmarks/cosnet_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    atomic_write_json(Path(args.out), result)
    print(f"COSNet at {SIZE}x{SIZE}, N = {result['num_references']} references, {t} frames of {args.sequence}, "
          f"{args.threads} threads, fp32 matmul peak {peak:.0f} GFLOP/s")
    print(f"{'path':<44}{'s/frame':>9}")
    print(f"{'reference code (issue figure)':<44}{REFERENCE_S_PER_FRAME:>9.2f}")
    print(f"{'per-pair passes (reference loop, this net)':<44}{result['per_pair_s_per_frame']:>9.2f}")
    print(f"{'selfvos, features cached':<44}{result['cached_s_per_frame']:>9.2f}")
    print(f"cache speed-up {result['cache_speedup']:.1f}x; vs the reference figure "
          f"{result['speedup_vs_reference_figure']:.0f}x; masks agree on {100 * agree:.2f}% of pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
