"""selfvos.atomic: whole files or the old content, no temporary files left behind, usual permissions."""
from __future__ import annotations

import json
import os
import stat

import pytest

from selfvos.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, replace_dir, staging_path


def test_bytes_and_writer_callables_create_parents(tmp_path):
    path = atomic_write_bytes(tmp_path / "a" / "b" / "x.bin", b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_write_bytes(path, lambda fh: fh.write(b"new"))
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["x.bin"]


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = atomic_write_text(tmp_path / "x.txt", "old")

    def broken(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_json_options(tmp_path):
    path = atomic_write_json(tmp_path / "d.json", {"b": 1, "a": [1, 2]})
    assert path.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2)
    atomic_write_json(path, {"b": 1, "a": 2}, sort_keys=False, newline=True)
    assert path.read_text().endswith("\n") and list(json.loads(path.read_text())) == ["b", "a"]


def test_replace_dir_swaps_a_staged_folder(tmp_path):
    dst = tmp_path / "out"
    for content in ("first", "second"):
        staged = staging_path(dst)
        staged.mkdir()
        (staged / "f.txt").write_text(content)
        replace_dir(staged, dst)
    assert (dst / "f.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
