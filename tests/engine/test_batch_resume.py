"""kill -9 at every step of ``generate --batch``, then ``--resume``: nothing lost, repeated, or paid twice.

For real: the CLI runs as a subprocess against ``serve-sim`` in another
subprocess, and kills itself with SIGKILL just before the K-th ledger event
of a kind (``--batch-crash-before EVENT:K``, a hidden flag), i.e. after the
step that event records has happened but before it is on disk. The resumed
run must end with exactly N unique examples, the simulator must have executed
every custom_id at most once, every executed request must be in the run's
journal (no downloaded result lost), and no provider file the ledger knows
may be left undeleted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.sim import SimConfig, sim_process
from engine.store import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
N = 60


def _cli(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "engine", "generate", "bbc-news", "--n", str(N), "--out", str(out)]
    argv += ["--base-url", url, "--model", "sim", "--max-tokens", "64", "--no-progress", "--no-reference-real"]
    argv += ["--batch", "--batch-max-requests", "20", "--batch-poll-s", "0.02", *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _sim_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/sim/batch-stats?ids=1", timeout=10) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def _kill_and_resume(tmp_path: Path, event: str, k: int) -> None:
    out = tmp_path / f"run-{event}-{k}"
    cfg = SimConfig(batch_phase_s=0.05, batch_rps=400, batch_error_rate=0.05, seed=11)
    with sim_process(cfg) as url:
        killed = _cli(url, out, "--batch-crash-before", f"{event}:{k}")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        resumed = _cli(url, out, "--resume")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        stats = _sim_stats(url)
    data = list(read_jsonl(out / "data.jsonl"))
    ids = [row["id"] for row in data]
    assert len(ids) == N and len(set(ids)) == N  # exactly N, no example twice
    counts = Counter(row["label"] for row in data)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert stats["executed_twice"] == 0, stats["executed_twice_sample"]  # no request paid twice
    journal = list(read_jsonl(out / "requests.jsonl"))
    assert len(journal) == len({row["request_id"] for row in journal})  # no request consumed twice
    ok = {row["request_id"] for row in journal if row["status"] == "ok"}
    assert set(stats["answered_ids"]) <= ok  # every answer paid for reached the chain: no result lost
    assert set(stats["executed_ids"]) <= {row["request_id"] for row in journal}
    final = json.loads((out / "stats.json").read_text())
    assert final["phase"] == "done" and final["accepted"] == N
    # every provider file the ledger knows is deleted; an upload killed before its id was recorded stays
    assert final["batch_files_left"] == 0
    assert stats["files_stored"] == (1 if event == "uploaded" else 0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("event", "k"),
    [
        ("written", 2),  # an input file on disk, not recorded: deleted, its requests planned again
        ("uploaded", 1),  # uploaded, not recorded: uploaded again (uploads are free), never created twice
        ("created", 1),  # the dangerous step: the batch exists (paid for), the ledger does not know its id
        ("created", 2),
        ("status", 2),  # while polling
        ("ended", 1),
        ("downloaded", 1),  # the output is on disk, not recorded: downloaded again
        ("ingested", 1),  # the chain wrote the outcomes, the ledger does not say so: nothing written twice
        ("ingested", 3),
        ("deleted", 1),  # deleted at the provider, not recorded: the resumed run's DELETE finds it gone (404)
        ("deleted", 4),
    ],
)
def test_kill_at_every_step_then_resume(tmp_path: Path, event: str, k: int) -> None:
    _kill_and_resume(tmp_path, event, k)


@pytest.mark.slow
def test_killed_again_and_again_then_resumed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = SimConfig(batch_phase_s=0.05, batch_rps=400, batch_error_rate=0.05, batch_expire_every=3, seed=13)
    with sim_process(cfg) as url:
        first = _cli(url, out, "--batch-crash-before", "created:1")
        assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
        for step in ("downloaded:1", "ingested:1", "written:1", "created:1", "ingested:1"):
            again = _cli(url, out, "--resume", "--batch-crash-before", step)
            assert again.returncode == -signal.SIGKILL, again.stderr[-2000:]
        last = _cli(url, out, "--resume")
        assert last.returncode == 0, last.stderr[-2000:]
        stats = _sim_stats(url)
    data = list(read_jsonl(out / "data.jsonl"))
    assert len(data) == N and len({row["id"] for row in data}) == N
    assert stats["executed_twice"] == 0
    journal = list(read_jsonl(out / "requests.jsonl"))
    assert len(journal) == len({row["request_id"] for row in journal})
    assert set(stats["answered_ids"]) <= {row["request_id"] for row in journal if row["status"] == "ok"}
