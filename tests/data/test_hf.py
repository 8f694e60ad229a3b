"""Video collections <-> Hugging Face datasets: lossless round trips, lazy decoding, atomic writes, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import datasets
from selfvos.data import hf
from selfvos.data.sources import open_source
from selfvos.data.hf import SCHEMA, HFVideo, load_hf_collection, to_hf_dataset
from selfvos.data.video import InMemoryVideo, VideoCollection, VideoSample
from selfvos.data.writers import export_davis
from selfvos.errors import SelfvosInputError
from selfvos.registry import SOURCES
from tests.conftest import shared_path


def _video(name: str, t: int = 6, h: int = 20, w: int = 28, seed: int = 0, sparse: bool = False, fps=None):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)  # noise: any lossy step would show
    masks = rng.integers(0, 5, (t, h, w), dtype=np.uint8)
    masks[:, -1, -1] = 255
    annotated = (np.arange(t) % 3 == 0) if sparse else None
    sample = VideoSample(frames=frames, frame_names=[f"f{i:03d}" for i in range(t)], name=name, masks=masks,
                         annotated=annotated, fps=fps, source=f"mem://{name}")
    return InMemoryVideo(sample)


def _unlabeled(name: str) -> InMemoryVideo:
    frames = np.random.default_rng(9).integers(0, 256, (3, 10, 12, 3), dtype=np.uint8)
    return InMemoryVideo(VideoSample(frames=frames, frame_names=["0", "1", "2"], name=name, fps=29.97))


def _assert_same_video(original, loaded) -> None:
    a, b = original.load(), loaded.load()
    assert b.name == a.name and b.frame_names == a.frame_names
    np.testing.assert_array_equal(b.frames, a.frames)
    assert loaded.annotated_indices() == original.annotated_indices()
    if a.masks is None:
        assert b.masks is None
    else:
        np.testing.assert_array_equal(b.annotated, a.annotated)
        np.testing.assert_array_equal(b.masks[b.annotated], a.masks[a.annotated])


def test_schema_is_the_documented_one():
    assert list(SCHEMA) == ["name", "frames", "masks", "mask_frame_indices", "frame_names", "fps", "source",
                            "height", "width", "num_objects"]
    assert isinstance(SCHEMA["frames"], datasets.List) and isinstance(SCHEMA["frames"].feature, datasets.Image)
    assert SCHEMA["mask_frame_indices"].feature.dtype == "int32" and SCHEMA["fps"].dtype == "float32"
    assert "hf" in SOURCES.names()


def test_in_memory_round_trip_is_lossless(tmp_path):
    videos = [_video("dense", seed=1, fps=24.0), _video("sparse", seed=2, sparse=True), _unlabeled("plain")]
    dst = to_hf_dataset(VideoCollection(videos), tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp / cache folders left
    loaded = load_hf_collection(dst)
    assert loaded.kind == "hf" and loaded.names == ["dense", "sparse", "plain"]
    for original in videos:
        _assert_same_video(original, loaded[original.name])
    assert loaded["dense"].fps == 24.0 and loaded["sparse"].fps is None and loaded["plain"].fps == 29.97
    assert loaded["sparse"].annotated_indices() == [0, 3]
    assert [v.num_objects for v in loaded] == [4, 4, 0]
    assert loaded["dense"].origin == "mem://dense" and (loaded["dense"].height, loaded["dense"].width) == (20, 28)
    row = datasets.load_from_disk(str(dst))[1]  # the plain datasets view follows the schema too
    assert row["mask_frame_indices"] == [0, 3] and row["frames"][0].size == (28, 20)


def test_synthetic_collection_round_trip(tmp_path):
    synthetic = SOURCES.create("synthetic", num_videos=2, num_frames=5, size=(48, 64), max_objects=3, seed=3)
    loaded = load_hf_collection(to_hf_dataset(synthetic, tmp_path / "syn"))
    for original in synthetic:
        _assert_same_video(original, loaded[original.name])


def test_reading_decodes_only_the_frames_asked_for(tmp_path, monkeypatch):
    dst = to_hf_dataset(VideoCollection([_video("a", t=8), _video("b", t=8, seed=5)]), tmp_path / "ds")
    calls = {"frames": 0, "masks": 0}
    real_frame, real_mask = hf._decode_frame, hf.decode_id_png

    def count(kind, fn):
        def wrapped(data):
            calls[kind] += 1
            return fn(data)
        return wrapped

    monkeypatch.setattr(hf, "_decode_frame", count("frames", real_frame))
    monkeypatch.setattr(hf, "decode_id_png", count("masks", real_mask))
    collection = load_hf_collection(dst)
    assert calls == {"frames": 0, "masks": 0} and len(collection["b"]) == 8
    frame = collection["b"].frame(5)
    assert calls == {"frames": 1, "masks": 0}
    np.testing.assert_array_equal(frame, _video("b", t=8, seed=5).frame(5))
    collection["b"].mask(2)
    assert calls == {"frames": 1, "masks": 1}
    collection["a"].load([1, 7])
    assert calls == {"frames": 3, "masks": 3}


def test_max_side_shrinks_frames_and_masks(tmp_path):
    loaded = load_hf_collection(to_hf_dataset(VideoCollection([_video("a", h=40, w=80)]), tmp_path / "d", max_side=20))
    video = loaded["a"]
    assert (video.height, video.width) == (10, 20) and video.frame(0).shape == (10, 20, 3)
    assert video.mask(0).shape == (10, 20) and set(np.unique(video.mask(0))) <= {0, 1, 2, 3, 4, 255}


def test_writing_is_atomic_and_never_clobbers(tmp_path):
    class Broken(InMemoryVideo):
        def _read_frame(self, index):
            if index == 2:
                raise OSError("decoder exploded")
            return super()._read_frame(index)

    dst = tmp_path / "ds"
    with pytest.raises(OSError, match="decoder exploded"):
        to_hf_dataset(VideoCollection([_video("ok"), Broken(_video("bad").sample)]), dst)
    assert list(tmp_path.iterdir()) == []
    to_hf_dataset(VideoCollection([_video("one")]), dst)
    with pytest.raises(SelfvosInputError, match="already exists"):
        to_hf_dataset(VideoCollection([_video("two")]), dst)
    to_hf_dataset(VideoCollection([_video("two")]), dst, overwrite=True)
    assert load_hf_collection(dst).names == ["two"] and [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_bad_inputs_name_the_path_and_problem(tmp_path):
    with pytest.raises(SelfvosInputError, match="nowhere: not found"):
        load_hf_collection(tmp_path / "nowhere")
    other = tmp_path / "other"
    datasets.Dataset.from_dict({"text": ["a"]}).save_to_disk(str(other))
    with pytest.raises(SelfvosInputError, match=r"other: not a selfvos video dataset: missing columns \['name'"):
        load_hf_collection(other)
    with pytest.raises(SelfvosInputError, match="cannot load"):
        load_hf_collection("nobody-here/no-such-dataset")  # offline: not in any cache


def test_dataset_dict_splits_and_sequence_selection(tmp_path):
    to_hf_dataset(VideoCollection([_video("a"), _video("b", seed=1)]), tmp_path / "one")
    dd = datasets.DatasetDict({"val": datasets.load_from_disk(str(tmp_path / "one"))})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_hf_collection(tmp_path / "dd", split="val", sequences=["b"]).names == ["b"]
    with pytest.raises(SelfvosInputError, match=r"no split 'train'; splits: \['val'\]"):
        load_hf_collection(tmp_path / "dd")


def test_hub_id_resolves_from_local_hub_cache(tmp_path, monkeypatch):
    """A dataset pushed as parquet and fetched into the hub cache loads by id with HF_HUB_OFFLINE=1."""
    import huggingface_hub.constants

    original = _video("clip", seed=4, sparse=True)
    to_hf_dataset(VideoCollection([original]), tmp_path / "ds")
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--someone--tiny-vos"
    (repo / "snapshots" / sha / "data").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    datasets.load_from_disk(str(tmp_path / "ds")).to_parquet(str(repo / "snapshots" / sha / "data" / "train-0.parquet"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_hf_collection("someone/tiny-vos", cache_dir=str(tmp_path / "ds-cache"))
    _assert_same_video(original, loaded["clip"])


def test_real_davis2017_multi_object_round_trip_to_hf_and_back_to_davis(tmp_path):
    root = shared_path("davis2017-multi")
    davis_in = open_source(str(root))
    original = davis_in["schoolgirls"]
    loaded = load_hf_collection(to_hf_dataset(davis_in, tmp_path / "ds"))
    video = loaded["schoolgirls"]
    assert isinstance(video, HFVideo) and len(video) == 80 and video.num_objects == 7
    _assert_same_video(original, video)
    assert set(np.unique(video.mask(0)).tolist()) == set(range(8)) and video.fps == 24.0
    raw = np.asarray(Image.open(root / "JPEGImages" / "schoolgirls" / "00040.jpg").convert("RGB"))
    np.testing.assert_array_equal(video.frame(40), raw)  # PNG storage: bit-exact decoded JPEG pixels

    davis = export_davis(loaded, tmp_path / "davis")
    for name in original.frame_names:
        exported = Image.open(davis / "Annotations" / "480p" / "schoolgirls" / f"{name}.png")
        source = Image.open(root / "Annotations" / "schoolgirls" / f"{name}.png")
        np.testing.assert_array_equal(np.array(exported), np.array(source))
    # the source mixes two palettes (52 frames DAVIS, 28 full VOC); the export uses frame 00000's one throughout
    first = Image.open(root / "Annotations" / "schoolgirls" / "00000.png").getpalette()
    voc_frame = davis / "Annotations" / "480p" / "schoolgirls" / "00011.png"  # VOC palette in the source
    assert Image.open(voc_frame).getpalette() == first
    assert open_source(str(davis)).names == ["schoolgirls"]  # the DAVIS reader reads the export back
