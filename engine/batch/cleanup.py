"""Deleting a batch's files at the provider once its outcomes are safe on disk (``DELETE /v1/files/{id}``).

Only files the ledger shows as ``ingested`` are touched: the uploaded input
file and the batch's output and error files. Each deletion is recorded
(``deleted``) after the provider confirms it; a file already gone (a 404, e.g.
deleted just before a ``kill -9``) counts as deleted, so a resumed run simply
asks again. A failure never loses data nor stops the caller: it is recorded
(``delete_failed``) and the file stays listed by ``corpusforge batches``. A
server without the route (405) or an auth error stops further attempts for the
session at once, transient errors (each already retried) after
``MAX_FAILURES``, so a provider whose deletions fail cannot slow the run down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import EngineError, FatalError, NotFound
from .client import BatchClient, NoBatchApi
from .ledger import LedgerFile

__all__ = ["MAX_FAILURES", "Deletions", "delete_files"]

#: Failed deletions (each after the retry policy's attempts) before a session stops trying.
MAX_FAILURES = 3


@dataclass
class Deletions:
    """What one session's deletions did: counts, the first failure, and whether to stop trying."""

    deleted: int = 0
    failed: int = 0
    first_error: str | None = None
    stopped: bool = False
    #: File ids already tried this session (a failed one is tried again only by the next session).
    tried: set[str] = field(default_factory=set)


async def delete_files(client: BatchClient, f: LedgerFile, log: Callable[..., None], tally: Deletions) -> None:
    """Delete ``f``'s provider files still there; ``log(event, **fields)`` records each outcome in the ledger."""
    for file_id in f.undeleted:
        if tally.stopped:
            return
        if file_id in tally.tried:
            continue
        tally.tried.add(file_id)
        try:
            await client.delete_file(file_id)
        except NoBatchApi as exc:
            _failed(f, file_id, exc, log, tally, stop=True)
            continue
        except NotFound:
            pass  # already gone: what the ledger must record anyway
        except EngineError as exc:
            _failed(f, file_id, exc, log, tally, stop=isinstance(exc, FatalError))
            continue
        log("deleted", file=f.name, file_id=file_id)
        tally.deleted += 1


def _failed(
    f: LedgerFile, file_id: str, exc: EngineError, log: Callable[..., None], tally: Deletions, *, stop: bool
) -> None:
    reason = exc.message[:300]
    log("delete_failed", file=f.name, file_id=file_id, reason=reason)
    tally.failed += 1
    tally.stopped = tally.stopped or stop or tally.failed >= MAX_FAILURES
    if tally.first_error is None:
        tally.first_error = f"deleting {file_id} failed: {reason}"
