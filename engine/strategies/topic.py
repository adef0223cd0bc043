"""The zero-shot topic approach: the model lists topics per label first; each request uses one sampled topic.

Phase one (``prepare``) asks once per label, parses the list robustly and falls
back to built-in generic sub-topics when the reply is unusable. The result goes
into the run state (``state.topics``), which the store persists as
``topics.json``; a resumed run reads it back and asks only for missing labels,
so it conditions on the same topics.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

from ..errors import BadRequest, ConfigError
from ..parse import extract_json
from ..types import Request
from . import prompts
from .base import Complete, Strategy
from .schema import topics_response_format

__all__ = ["MIN_TOPICS", "TOPICS_MAX_TOKENS", "TopicStrategy", "parse_topics"]

TOPICS_MAX_TOKENS = 400
#: Fewer usable topics than this and the label falls back to the generic sub-topics.
MIN_TOPICS = 3
_MAX_TOPIC_CHARS = 80
_JSONISH = re.compile(r'[{}\[\]]|":')
_BULLET = re.compile(r"^\s*(?:\d{1,3}[.):]|[-*\u2022])\s*")
_QUOTED = re.compile(r'"((?:[^"\\\n]|\\.)*)"\s*(?=[,\]]|\s*$)')


def _clean_topic(raw: Any) -> str:
    if isinstance(raw, dict):
        raw = next((v for k, v in raw.items() if str(k).lower() in ("topic", "name", "title")), "")
    s = _BULLET.sub("", str(raw)).replace("**", "").strip().strip("\"'`,.;").strip()
    return s


def parse_topics(text: str) -> list[str]:
    """Distinct short topic phrases from a model reply (JSON list, ``{"topics": [...]}``, cut-off JSON, or lines)."""
    value = extract_json(text)
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        value = lists[0] if lists else None
    candidates: list[Any]
    if isinstance(value, list):
        candidates = value
    elif "[" in text and '"' in text:  # a JSON list cut off by max_tokens: its complete strings
        candidates = _QUOTED.findall(text[text.index("[") :])
    else:
        candidates = text.splitlines()
    out: list[str] = []
    seen: set[str] = set()
    for cand in candidates:
        topic = _clean_topic(cand)
        key = topic.lower()
        if not 3 <= len(topic) <= _MAX_TOPIC_CHARS or key in seen or topic.endswith(":") or _JSONISH.search(topic):
            continue
        seen.add(key)
        out.append(topic)
    return out


class TopicStrategy(Strategy):
    name = "topic"

    @property
    def topics(self) -> dict[str, list[str]] | None:
        return self.state.topics

    def topics_request(self, label: str) -> Request:
        t = self.task
        user = prompts.TOPICS_USER.format(
            description=t.description or "Classify texts.",
            domain=t.domain or "short English texts",
            n=prompts.TOPICS_COUNT,
            label=label,
            label_description=t.describe_label(label) or label,
        )
        return Request(
            id=f"topics-{label}",
            messages=[{"role": "system", "content": prompts.TOPICS_SYSTEM}, {"role": "user", "content": user}],
            max_tokens=TOPICS_MAX_TOKENS,
            temperature=self.temperature,
            top_p=self.top_p,
            response_format=topics_response_format(prompts.TOPICS_COUNT) if self.structured else None,
            label=label,
            seed=self.seed,
            meta={"strategy": self.name, "phase": "topics"},
        )

    async def _ask(self, complete: Complete, label: str) -> tuple[list[str], str]:
        request = self.topics_request(label)
        try:
            completion = await complete(request)
        except BadRequest:
            if request.response_format is None:
                raise
            # the provider rejects structured output: the whole run asks in plain text from now on
            self.state.structured = False
            completion = await complete(self.topics_request(label))
        return parse_topics(completion.text), completion.text

    async def prepare(self, complete: Complete) -> None:
        state = self.state
        known = {lab: v for lab, v in (state.topics or {}).items() if lab in self.task.labels and v}
        missing = [lab for lab in self.task.labels if lab not in known]
        if missing:
            answers = await asyncio.gather(*(self._ask(complete, lab) for lab in missing))
            fallback = set(state.topics_fallback)
            for lab, (found, text) in zip(missing, answers, strict=True):
                state.topics_raw[lab] = text
                if len(found) >= MIN_TOPICS:
                    known[lab] = found[: prompts.TOPICS_COUNT]
                else:
                    known[lab] = list(prompts.GENERIC_SUBTOPICS)
                    fallback.add(lab)
            state.topics_fallback = sorted(fallback)
        state.topics = known

    def _context(self, rng: random.Random, label: str) -> tuple[list[str], dict[str, Any]]:
        if self.topics is None:
            raise ConfigError("the topic strategy has no topics yet", hint="await strategy.prepare(...) first")
        topic = rng.choice(self.topics[label])
        return [prompts.TOPIC_LINE.format(topic=topic)], {"topic": topic}
