"""The live view, rendered into a StringIO console with a fixed width and clock."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

from rich.console import Console

from engine.ui import LiveView, derive, format_line, print_summary, render, render_summary

SNAP: dict[str, Any] = {
    "requests": 1200,
    "in_flight": 17,
    "retries": 9,
    "rate_limited": 4,
    "failed": 2,
    "accepted": 2500,
    "rejected": 31,
    "target": 10000,
    "prompt_tokens": 300000,
    "completion_tokens": 180000,
    "elapsed_s": 60.0,
    "rpm_limit": 1500,
    "tpm_limit": 200000,
    "limits_learned": True,
    "rpm_used": 1190,
    "tpm_used": 150000,
    "cost_usd": 0.4321,
    "concurrency": 48,
    "phase": "generating",
}


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=100, force_terminal=True, color_system=None), buf


def _text(renderable: Any) -> str:
    console, buf = _console()
    console.print(renderable)
    return buf.getvalue()


def test_derive_rates_progress_and_eta() -> None:
    d = derive(SNAP)
    assert d["req_per_s"] == 20.0
    assert d["tok_per_s"] == 8000.0
    assert d["fraction"] == 0.25
    assert d["eta_s"] == 180.0  # 7,500 left at 2,500/60 s
    assert derive({"accepted": 10, "target": 10})["eta_s"] == 0.0
    assert derive({})["eta_s"] is None and derive({})["req_per_s"] is None


def test_a_resumed_run_shows_this_sessions_rates_not_the_totals_over_this_sessions_time() -> None:
    resumed = {"elapsed_s": 10.0, "requests": 1_000_000, "session_requests": 2_500, "accepted": 900_000,
               "session_accepted": 2_000, "target": 1_000_000, "prompt_tokens": 9, "completion_tokens": 1,
               "session_tokens": 10}  # fmt: skip
    d = derive(resumed)
    assert d["req_per_s"] == 250.0 and d["accepted_per_s"] == 200.0 and d["tok_per_s"] == 1.0
    assert d["eta_s"] == 500.0  # 100,000 left at this session's 200/s


def test_render_shows_key_numbers() -> None:
    out = _text(render(SNAP))
    for expected in (
        "1,200 (20.0/s)",
        "17 (cap 48)",
        "2,500 / 10,000",
        "300,000 / 180,000",
        "8,000.0",
        "1,190 / 1,500 (learned)",
        "150,000 / 200,000 (learned)",
        "$0.4321",
        "generating",
        "1:00",  # elapsed
        "3:00",  # ETA
        "25.0%",
    ):
        assert expected in out, expected


def test_missing_keys_show_dash() -> None:
    out = _text(render({}, elapsed=0.0))
    assert "- / -" in out and "requests" in out and "25.0%" not in out
    line = format_line({})
    assert "requests=-" in line and "ETA=-" in line and "cost=-" in line


def test_elapsed_falls_back_to_the_view_clock() -> None:
    now = [100.0]
    console, buf = _console()
    view = LiveView(lambda: {"requests": 50}, console=console, clock=lambda: now[0], live=False)
    now[0] += 10.0
    out = _text(view.renderable())
    assert "50 (5.0/s)" in out and "0:10" in out


def test_summary_table() -> None:
    out = _text(render_summary(SNAP))
    assert "run summary" in out and "2,500 / 10,000" in out and "$0.4321" in out
    console, buf = _console()
    print_summary({"accepted": 7}, console)
    assert "7 / -" in buf.getvalue()


def test_live_mode_pulls_snapshots_on_its_own() -> None:
    calls = threading.Event()
    count = [0]

    def snapshot() -> dict[str, Any]:
        count[0] += 1
        calls.set()
        return {**SNAP, "requests": 4242}

    console, buf = _console()
    with LiveView(snapshot, console=console, clock=lambda: 0.0, refresh_per_second=20) as view:
        assert view.is_live
        assert calls.wait(5), "the live view never pulled a snapshot"
    assert count[0] >= 1
    assert "4,242" in buf.getvalue()


def test_non_tty_prints_log_lines() -> None:
    log = io.StringIO()
    console = Console(file=io.StringIO(), width=100)  # not a terminal
    with LiveView(lambda: SNAP, console=console, log_every_s=0.01, log_file=log) as view:
        assert not view.is_live
        deadline = time.monotonic() + 5
        while log.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 2
    assert "requests=1,200 (20.0/s)" in lines[0]
    assert "accepted=2,500 / 10,000 (25.0%)" in lines[0]
    assert "\x1b[" not in log.getvalue()  # plain text, no escape codes
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]


def test_a_failing_snapshot_keeps_the_last_one() -> None:
    state = {"fail": False}

    def snapshot() -> dict[str, Any]:
        if state["fail"]:
            raise RuntimeError("dictionary changed size during iteration")
        return {"requests": 3}

    log = io.StringIO()
    view = LiveView(snapshot, console=Console(file=io.StringIO()), log_file=log, live=False)
    assert "requests=3" in view.log_line()
    state["fail"] = True
    assert "requests=3" in view.log_line()
