"""Output folders that appear whole or not at all: written to a temporary sibling, renamed at the end.

A rerun replaces a previous output (recognised by its marker file) with
renames only; a folder without the marker is someone else's and is refused.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DataError

__all__ = ["staged_dir"]


def _check(out: Path, marker: str, what: str) -> None:
    if out.exists() and not (out / marker).is_file():
        raise DataError(f"{out} exists and is not a corpusforge {what} output", hint="choose another --out")


@contextmanager
def staged_dir(out: Path, *, marker: str, what: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on success it replaces ``out``, on failure it is removed.

    The caller must write ``marker`` into it: that is how a later run knows ``out`` may be replaced.
    """
    _check(out, marker, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        _check(out, marker, what)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
