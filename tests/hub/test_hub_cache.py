"""Loading a Hub repo id offline from a local HF cache (``models--org--name/refs|snapshots|blobs``)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from huggingface_hub import constants as hf_constants
import pytest
import torch

import selfvos
from selfvos.errors import SelfvosInputError

SHA_MAIN = "a" * 40
SHA_V1 = "b" * 40


def add_snapshot(cache: Path, repo_id: str, checkpoint: Path, sha: str, refs: tuple = ("main",)) -> None:
    """Lay out ``checkpoint``'s files as huggingface_hub caches them: blobs, snapshot symlinks, refs."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for file in checkpoint.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    for ref in refs:
        (repo / "refs" / ref).write_text(sha)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    assert hf_constants.HF_HUB_OFFLINE, "tests/conftest.py must set HF_HUB_OFFLINE=1 first"
    return cache


def test_repo_id_resolves_from_the_offline_cache(hf_cache, checkpoint, segmenter, hub_classes):
    add_snapshot(hf_cache, "selfvos-test/tiny", checkpoint, SHA_MAIN)
    loaded = selfvos.from_pretrained("selfvos-test/tiny")
    assert type(loaded) is hub_classes["segmenter"] and loaded.config == segmenter.config
    x = torch.rand(1, 3, 10, 10)
    assert torch.equal(loaded(x), segmenter(x))
    assert torch.equal(hub_classes["segmenter"].from_pretrained("selfvos-test/tiny")(x), segmenter(x))


def test_revisions_pick_their_snapshot(hf_cache, tmp_path, checkpoint, segmenter, hub_classes):
    other = hub_classes["trained_segmenter"](seed=7)
    add_snapshot(hf_cache, "selfvos-test/tiny", checkpoint, SHA_MAIN)
    add_snapshot(hf_cache, "selfvos-test/tiny", other.save_pretrained(tmp_path / "v1"), SHA_V1, refs=("v1",))
    x = torch.rand(1, 3, 10, 10)
    for revision, expected in ((None, segmenter), ("main", segmenter), ("v1", other), (SHA_V1, other)):
        loaded = selfvos.from_pretrained("selfvos-test/tiny", revision=revision)
        assert torch.equal(loaded(x), expected(x)), revision


def test_explicit_cache_dir(tmp_path, checkpoint, segmenter):
    cache = tmp_path / "elsewhere"
    add_snapshot(cache, "org/net", checkpoint, SHA_MAIN)
    loaded = selfvos.from_pretrained("org/net", cache_dir=cache)
    assert loaded.config == segmenter.config


def test_uncached_repo_gives_one_clear_error(hf_cache, checkpoint):
    with pytest.raises(SelfvosInputError, match=r"org/absent@main/config\.json: .*HF_HUB_OFFLINE=1.*not in the cache"):
        selfvos.from_pretrained("org/absent")
    add_snapshot(hf_cache, "org/present", checkpoint, SHA_MAIN)
    with pytest.raises(SelfvosInputError, match=r"org/present@v9/config\.json"):
        selfvos.from_pretrained("org/present", revision="v9")


def test_cached_repo_without_weights_names_the_weights_file(hf_cache, checkpoint):
    (checkpoint / "model.safetensors").unlink()
    add_snapshot(hf_cache, "org/noweights", checkpoint, SHA_MAIN)
    with pytest.raises(SelfvosInputError, match=r"org/noweights@main/model\.safetensors"):
        selfvos.from_pretrained("org/noweights")


def test_real_mug_model_from_the_offline_cache(hf_cache, mug_checkpoint, mug_model):
    add_snapshot(hf_cache, "selfvos-test/mug-r18", mug_checkpoint, SHA_MAIN)
    loaded = selfvos.from_pretrained("selfvos-test/mug-r18")
    assert type(loaded) is type(mug_model) and loaded.config == mug_model.config
    frames = torch.rand(1, 2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode(frames), mug_model.encode(frames))
    assert type(mug_model).from_pretrained("selfvos-test/mug-r18", revision=SHA_MAIN).config == mug_model.config
