"""Small markdown pieces the benchmarks' ``render`` functions share, and the generic section for any results.

Renderers read results through ``get`` and format through ``fmt``/``ratio``, so a
results file of an older shape renders with ``-`` where a figure is missing
instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MISSING = "-"
#: Most rows of figures ``render_generic`` shows.
GENERIC_ROWS = 40
#: Top-level keys that are context, not figures.
CONTEXT_KEYS = frozenset({"benchmark", "written_at", "machine"})

Headline = list[tuple[str, str]]


def get(data: Any, dotted: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``, or None when any step is missing."""
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value: Any, suffix: str = "") -> str:
    """A figure for a table: 3 significant digits below 100, thousands separators above."""
    if value is None or isinstance(value, dict | list):
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return text + suffix
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return str(value)


def ratio(value: Any) -> str:
    return f"{value:.3g}x" if is_number(value) else MISSING


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> list[str]:
    """A markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def headline_table(heads: Headline) -> list[str]:
    return table(["ratio", "value"], [list(h) for h in heads])


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out += flatten(value, f"{prefix}{key}.")
        return out
    return [(prefix.rstrip("."), data)]


def figures(data: dict[str, Any]) -> dict[str, Any]:
    """The results without their context keys (benchmark name, time, machine)."""
    return {k: v for k, v in data.items() if k not in CONTEXT_KEYS}


def headline_generic(data: dict[str, Any]) -> Headline:
    """Every numeric value under a key that says ``ratio`` or ``speedup``, at any depth."""
    return [
        (key, ratio(v))
        for key, v in flatten(figures(data))
        if is_number(v) and ("ratio" in key.lower() or "speedup" in key.lower())
    ]


def render_generic(data: dict[str, Any]) -> str:
    """Numbers at the top level and one level down, then the ratios and speedups."""
    heads = headline_generic(data)
    shown = {k for k, _ in heads}
    rows: list[list[str]] = []
    for key, value in figures(data).items():
        if is_number(value) and key not in shown:
            rows.append([key, fmt(value)])
        elif isinstance(value, dict):
            rows += [[f"{key}.{k}", fmt(v)] for k, v in value.items() if is_number(v) and f"{key}.{k}" not in shown]
    lines = table(["figure", "value"], rows[:GENERIC_ROWS]) if rows else []
    if heads:
        lines += ([""] if lines else []) + headline_table(heads)
    return "\n".join(lines or ["(no numeric figures near the top level; see the JSON)"])
