"""Reports: markdown tables, JSON written atomically, PNG line plots.

Nothing here computes a metric; ``experiment`` and ``inspect`` hand over
numbers and get files back. Plots use matplotlib's object API with the Agg
canvas (no pyplot global state, no display needed), imported lazily so that
importing this module stays cheap.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Series", "fmt", "markdown_table", "plot_lines", "read_json", "write_json", "write_text"]


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and arrays, paths and sets."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically. NaN becomes ``null`` so the file stays strict JSON."""
    text = json.dumps(_strip_nan(obj), indent=2, ensure_ascii=False, default=_jsonable, allow_nan=False)
    return write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _strip_nan(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _strip_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strip_nan(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):
        return _strip_nan(obj.tolist())
    return obj


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, ``None``/NaN as an en dash, everything else as ``str``."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str = "") -> str:
    """A GitHub-flavoured markdown table. ``align`` has one of ``l``/``r``/``c`` per column (default: left)."""
    cells = [[fmt(c).replace("|", "\\|") for c in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, expected {len(headers)}: {row}")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    seps = [rule.get(align[i] if i < len(align) else "l", "---") for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, kw_only=True)
class Series:
    """One line of a plot: ``y[i]`` at ``x[i]``, with an optional error bar ``err[i]``."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    err: Sequence[float] = field(default_factory=tuple)


def plot_lines(
    path: str | Path,
    series: Sequence[Series],
    *,
    hlines: Mapping[str, float] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Draw ``series`` as lines with markers and ``hlines`` as dashed reference lines; save a PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in series:
        if s.err and any(e > 0 for e in s.err):
            ax.errorbar(s.x, s.y, yerr=s.err, marker="o", capsize=3, label=s.label)
        else:
            ax.plot(s.x, s.y, marker="o", label=s.label)
    styles = ["--", ":", "-."]
    for i, (name, value) in enumerate((hlines or {}).items()):
        if value is not None and math.isfinite(value):
            ax.axhline(value, linestyle=styles[i % len(styles)], color=f"C{len(series) + i}", label=name)
    if series and all(len(s.x) for s in series):
        xs = sorted({float(x) for s in series for x in s.x})
        ax.set_xticks(xs)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, alpha=0.3)
    if series or hlines:
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
