"""Task definitions: what to generate, with which labels, and where the real data lives.

A task is a small YAML file::

    name: bbc-news                      # required; a slug
    description: Classify a BBC News article into one of five topical sections.
    domain: news articles from the BBC News website   # one context line for prompts
    fields: [text]                      # or [premise, hypothesis], [passage, question]
    labels:                             # label -> what it means (used in prompts)
      business: companies, markets and the economy
      sport: sports events, athletes and competitions
    source:                             # where the real data comes from (one of):
      packaged: bbc-news                #   a data set shipped in an installed package
      # file: data/sst2.jsonl           #   a JSONL/CSV/Parquet file (relative to the YAML file)
      # hf: nyu-mll/glue                #   the Hugging Face hub (needs `datasets` and a network)
      # config: sst2                    #   hf only: the dataset config
      # splits: {train: train, test: validation}   # file/hf: our split -> their split
      # columns: {text: sentence, label: label}    # our field -> their column
      # labels: {0: negative, 1: positive}         # their label value -> our label
      # test_fraction: 0.2              # when there is no test split: the stratified share held out
    min_chars: 20                       # optional: generated texts shorter than this are rejected
    max_chars: 4000                     # optional: ... and longer than this

``load_task`` takes a built-in name (``list_builtin()``) or a path to such a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError
from ..io import parse_yaml, read_yaml

__all__ = ["DEFAULT_MIN_CHARS", "DEFAULT_TEST_FRACTION", "Source", "Task", "list_builtin", "load_task"]

DEFAULT_MIN_CHARS = 1
DEFAULT_TEST_FRACTION = 0.2
_SOURCE_KINDS = ("packaged", "file", "hf")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED_FIELDS = {"id", "label", "meta", "strategy", "request_id", "model"}


def _frozen(d: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where a task's real data comes from.

    ``kind`` is ``packaged`` (``name`` is a packaged data set), ``file`` (``name``
    is a path) or ``hf`` (``name`` is a hub dataset, ``config`` its config), or
    ``none`` when the task file names no source (then only ``--data FILE`` works).
    """

    kind: str = "none"
    name: str = ""
    config: str | None = None
    splits: Mapping[str, str] = field(default_factory=lambda: _frozen({}), hash=False)
    columns: Mapping[str, str] = field(default_factory=lambda: _frozen({}), hash=False)
    label_map: Mapping[str, str] = field(default_factory=lambda: _frozen({}), hash=False)
    test_fraction: float = DEFAULT_TEST_FRACTION

    def describe(self) -> str:
        if self.kind == "hf":
            return f"hf:{self.name}" + (f"/{self.config}" if self.config else "")
        return f"{self.kind}:{self.name}" if self.kind != "none" else "none"


@dataclass(frozen=True, kw_only=True)
class Task:
    """A text-classification task: its labels, input fields and real-data source."""

    name: str
    description: str
    labels: tuple[str, ...]
    label_descriptions: Mapping[str, str] = field(hash=False, compare=False)
    fields: tuple[str, ...] = ("text",)
    domain: str = ""
    source: Source = field(default_factory=Source)
    min_chars: int = DEFAULT_MIN_CHARS
    max_chars: int | None = None
    #: The YAML file this task came from (relative ``file:`` sources resolve against its folder).
    path: Path | None = field(default=None, compare=False)

    def __hash__(self) -> int:
        # Tasks key the lru caches of the parse and prompt hot paths: hash the compared fields once, not per call.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(
                (self.name, self.description, self.labels, self.fields, self.domain, self.source)
                + (self.min_chars, self.max_chars)
            )
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def is_pair(self) -> bool:
        return len(self.fields) > 1

    def describe_label(self, label: str) -> str:
        return self.label_descriptions.get(label, "")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, path: Path | None = None) -> Task:
        """Validate a parsed YAML mapping; every mistake is a ``ConfigError`` naming the file."""
        where = str(path) if path else "task"

        def bad(msg: str, hint: str = "") -> ConfigError:
            return ConfigError(f"{where}: {msg}", hint=hint or "see engine/tasks/README.md for the task format")

        if not isinstance(raw, Mapping):
            raise bad("a task file must be a YAML mapping")
        unknown = set(raw) - {"name", "description", "domain", "fields", "labels", "source", "min_chars", "max_chars"}
        if unknown:
            raise bad(f"unknown keys {sorted(unknown)}")
        name = str(raw.get("name") or "")
        if not _NAME.match(name):
            raise bad(f"name {name!r} must be a lower-case slug like 'bbc-news'")
        labels_raw = raw.get("labels")
        if isinstance(labels_raw, list):
            twice = sorted({str(x) for x in labels_raw if labels_raw.count(x) > 1})
            if twice:
                raise bad(f"labels lists {twice[0]!r} twice", hint="list each label once")
            labels_raw = {str(x): "" for x in labels_raw}
        if not isinstance(labels_raw, Mapping) or len(labels_raw) < 2:
            raise bad("labels must map at least two labels to their descriptions")
        descriptions = {str(k).strip(): str(v or "").strip() for k, v in labels_raw.items()}
        if any(not k for k in descriptions):
            raise bad("a label may not be empty")
        fields_raw = raw.get("fields", ["text"])
        if isinstance(fields_raw, str):
            fields_raw = [fields_raw]
        if not isinstance(fields_raw, list) or not fields_raw:
            raise bad("fields must be a non-empty list such as [text] or [premise, hypothesis]")
        fields = tuple(str(f) for f in fields_raw)
        for f in fields:
            if not _FIELD.match(f) or f in _RESERVED_FIELDS:
                raise bad(f"field name {f!r} is not allowed (lower-case identifiers, not {sorted(_RESERVED_FIELDS)})")
        if len(set(fields)) != len(fields):
            raise bad("fields must be distinct")
        min_chars = int(raw.get("min_chars", DEFAULT_MIN_CHARS))
        max_raw = raw.get("max_chars")
        max_chars = int(max_raw) if max_raw is not None else None
        if min_chars < 0 or (max_chars is not None and max_chars < max(min_chars, 1)):
            raise bad(f"min_chars={min_chars} / max_chars={max_chars} make no sense")
        return cls(
            name=name,
            description=str(raw.get("description") or "").strip(),
            labels=tuple(descriptions),
            label_descriptions=_frozen(descriptions),
            fields=fields,
            domain=str(raw.get("domain") or "").strip(),
            source=_parse_source(raw.get("source"), fields, bad),
            min_chars=min_chars,
            max_chars=max_chars,
            path=path,
        )


def _parse_source(raw: Any, fields: tuple[str, ...], bad: Any) -> Source:
    if raw is None:
        return Source()
    if not isinstance(raw, Mapping):
        raise bad("source must be a mapping such as {packaged: bbc-news} or {file: data.jsonl}")
    kinds = [k for k in _SOURCE_KINDS if k in raw]
    if len(kinds) != 1:
        raise bad(f"source needs exactly one of {list(_SOURCE_KINDS)}")
    kind = kinds[0]
    unknown = set(raw) - {kind, "config", "splits", "columns", "labels", "test_fraction"}
    if unknown:
        raise bad(f"unknown source keys {sorted(unknown)}")
    for key in ("splits", "columns", "labels"):
        if key in raw and not isinstance(raw[key], Mapping):
            raise bad(f"source.{key} must be a mapping")
    columns = {str(k): str(v) for k, v in (raw.get("columns") or {}).items()}
    extra = set(columns) - set(fields) - {"label", "split", "id"}
    if extra:
        raise bad(f"source.columns maps unknown fields {sorted(extra)} (fields are {list(fields)})")
    fraction = float(raw.get("test_fraction", DEFAULT_TEST_FRACTION))
    if not 0 < fraction < 1:
        raise bad(f"source.test_fraction must be within (0, 1), got {fraction}")
    config = raw.get("config")
    return Source(
        kind=kind,
        name=str(raw[kind]),
        config=str(config) if config is not None else None,
        splits=_frozen({str(k): str(v) for k, v in (raw.get("splits") or {}).items()}),
        columns=_frozen(columns),
        label_map=_frozen({str(k): str(v) for k, v in (raw.get("labels") or {}).items()}),
        test_fraction=fraction,
    )


def _builtin_dir() -> Any:
    return resources.files("engine.tasks").joinpath("builtin")


def list_builtin() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


_CACHE: dict[str, Task] = {}


def load_task(name_or_path: str | Path) -> Task:
    """A built-in task by name, or a task YAML file by path."""
    key = str(name_or_path)
    if key in _CACHE:  # built-ins only: files may change between calls
        return _CACHE[key]
    path = Path(key)
    if key.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"task file {key} does not exist", hint="pass a built-in task name or a YAML path")
        raw = read_yaml(path)
        source_path: Path | None = path.resolve()
    else:
        resource = _builtin_dir().joinpath(f"{key}.yaml")
        if not resource.is_file():
            raise ConfigError(
                f"unknown task {key!r}",
                hint=f"built-in tasks: {', '.join(list_builtin())}; or pass a task YAML file",
            )
        raw = parse_yaml(resource.read_text(encoding="utf-8"), source=f"built-in task {key}")
        source_path = None
    task = Task.from_dict(raw, path=source_path)
    if source_path is None:
        _CACHE[key] = task
    return task
