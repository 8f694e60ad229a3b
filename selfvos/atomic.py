"""Atomic writes of files and folders: a reader sees the old content or the new one, never a half-written one.

- :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`: the content goes to a
  temporary file in the destination's folder (``.<name>.<random>.tmp``), is flushed to disk (fsync) and moved
  over the destination with one ``os.replace``; on any error the temporary file is removed and the
  destination is left as it was.
- :func:`staging_path` + :func:`replace_dir`: build a folder under a sibling name, then move it into place;
  :func:`staged_folder` does both around a ``with`` block (the folder appears complete or not at all) and
  :func:`clean_stale_staging` removes what a killed run left behind.
- :func:`file_sha256`: the digest that checkpoint manifests and the weights fingerprint of results use.
- :func:`naming_path`: an ``OSError`` without a file name (``ENOSPC`` from ``write``/``fsync``) is re-raised
  naming the path being written, so the message says where the disk is full.

Every writer of selfvos that must not leave partial files behind (masks, pseudo-labels, manifests, flow
caches, benchmark tables, datasets) goes through this module.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional, Union

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


def current_umask() -> int:
    """The process umask, read without changing it where the OS tells (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no other portable way to read it: set and restore at once
    os.umask(mask)
    return mask


def apply_default_mode(path: PathLike) -> Path:
    """Give the file ``path`` the usual permissions of a new file (``0o666`` minus the umask); returns it.

    For files written by libraries that create them private (safetensors writes ``0o600``), so they match
    the files written by :func:`atomic_write_bytes` and ``open()``.
    """
    path = Path(path)
    os.chmod(path, 0o666 & ~current_umask())
    return path


@contextmanager
def naming_path(path: PathLike) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file (``write``/``fsync`` failing with ``ENOSPC``) as the same
    error (same errno, same subclass) naming ``path``."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), os.fspath(path)) from err


@contextmanager
def renaming_staged(staged: Path, dst: Path) -> Iterator[None]:
    """Re-raise an ``OSError`` about a file under the staging folder ``staged`` as one about the same file
    under its destination ``dst`` (the temporary name means nothing to the user); one naming no file
    names ``dst``."""
    try:
        yield
    except OSError as err:
        name = os.fspath(err.filename) if err.filename is not None else None
        if err.errno is None or (name is not None and not Path(name).is_relative_to(staged)):
            raise
        shown = dst if name is None else dst / Path(name).relative_to(staged)
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), os.fspath(shown)) from err


STAGING_SUFFIX = r"\.tmp-[0-9a-f]{8}"  # selfvos.atomic.staging_path: "<name>.tmp-<8 hex>"
OLD_PATTERN = re.compile(r"^\.(.+)\.old-[0-9a-f]{8}$")  # selfvos.atomic.replace_dir: ".<name>.old-<8 hex>"


def clean_stale_staging(folder: PathLike, name: Optional[str] = None) -> None:
    """Remove what a killed :func:`staged_folder` left in ``folder`` (for the destination ``name`` only, or
    for every name): ``<name>.tmp-<hex>`` staging folders are deleted; a ``.<name>.old-<hex>`` folder (the
    previous output, moved aside just before the new one was moved in) is put back when ``<name>`` is
    missing, deleted otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    base = re.escape(name) if name is not None else ".+"
    staging = re.compile(f"^{base}{STAGING_SUFFIX}$")
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        old = OLD_PATTERN.match(entry.name)
        if staging.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
        elif old and (name is None or old.group(1) == name):
            restore = folder / old.group(1)
            if restore.exists() or restore.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.replace(entry, restore)


@contextmanager
def staged_folder(dst: PathLike) -> Iterator[Path]:
    """All-or-nothing output folder: yields a fresh staging sibling of ``dst`` to fill; when the block ends
    without an exception the staging folder replaces ``dst`` (an old ``dst`` is deleted only after the new one
    is in place), otherwise it is deleted and ``dst`` stays as it was. Stale staging siblings of ``dst`` from
    a killed run are cleaned first. An ``OSError`` names the file under ``dst`` it was about."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(dst.parent, dst.name)
    staged = staging_path(dst)
    try:
        with renaming_staged(staged, dst):
            staged.mkdir()
            yield staged
            replace_dir(staged, dst)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of the bytes of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
