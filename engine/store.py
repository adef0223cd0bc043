"""The run directory: durable, append-only output and everything ``--resume`` needs.

Layout of ``--out DIR``::

    manifest.json    the run's configuration (no secrets); a resumed run must match it
    data.jsonl       one accepted example a line
    rejects.jsonl    dropped examples with the reason (dedup, parse, surplus)
    failures.jsonl   requests given up, with the reason
    requests.jsonl   the journal: one line per finished request (the source of truth for resume)
    stats.json       counters, rates, cost (rewritten atomically while running)
    state.json       facts learned during the run (e.g. structured output unsupported)

Durability: every batch is written with one ``os.write`` per file on an
``O_APPEND`` descriptor, data before journal, and fsynced at most every
``fsync_every_s``. A kill at any moment leaves at worst a torn last line, which
``open`` repairs by truncating it. A request whose examples reached
``data.jsonl`` counts as done even if its journal line was lost, so no example is
ever written twice; a request with no surviving trace is simply planned again.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError
from .types import Example

__all__ = ["ResumeState", "RunStore", "atomic_write_json", "read_jsonl"]

DATA = "data.jsonl"
REJECTS = "rejects.jsonl"
FAILURES = "failures.jsonl"
JOURNAL = "requests.jsonl"
MANIFEST = "manifest.json"
STATS = "stats.json"
STATE = "state.json"
_APPEND_FILES = (DATA, REJECTS, FAILURES, JOURNAL)


_dumps = json.JSONEncoder(ensure_ascii=False).encode


def atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete JSON lines of ``path`` (a torn or corrupt line is skipped)."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                yield json.loads(line)
            except ValueError:
                continue


def _repair_torn_tail(path: Path) -> int:
    """Truncate a partial last line left by a crash; return the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        # walk back to the last newline
        pos = size
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                f.truncate(keep)
                return size - keep
            pos = start
        f.truncate(0)
        return size


@dataclass
class ResumeState:
    """What an earlier run left: done requests, examples per label, counters."""

    done_requests: set[str] = field(default_factory=set)
    accepted_by_label: Counter[str] = field(default_factory=Counter)
    requests_by_label: Counter[str] = field(default_factory=Counter)
    examples: list[Example] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    repaired_bytes: int = 0


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class RunStore:
    """Append-only writer for one run directory."""

    def __init__(self, out_dir: Path, *, fsync_every_s: float = 1.0, clock: Any = time.monotonic) -> None:
        self.dir = Path(out_dir)
        self.fsync_every_s = fsync_every_s
        self._clock = clock
        self._fds: dict[str, int] = {}
        self._last_sync = 0.0
        self._dirty = False

    # -- opening and resuming -----------------------------------------------------------------

    def open(self, manifest: dict[str, Any], *, resume: bool, field_names: Iterable[str] = ("text",)) -> ResumeState:
        """Create or reopen the run directory; on resume check the manifest and load what was done."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {self.dir}: {exc.strerror}", hint="choose another --out") from exc
        manifest_path = self.dir / MANIFEST
        state = ResumeState()
        if manifest_path.exists():
            if not resume:
                raise ConfigError(
                    f"{self.dir} already holds a run",
                    hint="pass --resume to continue it, or choose another --out",
                )
            try:
                old = json.loads(manifest_path.read_text())
            except ValueError as exc:
                raise DataError(f"{manifest_path} is corrupt", hint="choose another --out") from exc
            differences = _diff(old.get("fingerprint", {}), manifest.get("fingerprint", {}))
            if differences:
                raise ConfigError(
                    "cannot resume: the configuration differs from the run in "
                    f"{self.dir} ({'; '.join(differences[:5])})",
                    hint="use the original settings, or choose another --out",
                )
            state = self._load(list(field_names))
        elif any((self.dir / name).exists() and (self.dir / name).stat().st_size for name in _APPEND_FILES):
            raise ConfigError(f"{self.dir} has output files but no {MANIFEST}", hint="choose an empty --out")
        atomic_write_json(manifest_path, manifest)
        for name in _APPEND_FILES:
            self._fds[name] = os.open(self.dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return state

    def _load(self, field_names: list[str]) -> ResumeState:
        state = ResumeState()
        for name in _APPEND_FILES:
            state.repaired_bytes += _repair_torn_tail(self.dir / name)
        for row in read_jsonl(self.dir / JOURNAL):
            rid = str(row.get("request_id", ""))
            if rid and rid not in state.done_requests:
                state.done_requests.add(rid)
                state.requests_by_label[str(row.get("label", ""))] += 1
        for row in read_jsonl(self.dir / DATA):
            ex = Example.from_dict(row, field_names)
            state.examples.append(ex)
            state.accepted_by_label[ex.label] += 1
            if ex.request_id and ex.request_id not in state.done_requests:
                # data reached disk but the journal line did not: the request is done all the same
                state.done_requests.add(ex.request_id)
                state.requests_by_label[ex.label] += 1
        stats_path = self.dir / STATS
        if stats_path.exists():
            try:
                state.stats = json.loads(stats_path.read_text())
            except ValueError:
                state.stats = {}
        return state

    # -- writing ------------------------------------------------------------------------------

    def _append(self, name: str, rows: Iterable[dict[str, Any]]) -> None:
        payload = "".join([_dumps(r) + "\n" for r in rows]).encode()
        if not payload:
            return
        fd = self._fds[name]
        view = memoryview(payload)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            raise DataError(
                f"cannot write {self.dir / name}: {exc.strerror}",
                hint="free disk space, then rerun with --resume: nothing already written is lost",
            ) from exc
        self._dirty = True

    def write_batch(
        self,
        *,
        accepted: list[Example],
        rejected: list[tuple[dict[str, Any], str]],
        failures: list[dict[str, Any]],
        journal: list[dict[str, Any]],
    ) -> None:
        """Write one batch: data, then rejects and failures, then the journal lines that commit it."""
        self._append(DATA, (ex.to_dict() for ex in accepted))
        self._append(REJECTS, ({**row, "reason": reason} for row, reason in rejected))
        self._append(FAILURES, failures)
        self._append(JOURNAL, journal)
        now = self._clock()
        if now - self._last_sync >= self.fsync_every_s:
            self.sync()

    def sync(self) -> None:
        if not self._dirty:
            return
        for fd in self._fds.values():
            os.fsync(fd)
        self._dirty = False
        self._last_sync = self._clock()

    def write_stats(self, stats: dict[str, Any]) -> None:
        atomic_write_json(self.dir / STATS, stats)

    def read_state(self) -> dict[str, Any]:
        path = self.dir / STATE
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.dir / STATE, state)

    def close(self) -> None:
        self.sync()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
