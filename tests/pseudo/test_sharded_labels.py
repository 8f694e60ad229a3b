"""Pseudo-labels sharded over ranks: the split, the round protocol (ranks as threads), and 2 real CPU processes
under ``accelerate launch`` writing byte-for-byte the round one process writes, resumable after a rank dies."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from selfvos.data.video import InMemoryVideo, VideoCollection, VideoSample
from selfvos.pseudo.base import PseudoLabeler
from selfvos.pseudo.generate import ShardPlan, generate_pseudo_labels, split_videos
from selfvos.pseudo.store import PseudoLabelStore
from tests.engine.engine_toys import reset_accelerate_state
from tests.pseudo import sharded_worker as worker

LENGTHS = {"vid0": 5, "vid1": 3, "vid2": 7, "vid3": 2, "vid4": 4, "vid5": 6}


def collection() -> VideoCollection:
    videos = []
    for name, n in LENGTHS.items():
        masks = np.zeros((n, 6, 8), np.uint8)
        masks[:, :3] = 1
        sample = VideoSample(frames=np.zeros((n, 6, 8, 3), np.uint8), frame_names=[f"f{i}" for i in range(n)],
                             name=name, masks=masks)
        videos.append(InMemoryVideo(sample))
    return VideoCollection(videos, source="toy", kind="toy")


class VideoLabeler(PseudoLabeler):
    """Soft mask from (video, frame) alone; logs calls; raises on its second video when ``fail``."""

    name = "per-video"

    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = [], fail

    def __call__(self, video, index):
        if self.fail and self.calls and video.name != self.calls[-1][0]:
            raise RuntimeError("simulated crash")
        self.calls.append((video.name, index))
        return np.full((6, 8), (7 * int(video.name[3:]) + index) % 10 / 10, np.float32)

    def config(self):
        return {"type": self.name}


def run_ranks(world: int, work):
    """``work(plan)`` on ``world`` threads sharing a barrier; a rank that raises breaks the barrier for all.
    Returns (results, errors), one per rank."""
    barrier = threading.Barrier(world, timeout=60)
    results, errors = [None] * world, [None] * world

    def target(rank: int) -> None:
        try:
            results[rank] = work(ShardPlan(rank, world, barrier.wait))
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            errors[rank] = err
            barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def round_files(store: PseudoLabelStore, round_index: int) -> dict:
    """Every file of a complete round but its manifest: relative path -> bytes."""
    root = store.round_dir(round_index)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def untimed_manifest(store: PseudoLabelStore, round_index: int) -> dict:
    manifest = store.manifest(round_index)
    return {k: v for k, v in manifest.items() if k not in ("created", "finished")}


def test_split_is_deterministic_balanced_and_covers_every_video_once():
    for world in range(1, 9):
        shards = split_videos(LENGTHS, world)
        assert len(shards) == world
        assert sorted(n for s in shards for n in s) == sorted(LENGTHS)  # each video exactly once
        for s in shards:
            assert s == [n for n in LENGTHS if n in s]  # in the collection's order
        loads = [sum(LENGTHS[n] for n in s) for s in shards]
        assert max(loads) - min(loads) <= max(LENGTHS.values())
        reversed_order = dict(reversed(list(LENGTHS.items())))
        assert [set(s) for s in split_videos(reversed_order, world)] == [set(s) for s in shards]
        assert split_videos(LENGTHS, world) == shards
    assert split_videos(LENGTHS, 1) == [list(LENGTHS)]
    assert split_videos(LENGTHS, 2) == [["vid1", "vid2", "vid4"], ["vid0", "vid3", "vid5"]]  # loads 14 and 13
    assert split_videos({}, 3) == [[], [], []]
    with pytest.raises(ValueError, match="world_size"):
        split_videos(LENGTHS, 0)


def test_shard_plan_checks_its_rank_and_reads_an_accelerator():
    calls = []
    plan = ShardPlan.from_state(SimpleNamespace(process_index=1, num_processes=3,
                                                wait_for_everyone=lambda: calls.append(1)))
    assert (plan.rank, plan.world_size, plan.is_main) == (1, 3, False)
    plan.barrier()
    assert calls == [1] and ShardPlan().is_main and ShardPlan().world_size == 1
    assert plan.shard(LENGTHS) == split_videos(LENGTHS, 3)[1]
    for rank, world in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="rank"):
            ShardPlan(rank, world)


def test_markers_written_without_the_manifest_are_collected_by_one_writer(tmp_path):
    store = PseudoLabelStore(tmp_path)
    store.begin_round(0, {"type": "x"}, videos=["a", "b", "c"])
    for video in ("c", "a"):
        store.write(0, video, 0, np.zeros((2, 2), np.float32))
        store.mark_video_complete(0, video, [0], ["f0"], update_manifest=False)
    assert store.manifest(0, staging=True)["completed_videos"] == []
    assert store.is_video_complete(0, "a") and not store.is_video_complete(0, "b")
    assert store.sync_completed(0)["completed_videos"] == ["a", "c"]
    assert store.manifest(0, staging=True)["completed_videos"] == ["a", "c"]


@pytest.mark.parametrize("world", [2, 3, 7])
def test_ranks_write_the_round_of_one_process(tmp_path, world):
    data = collection()
    one = PseudoLabelStore(tmp_path / "one")
    generate_pseudo_labels(data, one, 0, VideoLabeler(), progress=False)
    sharded = PseudoLabelStore(tmp_path / "sharded")
    labelers = [VideoLabeler() for _ in range(world)]
    results, errors = run_ranks(world, lambda plan: generate_pseudo_labels(
        data, sharded, 0, labelers[plan.rank], progress=False, shard=plan))
    assert errors == [None] * world
    assert round_files(sharded, 0) == round_files(one, 0)
    assert untimed_manifest(sharded, 0) == untimed_manifest(one, 0)
    assert all(r == sharded.manifest(0) for r in results)  # every rank returns the merged manifest
    assert untimed_manifest(sharded, 0)["completed_videos"] == sorted(LENGTHS)
    assert sorted(c for lab in labelers for c in lab.calls) == sorted((n, i) for n, k in LENGTHS.items()
                                                                      for i in range(k))  # each frame once
    for rank, lab in enumerate(labelers):
        assert [n for n in dict.fromkeys(n for n, _ in lab.calls)] == split_videos(LENGTHS, world)[rank]


def test_a_failed_rank_leaves_its_finished_videos_and_any_world_size_resumes_the_rest(tmp_path):
    data = collection()
    one = PseudoLabelStore(tmp_path / "one")
    generate_pseudo_labels(data, one, 0, VideoLabeler(), progress=False)
    store = PseudoLabelStore(tmp_path / "sharded")
    first = [VideoLabeler(), VideoLabeler(fail=True)]
    _, errors = run_ranks(2, lambda plan: generate_pseudo_labels(data, store, 0, first[plan.rank], progress=False,
                                                                 shard=plan))
    assert isinstance(errors[1], RuntimeError) and isinstance(errors[0], threading.BrokenBarrierError)
    assert store.rounds() == []  # nothing published
    done = [n for n in LENGTHS if store.is_video_complete(0, n)]
    assert "vid0" in done and "vid3" not in done  # rank 1's first video is marked, its second never started
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for n in done for p in (store.staging_dir(0) / n).iterdir()}
    second = [VideoLabeler() for _ in range(3)]
    _, errors = run_ranks(3, lambda plan: generate_pseudo_labels(data, store, 0, second[plan.rank], progress=False,
                                                                 shard=plan))
    assert errors == [None] * 3
    redone = {n for lab in second for n, _ in lab.calls}
    assert redone == set(LENGTHS) - set(done)  # only the unfinished videos, each frame once
    assert sorted(c for lab in second for c in lab.calls) == sorted((n, i) for n in redone for i in range(LENGTHS[n]))
    moved = {store.round_dir(0) / p.relative_to(store.staging_dir(0)): s for p, s in stamps.items()}
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in moved} == moved  # finished files untouched
    assert round_files(store, 0) == round_files(one, 0)
    assert untimed_manifest(store, 0) == untimed_manifest(one, 0)


# -- 2 real processes under accelerate launch -----------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """Rounds 0 and 1 written by the worker in this process (world size 1)."""
    out = tmp_path_factory.mktemp("one_process")
    reset_accelerate_state()
    try:
        worker.main(out, "one", [0, 1])
    finally:
        reset_accelerate_state()
    return PseudoLabelStore(out / "store")


def test_two_processes_write_exactly_the_rounds_of_one_process(tmp_path, one_process):
    done = worker.launch(str(tmp_path), "two", "0,1")
    assert done.returncode == 0, done.stderr[-4000:]
    store = PseudoLabelStore(tmp_path / "store")
    assert store.rounds() == one_process.rounds() == [0, 1]
    for r in (0, 1):
        files = round_files(store, r)
        assert len(files) == 5 * (2 + 1)  # 5 videos x (2 frames + marker)
        assert files == round_files(one_process, r)  # every pseudo-mask PNG and marker, byte for byte
        assert untimed_manifest(store, r) == untimed_manifest(one_process, r)
    assert store.manifest(1)["labeler"]["type"] == "model" and store.manifest(1)["quality"]["frames"] == 10
    calls = {r: worker.read_calls(tmp_path, "two", str(r)) for r in (0, 1)}
    assert calls[0] and calls[1]  # both ranks labeled
    assert sorted(calls[0] + calls[1]) == sorted(worker.read_calls(one_process.root.parent, "one"))


def test_a_killed_rank_resumes_under_the_cli_without_redoing_finished_videos(tmp_path, one_process):
    killed = worker.launch(str(tmp_path), "killed", "0", env={worker.FAIL_ENV: "1"})
    assert killed.returncode != 0 and "simulated crash" in killed.stderr
    store = PseudoLabelStore(tmp_path / "store")
    assert store.rounds() == []
    names = one_process.manifest(0)["videos"]
    done = [n for n in names if store.is_video_complete(0, n)]
    first_of_rank1 = worker.read_calls(tmp_path, "killed", "1")[0][0]
    assert first_of_rank1 in done and len(done) < len(names)
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for n in done for p in (store.staging_dir(0) / n).iterdir()}

    cli = str(Path(sys.executable).with_name("selfvos"))
    resumed = worker.launch("pseudo-labels", "--data", worker.SPEC, "--out", str(store.root), "--method", "fused",
                            "--frame-step", str(worker.FRAME_STEP), "--eval-gt", script=cli)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert resumed.stdout.count(f"round 0: 5 videos in {store.round_dir(0)}") == 1  # the main process reports
    moved = {store.round_dir(0) / p.relative_to(store.staging_dir(0)): s for p, s in stamps.items()}
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in moved} == moved  # finished videos not redone
    assert round_files(store, 0) == round_files(one_process, 0)
    assert untimed_manifest(store, 0) == untimed_manifest(one_process, 0)
    assert not any(p.name.endswith(".tmp") for p in Path(store.root).rglob("*")) and os.listdir(store.root) == [
        "round_000"]


@pytest.mark.slow
def test_pretraining_recipe_in_two_processes_shards_round_zero_and_every_relabel_pass(tmp_path):
    """``accelerate launch recipes/mug_pretrain.py`` with 2 DDP processes: round 0 is byte for byte the round one
    process writes, and both relabel passes publish one complete round of every frame."""
    from selfvos.data.sources import open_source
    from selfvos.registry import PSEUDO_LABELERS
    from tests.pretrain.test_recipe import TINY

    out = tmp_path / "run"
    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "mug_pretrain.py")
    done = worker.launch("--output-dir", str(out), *[f"--{k}={v}" for k, v in TINY.items()], script=recipe)
    assert done.returncode == 0, done.stderr[-4000:]
    store = PseudoLabelStore(out / "pseudo_labels")
    assert store.rounds() == [0, 1, 2] and (out / "model" / "model.safetensors").is_file()

    data = open_source("synthetic", **TINY["data.options"])
    one = PseudoLabelStore(tmp_path / "one")
    generate_pseudo_labels(data, one, 0, PSEUDO_LABELERS.create("fused"), progress=False)
    assert round_files(store, 0) == round_files(one, 0)
    assert untimed_manifest(store, 0) == untimed_manifest(one, 0)
    for r in (1, 2):
        manifest = store.manifest(r)
        assert manifest["labeler"]["type"] == "model" and manifest["completed_videos"] == data.names
        assert all(store.frames(r, n) == list(range(6)) for n in data.names)
