"""The run directory: durable, append-only output and everything ``--resume`` needs.

Layout of ``--out DIR``::

    manifest.json    the run's configuration (no secrets); a resumed run must match it
    data.jsonl       one accepted example a line
    rejects.jsonl    dropped examples with the reason (dedup, parse, surplus)
    failures.jsonl   requests given up, with the reason
    requests.jsonl   the journal: one line per finished request (the source of truth for resume)
    stats.json       counters, rates, cost (rewritten atomically while running)
    state.json       facts learned during the run (e.g. structured output unsupported)
    topics.json      the topic approach's phase one (topics per label)
    .lock            held (flock) by the one process writing the run

One writer: ``open`` takes an exclusive ``flock`` on ``.lock``, which the
kernel releases when the process dies, so a second ``generate`` on the same
directory is refused with the first one's PID and a kill -9 never leaves a
stale lock.

Durability: every batch is written with one ``os.write`` per file on an
``O_APPEND`` descriptor, data before journal, and fsynced at most every
``fsync_every_s``. A kill at any moment leaves at worst a torn last line, which
``open`` repairs by truncating it. A request whose examples reached
``data.jsonl`` counts as done even if its journal line was lost, so no example is
ever written twice; a request with no surviving trace is simply planned again.

Counters are rebuilt from the files on resume, never trusted from the last
``stats.json`` snapshot: ``accepted`` is the number of distinct ids in
``data.jsonl``, ``rejected`` the lines of ``rejects.jsonl``, and requests,
429s, retries and tokens are summed over the journal, whose lines carry each
request's attempts and usage. Examples are streamed back (``iter_examples``)
rather than held, so resuming costs no more memory than the live run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import io
from .errors import ConfigError, DataError
from .io import atomic_write_json
from .runstate import RunState
from .types import Example

__all__ = ["ResumeState", "RunStore", "atomic_write_json", "config_differences", "lock_directory", "read_jsonl"]

DATA = "data.jsonl"
REJECTS = "rejects.jsonl"
FAILURES = "failures.jsonl"
JOURNAL = "requests.jsonl"
MANIFEST = "manifest.json"
STATS = "stats.json"
STATE = "state.json"
TOPICS = "topics.json"
LOCK = ".lock"
_APPEND_FILES = (DATA, REJECTS, FAILURES, JOURNAL)
#: Examples per list handed out by ``iter_examples``.
RESUME_CHUNK = 8192
_FULL_DISK_HINT = "free disk space, then rerun with --resume: nothing already written is lost"


_dumps = json.JSONEncoder(ensure_ascii=False).encode


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of one of a run's JSONL files (none if it does not exist yet; a torn last line is skipped)."""
    if not Path(path).exists():
        return
    yield from io.read_jsonl(path, tolerate_torn_tail=True)


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
    """What an earlier run left: done requests, examples per label, counters rebuilt from the files."""

    done_requests: set[str] = field(default_factory=set)
    accepted_by_label: Counter[str] = field(default_factory=Counter)
    requests_by_label: Counter[str] = field(default_factory=Counter)
    #: Counters for stats.json, rebuilt from data, rejects and journal (plus the last snapshot's other keys).
    stats: dict[str, Any] = field(default_factory=dict)
    repaired_bytes: int = 0
    #: Lines of data.jsonl whose id an earlier line already has (a file written by two processes at once).
    duplicate_ids: int = 0

    @property
    def accepted(self) -> int:
        return sum(self.accepted_by_label.values())


#: Counters rebuilt from the run's files on resume (every other stats.json key is carried over as it was).
REBUILT = (
    "requests",
    "rate_limited",
    "retries",
    "failed",
    "accepted",
    "rejected",
    "prompt_tokens",
    "completion_tokens",
)


def _reason_of(line: bytes) -> str:
    """The reason of a rejects.jsonl line, read without decoding the whole line (it is the last key)."""
    at = line.rfind(b'"reason": "')
    if at < 0:
        return "unknown"
    start = at + len(b'"reason": "')
    end = line.find(b'"', start)
    return line[start:end].decode("utf-8", "replace") if end > 0 else "unknown"


def lock_directory(directory: Path, name: str = LOCK, *, holder: str = "corpusforge process") -> int:
    """Take ``directory``'s one-writer lock (an ``flock`` on ``name``, released by the kernel when the process dies)
    and write our PID into it; returns the descriptor to close to release it, or says who holds it."""
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"cannot lock {directory / name}: {exc.strerror}", hint="choose another --out") from exc
        raise ConfigError(
            f"{directory} is in use by another {holder} (PID {pid})",
            hint="a run directory has one writer: wait for that process to end, or stop it, then --resume",
        ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every (nested) key where two fingerprints differ."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
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
        self._lock_fd: int | None = None
        self._field_names: list[str] = ["text"]
        #: Whether ``open`` made a new run directory (or found it empty): only then may ``discard`` remove it.
        self.created = False

    # -- opening and resuming -----------------------------------------------------------------

    def open(self, manifest: dict[str, Any], *, resume: bool, field_names: Iterable[str] = ("text",)) -> ResumeState:
        """Create or reopen the run directory; on resume check the manifest and load what was done."""
        manifest_path = self.dir / MANIFEST
        self.created = not self.dir.exists() or not any(self.dir.iterdir())
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {self.dir}: {exc.strerror}", hint="choose another --out") from exc
        self._lock()
        self._field_names = list(field_names)
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
            differences = config_differences(old.get("fingerprint", {}), manifest.get("fingerprint", {}))
            if differences:
                raise ConfigError(
                    "cannot resume: the configuration differs from the run in "
                    f"{self.dir} ({'; '.join(differences[:5])})",
                    hint="use the original settings, or choose another --out",
                )
            state = self._load()
        elif any((self.dir / name).exists() and (self.dir / name).stat().st_size for name in _APPEND_FILES):
            raise ConfigError(f"{self.dir} has output files but no {MANIFEST}", hint="choose an empty --out")
        atomic_write_json(manifest_path, manifest)
        for name in _APPEND_FILES:
            self._fds[name] = os.open(self.dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return state

    def _lock(self) -> None:
        self._lock_fd = lock_directory(self.dir)

    def _load(self) -> ResumeState:
        state = ResumeState()
        for name in _APPEND_FILES:
            state.repaired_bytes += _repair_torn_tail(self.dir / name)
        counters: Counter[str] = Counter()
        for row in read_jsonl(self.dir / JOURNAL):
            rid = str(row.get("request_id", ""))
            if not rid or rid in state.done_requests:
                continue
            state.done_requests.add(rid)
            state.requests_by_label[str(row.get("label", ""))] += 1
            attempts = int(row.get("attempts", 1))
            counters["requests"] += attempts
            counters["retries"] += max(0, attempts - 1)
            counters["rate_limited"] += int(row.get("rate_limited", 0))
            counters["prompt_tokens"] += int(row.get("prompt_tokens", 0))
            counters["completion_tokens"] += int(row.get("completion_tokens", 0))
            if row.get("status") == "failed":
                counters["failed"] += 1
        seen: set[int] = set()
        for row in read_jsonl(self.dir / DATA):
            key = hash(str(row.get("id", "")))
            if key in seen:
                state.duplicate_ids += 1
                continue
            seen.add(key)
            label, rid = str(row.get("label", "")), str(row.get("request_id", ""))
            state.accepted_by_label[label] += 1
            if rid and rid not in state.done_requests:
                # data reached disk but the journal line did not: the request is done all the same
                state.done_requests.add(rid)
                state.requests_by_label[label] += 1
        del seen
        counters["accepted"] = state.accepted
        rejects = self.dir / REJECTS
        if rejects.exists():
            with open(rejects, "rb") as f:
                for line in f:
                    counters["rejected"] += 1
                    counters[f"rejected:{_reason_of(line)}"] += 1
        carried: dict[str, Any] = {}
        stats_path = self.dir / STATS
        if stats_path.exists():
            with contextlib.suppress(ValueError):
                old = json.loads(stats_path.read_text())
                if isinstance(old, dict):
                    # the other counters ("errors:Timeout", "dedup.seen", ...); rates and gauges are recomputed
                    carried = {
                        k: v
                        for k, v in old.items()
                        if isinstance(v, int)
                        and not isinstance(v, bool)
                        and (":" in k or "." in k or k == "structured_fallback")
                        and not k.startswith("rejected:")
                    }
        state.stats = {**carried, **{k: counters[k] for k in REBUILT}}
        state.stats.update({k: v for k, v in counters.items() if k.startswith("rejected:")})
        return state

    def iter_examples(self, chunk: int = RESUME_CHUNK) -> Iterator[list[Example]]:
        """The examples in data.jsonl, first occurrence of each id, a list of at most ``chunk`` at a time."""
        seen: set[int] = set()
        out: list[Example] = []
        for row in read_jsonl(self.dir / DATA):
            key = hash(str(row.get("id", "")))
            if key in seen:
                continue
            seen.add(key)
            out.append(Example.from_dict(row, self._field_names))
            if len(out) >= chunk:
                yield out
                out = []
        if out:
            yield out

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
            raise DataError(f"cannot write {self.dir / name}: {exc.strerror}", hint=_FULL_DISK_HINT) from exc
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
        try:
            for fd in self._fds.values():
                os.fsync(fd)
        except OSError as exc:
            raise DataError(f"cannot sync {self.dir}: {exc.strerror}", hint=_FULL_DISK_HINT) from exc
        self._dirty = False
        self._last_sync = self._clock()

    def _write_json(self, name: str, obj: Any) -> None:
        try:
            atomic_write_json(self.dir / name, obj)
        except DataError as exc:
            raise DataError(exc.message, hint=_FULL_DISK_HINT) from exc.__cause__

    def write_stats(self, stats: dict[str, Any]) -> None:
        self._write_json(STATS, stats)

    def _read_json(self, name: str) -> dict[str, Any]:
        path = self.dir / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def read_state(self) -> RunState:
        """What the run learned so far (``state.json`` and ``topics.json``), or a fresh state."""
        topics = self._read_json(TOPICS) if (self.dir / TOPICS).exists() else None
        return RunState.from_json(self._read_json(STATE), topics)

    def write_state(self, state: RunState) -> None:
        self._write_json(STATE, state.state_json())
        topics = state.topics_json()
        if topics is not None:
            self._write_json(TOPICS, topics)

    @property
    def has_results(self) -> bool:
        """Whether anything paid for reached the run directory (a journal line or an example)."""
        return any((self.dir / name).exists() and (self.dir / name).stat().st_size for name in (DATA, JOURNAL))

    def discard(self) -> None:
        """Remove a run directory this store created and that holds no result (a start that failed)."""
        if not self.created or self.has_results:
            return
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        try:
            if self._fds:
                self.sync()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
