"""The zero-shot topic approach: the model lists topics per label first; each request uses one sampled topic.

Phase one (``prepare``) asks once per label, parses the list robustly and falls
back to built-in generic sub-topics when the reply is unusable. The result is
stored in ``state_dir/topics.json`` and reused when that file exists, so a
resumed run conditions on the same topics.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from pathlib import Path
from typing import Any

from ..errors import BadRequest, ConfigError
from ..parse import extract_json
from ..types import Request
from . import prompts
from .base import Complete, Strategy
from .schema import topics_response_format

__all__ = ["MIN_TOPICS", "TOPICS_FILE", "TOPICS_MAX_TOKENS", "TopicStrategy", "parse_topics"]

TOPICS_FILE = "topics.json"
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

    def __init__(self, task: Any, **kw: Any) -> None:
        super().__init__(task, **kw)
        self.topics: dict[str, list[str]] | None = None

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
            request.response_format = None  # the provider rejects structured output: ask in plain text
            completion = await complete(request)
        return parse_topics(completion.text), completion.text

    async def prepare(self, complete: Complete, state_dir: Path) -> None:
        path = Path(state_dir) / TOPICS_FILE
        stored: dict[str, Any] = {}
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                stored = {}
        topics: dict[str, list[str]] = {
            lab: list(v) for lab, v in (stored.get("topics") or {}).items() if lab in self.task.labels and v
        }
        missing = [lab for lab in self.task.labels if lab not in topics]
        if missing:
            answers = await asyncio.gather(*(self._ask(complete, lab) for lab in missing))
            raw = dict(stored.get("raw") or {})
            fallback = set(stored.get("fallback") or [])
            for lab, (found, text) in zip(missing, answers, strict=True):
                raw[lab] = text
                if len(found) >= MIN_TOPICS:
                    topics[lab] = found[: prompts.TOPICS_COUNT]
                else:
                    topics[lab] = list(prompts.GENERIC_SUBTOPICS)
                    fallback.add(lab)
            data = {"topics": topics, "fallback": sorted(fallback), "raw": raw}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
            os.replace(tmp, path)
        self.topics = topics

    def _context(self, rng: random.Random, label: str) -> tuple[list[str], dict[str, Any]]:
        if self.topics is None:
            raise ConfigError("the topic strategy has no topics yet", hint="await strategy.prepare(...) first")
        topic = rng.choice(self.topics[label])
        return [prompts.TOPIC_LINE.format(topic=topic)], {"topic": topic}
