"""What a run learns while it runs and must remember across ``--resume``.

Stages and sources never flip each other's attributes or write files to share
a fact; they set it on the one :class:`RunState` of the run, and the store
persists it (``state.json``, and ``topics.json`` for the topic approach's phase
one, files a resumed run reads back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunState"]


@dataclass(slots=True)
class RunState:
    #: False once the provider rejected ``response_format``: the run then asks in free text.
    structured: bool = True
    #: Phase one of the topic approach: topics per label (None until asked).
    topics: dict[str, list[str]] | None = None
    #: Labels whose topic answer was unusable, so generic sub-topics stand in.
    topics_fallback: list[str] = field(default_factory=list)
    #: The model's raw topic answers, for auditing.
    topics_raw: dict[str, str] = field(default_factory=dict)

    def state_json(self) -> dict[str, Any]:
        return {"structured": self.structured}

    def topics_json(self) -> dict[str, Any] | None:
        if self.topics is None:
            return None
        return {"topics": self.topics, "fallback": sorted(self.topics_fallback), "raw": self.topics_raw}

    @classmethod
    def from_json(cls, state: dict[str, Any], topics: dict[str, Any] | None) -> RunState:
        out = cls(structured=state.get("structured") is not False)
        if topics:
            raw_topics = topics.get("topics") or {}
            if isinstance(raw_topics, dict):
                out.topics = {str(k): [str(t) for t in v] for k, v in raw_topics.items() if isinstance(v, list) and v}
            out.topics_fallback = [str(x) for x in topics.get("fallback") or []]
            out.topics_raw = {str(k): str(v) for k, v in (topics.get("raw") or {}).items()}
        return out
