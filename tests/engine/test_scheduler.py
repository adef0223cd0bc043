"""The scheduler alone: drain of paid-for requests, a fatal error mid-batch, backpressure, the drain deadline."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from engine.errors import AuthError, ProviderUnavailable
from engine.providers.base import Provider
from engine.scheduler import Scheduler
from engine.types import Completion, Outcome, Request


class GatedProvider(Provider):
    """Answers each request when its gate opens (all gates open by default); counts what it was sent."""

    def __init__(self, *, hold: set[str] | None = None, fail: dict[str, Exception] | None = None) -> None:
        self.sent: list[str] = []
        self.hold = hold or set()
        self.fail = fail or {}
        self.release = asyncio.Event()

    async def complete(self, request: Request) -> Completion:
        self.sent.append(request.id)
        if request.id in self.hold:
            await self.release.wait()
        else:
            await asyncio.sleep(0)
        if request.id in self.fail:
            raise self.fail[request.id]
        return Completion(request_id=request.id, text=f"answer {request.id}")


def source_of(n: int):
    ids = iter(range(n))

    def source() -> Request | None:
        k = next(ids, None)
        return None if k is None else Request(id=f"r{k}", messages=[])

    return source


async def test_when_the_consumer_is_done_nothing_new_is_sent_and_requests_in_flight_are_collected():
    provider = GatedProvider(hold={"r1", "r2"})
    seen: list[str] = []

    async def consume(batch: list[Outcome]) -> bool:
        seen.extend(o.request.id for o in batch)
        if "r0" in seen and not provider.release.is_set():
            asyncio.get_running_loop().call_later(0.01, provider.release.set)
        return "r0" in seen  # done after the first answer

    await Scheduler(provider, workers=3, linger_s=0).run(source_of(100), consume)
    # done after r0: at most the requests the three workers held then (the one that answered r0 may have
    # taken one more before the consumer ran), never the rest of the source
    assert len(provider.sent) <= 4
    assert sorted(seen) == sorted(provider.sent)  # every request sent was handed to the consumer
    assert "r1" in seen and "r2" in seen


async def test_a_fatal_error_raised_by_the_consumer_stops_the_run_after_that_batch():
    provider = GatedProvider(fail={"r2": AuthError("bad key", status=401)})
    batches: list[list[str]] = []

    async def consume(batch: list[Outcome]) -> bool:
        batches.append([o.request.id for o in batch])
        for o in batch:
            if isinstance(o.error, AuthError):
                raise o.error
        return False

    with pytest.raises(AuthError):
        await Scheduler(provider, workers=2, linger_s=0).run(source_of(1000), consume)
    assert any("r2" in b for b in batches)
    assert len(provider.sent) < 50  # stopped, not run to the end of the source


async def test_errors_are_outcomes_not_exceptions():
    provider = GatedProvider(fail={"r1": ProviderUnavailable("503", status=503)})
    outcomes: list[Outcome] = []

    async def consume(batch: list[Outcome]) -> bool:
        outcomes.extend(batch)
        return False

    await Scheduler(provider, workers=2, linger_s=0).run(source_of(4), consume)
    by_id = {o.request.id: o for o in outcomes}
    assert set(by_id) == {"r0", "r1", "r2", "r3"}
    assert isinstance(by_id["r1"].error, ProviderUnavailable) and by_id["r1"].completion is None
    assert by_id["r0"].completion is not None and by_id["r0"].error is None


async def test_a_slow_consumer_holds_back_the_workers():
    provider = GatedProvider()
    gate = asyncio.Event()
    consumed = 0
    workers = 3

    async def consume(batch: list[Outcome]) -> bool:
        nonlocal consumed
        await gate.wait()  # the writer is stuck (a slow disk)
        consumed += len(batch)
        return consumed >= 40

    task = asyncio.create_task(Scheduler(provider, workers=workers, linger_s=0).run(source_of(1000), consume))
    for _ in range(50):
        await asyncio.sleep(0)
    # paid for but not on disk is bounded: one batch being consumed, a full result queue, one per worker
    assert len(provider.sent) <= workers * 3
    gate.set()
    await asyncio.wait_for(task, 10)
    assert consumed >= 40


async def test_a_hung_request_is_waited_for_at_most_the_drain_deadline():
    provider = GatedProvider(hold={"r1"})
    seen: list[str] = []

    async def consume(batch: list[Outcome]) -> bool:
        seen.extend(o.request.id for o in batch)
        return "r0" in seen

    await asyncio.wait_for(
        Scheduler(provider, workers=2, linger_s=0, drain_timeout_s=0.05).run(source_of(10), consume), 5
    )
    assert "r1" in provider.sent and "r1" not in seen


class StragglingProvider(Provider):
    """Answers at once, except the first send of the requests in ``hang`` (which never answers)."""

    def __init__(self, hang: set[str]) -> None:
        self.hang = hang
        self.sent: list[str] = []

    async def complete(self, request: Request) -> Completion:
        first = request.id not in self.sent
        self.sent.append(request.id)
        if first and request.id in self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(0.001)
        return Completion(request_id=request.id, text=f"answer {request.id}")


async def test_a_straggler_gets_one_backup_whose_answer_counts_once():
    from engine.stragglers import BackupPolicy

    provider = StragglingProvider(hang={"r30"})
    seen: list[str] = []

    async def consume(batch: list[Outcome]) -> bool:
        seen.extend(o.request.id for o in batch)
        return len(seen) >= 40

    policy = BackupPolicy(min_s=0.02, factor=2.0, min_observations=5, budget=0.05)
    scheduler = Scheduler(provider, workers=4, linger_s=0, backups=policy)
    await asyncio.wait_for(scheduler.run(source_of(40), consume), 10)
    assert sorted(seen) == sorted(f"r{k}" for k in range(40))  # every request once, r30 from its backup
    assert provider.sent.count("r30") == 2
    assert scheduler.stragglers.backups == 1 and scheduler.stragglers.backup_wins == 1


async def test_backups_stay_within_their_budget_and_can_be_turned_off():
    from engine.stragglers import BackupPolicy

    hang = {f"r{k}" for k in range(30, 40)}

    async def run(policy: BackupPolicy) -> tuple[StragglingProvider, Scheduler, list[str]]:
        provider = StragglingProvider(hang=hang)
        seen: list[str] = []

        async def consume(batch: list[Outcome]) -> bool:
            seen.extend(o.request.id for o in batch)
            return len(seen) >= 40

        scheduler = Scheduler(provider, workers=12, linger_s=0, drain_timeout_s=0.05, backups=policy)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(scheduler.run(source_of(40), consume), 1.0)
        return provider, scheduler, seen

    provider, scheduler, seen = await run(BackupPolicy(min_s=0.02, factor=2.0, min_observations=5, budget=0.05))
    assert scheduler.stragglers.backups == 2  # 5% of 40 sent: two of the ten stragglers
    assert len(provider.sent) == 42
    provider, scheduler, seen = await run(BackupPolicy(enabled=False))
    assert scheduler.stragglers.backups == 0 and len(provider.sent) == 40


async def test_a_backup_that_straggles_in_turn_gets_another():
    from engine.stragglers import BackupPolicy

    class TwiceStuck(StragglingProvider):
        async def complete(self, request: Request) -> Completion:
            sends = self.sent.count(request.id)
            self.sent.append(request.id)
            if request.id in self.hang and sends < 2:  # the first send and the first backup both hang
                await asyncio.Event().wait()
            await asyncio.sleep(0.001)
            return Completion(request_id=request.id, text=f"answer {request.id}")

    provider = TwiceStuck(hang={"r30"})
    seen: list[str] = []

    async def consume(batch: list[Outcome]) -> bool:
        seen.extend(o.request.id for o in batch)
        return len(seen) >= 40

    policy = BackupPolicy(min_s=0.02, factor=2.0, min_observations=5, budget=0.1)
    scheduler = Scheduler(provider, workers=4, linger_s=0, backups=policy)
    await asyncio.wait_for(scheduler.run(source_of(40), consume), 10)
    assert sorted(seen) == sorted(f"r{k}" for k in range(40))
    assert provider.sent.count("r30") == 3 and scheduler.stragglers.backups == 2
