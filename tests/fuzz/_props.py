"""Shared properties and builders of the fuzz suite: the one allowed failure (``SelfvosInputError`` naming the
path), the CLI's error line, and byte-level builders for PNG files and damaged copies of files."""
from __future__ import annotations

import contextlib
import io
import re
import struct
import zlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

from hypothesis import strategies as st

from selfvos.errors import SelfvosInputError

T = TypeVar("T")
CLI_ERROR_LINE = re.compile(r"^selfvos( [a-z-]+)?: error: \S")
# an unfinished tqdm bar ("desc:   0%|    | 0/3 [00:00<?, ?frame/s]") that an error line may follow on the same line
_PROGRESS_BAR = re.compile(r"^.*\|.*\| *\d+/\d+ \[[^\]]*\]")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def input_error_or(call: Callable[[], T]) -> Tuple[Optional[T], Optional[SelfvosInputError]]:
    """``(result, None)`` when ``call`` succeeds, ``(None, error)`` when it raises ``SelfvosInputError`` whose
    text is ``"<path>: <problem>"`` with both parts non-empty; any other exception propagates (a failure)."""
    try:
        return call(), None
    except SelfvosInputError as err:
        assert err.path and err.problem.strip(), f"error without a path or a problem: {err!r}"
        assert str(err) == f"{err.path}: {err.problem}"
        return None, err


def run_cli(argv: Sequence[str]) -> Tuple[int, str, str]:
    """``selfvos.cli.main(argv)`` with stdout / stderr captured: ``(exit code, stdout, stderr)``.

    Asserts the CLI contract: no exception escapes, no traceback is printed, and a non-zero exit ends with a
    ``selfvos: error: ...`` line (``selfvos <command>: error:`` is accepted too) that is not the CLI's catch-all
    ``internal error`` (an exception nobody turned into a message)."""
    from selfvos.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    stdout, stderr = out.getvalue(), err.getvalue()
    assert "Traceback (most recent call last)" not in stdout + stderr, stderr
    if code != 0:
        errors = [line for line in terminal_lines(stderr) if CLI_ERROR_LINE.match(line)]
        assert errors, f"exit {code} without a 'selfvos: error:' line:\n{stderr}"
        assert not any(": error: internal error" in line for line in errors), f"unexpected exception:\n{stderr}"
    return code, stdout, stderr


def terminal_lines(text: str) -> List[str]:
    """The lines of ``text`` as a terminal shows them: what follows the last carriage return of each line, with an
    unfinished progress bar in front of other text dropped (a bar left open when an error is printed glues the
    error to it; reported as a cosmetic defect of ``selfvos segment``)."""
    lines = []
    for line in text.split("\n"):
        line = line.rsplit("\r", 1)[-1]
        lines.append(_PROGRESS_BAR.sub("", line, count=1) if _PROGRESS_BAR.match(line) else line)
    return lines


# -- PNG bytes ------------------------------------------------------------------------------------------
def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, pixels: bytes, *, interlace: int = 0,
            palette: Optional[bytes] = None, transparency: Optional[bytes] = None) -> bytes:
    """A PNG written by hand: any IHDR values (also invalid ones), zlib-compressed ``pixels`` as the only IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    chunks = [png_chunk(b"IHDR", ihdr)]
    if palette is not None:
        chunks.append(png_chunk(b"PLTE", palette))
    if transparency is not None:
        chunks.append(png_chunk(b"tRNS", transparency))
    chunks += [png_chunk(b"IDAT", zlib.compress(pixels)), png_chunk(b"IEND", b"")]
    return PNG_SIGNATURE + b"".join(chunks)


# -- damage -----------------------------------------------------------------------------------------------
@st.composite
def damaged(draw: st.DrawFn, data: bytes, *, keep_head: int = 0) -> bytes:
    """``data`` truncated, with a span overwritten, with bytes dropped, or with a span repeated (the first
    ``keep_head`` bytes are left alone)."""
    how = draw(st.sampled_from(["truncate", "overwrite", "drop", "repeat"]))
    size = len(data)
    start = draw(st.integers(min(keep_head, size), size))
    if how == "truncate":
        return data[:start]
    length = draw(st.integers(1, max(1, min(4096, size - start))))
    if how == "overwrite":
        noise = draw(st.binary(min_size=length, max_size=length))
        return data[:start] + noise + data[start + length:]
    if how == "drop":
        return data[:start] + data[start + length:]
    return data[:start] + data[start:start + length] * 2 + data[start + length:]


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def listing(folder: Path) -> List[str]:
    """Sorted names in ``folder`` (empty when it does not exist)."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
