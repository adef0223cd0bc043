"""The live view in batch mode: per-batch status rows and the batch totals, rendered into a fixed-width console."""

from __future__ import annotations

import io

from rich.console import Console

from engine.ui import format_line, render

SNAP = {
    "phase": "batches running",
    "elapsed_s": 120.0,
    "accepted": 500,
    "target": 2000,
    "cost_usd": 0.0123,
    "batches_submitted": 3,
    "batches_completed": 1,
    "batches_expired": 1,
    "batches_failed": 0,
    "batches_cancelled": 0,
    "enqueued_tokens": 48_000,
    "enqueued_token_limit": 90_000,
    "batches": [
        {
            "file": "input-00001",
            "batch_id": "batch_a",
            "status": "completed",
            "requests": 1000,
            "completed": 990,
            "failed": 10,
        },
        {
            "file": "input-00002",
            "batch_id": "batch_b",
            "status": "in_progress",
            "requests": 1000,
            "completed": 412,
            "failed": 0,
        },
        {"file": "input-00003", "batch_id": "", "status": "create", "requests": 700, "completed": 0, "failed": 0},
    ],
}


def _text(snap: dict[str, object]) -> str:
    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(render(snap))
    return out.getvalue()


def test_the_panel_has_a_row_per_batch_and_the_totals() -> None:
    text = _text(SNAP)
    assert "batch_b" in text and "in_progress" in text and "412" in text
    assert "input-00003" in text and "create" in text
    assert "3 submitted: 1 completed, 1 expired, 0 failed, 0 cancelled" in text
    assert "48,000 / 90,000" in text
    assert "500 / 2,000" in text and "$0.0123" in text


def test_the_log_line_carries_the_batch_totals_and_online_runs_show_none() -> None:
    assert "batches=3 submitted" in format_line(SNAP)
    online = {k: v for k, v in SNAP.items() if not k.startswith(("batch", "enqueued"))}
    assert "batches=" not in format_line(online) and "batch_b" not in _text(online)
