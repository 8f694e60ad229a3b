"""The ``stream:`` source and ClipStream: per-rank shards, one pass = every video once, bounded open videos,
seeded order, exact resume by batch, worker-independent order, and bad shards named."""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from selfvos.data.clip_stream import ClipStream, clip_dataset
from selfvos.data.sampling import ClipDataset, ClipSamplerConfig
from selfvos.data.sources import open_source
from selfvos.data.shards import list_shards, scan_tar, write_shards
from selfvos.data.streaming import VideoShards
from selfvos.errors import SelfvosInputError

pytestmark = pytest.mark.usefixtures("one_thread")
NUM_VIDEOS, FRAMES = 10, 8
CFG = ClipSamplerConfig(num_frames=2, max_skip=2, num_refs=1, size=(16, 16), seed=5)


def _mp4(path: Path, seed: int, n: int = FRAMES) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for _ in range(n):
            image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for i in range(NUM_VIDEOS):
        _mp4(folder / f"clip{i}.mp4", i)
    return folder


@pytest.fixture(scope="module")
def shards(videos, tmp_path_factory) -> Path:
    return write_shards(videos, tmp_path_factory.mktemp("out") / "shards", videos_per_shard=2)


def _keys(items):
    """(video, frames, refs) of every item: what identifies a clip."""
    return [(int(i["video_index"]), tuple(i["frame_indices"].tolist()), tuple(i["ref_indices"].tolist()))
            for i in items]


def test_write_shards_layout_and_index(shards, videos):
    index = json.loads((shards / "index.json").read_text())
    assert index["videos"] == NUM_VIDEOS and index["frames"] == NUM_VIDEOS * FRAMES
    assert [s["file"] for s in index["shards"]] == [f"shard-{k:05d}.tar" for k in range(5)]
    collection = open_source(f"stream:{shards}")
    assert isinstance(collection, VideoShards) and len(collection) == NUM_VIDEOS
    assert collection.names == [f"clip{i}" for i in range(NUM_VIDEOS)]
    video = collection["clip7"]
    assert len(video) == FRAMES and video.source.endswith("shard-00003.tar[clip7.mp4]")
    direct = open_source(f"video:{videos / 'clip7.mp4'}")["clip7"]
    assert np.array_equal(video.frame(5), direct.frame(5))  # the archived bytes decode as the original file
    assert collection[3].name == "clip3" and collection.decoders.opened == 1
    assert len(open_source(f"stream:{shards}/*.tar")) == NUM_VIDEOS  # archives without the index: tar headers
    assert len(open_source(f"stream:{videos}")) == NUM_VIDEOS  # plain video files: one shard each


def test_rank_shards_are_disjoint_and_cover_every_shard(shards):
    collection = open_source(f"stream:{shards}")
    for world in (1, 2, 3, 5):
        stream = ClipStream(collection, CFG, world_size=world)
        per_rank = [stream.rank_shards(r) for r in range(world)]
        assert sorted(s for rank in per_rank for s in rank) == list(range(5))
        assert all(rank == list(range(r, 5, world)) for r, rank in enumerate(per_rank))
    with pytest.raises(SelfvosInputError, match="5 shard"):
        ClipStream(collection, CFG, world_size=6)


def test_one_pass_yields_every_video_once_and_open_videos_stay_bounded(shards):
    collection = open_source(f"stream:{shards}")
    stream = ClipStream(collection, CFG, buffer_videos=3)
    items = list(stream)
    assert sorted(int(i["video_index"]) for i in items) == list(range(NUM_VIDEOS))
    assert stream.decoders.peak <= 3 < NUM_VIDEOS and stream.decoders.opened == NUM_VIDEOS
    assert stream.prefetch_misses == 0  # every frame an item read was decoded ahead, in increasing order
    temp = stream.decoders._tmp
    assert len(list(temp.iterdir())) == len(stream.decoders) <= 3  # closed videos' copies are deleted
    twice = ClipStream(collection, CFG, clips_per_video=2, buffer_videos=3, batch_size=4)
    assert len(twice) == 20
    assert Counter(int(i["video_index"]) for i in twice) == {g: 2 for g in range(NUM_VIDEOS)}
    assert twice.decoders.peak <= 3 and twice.prefetch_misses == 0
    mapped = ClipDataset(open_source(f"stream:{shards}"), CFG, clips_per_video=2)  # the same items, map-style
    assert sorted(_keys(twice)) == sorted(_keys(mapped[i] for i in range(len(mapped))))


def test_same_seed_same_order_other_epoch_or_seed_differs_and_resume_by_batch(shards):
    collection = open_source(f"stream:{shards}")
    a = ClipStream(collection, CFG, clips_per_video=2, buffer_videos=4, batch_size=2)
    b = ClipStream(open_source(f"stream:{shards}"), CFG, clips_per_video=2, buffer_videos=4, batch_size=2)
    first, again = list(a), list(b)
    assert _keys(first) == _keys(again)
    assert all(torch.equal(x["frames"], y["frames"]) and torch.equal(x["refs"], y["refs"])
               for x, y in zip(first, again))
    b.set_epoch(1)
    assert _keys(list(b)) != _keys(first)
    other = ClipStream(collection, ClipSamplerConfig(**{**CFG.__dict__, "seed": 6}), clips_per_video=2, buffer_videos=4)
    assert _keys(list(other)) != _keys(first)
    a.start_at(3)  # resume after 3 batches of 2: the rest of the pass, identical
    opened = a.decoders.opened
    assert _keys(list(a)) == _keys(first)[6:]
    assert a.decoders.opened - opened <= len({g for g, _, _ in _keys(first)[6:]})  # skipped items: counted only


def test_two_ranks_with_dataloader_workers_give_disjoint_clips_in_a_worker_independent_order(tmp_path, videos):
    shards = write_shards(videos, tmp_path / "s", videos_per_shard=1)  # 10 shards: 5 per rank
    collection = open_source(f"stream:{shards}")
    seen = []
    for rank in (0, 1):
        stream = ClipStream(collection, CFG, clips_per_video=2, buffer_videos=2, rank=rank, world_size=2, batch_size=2)
        assert len(stream) == 10
        stream.set_epoch(0)  # as the trainer's loader does before its workers are forked
        batches = list(DataLoader(stream, batch_size=2, num_workers=2, drop_last=True))
        alone = list(DataLoader(stream, batch_size=2, num_workers=0, drop_last=True))
        keys = [k for batch in batches for k in _keys(_unbatch(batch))]
        assert keys == [k for batch in alone for k in _keys(_unbatch(batch))]
        assert {g % 2 for g, _, _ in keys} == {rank}  # shard s = video s here: rank r reads shards r, r + 2, ...
        seen.append(keys)
    assert not set(seen[0]) & set(seen[1])
    assert Counter(g for keys in seen for g, _, _ in keys) == {g: 2 for g in range(NUM_VIDEOS)}


def _unbatch(batch):
    return [{k: v[i] for k, v in batch.items()} for i in range(len(batch["video_index"]))]


def test_bad_shards_are_named(tmp_path, shards, videos):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in shards.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    tar = broken / "shard-00001.tar"
    tar.write_bytes(tar.read_bytes()[:5000])
    with pytest.raises(SelfvosInputError, match=r"shard-00001\.tar: shard is 5000 bytes"):
        open_source(f"stream:{broken}")
    (broken / "shard-00001.tar").unlink()
    with pytest.raises(SelfvosInputError, match=r"shard-00001\.tar: shard listed in index.json is missing"):
        open_source(f"stream:{broken}")
    garbage = tmp_path / "bad.tar"
    garbage.write_bytes(b"not a tar archive" * 100)
    with pytest.raises(SelfvosInputError, match=r"bad\.tar: not a readable uncompressed tar"):
        len(open_source(f"stream:{tmp_path}/*.tar"))
    damaged = tmp_path / "damaged.tar"  # right layout, the member's bytes overwritten
    with tarfile.open(damaged, "w") as archive:
        archive.add(videos / "clip0.mp4", arcname="clip0.mp4")
    member = scan_tar(damaged)[0]
    data = bytearray(damaged.read_bytes())
    data[member.offset:member.offset + member.size] = bytes(member.size)
    damaged.write_bytes(bytes(data))
    with pytest.raises(SelfvosInputError, match=r"damaged\.tar\[clip0\.mp4\]"):
        next(iter(ClipStream(open_source(f"stream:{damaged}"), CFG)))


def test_write_shards_refuses_a_bad_video_and_writes_nothing(tmp_path, videos):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("clip0.mp4", "clip1.mp4"):
        (src / name).write_bytes((videos / name).read_bytes())
    (src / "zz.mp4").write_bytes(b"\x00" * 300)
    with pytest.raises(SelfvosInputError, match=r"zz\.mp4"):
        write_shards(src, tmp_path / "dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    with pytest.raises(SelfvosInputError, match="already exists"):
        write_shards(videos, src)
    assert list_shards(write_shards(videos, src, overwrite=True, videos_per_shard=4))[-1].count == 2


def test_pseudo_labels_over_a_stream_keep_open_videos_bounded(tmp_path, shards):
    from selfvos.pseudo.base import FramePseudoLabeler
    from selfvos.pseudo.generate import generate_pseudo_labels
    from selfvos.pseudo.store import PseudoLabelStore

    class Brightness(FramePseudoLabeler):
        def saliency(self, frame):
            return frame.mean(-1).astype(np.float32) / 255.0

        def config(self):
            return {"type": "brightness"}

    collection = open_source(f"stream:{shards}", open_limit=2)
    store = PseudoLabelStore(tmp_path / "store")
    manifest = generate_pseudo_labels(collection, store, 0, Brightness(), progress=False, eval_gt=True)
    assert sorted(manifest["completed_videos"]) == sorted(collection.names)
    assert store.frames(0, "clip9") == list(range(FRAMES)) and collection.decoders.peak <= 2
    dataset = clip_dataset(collection, CFG, mask_provider=store.mask_provider(0))
    assert isinstance(dataset, ClipStream) and bool(next(iter(dataset))["mask_valid"].all())
    assert isinstance(clip_dataset(open_source("synthetic:2"), CFG), ClipDataset)


class _Recording:
    """The toy objective, recording which clips every step trained on."""

    def __init__(self, objective, log):
        self.objective, self.log = objective, log

    def __call__(self, model, batch):
        self.log.append(_keys(_unbatch(batch)))
        return self.objective(model, batch)


def test_trainer_resumes_a_stream_exactly(tmp_path, shards):
    from tests.engine.engine_toys import ToyModel, ToyObjective, flat_weights, reset_accelerate_state, toy_config

    from selfvos.engine import Callback, Trainer

    class KillAt(Callback):
        def on_step_end(self, trainer, metrics):
            if trainer.state.step == 4:
                raise KeyboardInterrupt("killed after step 4")

    def run(out, log, callbacks=()):
        reset_accelerate_state()
        torch.manual_seed(0)
        stream = ClipStream(open_source(f"stream:{shards}"), CFG, mask_provider=lambda name, i: np.full((24, 32), 0.7),
                            clips_per_video=1, buffer_videos=3)
        cfg = toy_config(out, max_steps=6, batch_size=3, save_every=4)  # 10 clips -> 3 batches a pass
        trainer = Trainer(ToyModel(), stream, cfg, objective=_Recording(ToyObjective(), log), callbacks=callbacks)
        assert len(trainer.loader) == 3 and stream.batch_size == 3
        return trainer

    full: list = []
    trainer = run(tmp_path / "full", full)
    trainer.train()
    weights = flat_weights(trainer._unwrapped)
    assert len(full) == 6 and full[:3] != full[3:]  # pass 1 is reordered
    cut: list = []
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", cut, [KillAt()]).train()
    resumed: list = []
    trainer = run(tmp_path / "cut", resumed)
    assert (trainer.state.step, trainer.state.epoch) == (4, 1)  # resumed one batch into pass 1
    trainer.train()
    assert cut + resumed == full
    assert all(torch.equal(v, weights[k]) for k, v in flat_weights(trainer._unwrapped).items())


def test_shard_command(tmp_path, videos, capsys):
    from selfvos.cli import main

    assert main(["shard", str(videos), str(tmp_path / "s"), "--videos-per-shard", "4"]) == 0
    assert "wrote 10 videos in 3 shards" in capsys.readouterr().out
    assert [s.count for s in list_shards(tmp_path / "s")] == [4, 4, 2]
    assert main(["shard", str(tmp_path / "nothing"), str(tmp_path / "t")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("nothing: no video files (.mp4, .mov, .mkv, "
                                                                      ".webm, .avi, .m4v)")
