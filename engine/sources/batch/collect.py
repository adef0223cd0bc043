"""Collecting: poll what runs, download what ended, ingest it, delete its provider files; cancel what is not needed.

Output and error lines become outcomes exactly as online responses do; a
request that failed, expired or is missing from both files is journaled as
failed, so the planner asks for another. What the chain wrote is synced before
the ledger records ``ingested``; only then are the batch's files deleted at
the provider (``engine.batch.cleanup``), unless ``--keep-batch-files``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ...batch.cleanup import delete_files
from ...batch.ledger import FINAL, LedgerFile
from ...batch.limit import is_token_limit
from ...batch.results import CHUNK, read_outcomes
from ...errors import BadRequest, EngineError
from .core import BatchCore

__all__ = ["CANCELLABLE", "NOTHING_RAN", "Collecting"]

#: Final states of an input file in which none of its requests ran.
NOTHING_RAN = frozenset({"failed", "abandoned", "unsent"})
#: Statuses in which a batch can still be cancelled.
CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})


class Collecting(BatchCore):
    async def _collect(self) -> bool:
        progressed = False
        for f in self.ledger.active():
            if f.phase == "download":
                await self._download(f)
                progressed = True
            if f.phase == "ingest":
                await self._ingest(f)
                progressed = True
                await self._delete_files(f)
                if self._fatal is not None:
                    break
        return progressed

    async def _delete_files(self, f: LedgerFile) -> None:
        """Delete ``f``'s files at the provider (its outcomes are on disk); a failure is recorded, warned once."""
        if self.options.keep_files or not f.undeleted:
            return
        tally = self.deletions
        warned = tally.first_error is not None
        await delete_files(self.client, f, self._log, tally)
        if not warned and tally.first_error is not None:
            self.warn(
                f"{tally.first_error}; the run goes on (its data is on disk), the files stay at the provider: "
                f"`corpusforge batches {self.run.store.dir} --delete-files` tries again"
            )

    async def _delete_left(self) -> None:
        """Deletions an earlier session left undone (killed before them, or they failed): try them again."""
        for f in self.ledger.undeleted():
            await self._delete_files(f)

    async def _download(self, f: LedgerFile) -> None:
        for kind, file_id in (("output", f.output_file_id), ("errors", f.error_file_id)):
            if file_id:
                await self.client.download(file_id, self.dir / f"{f.name}.{kind}.jsonl")
        self._log("downloaded", file=f.name)

    async def _ingest(self, f: LedgerFile) -> None:
        run = self.run
        pending = self.pending.get(f.name, {})
        paths: list[Path | None] = [self.dir / f"{f.name}.output.jsonl", self.dir / f"{f.name}.errors.jsonl"]
        missing = "missing from the batch's output and error files"
        if f.status in NOTHING_RAN:
            paths = []  # every request failed with the batch's reason
            missing = f"batch {f.batch_id or '-'} {f.status}: {f.reason}"
        self._rejected = None
        for chunk in read_outcomes(pending, paths, self.provider, missing=missing, chunk=CHUNK):
            await self._consume(chunk)
        rejected = self._rejected
        run.store.sync()  # what the chain wrote is durable before the ledger says so
        self._log("ingested", file=f.name)
        self.pending.pop(f.name, None)
        if f.status == "failed":
            self._fatal = BadRequest(
                f"batch {f.batch_id} failed validation: {f.reason}",
                hint="fix the cause, then rerun with --resume (its requests are planned again)",
                provider=self.provider.name,
            )
        elif rejected is not None:
            if isinstance(rejected, BadRequest) and run.state.structured and "response_format" in rejected.message:
                run.disable_structured()  # as the online path does: free text from now on
            else:
                self._fatal = BadRequest(
                    f"the provider rejected requests in batch {f.batch_id}: {rejected.message}",
                    hint="check the model's supported options; rerun with --resume after fixing them",
                    provider=self.provider.name,
                )

    async def _poll(self) -> bool:
        """Ask every running batch its status; True if one reached a final status."""
        ended = False
        for f in self.ledger.active():
            if f.phase != "poll":
                continue
            assert f.batch_id is not None
            info = await self.client.retrieve(f.batch_id)
            self.infos[f.name] = info
            if info.status != f.status and info.status not in FINAL:
                self._log("status", file=f.name, status=info.status, counts=info.counts)
            if info.status not in FINAL:
                continue
            ended = True
            reason = info.reason() if info.status == "failed" else ""
            if info.status == "failed" and any(
                is_token_limit(str(e.get("code", ""))) or is_token_limit(str(e.get("message", ""))) for e in info.errors
            ):
                self._refused(f, reason)
                continue
            self._log(
                "ended",
                file=f.name,
                status=info.status,
                counts=info.counts,
                output_file_id=info.get("output_file_id"),
                error_file_id=info.get("error_file_id"),
                reason=reason,
            )
        return ended

    async def _cancel_unneeded(self) -> None:
        """The target is met: batches still running would only add surplus; cancel them (what ran is kept)."""
        for f in self.ledger.active():
            info = self.infos.get(f.name)
            if f.phase == "poll" and f.batch_id and f.batch_id not in self._cancelled:
                self._cancelled.add(f.batch_id)
                if info is None or info.status in CANCELLABLE:
                    with contextlib.suppress(EngineError):
                        cancelled = await self.client.cancel(f.batch_id)
                        if cancelled is not None:
                            self.infos[f.name] = cancelled
            elif f.phase in ("upload", "create"):
                # never sent: its requests end as failed, nothing was paid
                self._log("ended", file=f.name, status="unsent", reason="the target was met before it was sent")
                self._log("downloaded", file=f.name)
