"""Reports: markdown tables, JSON written atomically, PNG line plots, and the experiment's report.

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

__all__ = [
    "REAL_FULL",
    "REAL_ONLY",
    "Series",
    "aggregate",
    "experiment_markdown",
    "experiment_plots",
    "fmt",
    "markdown_table",
    "plot_lines",
    "read_json",
    "write_experiment_reports",
    "write_json",
    "write_text",
]


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


# -- the experiment's report --------------------------------------------------------------------------------------

#: Approach names of the real-only baselines in an experiment's cells.
REAL_ONLY = "real-only"
REAL_FULL = "real-full"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return mean, math.sqrt(var)


def aggregate(cells: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, int, int], dict[str, float]]:
    """Cells grouped by ``(approach, quantity, real_n)`` over seeds: mean and std of accuracy and macro-F1."""
    groups: dict[tuple[str, int, int], list[Mapping[str, Any]]] = {}
    for cell in cells.values():
        groups.setdefault((cell["approach"], int(cell["quantity"]), int(cell["real_n"])), []).append(cell)
    out = {}
    for key, rows in sorted(groups.items()):
        acc, acc_sd = _mean_std([r.get("accuracy") for r in rows])  # type: ignore[misc]
        f1, f1_sd = _mean_std([r.get("macro_f1") for r in rows])  # type: ignore[misc]
        n_real = max(int(r.get("n_real", 0)) for r in rows)
        out[key] = {"accuracy": acc, "accuracy_std": acc_sd, "macro_f1": f1, "macro_f1_std": f1_sd}
        out[key] |= {"seeds": len(rows), "n_real": n_real}
    return out


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std > 0 else f"{mean:.3f}"


def experiment_markdown(results: Mapping[str, Any]) -> str:
    """``results.md``: per real-mix size, accuracy (macro-F1) by approach x quantity, baselines, then quality."""
    grid = results["grid"]
    agg = aggregate(results["cells"])
    quantities = list(grid["quantities"])
    parts = [
        f"# Experiment: {grid['task']}\n\n",
        f"Approaches {', '.join(grid['approaches'])}; synthetic quantities {quantities}; "
        f"real examples mixed in {list(grid['real_mix'])}; seeds {list(grid['seeds'])}. "
        "Cells show accuracy (macro-F1), mean ± std over seeds, on the real test split.\n",
    ]
    if results.get("eval"):
        ev = results["eval"]
        parts.append(
            f"\nHead {ev['head']}, class weight {ev['class_weight'] or 'none'}, "
            f"C {ev['C'] if ev['C'] is not None else 'chosen by cross-validation on each training set'}"
            f"{', synthetic data cleaned first' if ev.get('clean') else ''}.\n"
        )
    full = agg.get((REAL_FULL, 0, -1))
    for r in grid["real_mix"]:
        parts.append(f"\n## {'Synthetic only' if r == 0 else f'Synthetic + {r} real'}\n\n")
        rows = []
        for a in grid["approaches"]:
            row: list[Any] = [a]
            for q in quantities:
                m = agg.get((a, q, r))
                ok = m is not None and math.isfinite(m["accuracy"])
                row.append(f"{_pm(m['accuracy'], m['accuracy_std'])} ({fmt(m['macro_f1'])})" if ok and m else "–")
            rows.append(row)
        parts.append(markdown_table(["approach", *map(str, quantities)], rows, align="l" + "r" * len(quantities)))
        base = []
        if (only := agg.get((REAL_ONLY, 0, r))) is not None:
            base.append(f"{r} real only: {_pm(only['accuracy'], only['accuracy_std'])} ({fmt(only['macro_f1'])})")
        if full is not None:
            base.append(
                f"full real train ({full['n_real']}): {_pm(full['accuracy'], full['accuracy_std'])} "
                f"({fmt(full['macro_f1'])})"
            )
        if (majority := results.get("majority_baseline")) is not None:
            base.append(
                f"always {majority['label']} (majority class): {fmt(majority['accuracy'])} ({fmt(majority['macro_f1'])})"
            )
        if base:
            parts.append("\nBaselines: " + "; ".join(base) + ".\n")
    for name, what in (("prior_known", "the given label prior"), ("prior_em", "the EM estimate of the test prior")):
        corrected = {k: {**c, **c[name]} for k, c in results["cells"].items() if isinstance(c.get(name), dict)}
        if not corrected:
            continue
        agg_c = aggregate(corrected)
        parts.append(f"\n## Corrected by {what} (accuracy (macro-F1))\n\n")
        rows = [
            [f"{a} + {r} real" if r else a]
            + [
                f"{_pm(m['accuracy'], m['accuracy_std'])} ({fmt(m['macro_f1'])})"
                if (m := agg_c.get((a, q, r)))
                else "–"
                for q in quantities
            ]
            for r in grid["real_mix"]
            for a in grid["approaches"]
        ]
        parts.append(markdown_table(["approach", *map(str, quantities)], rows, align="l" + "r" * len(quantities)))
    quality = results.get("quality") or {}
    if quality:
        from .quality import summary_rows

        names = [name for name, _ in summary_rows(next(iter(quality.values())))]
        rows = [[key, *(v for _, v in summary_rows(q))] for key, q in sorted(quality.items())]
        parts.append("\n## Quality of the generated data (largest quantity)\n\n")
        parts.append(markdown_table(["corpus", *names], rows, align="l" + "r" * len(names)))
    return "".join(parts)


def experiment_plots(results: Mapping[str, Any], out: str | Path) -> list[Path]:
    """One PNG per real-mix size: accuracy against synthetic quantity per approach, baselines as dashed lines."""
    grid = results["grid"]
    agg = aggregate(results["cells"])
    full = agg.get((REAL_FULL, 0, -1))
    paths = []
    for r in grid["real_mix"]:
        series = []
        for a in grid["approaches"]:
            pts = [(q, agg[(a, q, r)]) for q in grid["quantities"] if (a, q, r) in agg]
            pts = [(q, m) for q, m in pts if math.isfinite(m["accuracy"])]
            if pts:
                series.append(
                    Series(
                        label=a,
                        x=[q for q, _ in pts],
                        y=[m["accuracy"] for _, m in pts],
                        err=[m["accuracy_std"] for _, m in pts],
                    )
                )
        hlines = {}
        if (only := agg.get((REAL_ONLY, 0, r))) is not None:
            hlines[f"{r} real only"] = only["accuracy"]
        if full is not None:
            hlines[f"full real ({full['n_real']})"] = full["accuracy"]
        title = f"{grid['task']}: synthetic only" if r == 0 else f"{grid['task']}: synthetic + {r} real"
        paths.append(
            plot_lines(
                Path(out) / f"accuracy_real{r}.png",
                series,
                hlines=hlines,
                title=title,
                xlabel="synthetic examples",
                ylabel="accuracy on real test",
            )
        )
    return paths


def write_experiment_reports(results: Mapping[str, Any], out: str | Path) -> list[Path]:
    """Write ``results.md`` and the plots into ``out``; return the paths written."""
    md = write_text(Path(out) / "results.md", experiment_markdown(results))
    return [md, *experiment_plots(results, out)]
