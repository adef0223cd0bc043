"""Submitting: plan a round, write it as input files, upload them, create batches while the queue has room.

A round asks for what is still missing, sized by the acceptance seen so far;
an input file stops at the file limits and at the room left under the
enqueued-token limit. Creating a batch is recorded as ``creating`` first, so a
lost answer is reconciled (looked up by its input file) instead of repeated.
"""

from __future__ import annotations

import math

from ...batch.files import InputWriter, encode_line, read_requests
from ...batch.ledger import LedgerFile
from ...batch.limit import is_token_limit
from ...errors import EngineError
from .core import BatchCore

__all__ = ["ROUND_MIN_OBSERVED", "Submitting"]

#: Finished requests before a round is sized by the run's observed acceptance.
ROUND_MIN_OBSERVED = 10


class Submitting(BatchCore):
    async def _submit(self) -> bool:
        progressed = False
        for f in self.ledger.active():
            if f.phase == "upload":
                await self._upload(f)
                progressed = True
            if f.phase == "create":
                created = await self._create(f)
                progressed |= created
                if not created:
                    return progressed  # no room: newer files wait behind this one
        while self._room() > 0:
            new = self._write()
            if new is None:
                break
            await self._upload(new)
            progressed = True
            if not await self._create(new):
                break
        return progressed

    def _write(self) -> LedgerFile | None:
        """Fill one input file from the plan (within the file limits and the room left); None if nothing to plan."""
        writer = self.writer
        assert writer is not None
        run = self.run
        room = self._room()
        cap = self._round_cap()
        pulled = 0
        while not (writer.pending and writer.current.tokens >= room) and (cap is None or pulled < cap):
            request = run.next_request()
            if request is None:
                break
            pulled += 1
            request.stream = False
            line = encode_line(request.id, self.provider.encode(request))
            tokens = self.counter.count_messages(request.messages)
            if not writer.fits(len(line), tokens) or (writer.pending and writer.current.tokens + tokens > room):
                written = self._close(writer)
                writer.add(request, line, tokens)  # the first line of the next file
                return written
            writer.add(request, line, tokens)
        return self._close(writer)

    def _round_cap(self) -> int | None:
        """Requests worth adding now: what is missing over the acceptance per request seen so far.

        The planner sizes requests per label; a batch round asks all at once, so it is also held to the run's
        overall acceptance (examples accepted per request) once that is observed. None before that.
        """
        planner = self.run.planner
        done = sum(planner.requests_done.values())
        if done < ROUND_MIN_OBSERVED:
            return None
        accepted = sum(planner.accepted.values())
        rate = max(0.05, accepted / done)
        missing = sum(planner.need(label) for label in planner.labels) if planner.balance else planner.need("")
        short = missing - planner.outstanding * rate
        return max(0, math.ceil(short / rate))

    def _close(self, writer: InputWriter) -> LedgerFile | None:
        written = writer.close()
        if written is None:
            return None
        self.pending[written.name] = {}
        self._log("written", **written.record())
        for r in read_requests(self.dir, written.name):
            self.pending[written.name][r.id] = r
        return self.ledger.files[written.name]

    async def _upload(self, f: LedgerFile) -> None:
        file_id = await self.client.upload(self.dir / f"{f.name}.jsonl")
        self._log("uploaded", file=f.name, file_id=file_id)

    async def _create(self, f: LedgerFile) -> bool:
        """Create the batch of an uploaded file if the queue has room; False if it must wait."""
        assert f.file_id is not None
        enqueued = self.ledger.enqueued_tokens()
        if enqueued and f.tokens > self._room():
            return False
        self._log("creating", file=f.name, at=self.ledger.now())
        try:
            info = await self.client.create_once(
                f.file_id, metadata={"corpusforge_file": f.name}, exclude=frozenset(f.refused)
            )
        except EngineError as exc:
            if not is_token_limit(exc.message):
                raise
            self._refused(f, exc.message)  # some servers refuse at creation instead of failing the batch
            return False
        self._log("created", file=f.name, batch_id=info.id, status=info.status)
        self.infos[f.name] = info
        return True

    async def _reconcile(self, f: LedgerFile) -> None:
        """A creation without a recorded answer: adopt the batch if the provider has it."""
        assert f.file_id is not None and f.creating_at is not None
        found = await self.client.find_batch(f.file_id, exclude=frozenset(f.refused), newer_than=f.creating_at - 3600)
        if found is not None:
            self._log("created", file=f.name, batch_id=found.id, status=found.status)
            self.infos[f.name] = found
