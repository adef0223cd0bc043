"""The stage chain: what happens to a batch of outcomes after the HTTP response.

A run is a *source* of outcomes (the online scheduler, a provider batch job, a
cluster shard) and a :class:`Chain` of stages. Every source hands the chain a
batch of :class:`~engine.types.Outcome` objects; the chain wraps them in one
:class:`Work` and passes it through each stage in order::

    parse ► checks ► dedup ► quota ► store

A stage is any object with ``process(work) -> None``. It may turn outcomes into
candidate examples (parse), drop candidates with a reason (checks, dedup,
quota), or write what is left (store). Stages never reach back into the plan
or the prompts; what they need to know about the run they are given when
built. :class:`Filter` owns the loop, the counting and the reject records, so a
per-example stage writes only ``keep``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from .errors import FatalError
from .stats import Stats
from .types import Example, Outcome

__all__ = ["Chain", "Filter", "RejectSink", "Stage", "Work"]

T = TypeVar("T")


@dataclass(slots=True)
class Work:
    """One batch on its way through the chain.

    ``examples`` and ``raw`` are parallel: the candidates still standing and the
    model text each came from. ``kept_by_request`` is filled by the quota stage
    and read by the store (one journal line per finished request).
    """

    outcomes: list[Outcome]
    examples: list[Example] = field(default_factory=list)
    #: What each candidate was parsed from (a string, or the JSON value), for its reject record.
    raw: list[Any] = field(default_factory=list)
    #: (record as stored in rejects.jsonl, reason)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    #: The first fatal error among the outcomes: raised once the batch is on disk.
    fatal: FatalError | None = None
    #: Set by the quota stage: whether every quota is met after this batch.
    done: bool = False

    def add(self, example: Example, raw: Any) -> None:
        self.examples.append(example)
        self.raw.append(raw)

    def reject_raw(self, example: Example, raw: Any, reason: str) -> None:
        """Record a candidate dropped before it was a trustworthy example: its model text, not its fields."""
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
        self.rejected.append(({"request_id": example.request_id, "label": example.label, "raw": text[:2000]}, reason))

    def reject_example(self, example: Example, reason: str) -> None:
        self.rejected.append((example.to_dict(), reason))

    def keep_only(self, verdicts: Sequence[str | None], *, raw_records: bool = False) -> None:
        """Drop every candidate whose verdict is a reason; keep those whose verdict is ``None``."""
        examples, raws = [], []
        for example, raw, verdict in zip(self.examples, self.raw, verdicts, strict=True):
            if verdict is None:
                examples.append(example)
                raws.append(raw)
            elif raw_records:
                self.reject_raw(example, raw, verdict)
            else:
                self.reject_example(example, verdict)
        self.examples, self.raw = examples, raws


class Stage(Protocol):
    """One step of the chain: looks at a batch and changes it in place."""

    def process(self, work: Work) -> None: ...


class Chain:
    """Stages in order; ``run`` passes one batch through all of them."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)

    def run(self, outcomes: list[Outcome]) -> Work:
        work = Work(outcomes)
        for stage in self.stages:
            stage.process(work)
        return work


class RejectSink(Protocol[T]):  # type: ignore[misc]
    """Where dropped records go, with the reason they were dropped."""

    def reject(self, record: T, reason: str) -> None: ...


class Filter(Generic[T]):
    """Keeps or drops records one at a time.

    Subclasses implement :meth:`keep`, returning ``True`` to keep, or ``False``
    or a reason string to drop. Counts ``<name>.seen``, ``<name>.kept`` and
    ``<name>.dropped:<reason>`` into ``stats``; an optional sink receives what is dropped.
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

    def check_batch(self, records: Sequence[T]) -> list[str | None]:
        return [self.check(record) for record in records]
