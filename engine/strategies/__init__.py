"""Generation approaches (Li et al. 2024): zero-shot, one-shot, few-shot and zero-shot topic, plus attributes.

``make_strategy(name, task, ...)`` returns a ``Strategy`` whose ``build`` makes one
class-conditioned ``Request``. Every prompt text lives in ``engine.strategies.prompts``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE
from ..errors import ConfigError
from ..runstate import RunState
from ..tasks import Task
from ..types import Example
from .base import Complete, FewShot, OneShot, Strategy, ZeroShot
from .schema import example_schema, response_format, topics_response_format
from .topic import TopicStrategy, parse_topics

__all__ = [
    "STRATEGIES",
    "Complete",
    "FewShot",
    "OneShot",
    "Strategy",
    "TopicStrategy",
    "ZeroShot",
    "example_schema",
    "make_strategy",
    "parse_topics",
    "response_format",
    "topics_response_format",
]

STRATEGIES: dict[str, type[Strategy]] = {
    "zero-shot": ZeroShot,
    "one-shot": OneShot,
    "few-shot": FewShot,
    "topic": TopicStrategy,
}
_ALIASES = {"zero-shot-topic": "topic", "zeroshot": "zero-shot", "oneshot": "one-shot", "fewshot": "few-shot"}


def make_strategy(
    name: str,
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
) -> Strategy:
    """The strategy called ``name`` for ``task``; one/few-shot need ``train_examples`` (the real train split)."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    cls = STRATEGIES.get(key)
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}", hint=f"strategies: {', '.join(STRATEGIES)}")
    return cls(
        task,
        shots=shots,
        per_request=per_request,
        structured=structured,
        attributes=attributes,
        seed=seed,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        train_examples=train_examples,
        state=state,
    )
