"""Atomic replacement of whole folders: readers see the old folder or the new one, never a half-written one."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Union


def replace_dir(src: Union[str, Path], dst: Union[str, Path]) -> None:
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
