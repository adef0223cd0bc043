"""The batch ledger: an append-only, fsynced record of every step, written *before* the next step.

``batches/ledger.jsonl`` in the run directory holds one event a line::

    written    input file NAME is on disk (lines and sidecar fsynced): its requests are in flight
    uploaded   NAME was uploaded as FILE_ID
    creating   a batch for FILE_ID is about to be created (if no ``created`` follows, the batch may
               exist: a resumed run looks it up by its input file before creating another)
    created    NAME runs as BATCH_ID
    status     BATCH_ID's status and request counts changed
    requeue    BATCH_ID was refused for the enqueued-token limit: NAME waits for room (same upload)
    ended      BATCH_ID reached a final status (with its output and error file ids)
    downloaded its output and error files are on disk (fsynced, renamed into place)
    ingested   every outcome of NAME went through the run's chain (the run's journal has them)
    limit      the enqueued-token limit learned from the provider
    exported   NAME was handed out for processing elsewhere (``corpusforge batch export``, e.g. for
               ``vllm run-batch``): it is never uploaded; ``corpusforge batch import`` brings its results
    deleted    FILE_ID (NAME's uploaded input, output or error file) is deleted at the provider, or was
               already gone; written only after ``ingested``, so nothing is deleted before it is safe on disk
    delete_failed  deleting FILE_ID failed (REASON): it stays listed by ``corpusforge batches``, and a
               resumed run or ``corpusforge batches OUT --delete-files`` tries again

Replaying the events gives each input file's state; a torn last line (a kill
mid-append) is ignored, which at worst repeats one idempotent step.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import read_jsonl

__all__ = ["FINAL", "Ledger", "LedgerFile"]

#: Batch statuses after which nothing changes.
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
LEDGER = "ledger.jsonl"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class LedgerFile:
    """One input file's journey, as replayed from the ledger."""

    name: str
    requests: int = 0
    bytes: int = 0
    tokens: int = 0
    file_id: str | None = None
    batch_id: str | None = None
    #: Earlier batches of this file that the provider refused (enqueued-token limit).
    refused: list[str] = field(default_factory=list)
    creating_at: int | None = None
    status: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    reason: str = ""
    downloaded: bool = False
    ingested: bool = False
    exported: bool = False
    #: Provider file ids deleted (or found gone), and the last reason a deletion failed.
    deleted: list[str] = field(default_factory=list)
    delete_error: str = ""

    @property
    def phase(self) -> str:
        """What to do next: upload, create, poll, download, ingest, external (awaiting an import), or done."""
        if self.ingested:
            return "done"
        if self.exported:
            return "external"
        if self.downloaded:
            return "ingest"
        if self.status in FINAL:
            return "download"
        if self.batch_id is not None:
            return "poll"
        if self.file_id is not None:
            return "create"
        return "upload"

    @property
    def provider_files(self) -> list[str]:
        """The file ids this file has at the provider: its upload, and its batch's output and error files."""
        return [i for i in (self.file_id, self.output_file_id, self.error_file_id) if i]

    @property
    def undeleted(self) -> list[str]:
        """Provider files still there once the outcomes are ingested (nothing before: they may still be needed)."""
        if not self.ingested:
            return []
        return [i for i in self.provider_files if i not in self.deleted]

    def row(self) -> dict[str, Any]:
        """What ``corpusforge batches`` and the live display show for this file."""
        return {
            "file": self.name,
            "batch_id": self.batch_id or "",
            "status": self.status or ("ingested" if self.ingested else self.phase),
            "requests": self.requests,
            "completed": self.counts.get("completed", 0),
            "failed": self.counts.get("failed", 0),
            "phase": self.phase,
            "files_left": len(self.undeleted),
        }


class Ledger:
    """Appends events to ``DIR/ledger.jsonl`` (one ``os.write`` and an fsync each) and keeps the replayed state."""

    def __init__(self, directory: Path, *, wall: Callable[[], float] = time.time) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LEDGER
        self._wall = wall
        self.files: dict[str, LedgerFile] = {}
        self.token_limit: int | None = None
        self._fd: int | None = None

    def open(self) -> Ledger:
        self.dir.mkdir(parents=True, exist_ok=True)
        for event in read_jsonl(self.path):
            self._apply(event)
        self._repair()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Ledger:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repair(self) -> None:
        """Cut a torn last line so the next append starts on a line of its own."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            with open(self.path, "rb+") as f:
                f.truncate(data.rfind(b"\n") + 1)

    # -- events ---------------------------------------------------------------------------------

    def append(self, event: str, **fields: Any) -> None:
        row = {"event": event, **fields}
        payload = (_dumps(row) + "\n").encode()
        assert self._fd is not None, "Ledger.open() first"
        os.write(self._fd, payload)
        os.fsync(self._fd)
        self._apply(row)

    def _apply(self, row: dict[str, Any]) -> None:
        event = row.get("event")
        if event == "limit":
            self.token_limit = int(row["tokens"])
            return
        name = str(row.get("file", ""))
        if event == "written":
            self.files[name] = LedgerFile(
                name, requests=int(row["requests"]), bytes=int(row["bytes"]), tokens=int(row["tokens"])
            )
            return
        f = self.files.get(name)
        if f is None:
            return
        if event == "uploaded":
            f.file_id = str(row["file_id"])
        elif event == "creating":
            f.creating_at = int(row.get("at") or 0)
        elif event == "created":
            f.batch_id = str(row["batch_id"])
            f.creating_at = None
            status = str(row.get("status") or "")
            # a final status arrives with its file ids in "ended" (a batch adopted after a restart may be done)
            f.status = status if status and status not in FINAL else "validating"
        elif event == "status":
            f.status = str(row["status"])
            f.counts = dict(row.get("counts") or {})
        elif event == "requeue":
            if f.batch_id:
                f.refused.append(f.batch_id)
            f.batch_id = None
            f.status = ""
            f.reason = str(row.get("reason") or "")
        elif event == "ended":
            f.status = str(row["status"])
            f.counts = dict(row.get("counts") or f.counts)
            f.output_file_id = row.get("output_file_id")
            f.error_file_id = row.get("error_file_id")
            f.reason = str(row.get("reason") or "")
        elif event == "downloaded":
            f.downloaded = True
        elif event == "ingested":
            f.ingested = True
        elif event == "exported":
            f.exported = True
        elif event == "deleted":
            if row.get("file_id") not in f.deleted:
                f.deleted.append(str(row.get("file_id")))
        elif event == "delete_failed":
            f.delete_error = str(row.get("reason") or "")

    # -- convenience ----------------------------------------------------------------------------

    def now(self) -> int:
        return int(self._wall())

    def next_index(self) -> int:
        """The number the next input file gets (one past the highest recorded)."""
        numbers = [int(name.rsplit("-", 1)[-1]) for name in self.files if name.rsplit("-", 1)[-1].isdigit()]
        return max(numbers, default=0) + 1

    def active(self) -> list[LedgerFile]:
        """Files whose outcomes are not all ingested yet, oldest first."""
        return [f for f in self.files.values() if not f.ingested]

    def undeleted(self) -> list[LedgerFile]:
        """Ingested files with provider files not deleted yet (kept, or a deletion failed or was cut short)."""
        return [f for f in self.files.values() if f.undeleted]

    def enqueued_tokens(self) -> int:
        """Prompt tokens of this run's batches the provider still holds in its queue."""
        return sum(f.tokens for f in self.files.values() if f.batch_id is not None and f.status not in FINAL)

    def summary(self) -> dict[str, int]:
        """Counts for stats.json: batches by final status, refusals, provider files deleted and left."""
        out = {"batches_submitted": 0, "batches_completed": 0, "batches_failed": 0, "batches_expired": 0}
        out["batches_cancelled"] = 0
        out["batches_refused"] = 0
        out["batch_files_deleted"] = 0
        out["batch_files_left"] = 0
        for f in self.files.values():
            out["batches_refused"] += len(f.refused)
            out["batch_files_deleted"] += len(f.deleted)
            out["batch_files_left"] += len(f.undeleted)
            if f.batch_id is None:
                continue
            out["batches_submitted"] += 1
            key = f"batches_{f.status}"
            if key in out and key != "batches_submitted":
                out[key] += 1
        return out
