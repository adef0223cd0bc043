"""The live view of a run: the only engine module that imports rich.

``LiveView`` is not driven by the engine. It *pulls* a stats snapshot through a
callable on each refresh: on a terminal, rich's ``Live`` refresh thread renders
a panel about four times a second; otherwise a small background thread writes
a plain log line every ``log_every_s`` seconds. Every key of the snapshot is
optional and shows as ``-`` when missing. ``print_summary`` prints the final
table either way.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

__all__ = ["LiveView", "derive", "format_line", "print_summary", "render", "render_summary"]

Snapshot = dict[str, Any]
DEFAULT_REFRESH_PER_SECOND = 4.0
DEFAULT_LOG_EVERY_S = 10.0
MISSING = "-"


def _num(value: Any, digits: int = 0) -> str:
    if value is None or isinstance(value, bool):
        return MISSING
    if isinstance(value, int) or digits == 0:
        return f"{round(value):,}"
    return f"{value:,.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:  # None, NaN or negative
        return MISSING
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _rate(count: Any, elapsed: float | None) -> float | None:
    if not isinstance(count, int | float) or not elapsed or elapsed <= 0:
        return None
    return count / elapsed


def derive(snap: Snapshot, elapsed: float | None = None) -> dict[str, Any]:
    """Rates, progress and ETA computed from a snapshot (``elapsed`` when the snapshot has no ``elapsed_s``)."""
    elapsed = snap.get("elapsed_s", elapsed)
    tokens = None
    if "prompt_tokens" in snap or "completion_tokens" in snap:
        tokens = snap.get("prompt_tokens", 0) + snap.get("completion_tokens", 0)
    accepted, target = snap.get("accepted"), snap.get("target")
    # a resumed run: rates are this session's work over this session's time, not the whole run's totals
    session_requests = snap.get("session_requests", snap.get("requests"))
    session_tokens = snap.get("session_tokens", tokens)
    accepted_rate = _rate(snap.get("session_accepted", accepted), elapsed)
    fraction = eta = None
    if isinstance(accepted, int | float) and isinstance(target, int | float) and target > 0:
        fraction = min(1.0, accepted / target)
        if accepted >= target:
            eta = 0.0
        elif accepted_rate:
            eta = (target - accepted) / accepted_rate
    return {
        "elapsed_s": elapsed,
        "tokens": tokens,
        "req_per_s": _rate(session_requests, elapsed),
        "tok_per_s": _rate(session_tokens, elapsed),
        "accepted_per_s": accepted_rate,
        "fraction": fraction,
        "eta_s": eta,
    }


def _used_vs_limit(snap: Snapshot, used: str, limit: str) -> str:
    text = f"{_num(snap.get(used))} / {_num(snap.get(limit))}"
    if snap.get(limit) is not None and snap.get("limits_learned"):
        text += " (learned)"
    return text


def _rows(snap: Snapshot, d: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) pairs shared by the live panel, the summary and the log line."""
    req_rate = d["req_per_s"]
    return [
        ("phase", str(snap.get("phase", MISSING))),
        ("elapsed", _duration(d["elapsed_s"])),
        ("requests", _num(snap.get("requests")) + (f" ({req_rate:,.1f}/s)" if req_rate is not None else "")),
        ("in flight", f"{_num(snap.get('in_flight'))} (cap {_num(snap.get('concurrency'))})"),
        ("retries", _num(snap.get("retries"))),
        ("rate limited", _num(snap.get("rate_limited"))),
        ("failed", _num(snap.get("failed"))),
        ("accepted", f"{_num(snap.get('accepted'))} / {_num(snap.get('target'))}"),
        ("rejected", _num(snap.get("rejected"))),
        ("tokens in/out", f"{_num(snap.get('prompt_tokens'))} / {_num(snap.get('completion_tokens'))}"),
        ("tokens/s", _num(d["tok_per_s"], 1)),
        ("RPM used/limit", _used_vs_limit(snap, "rpm_used", "rpm_limit")),
        ("TPM used/limit", _used_vs_limit(snap, "tpm_used", "tpm_limit")),
        ("cost", MISSING if snap.get("cost_usd") is None else f"${snap['cost_usd']:,.4f}"),
        ("ETA", _duration(d["eta_s"])),
    ] + _batch_rows(snap)


def _batch_rows(snap: Snapshot) -> list[tuple[str, str]]:
    """Batch mode's totals (``generate --batch``), when the snapshot has them."""
    if "batches_submitted" not in snap:
        return []
    counts = ", ".join(f"{_num(snap.get(f'batches_{k}'))} {k}" for k in ("completed", "expired", "failed", "cancelled"))
    limit = snap.get("enqueued_token_limit")
    queued = f"{_num(snap.get('enqueued_tokens'))}" + (f" / {_num(limit)}" if limit is not None else "")
    return [("batches", f"{_num(snap.get('batches_submitted'))} submitted: {counts}"), ("enqueued tokens", queued)]


def _batch_table(rows: list[dict[str, Any]]) -> Table:
    """One row per batch input file: its batch, status and request counts (the newest few)."""
    table = Table(show_header=True, header_style="dim", box=None, padding=(0, 1))
    for name in ("file", "batch", "status", "requests", "completed", "failed"):
        table.add_column(name, justify="right" if name in ("requests", "completed", "failed") else "left")
    for row in rows:
        table.add_row(
            str(row.get("file", "")),
            str(row.get("batch_id", "")) or MISSING,
            str(row.get("status", "")),
            _num(row.get("requests")),
            _num(row.get("completed")),
            _num(row.get("failed")),
        )
    return table


def _node_table(rows: list[dict[str, Any]]) -> Table:
    """A cluster run (``generate --ray``): one row per node, the sums of the shards running there."""
    table = Table(show_header=True, header_style="dim", box=None, padding=(0, 1))
    names = ("node", "shards", "requests", "req/s", "in flight", "accepted", "429s")
    keys = ("node", "shards", "requests", "requests_per_s", "in_flight", "accepted", "rate_limited")
    for name in names:
        table.add_column(name, justify="left" if name == "node" else "right")
    for row in rows:
        table.add_row(
            str(row.get("node", "")), *(_num(row.get(k), 1 if k == "requests_per_s" else 0) for k in keys[1:])
        )
    return table


def render(snap: Snapshot, *, elapsed: float | None = None, title: str = "corpusforge") -> RenderableType:
    """The live panel: two columns of figures and a progress bar for accepted/target."""
    d = derive(snap, elapsed)
    rows = _rows(snap, d)
    grid = Table.grid(padding=(0, 2))
    for _ in range(2):
        grid.add_column(style="dim", justify="right")
        grid.add_column()
    half = (len(rows) + 1) // 2
    for left, right in zip(rows[:half], rows[half:] + [("", "")], strict=True):
        grid.add_row(*left, *right)
    parts: list[RenderableType] = [grid]
    if d["fraction"] is not None:
        bar = Table.grid(padding=(0, 1))
        bar.add_column(ratio=1)
        bar.add_column(justify="right")
        bar.add_row(ProgressBar(total=1.0, completed=d["fraction"]), Text(f"{d['fraction']:.1%}"))
        parts.append(bar)
    if isinstance(snap.get("batches"), list) and snap["batches"]:
        parts.append(_batch_table(snap["batches"]))
    if isinstance(snap.get("nodes"), list) and snap["nodes"]:
        parts.append(_node_table(snap["nodes"]))
    return Panel(Group(*parts), title=title, border_style="blue")


def format_line(snap: Snapshot, *, elapsed: float | None = None) -> str:
    """One plain log line for a non-terminal: ``name=value`` pairs, ``-`` for what is unknown."""
    d = derive(snap, elapsed)
    pct = f" ({d['fraction']:.1%})" if d["fraction"] is not None else ""
    parts = [f"{name}={value}{pct if name == 'accepted' else ''}" for name, value in _rows(snap, d)]
    return " | ".join(parts)


def render_summary(snap: Snapshot, *, title: str = "run summary") -> Table:
    """The final summary table: every figure of the live view, one per row."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric", style="dim")
    table.add_column("value", justify="right")
    for name, value in _rows(snap, derive(snap)):
        table.add_row(name, value)
    return table


def print_summary(snap: Snapshot, console: Console | None = None, *, title: str = "run summary") -> None:
    """Print ``render_summary`` (on a terminal or not: rich drops the styling for a plain file)."""
    (console or Console()).print(render_summary(snap, title=title))


class LiveView:
    """A context manager showing a run's progress by pulling ``snapshot()`` on its own schedule.

    On a terminal (``console.is_terminal``) it runs rich ``Live`` at
    ``refresh_per_second``; otherwise it writes ``format_line`` to ``log_file``
    (stderr by default) every ``log_every_s`` seconds. ``clock`` measures the
    elapsed time when a snapshot carries no ``elapsed_s``.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_per_second: float = DEFAULT_REFRESH_PER_SECOND,
        log_every_s: float = DEFAULT_LOG_EVERY_S,
        log_file: TextIO | None = None,
        live: bool | None = None,
        title: str = "corpusforge",
    ) -> None:
        self._snapshot = snapshot
        self.console = console or Console()
        self._clock = clock
        self._started = clock()
        self.refresh_per_second = refresh_per_second
        self.log_every_s = log_every_s
        self._log_file = log_file
        self.is_live = self.console.is_terminal if live is None else live
        self.title = title
        self._last: Snapshot = {}
        self._live: Live | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> Snapshot:
        """The latest snapshot; the previous one if the callable fails (a view must never crash a run)."""
        with suppress(Exception):
            self._last = dict(self._snapshot())
        return self._last

    def elapsed(self) -> float:
        return self._clock() - self._started

    def renderable(self) -> RenderableType:
        return render(self.snapshot(), elapsed=self.elapsed(), title=self.title)

    def log_line(self) -> str:
        """Write one log line now (what the background thread does every ``log_every_s``) and return it."""
        line = format_line(self.snapshot(), elapsed=self.elapsed())
        out = self._log_file or sys.stderr
        print(line, file=out, flush=True)
        return line

    def _log_loop(self) -> None:
        while not self._stop.wait(self.log_every_s):
            self.log_line()

    def __enter__(self) -> LiveView:
        self._stop.clear()
        if self.is_live:
            self._live = Live(
                get_renderable=self.renderable,
                console=self.console,
                refresh_per_second=self.refresh_per_second,
                transient=False,
            )
            self._live.start()
        else:
            self._thread = threading.Thread(target=self._log_loop, name="corpusforge-log", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    async def __aenter__(self) -> LiveView:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)
