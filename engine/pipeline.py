"""Stages and the runner that chains them.

A stage is any callable that takes an async iterator of records and returns an
async iterator of records: it can add records, change them, or drop them. A
bare async-generator function is a valid stage. ``Filter`` owns the loop, the
counting and the reject sink, so a subclass writes only ``keep``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Generic, Protocol, TypeVar

from .stats import Stats

__all__ = ["Filter", "RejectSink", "Stage", "aiter_list", "run_pipeline"]

T = TypeVar("T")

Stage = Callable[[AsyncIterator[T]], AsyncIterator[T]]


class RejectSink(Protocol[T]):  # type: ignore[misc]
    """Where dropped records go, with the reason they were dropped."""

    def reject(self, record: T, reason: str) -> None: ...


class Filter(Generic[T]):
    """A stage that keeps or drops records one at a time.

    Subclasses implement :meth:`keep`, returning ``True`` to keep, or ``False``
    or a reason string to drop. Counts ``<name>.seen``, ``<name>.kept`` and
    ``<name>.dropped:<reason>`` into ``stats``.
    """

    name = "filter"

    def __init__(self, *, stats: Stats | None = None, rejects: RejectSink[T] | None = None) -> None:
        self.stats = stats if stats is not None else Stats()
        self.rejects = rejects

    def keep(self, record: T) -> bool | str:
        raise NotImplementedError

    def check(self, record: T) -> str | None:
        """Apply :meth:`keep` with counting and reject handling; return the drop reason or None."""
        self.stats.incr(f"{self.name}.seen")
        verdict = self.keep(record)
        if verdict is True:
            self.stats.incr(f"{self.name}.kept")
            return None
        reason = verdict if isinstance(verdict, str) else self.name
        self.stats.incr(f"{self.name}.dropped:{reason}")
        if self.rejects is not None:
            self.rejects.reject(record, reason)
        return reason

    async def __call__(self, records: AsyncIterator[T]) -> AsyncIterator[T]:
        async for record in records:
            if self.check(record) is None:
                yield record


async def aiter_list(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


async def run_pipeline(source: AsyncIterable[T], stages: list[Stage[T]]) -> list[T]:
    """Chain ``stages`` over ``source`` and drain the last one; returns what came out."""
    stream: AsyncIterator[T] = aiter(source)
    for stage in stages:
        stream = stage(stream)
    return [record async for record in stream]
