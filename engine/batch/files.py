"""Batch input files: request lines split so no file exceeds the provider's limits.

A line is ``{"custom_id", "method", "url", "body"}`` where ``body`` is exactly
what the online provider would POST (its own encoder writes it). Next to each
``input-NNNNN.jsonl`` a sidecar ``input-NNNNN.requests.jsonl`` keeps what the
input line cannot carry (label, strategy meta), so outcomes can be rebuilt
after a restart. Both are fsynced before the ledger records the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..types import Request
from .client import ENDPOINT

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_REQUESTS",
    "InputFile",
    "InputWriter",
    "encode_line",
    "parse_size",
    "read_requests",
]

#: OpenAI's per-file limits for the Batch API.
DEFAULT_MAX_REQUESTS = 50_000
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_LINE_HEAD = b'{"custom_id":'
_LINE_MID = (',"method":"POST","url":"' + ENDPOINT + '","body":').encode()
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_size(text: str) -> int:
    """``"200MB"`` → 200,000,000 bytes (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    raw = text.strip().upper().replace(" ", "")
    number = raw.rstrip("KMGIB")
    unit = raw[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise ConfigError(f"cannot read the size {text!r}", hint="write it like 200MB, 50MiB or 1000000")
    return int(value * _UNITS[unit])


def encode_line(request_id: str, body: bytes) -> bytes:
    """One input line around a request body already serialised by the provider."""
    return _LINE_HEAD + _dumps(request_id).encode() + _LINE_MID + body + b"}\n"


@dataclass
class InputFile:
    """One input file as written: its name (``input-00001``), size and what it holds."""

    name: str
    requests: int = 0
    bytes: int = 0
    tokens: int = 0
    ids: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"file": self.name, "requests": self.requests, "bytes": self.bytes, "tokens": self.tokens}


class InputWriter:
    """Appends request lines to ``input-NNNNN.jsonl`` and starts a new file before any limit would be passed."""

    def __init__(
        self, directory: Path, *, max_requests: int, max_bytes: int, max_tokens: int | None = None, index: int = 1
    ) -> None:
        if max_requests < 1 or max_bytes < 1:
            raise ConfigError("--batch-max-requests and --batch-max-bytes must be positive")
        self.dir = directory
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_tokens = max_tokens
        self.index = index
        self._lines: list[bytes] = []
        self._sidecar: list[bytes] = []
        self.current = InputFile(self._name())

    def _name(self) -> str:
        return f"input-{self.index:05d}"

    def fits(self, line_bytes: int, tokens: int) -> bool:
        """Whether one more line keeps the current file within every limit (an empty file takes anything)."""
        cur = self.current
        if cur.requests == 0:
            return True
        if cur.requests + 1 > self.max_requests or cur.bytes + line_bytes > self.max_bytes:
            return False
        return self.max_tokens is None or cur.tokens + tokens <= self.max_tokens

    def add(self, request: Request, line: bytes, tokens: int) -> None:
        if len(line) > self.max_bytes:
            raise ConfigError(
                f"request {request.id} alone is {len(line)} bytes, over --batch-max-bytes {self.max_bytes}",
                hint="raise --batch-max-bytes",
            )
        self._lines.append(line)
        meta: dict[str, Any] = {"id": request.id, "label": request.label or ""}
        if request.meta:
            meta["meta"] = request.meta
        self._sidecar.append(_dumps(meta).encode() + b"\n")
        cur = self.current
        cur.requests += 1
        cur.bytes += len(line)
        cur.tokens += tokens
        cur.ids.append(request.id)

    @property
    def pending(self) -> int:
        return self.current.requests

    def close(self) -> InputFile | None:
        """Write and fsync the current file and its sidecar; return it (None when empty) and start the next."""
        cur = self.current
        if cur.requests == 0:
            return None
        _write_synced(self.dir / f"{cur.name}.requests.jsonl", b"".join(self._sidecar))
        _write_synced(self.dir / f"{cur.name}.jsonl", b"".join(self._lines))
        self._lines.clear()
        self._sidecar.clear()
        self.index += 1
        self.current = InputFile(self._name())
        return cur


def _write_synced(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_requests(directory: Path, name: str) -> list[Request]:
    """The requests of input file ``name`` as outcomes need them (id, label, meta), from its sidecar."""
    out = []
    with open(directory / f"{name}.requests.jsonl", "rb") as f:
        for line in f:
            row = json.loads(line)
            out.append(Request(id=row["id"], messages=[], label=row.get("label") or None, meta=row.get("meta") or {}))
    return out
