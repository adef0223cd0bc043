"""The batch source: the run's plan as provider batch jobs, every step on disk before the next one.

One loop, each turn: ingest what is downloaded, download what ended, write,
upload and create new batches while the enqueued-token limit leaves room,
then poll what runs (with backoff) and sleep. The run's chain sees batch
outcomes exactly as it sees online ones (``run.consume``); a request that
failed, expired or came back unusable is journaled as failed, so the planner
asks for another in a later batch, sized by the acceptance seen so far, until
``--n`` is reached or ``--max-requests`` stops it.

Resume contract (see ``engine.batch.ledger``): requests of input files the
ledger knows and the journal does not are *held* in flight (never planned
again); a batch whose creation was not recorded is looked up by its input
file before another is created; a downloaded file is ingested again, minus
what the journal already has. So a ``kill -9`` anywhere never submits a paid
request twice, never loses a result, never writes an example twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..batch.client import BatchClient, BatchInfo
from ..batch.files import DEFAULT_MAX_BYTES, DEFAULT_MAX_REQUESTS, InputWriter, encode_line, read_requests
from ..batch.ledger import FINAL, Ledger, LedgerFile
from ..batch.poll import PollPolicy
from ..batch.results import CHUNK, read_outcomes
from ..config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from ..errors import BadRequest, ConfigError, EngineError, FatalError, RetryableError
from ..providers.openai import OpenAIProvider, make_session
from ..providers.retrying import RetryingProvider
from ..run import GenerateOptions, Run, manifest_for, open_run
from ..stats import Stats
from ..tokens import TokenCounter
from ..types import Outcome, Request
from .online import ViewFactory, preflight

__all__ = [
    "BATCH_DIR",
    "BatchOptions",
    "BatchSource",
    "SimulatedCrash",
    "batch_prices",
    "generate_batch",
    "pending_batches",
]

#: The batch files of a run live in ``OUT/batches/``.
BATCH_DIR = "batches"
#: Share of the enqueued-token limit this run fills (our token count is an estimate of the provider's).
LIMIT_SAFETY = 0.9
DEFAULT_DISCOUNT = 0.5
#: Finished requests before a round is sized by the run's observed acceptance.
ROUND_MIN_OBSERVED = 10
_LIMIT_NUMBER = re.compile(r"limit(?:\s+of)?\W+([\d,.]+)\s*([KkMm]?)", re.IGNORECASE)
_TOKEN_LIMIT = ("token_limit_exceeded", "enqueued token", "enqueued tokens")
#: Final states of an input file in which none of its requests ran.
_NOTHING_RAN = frozenset({"failed", "abandoned", "unsent"})
#: Statuses in which a batch can still be cancelled.
_CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    max_requests: int = DEFAULT_MAX_REQUESTS
    max_bytes: int = DEFAULT_MAX_BYTES
    #: The provider's enqueued prompt-token limit, when known; otherwise learned from its refusal.
    max_enqueued_tokens: int | None = None
    #: Batch price as a share of --price-in/--price-out.
    discount: float = DEFAULT_DISCOUNT
    poll: PollPolicy = PollPolicy()
    #: Testing the resume contract: kill the process (SIGKILL) just before the K-th ledger event of a kind,
    #: or raise ``SimulatedCrash`` there when ``crash_kill`` is False (an in-process test).
    crash_before: tuple[str, int] | None = None
    crash_kill: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.discount <= 1:
            raise ConfigError(f"--batch-discount must be within (0, 1], got {self.discount}", hint="e.g. 0.5")
        if self.max_enqueued_tokens is not None and self.max_enqueued_tokens < 1:
            raise ConfigError("--batch-max-enqueued-tokens must be at least 1")
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ConfigError("--batch-max-requests and --batch-max-bytes must be at least 1")


def batch_prices(run: RunConfig, discount: float) -> RunConfig:
    """``run`` with batch prices: the online prices times ``discount`` (prices are not part of the fingerprint)."""
    return replace(
        run,
        price_in=None if run.price_in is None else run.price_in * discount,
        price_out=None if run.price_out is None else run.price_out * discount,
    )


def is_token_limit(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in _TOKEN_LIMIT)


def limit_from(text: str) -> int | None:
    """The enqueued-token limit a refusal states ("Limit: 90,000 enqueued tokens", "limit of 30K"), if any."""
    m = _LIMIT_NUMBER.search(text)
    if m is None:
        return None
    try:
        value = float(m.group(1).replace(",", ""))
    except ValueError:
        return None
    scale = {"k": 1_000, "m": 1_000_000}.get(m.group(2).lower(), 1)
    return int(value * scale) or None


def _copy_synced(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        while block := fin.read(1 << 20):
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dest)


def pending_batches(out_dir: Path) -> list[LedgerFile]:
    """Input files of the run in ``out_dir`` whose outcomes are not all ingested (empty without batches)."""
    directory = Path(out_dir) / BATCH_DIR
    if not (directory / "ledger.jsonl").exists():
        return []
    with Ledger(directory) as ledger:
        return ledger.active()


class SimulatedCrash(BaseException):
    """Raised in place of a SIGKILL by the resume tests' crash hook (a BaseException: nothing catches it)."""


class BatchSource:
    """Drives one run through the Batch API until it is done, the plan is dry, or a fatal error."""

    def __init__(
        self,
        run: Run,
        provider: OpenAIProvider,
        client: BatchClient,
        options: BatchOptions,
        *,
        counter: TokenCounter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.run = run
        self.provider = provider
        self.client = client
        self.options = options
        self.counter = counter or TokenCounter()
        self.sleep = sleep
        self.dir = run.store.dir / BATCH_DIR
        self.ledger = Ledger(self.dir)
        #: Requests of each input file whose outcome the run has not consumed yet.
        self.pending: dict[str, dict[str, Request]] = {}
        self.infos: dict[str, BatchInfo] = {}
        self.writer: InputWriter | None = None
        self._crash_count = 0
        self._cancelled: set[str] = set()
        self._rejected: FatalError | None = None
        self._done = False
        self._fatal: EngineError | None = None

    # -- the ledger, with the crash hook the resume tests use -------------------------------------

    def _log(self, event: str, **fields: Any) -> None:
        crash = self.options.crash_before
        if crash is not None and crash[0] == event:
            self._crash_count += 1
            if self._crash_count == crash[1]:
                if not self.options.crash_kill:
                    raise SimulatedCrash(f"before {event} #{crash[1]}")
                os.kill(os.getpid(), signal.SIGKILL)
        self.ledger.append(event, **fields)

    # -- limits ---------------------------------------------------------------------------------

    @property
    def token_limit(self) -> int | None:
        return self.options.max_enqueued_tokens or self.ledger.token_limit

    def _budget(self) -> float:
        limit = self.token_limit
        return float("inf") if limit is None else limit * LIMIT_SAFETY

    def _room(self) -> float:
        return self._budget() - self.ledger.enqueued_tokens()

    def _learn_limit(self, message: str) -> None:
        learned = limit_from(message)
        if learned is None:
            # no number in the refusal: what is enqueued now is the most the queue takes
            learned = max(1, int(self.ledger.enqueued_tokens() / LIMIT_SAFETY))
        if self.options.max_enqueued_tokens is None and learned != self.ledger.token_limit:
            self._log("limit", tokens=learned)
        if self.writer is not None and self.token_limit is not None:
            self.writer.max_tokens = int(self.token_limit * LIMIT_SAFETY)

    # -- start and resume -----------------------------------------------------------------------

    def _recover(self) -> None:
        """Hold the requests of every file not fully ingested; remove files the ledger never recorded."""
        known = set(self.ledger.files)
        for path in self.dir.iterdir():
            stem = path.name.split(".", 1)[0]
            if path.suffix in (".tmp", ".part") or (stem.startswith("input-") and stem not in known):
                path.unlink()  # written before a kill, never recorded: nothing was sent from it
        planner = self.run.planner
        for f in self.ledger.active():
            held = {r.id: r for r in read_requests(self.dir, f.name) if planner.hold(r.id, r.label or "")}
            self.pending[f.name] = held
        self.writer = InputWriter(
            self.dir,
            max_requests=self.options.max_requests,
            max_bytes=self.options.max_bytes,
            max_tokens=None if self.token_limit is None else int(self.token_limit * LIMIT_SAFETY),
            index=self.ledger.next_index(),
        )

    async def _reconcile(self, f: LedgerFile) -> None:
        """A creation without a recorded answer: adopt the batch if the provider has it."""
        assert f.file_id is not None and f.creating_at is not None
        found = await self.client.find_batch(f.file_id, exclude=frozenset(f.refused), newer_than=f.creating_at - 3600)
        if found is not None:
            self._log("created", file=f.name, batch_id=found.id, status=found.status)
            self.infos[f.name] = found

    # -- the loop -------------------------------------------------------------------------------

    async def drive(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.ledger:
            self._recover()
            for f in self.ledger.active():
                if f.phase == "create" and f.creating_at is not None:
                    await self._reconcile(f)
            delay: float | None = None
            while True:
                progressed = await self._collect()
                if self._fatal is not None:
                    raise self._fatal
                if self._done:
                    await self._cancel_unneeded()
                else:
                    progressed |= await self._submit()
                if all(f.phase == "external" for f in self.ledger.active()):
                    return  # everything sent came back (exported files come back by import)
                changed = await self._poll()
                if changed:
                    continue
                delay = self.options.poll.next(delay, changed=progressed)
                self.run.phase = self._phase()
                await self.sleep(delay)

    # -- offline round trip: export and import --------------------------------------------------

    def export(self) -> list[Path]:
        """Write the plan's requests as input files for another machine; the paths written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        paths = []
        with self.ledger:
            self._recover()
            while (f := self._write()) is not None:
                self._log("exported", file=f.name)
                paths.append(self.dir / f"{f.name}.jsonl")
        return paths

    async def import_results(self, results: list[Path]) -> dict[str, int]:
        """Ingest output files of exported requests through the chain; counts of lines used and skipped."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.ledger:
            self._recover()
            waiting = {f.name: self.pending.get(f.name, {}) for f in self.ledger.active() if f.phase == "external"}
            pending = {rid: req for reqs in waiting.values() for rid, req in reqs.items()}
            before = len(pending)
            copies = []
            for path in results:
                index = len(list(self.dir.glob("import-*.jsonl"))) + 1
                copy = self.dir / f"import-{index:05d}.jsonl"
                _copy_synced(path, copy)
                self._log("imported", path=copy.name, source=str(path))
                copies.append(copy)
            used = 0
            for chunk in read_outcomes(pending, list(copies), self.provider, missing=None):
                used += len(chunk)
                await self._consume(chunk)
            self.run.store.sync()
            for name, reqs in waiting.items():
                if all(rid not in pending for rid in reqs):
                    self._log("ingested", file=name)
            return {"used": used, "still_waiting": before - used}

    def _phase(self) -> str:
        if self._done:
            return "finishing: collecting batches in flight"
        waiting = [f for f in self.ledger.active() if f.phase == "create"]
        if waiting:
            return "waiting for room under the enqueued-token limit"
        return "batches running"

    # -- collect: download and ingest -----------------------------------------------------------

    async def _collect(self) -> bool:
        progressed = False
        for f in self.ledger.active():
            if f.phase == "download":
                await self._download(f)
                progressed = True
            if f.phase == "ingest":
                await self._ingest(f)
                progressed = True
                if self._fatal is not None:
                    break
        return progressed

    async def _consume(self, chunk: list[Outcome]) -> None:
        """Count what the provider reports (as ``Metered`` does online) and pass the chunk through the chain."""
        stats = self.run.stats
        for outcome in chunk:
            outcome.request.attempts = 1
            if outcome.completion is not None:
                stats.incr("prompt_tokens", outcome.completion.prompt_tokens)
                stats.incr("completion_tokens", outcome.completion.completion_tokens)
            elif isinstance(outcome.error, FatalError):
                # a rejected line must not stop the chain mid-file (nor loop on resume): journaled as failed
                self._rejected = self._rejected or outcome.error
                outcome.error = RetryableError(
                    outcome.error.message, provider=outcome.error.provider, request_id=outcome.request.id
                )
        stats.incr("requests", len(chunk))
        if await self.run.consume(chunk):
            self._done = True

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
        if f.status in _NOTHING_RAN:
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

    # -- submit: plan, write, upload, create ----------------------------------------------------

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

    def _refused(self, f: LedgerFile, message: str) -> None:
        """The queue was full for ``f``: learn the limit; a file too large for it alone gives up its requests."""
        alone = self.ledger.enqueued_tokens() - (f.tokens if f.batch_id else 0) <= 0
        self._learn_limit(message)
        if f.batch_id:
            self._log("requeue", file=f.name, reason=message[:300])
        if alone:
            # nothing else is queued, so this file alone is over the limit: its requests are planned again,
            # into files the writer now keeps under the learned limit
            reason = f"larger than the enqueued-token limit ({f.tokens} tokens): {message[:200]}"
            self._log("ended", file=f.name, status="abandoned", reason=reason)
            self._log("downloaded", file=f.name)

    # -- poll -----------------------------------------------------------------------------------

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
                if info is None or info.status in _CANCELLABLE:
                    with contextlib.suppress(EngineError):
                        cancelled = await self.client.cancel(f.batch_id)
                        if cancelled is not None:
                            self.infos[f.name] = cancelled
            elif f.phase in ("upload", "create"):
                # never sent: its requests end as failed, nothing was paid
                self._log("ended", file=f.name, status="unsent", reason="the target was met before it was sent")
                self._log("downloaded", file=f.name)

    # -- reporting ------------------------------------------------------------------------------

    def extra_stats(self) -> dict[str, Any]:
        rows = []
        for f in list(self.ledger.files.values())[-12:]:
            row = f.row()
            info = self.infos.get(f.name)
            if info is not None and not f.ingested:
                row["status"] = info.status
                row.update({k: v for k, v in info.counts.items() if k != "total"})
            rows.append(row)
        out: dict[str, Any] = dict(self.ledger.summary())
        out["batch_http_calls"] = self.client.calls
        out["enqueued_tokens"] = self.ledger.enqueued_tokens()
        if self.token_limit is not None:
            out["enqueued_token_limit"] = self.token_limit
        out["batches"] = rows
        out["batch_discount"] = self.options.discount
        return out


async def generate_batch(
    run_cfg: RunConfig,
    provider_cfg: ProviderConfig,
    limit: RateLimit,
    retry: RetryPolicy,
    options: GenerateOptions,
    batch: BatchOptions,
    *,
    stats: Stats | None = None,
    view_factory: ViewFactory | None = None,
) -> dict[str, Any]:
    """``generate`` through the Batch API: same run directory, same chain, batch prices."""
    run_cfg = batch_prices(run_cfg, batch.discount)
    async with make_session(provider_cfg) as session:
        base = OpenAIProvider(session, provider_cfg)
        await preflight(base, provider_cfg)
        client = BatchClient(base, retry)
        await client.check()  # a server without the Batch API: one line, before anything touches --out
        manifest = manifest_for(run_cfg, provider_cfg, limit, options.dedup)
        with open_run(run_cfg, model=provider_cfg.model, manifest=manifest, options=options, stats=stats) as run:
            await run.prepare(RetryingProvider(base, retry, stats=run.stats).complete)
            source = BatchSource(run, base, client, batch)
            run.extra_stats = source.extra_stats
            view = view_factory(run.snapshot) if view_factory else contextlib.nullcontext()
            try:
                with view:
                    await source.drive()
            finally:
                final = run.final_snapshot()
                with contextlib.suppress(EngineError):
                    run.store.write_stats(final)
            return final
