"""``selfvos pseudo-labels`` on fuzzed frame folders with random options.

Property: exit 0 and the round folder holds a mask for every labelled frame of every video, or a non-zero exit
with one ``selfvos: error:`` line and no round folder at all (a failed round is never visible to readers).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from selfvos.data.sources import open_source
from selfvos.pseudo.store import PseudoLabelStore
from tests.fuzz._props import run_cli
from tests.fuzz.test_fuzz_frames import build, mostly_good_entries


def visible_rounds(root: Path) -> list:
    """``round_*`` folders a reader of the store would look at."""
    return sorted(p.name for p in root.glob("round_*")) if root.is_dir() else []


@settings(max_examples=25)
@given(spec=mostly_good_entries(), method=st.sampled_from(["mr", "motion", "fused"]),
       frame_step=st.sampled_from([1, 1, 2, 3, 0, -1]), max_side=st.sampled_from([0, 0, 12, 40, -4]),
       round_=st.sampled_from([0, 0, 2, -1]))
def test_cli_pseudo_labels(spec, method, frame_step, max_side, round_):
    with tempfile.TemporaryDirectory() as tmp:
        folder, store_dir = Path(tmp) / "clip", Path(tmp) / "store"
        build(folder, spec)
        code, _, _ = run_cli(["pseudo-labels", "--data", str(folder), "--out", str(store_dir), "--method", method,
                              "--frame-step", str(frame_step), "--max-side", str(max_side), "--round", str(round_)])
        if code != 0:
            assert visible_rounds(store_dir) == []
            return
        store = PseudoLabelStore(store_dir)
        assert store.rounds() == [round_] and visible_rounds(store_dir) == [f"round_{round_:03d}"]
        for video in open_source(str(folder)):
            assert store.frames(round_, video.name) == list(range(0, len(video), frame_step))
