"""Atomic writes of files and folders: a reader sees the old content or the new one, never a half-written one.

- :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`: the content goes to a
  temporary file in the destination's folder (``.<name>.<random>.tmp``), is flushed to disk (fsync) and moved
  over the destination with one ``os.replace``; on any error the temporary file is removed and the
  destination is left as it was.
- :func:`staging_path` + :func:`replace_dir`: build a folder under a sibling name, then move it into place.

Every writer of selfvos that must not leave partial files behind (masks, pseudo-labels, manifests, flow
caches, benchmark tables, datasets) goes through this module.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]
Writer = Callable[[BinaryIO], Any]


def atomic_write_bytes(path: PathLike, data: Union[bytes, bytearray, memoryview, Writer]) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``.

    ``data`` is either the bytes themselves or a callable ``write(fileobj)`` that writes them to the binary
    file object it is given (``lambda fh: image.save(fh, format="PNG")``, ``lambda fh: np.save(fh, a)``).
    Parent folders are created. The file gets the usual permissions (``0o666`` minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`); returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, data: Any, *, indent: int = 2, sort_keys: bool = True,
                      newline: bool = False, **dumps_kwargs: Any) -> Path:
    """Write ``json.dumps(data, indent=indent, sort_keys=sort_keys, **dumps_kwargs)`` to ``path`` atomically,
    with a final newline when ``newline``; returns ``path``."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, **dumps_kwargs)
    return atomic_write_text(path, text + "\n" if newline else text)


def staging_path(dst: PathLike) -> Path:
    """A fresh sibling of ``dst`` (``<name>.tmp-<random>``) to build a folder in before :func:`replace_dir`."""
    dst = Path(dst)
    return dst.with_name(f"{dst.name}.tmp-{uuid.uuid4().hex[:8]}")


def replace_dir(src: PathLike, dst: PathLike) -> None:
    """Move the finished folder ``src`` to ``dst``; an old ``dst`` is moved aside first and deleted only after
    the new one is in place."""
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
