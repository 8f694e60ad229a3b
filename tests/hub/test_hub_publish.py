"""``selfvos push``: the dry-run folder, the upload call (replaced by a fake), and refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import selfvos
from selfvos.cli import main
from selfvos.errors import SelfvosInputError
from selfvos.hub import publish
from selfvos.hub.record import weights_sha256

EXPECTED_FILES = ["README.md", "config.json", "model.safetensors"]


@pytest.fixture
def fake_upload(monkeypatch):
    """Replace the one networked function; record what it would have uploaded."""
    calls = []

    def upload(folder: Path, repo_id: str, *, private: bool = False, revision=None, commit_message: str = "") -> str:
        calls.append({
            "files": {p.name: p.read_bytes() for p in folder.iterdir()},
            "repo_id": repo_id, "private": private, "revision": revision, "message": commit_message,
        })
        return f"https://huggingface.co/{repo_id}/commit/0123"

    monkeypatch.setattr(publish, "upload_folder", upload)
    return calls


def test_dry_run_writes_exactly_the_upload_folder(tmp_path, checkpoint, segmenter):
    out = tmp_path / "upload"
    assert main(["push", "--checkpoint", str(checkpoint), "--repo-id", "org/tiny", "--dry-run", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == EXPECTED_FILES
    assert (out / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    assert (out / "config.json").read_bytes() == (checkpoint / "config.json").read_bytes()
    assert "Not measured" in (out / "README.md").read_text()
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(selfvos.from_pretrained(out)(x), segmenter(x))  # the upload folder is itself loadable


def test_push_calls_the_upload_with_weights_config_and_card(tmp_path, checkpoint, fake_upload, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"task": "one-shot-vos", "dataset": "DAVIS-2017", "split": "val",
                                 "metrics": {"J&F": 12.5}, "weights_sha256": weights_sha256(checkpoint)}))
    argv = ["push", "--checkpoint", str(checkpoint), "--repo-id", "org/tiny", "--private",
            "--revision", "exp1", "--benchmark-json", str(bench)]
    assert main(argv) == 0
    (call,) = fake_upload
    assert sorted(call["files"]) == EXPECTED_FILES
    assert (call["repo_id"], call["private"], call["revision"]) == ("org/tiny", True, "exp1")
    assert call["files"]["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
    card = call["files"]["README.md"].decode()
    assert "model-index:" in card and "value: 12.5" in card and "DAVIS-2017" in card
    assert "Not measured" not in card
    out = capsys.readouterr().out
    assert "pushed: https://huggingface.co/org/tiny/commit/0123" in out and "model.safetensors" in out


def test_model_push_to_hub_goes_through_the_same_path(segmenter, fake_upload):
    result = segmenter.push_to_hub("org/direct")
    assert result.endswith("/org/direct/commit/0123")
    assert sorted(fake_upload[0]["files"]) == EXPECTED_FILES


def test_broken_checkpoint_is_never_uploaded(checkpoint, fake_upload, capsys):
    document = json.loads((checkpoint / "config.json").read_text())
    document["config"]["num_classes"] = 5
    (checkpoint / "config.json").write_text(json.dumps(document))
    assert main(["push", "--checkpoint", str(checkpoint), "--repo-id", "org/tiny"]) == 2
    assert fake_upload == []
    assert "model.safetensors: weights do not fit TinySegmenter" in capsys.readouterr().err


def test_refusals(tmp_path, checkpoint, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"x")
    with pytest.raises(SelfvosInputError, match="output folder exists and is not empty"):
        publish.push_checkpoint(checkpoint, "org/tiny", dry_run_dir=out)
    with pytest.raises(SelfvosInputError, match="checkpoint directory not found"):
        publish.push_checkpoint(tmp_path / "missing", "org/tiny", dry_run_dir=tmp_path / "o")
    with pytest.raises(SelfvosInputError, match=r"org/a/b: not a Hub repo id"):
        publish.push_checkpoint(checkpoint, "org/a/b", dry_run_dir=tmp_path / "o")
    with pytest.raises(SelfvosInputError, match="HF_HUB_OFFLINE=1 is set"):  # the real upload, offline
        publish.push_checkpoint(checkpoint, "org/tiny")


def test_upload_folder_calls_create_repo_branch_and_upload(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def create_branch(self, repo_id, **kwargs):
            calls.append(("create_branch", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return huggingface_hub.CommitInfo(commit_url="https://hf.co/org/x/commit/1", commit_message="m",
                                              commit_description="", oid="1")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = publish.upload_folder(tmp_path, "org/x", private=True, revision="exp1", commit_message="m")
    assert url == "https://hf.co/org/x/commit/1"
    assert calls == [
        ("create_repo", "org/x", {"private": True, "exist_ok": True}),
        ("create_branch", "org/x", {"branch": "exp1", "exist_ok": True}),
        ("upload_folder", {"repo_id": "org/x", "folder_path": str(tmp_path), "revision": "exp1", "commit_message": "m"}),
    ]
    calls.clear()
    publish.upload_folder(tmp_path, "org/x")
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]  # main needs no branch


def test_dry_run_of_a_real_mug_checkpoint(tmp_path, mug_checkpoint, mug_model, capsys):
    out = tmp_path / "upload"
    assert main(["push", "--checkpoint", str(mug_checkpoint), "--repo-id", "org/mug-r18", "--dry-run", str(out)]) == 0
    assert f"wrote the upload folder: {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == EXPECTED_FILES
    assert (out / "model.safetensors").read_bytes() == (mug_checkpoint / "model.safetensors").read_bytes()
    card = (out / "README.md").read_text()
    values = sum(t.numel() for t in mug_model.state_dict().values())  # no tied tensors in MuG
    assert f"({values:,} values: parameters and buffers" in card
    assert "`mug` is a MuG self-supervised VOS model" in card
    assert "`selfvos.pretrain.model.MuGModel`" in card and 'MuGModel.from_pretrained("org/mug-r18")' in card
    assert "@inproceedings{lu2020mug" in card and "@inproceedings{yang2013saliency" in card
    assert "return_layers:\n  - layer3" in card and "Not measured" in card
    loaded = selfvos.from_pretrained(out)
    assert loaded.config == mug_model.config
    assert torch.equal(loaded.coattention_weight, mug_model.coattention_weight)
