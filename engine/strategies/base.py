"""The strategy interface and the zero-shot, one-shot and few-shot approaches.

A strategy turns ``(request_id, label, seed)`` into a ``Request``,
deterministically: every random choice comes from ``random.Random(seed)``, in a
fixed order (shots, then topic, then attributes). Prompts are class-conditioned:
each one names the label it asks for. The text of every prompt is in ``prompts.py``.
"""

from __future__ import annotations

import copy
import json
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..config import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE
from ..errors import ConfigError, DataError
from ..runstate import RunState
from ..tasks import Task
from ..types import Completion, Example, Request
from . import prompts
from .schema import response_format

__all__ = ["Complete", "FewShot", "OneShot", "Strategy", "ZeroShot"]

#: What ``prepare`` calls to ask the model something (the lead's provider stack, wrapped).
Complete = Callable[[Request], Awaitable[Completion]]


#: Handed to ``_context`` by strategies that sample nothing (never drawn from).
_UNUSED_RNG = random.Random(0)


class Strategy:
    """Builds class-conditioned requests for one task; subclasses add one block of context."""

    name = "zero-shot"
    #: Whether ``_context`` draws from its random generator (a subclass that never does says so).
    samples = True

    def __init__(
        self,
        task: Task,
        *,
        shots: int = 3,
        per_request: int = 1,
        structured: bool = True,
        attributes: bool = False,
        seed: int = 0,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float | None = None,
        train_examples: Sequence[Example] | None = None,
        state: RunState | None = None,
    ) -> None:
        if per_request < 1:
            raise ConfigError(f"per_request must be at least 1, got {per_request}")
        if shots < 1:
            raise ConfigError(f"shots must be at least 1, got {shots}")
        self.task = task
        self.shots = shots
        self.per_request = per_request
        self._structured = structured
        #: What the run has learned (the structured-output fallback, topics); shared with the run, read here.
        self.state = state if state is not None else RunState()
        self.attributes = attributes
        self.seed = seed
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self._train = list(train_examples) if train_examples is not None else None

    # -- the interface -------------------------------------------------------

    @property
    def structured(self) -> bool:
        """Whether requests carry a ``response_format``: asked for, and not refused by the provider this run."""
        return self._structured and self.state.structured

    @structured.setter
    def structured(self, value: bool) -> None:
        self._structured = value

    async def prepare(self, complete: Complete) -> None:
        """Work done once before generation, recorded in ``self.state`` (phase one of the topic approach)."""
        return None

    def build(self, *, request_id: str, label: str, seed: int) -> Request:
        if label not in self.task.label_descriptions:
            raise ConfigError(f"label {label!r} is not a label of task {self.task.name!r}")
        if not (self.samples or self.attributes):
            messages, fixed_meta = self._fixed_prompt(label)
            request = self._request(request_id, label, seed, messages, dict(fixed_meta))
            request.shared_messages = True
            return request
        rng = random.Random(seed)
        blocks, meta = self._context(rng, label)
        if self.attributes:
            attrs = self._sample_attributes(rng, label, meta.get("topic"))
            what = "example" if self.per_request == 1 else "examples"
            blocks.append(prompts.ATTRIBUTES_BLOCK.format(what=what, **attrs))
            meta["attributes"] = attrs
        return self._request(request_id, label, seed, self._messages(label, blocks), self._meta(meta))

    def _messages(self, label: str, blocks: list[str]) -> list[dict[str, str]]:
        user = "\n\n".join([self._task_block(), *blocks, self._request_lines(label)])
        return [{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": user}]

    def _meta(self, context_meta: dict[str, Any]) -> dict[str, Any]:
        return {"strategy": self.name, **context_meta, "per_request": self.per_request, "structured": self.structured}

    def _fixed_prompt(self, label: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The prompt of a strategy that samples nothing: the same for every request of a label, built once.

        The messages list is shared by those requests (nobody mutates a request's messages), which also lets
        the provider serialise it once.
        """
        cache: dict[tuple[str, bool], tuple[list[dict[str, str]], dict[str, Any]]]
        cache = self.__dict__.setdefault("_fixed_prompt_cache", {})
        key = (label, self.structured)
        if key not in cache:
            blocks, meta = self._context(_UNUSED_RNG, label)
            cache[key] = (self._messages(label, blocks), self._meta(meta))
        return cache[key]

    def _request(
        self, request_id: str, label: str, seed: int, messages: list[dict[str, str]], meta: dict[str, Any]
    ) -> Request:
        return Request(
            id=request_id,
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            response_format=self.response_format(label),
            label=label,
            seed=seed,
            meta=meta,
        )

    def reference_texts(self) -> list[str]:
        """Texts generated examples must not copy (the real examples prompts may show)."""
        return []

    def response_format(self, label: str) -> dict[str, Any] | None:
        if not self.structured:
            return None
        return response_format(self.task, label, self.per_request)

    def with_structured(self, structured: bool) -> Strategy:
        """A copy that does (or does not) send ``response_format``; the free-text fallback."""
        clone = copy.copy(self)
        clone.structured = structured
        return clone

    # -- the parts subclasses change ------------------------------------------

    def _context(self, rng: random.Random, label: str) -> tuple[list[str], dict[str, Any]]:
        """Extra prompt blocks and what they chose (for ``Request.meta``)."""
        return [], {}

    # -- shared helpers -------------------------------------------------------

    def _task_block(self) -> str:
        cached: str | None = self.__dict__.get("_task_block_text")
        if cached is None:
            cached = self.__dict__["_task_block_text"] = self._render_task_block()
        return cached

    def _render_task_block(self) -> str:
        t = self.task
        label_lines = "\n".join(
            f"- {lab}: {t.describe_label(lab)}" if t.describe_label(lab) else f"- {lab}" for lab in t.labels
        )
        return prompts.TASK_BLOCK.format(
            description=t.description or f"Classify texts into {len(t.labels)} classes.",
            domain=t.domain or "short English texts",
            label_lines=label_lines,
        )

    def _request_lines(self, label: str) -> str:
        cache: dict[tuple[str, bool], str] = self.__dict__.setdefault("_request_lines_cache", {})
        key = (label, self.structured)
        if key not in cache:
            cache[key] = self._render_request_lines(label)
        return cache[key]

    def _render_request_lines(self, label: str) -> str:
        description = self.task.describe_label(label) or label
        fields = ", ".join(f'"{f}": "..."' for f in self.task.fields)
        if self.per_request == 1:
            ask = prompts.REQUEST_ONE.format(label=label, label_description=description)
            fmt = prompts.ONE_FORMAT.format(fields=fields, label=label)
        else:
            ask = prompts.REQUEST_MANY.format(n=self.per_request, label=label, label_description=description)
            fmt = prompts.EXAMPLES_FORMAT.format(fields=fields, label=label, n=self.per_request)
        lines = [ask, fmt]
        if not self.structured:
            lines.append(prompts.PLAIN_JSON_NOTE)
        return "\n".join(lines)

    def _sample_attributes(self, rng: random.Random, label: str, topic: Any) -> dict[str, str]:
        values = prompts.ATTRIBUTE_VALUES
        attrs = {key: rng.choice(values[key]) for key in ("length", "style", "audience")}
        attrs["subtopic"] = str(topic) if topic else rng.choice(prompts.GENERIC_SUBTOPICS)
        return attrs


class ZeroShot(Strategy):
    """The task and label descriptions only."""

    name = "zero-shot"
    samples = False


class FewShot(Strategy):
    """Zero-shot plus ``shots`` real examples of the requested label, drawn from the train split only."""

    name = "few-shot"

    def __init__(self, task: Task, **kw: Any) -> None:
        super().__init__(task, **kw)
        if self._train is None:
            raise DataError(
                f"{self.name} needs real train examples of task {task.name!r}",
                hint="load them with engine.tasks.load_real(task, 'train') and pass train_examples",
            )
        pool: dict[str, list[Example]] = defaultdict(list)
        for ex in self._train:
            pool[ex.label].append(ex)
        missing = [lab for lab in task.labels if not pool[lab]]
        if missing:
            raise DataError(
                f"no real train examples for labels {missing} of task {task.name!r}",
                hint=f"{self.name} needs at least one real example per label; use zero-shot or topic",
            )
        self._pool = dict(pool)

    @property
    def k(self) -> int:
        return self.shots

    def _context(self, rng: random.Random, label: str) -> tuple[list[str], dict[str, Any]]:
        pool = self._pool[label]
        chosen = rng.sample(pool, min(self.k, len(pool)))
        lines = [json.dumps(_shot_dict(ex, self.task), ensure_ascii=False) for ex in chosen]
        block = prompts.SHOTS_BLOCK.format(label=label, shots="\n".join(lines))
        return [block], {"shots": [ex.id for ex in chosen]}

    def reference_texts(self) -> list[str]:
        return [ex.text for exs in self._pool.values() for ex in exs]


class OneShot(FewShot):
    """Zero-shot plus one real example of the requested label."""

    name = "one-shot"

    @property
    def k(self) -> int:
        return 1


def _shot_dict(ex: Example, task: Task) -> dict[str, str]:
    out = {}
    for f in task.fields:
        text = ex.fields.get(f, "")
        if len(text) > prompts.SHOT_MAX_CHARS:
            text = text[: prompts.SHOT_MAX_CHARS].rsplit(" ", 1)[0] + " ..."
        out[f] = text
    out["label"] = ex.label
    return out
