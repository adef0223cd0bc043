"""Run every benchmark, each in its own process, and write ``benchmarks/results/SUMMARY.md``.

A benchmark is any ``benchmarks/bench_NAME.py``: it runs as ``python -m
benchmarks.bench_NAME`` in a subprocess of its own (its own process group, so a
timeout also ends the servers it started) and writes ``benchmarks/results/NAME.json``
through ``benchmarks.record.write_results``. One benchmark failing or timing out
does not stop the others: it is reported with the tail of its stderr. Full output
goes to ``benchmarks/results/logs/NAME.{stdout,stderr}.txt``.

The summary is put together from the modules themselves: the first line of a
module's docstring is its title, its ``render(result) -> str`` its section,
its optional ``headline(result)`` the ratios in the summary table (otherwise every
key saying ``ratio`` or ``speedup``) and its optional ``TIMEOUT_S`` its time
budget. Each section names the machine its results were measured on. Benchmarks
not run this time (``--only``, ``--skip``) keep their last results, marked with
the time they were written.

    python -m benchmarks.run_all                       # everything (what `make bench` runs)
    python -m benchmarks.run_all --only client,dedup
    python -m benchmarks.run_all --skip e2e --skip endpoint
    python -m benchmarks.run_all --full                # BENCH_FULL=1: the full sizes
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .machine import describe, machine_info
from .markdown import MISSING, Headline, headline_generic, render_generic, table
from .record import RESULTS_DIR, load_results, results_path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOGS = RESULTS_DIR / "logs"
SUMMARY = RESULTS_DIR / "SUMMARY.md"
#: Seconds a benchmark may run before its process group is stopped, unless its module sets ``TIMEOUT_S``.
TIMEOUT_S = 1800.0
#: Seconds between SIGTERM and SIGKILL when stopping a benchmark.
KILL_GRACE_S = 10.0
#: Lines of stderr shown in the summary for a failed benchmark.
STDERR_TAIL = 15

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Benchmark:
    """A ``bench_NAME`` module as the runner sees it; ``module`` is None when it does not import here."""

    name: str
    module: ModuleType | None
    import_error: str = ""

    @property
    def title(self) -> str:
        doc = (self.module.__doc__ if self.module else None) or ""
        return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else self.name

    @property
    def timeout_s(self) -> float:
        return float(getattr(self.module, "TIMEOUT_S", TIMEOUT_S))

    def render(self, data: dict[str, Any]) -> str:
        fn: Callable[[dict[str, Any]], str] = getattr(self.module, "render", render_generic)
        return _safe(fn, data, lambda exc: f"(could not render: {exc!r}; see the JSON)\n\n{render_generic(data)}")

    def headline(self, data: dict[str, Any]) -> Headline:
        fn: Callable[[dict[str, Any]], Headline] = getattr(self.module, "headline", headline_generic)
        return _safe(fn, data, lambda exc: headline_generic(data))


@dataclass(slots=True)
class Outcome:
    name: str
    status: str  # ok | failed | timeout | interrupted | not run
    seconds: float = 0.0
    detail: str = ""
    stderr_tail: str = ""
    results: dict[str, Any] | None = None
    results_time: float | None = None  # when the results were written, if in an earlier run


def discover() -> list[str]:
    """Every ``benchmarks/bench_*.py``, by name."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def load(name: str) -> Benchmark:
    """Import ``benchmarks.bench_NAME`` for its render/headline/title; a module that fails to import renders generically."""
    try:
        return Benchmark(name, importlib.import_module(f"benchmarks.bench_{name}"))
    except Exception as exc:
        return Benchmark(name, None, f"{type(exc).__name__}: {exc}")


def _safe(fn: Callable[[dict[str, Any]], T], data: dict[str, Any], fallback: Callable[[Exception], T]) -> T:
    """A renderer must never lose the summary: on a surprise shape, fall back."""
    try:
        return fn(data)
    except Exception as exc:
        return fallback(exc)


def _names(values: Sequence[str] | None) -> set[str]:
    out: set[str] = set()
    for value in values or ():
        out.update(v.strip().removeprefix("bench_") for v in value.split(",") if v.strip())
    return out


def _tail(path: Path, lines: int = STDERR_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the benchmark's process group (the benchmark and the servers it started)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(name: str, timeout_s: float, env: dict[str, str]) -> Outcome:
    """Run one benchmark; its results are believed only if it exited 0 *and* rewrote its JSON."""
    out_file = results_path(name)
    before = out_file.stat().st_mtime if out_file.exists() else None
    LOGS.mkdir(parents=True, exist_ok=True)
    stdout_log, stderr_log = LOGS / f"{name}.stdout.txt", LOGS / f"{name}.stderr.txt"
    t0 = time.perf_counter()
    with stdout_log.open("wb") as out, stderr_log.open("wb") as err:
        command = [sys.executable, "-m", f"benchmarks.bench_{name}"]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            took = time.perf_counter() - t0
            return Outcome(name, "timeout", took, f"stopped after {timeout_s:.0f} s", _tail(stderr_log))
        except KeyboardInterrupt:
            _stop(proc)
            return Outcome(name, "interrupted", time.perf_counter() - t0, "interrupted", _tail(stderr_log))
    seconds = time.perf_counter() - t0
    if code != 0:
        return Outcome(name, "failed", seconds, f"exit code {code}", _tail(stderr_log))
    if not out_file.exists() or (before is not None and out_file.stat().st_mtime <= before):
        return Outcome(
            name, "failed", seconds, f"exited 0 but did not write results/{out_file.name}", _tail(stderr_log)
        )
    data = load_results(out_file)
    if data is None:
        return Outcome(name, "failed", seconds, f"results/{out_file.name} is not valid JSON", _tail(stderr_log))
    return Outcome(name, "ok", seconds, results=data)


def earlier(name: str) -> Outcome:
    """A benchmark not run this time: its last results, if any, marked with their time."""
    path = results_path(name)
    data = load_results(path) if path.exists() else None
    if data is None:
        return Outcome(name, "not run", detail="not run this time; no earlier results")
    return Outcome(name, "not run", detail="not run this time", results=data, results_time=_written_at(data, path))


def _written_at(data: dict[str, Any], path: Path) -> float:
    """When the results were written: their own ``written_at``, else the file's time (older files)."""
    try:
        return datetime.fromisoformat(str(data["written_at"])).timestamp()
    except (KeyError, ValueError):
        return path.stat().st_mtime


def section(bench: Benchmark, o: Outcome) -> list[str]:
    lines = ["", f"## {o.name}", "", f"{bench.title}.", ""]
    if o.status not in ("ok", "not run"):
        lines.append(f"**{o.status}**: {o.detail}.")
        if o.stderr_tail:
            lines += ["", "Tail of stderr:", "", "```text", o.stderr_tail, "```"]
        return lines
    if o.results is None:
        return [*lines, f"Not run this time, and no earlier results in `results/{o.name}.json`."]
    if o.results_time is not None:
        when = datetime.fromtimestamp(o.results_time)
        lines += [f"*Not run this time: results from an earlier run ({when:%Y-%m-%d %H:%M}).*", ""]
    lines += [f"Measured on: {describe(o.results.get('machine'))}.", ""]
    if bench.import_error:
        lines += [f"(benchmarks/bench_{o.name}.py does not import here: {bench.import_error}; generic view)", ""]
    return [*lines, bench.render(o.results)]


def render_summary(outcomes: Sequence[Outcome], started: datetime, machine: dict[str, Any] | None = None) -> str:
    benches = {o.name: load(o.name) for o in outcomes}
    lines = [
        "# Benchmark summary",
        "",
        f"Written by `python -m benchmarks.run_all` on {started:%Y-%m-%d %H:%M}. "
        "Every ratio compares the measured path with its baseline **in the same run**; "
        "the raw figures are in `benchmarks/results/NAME.json`, each with the machine that measured it.",
        "",
        f"This run's machine: {describe(machine if machine is not None else machine_info())}.",
        "",
    ]
    rows = []
    for o in outcomes:
        heads = benches[o.name].headline(o.results) if o.results is not None else []
        shown = "<br>".join(f"{k}: {v}" for k, v in heads) or MISSING
        status = o.status + (f" ({o.detail})" if o.status not in ("ok", "not run") and o.detail else "")
        if o.results_time is not None:
            status += f" (results from {datetime.fromtimestamp(o.results_time):%Y-%m-%d %H:%M})"
        rows.append([o.name, status, f"{o.seconds:.1f} s" if o.seconds else MISSING, shown])
    lines += table(["benchmark", "status", "time", "headline ratios"], rows, numeric_from=4)
    for o in outcomes:
        lines += section(benches[o.name], o)
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", metavar="NAME[,NAME]", help="run only these (e.g. client,dedup)")
    p.add_argument("--skip", action="append", metavar="NAME", help="do not run this one (repeatable)")
    p.add_argument("--timeout", type=float, help=f"seconds per benchmark (default {TIMEOUT_S:.0f}, or its TIMEOUT_S)")
    p.add_argument("--full", action="store_true", help="set BENCH_FULL=1: the full sizes")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return p


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    only, skip = _names(args.only), _names(args.skip)
    unknown = (only | skip) - set(names)
    if unknown:
        print(f"bench: unknown benchmark(s): {', '.join(sorted(unknown))} (known: {', '.join(names)})", file=sys.stderr)
        return 2
    selected = [n for n in names if (not only or n in only) and n not in skip]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.full:
        env["BENCH_FULL"] = "1"
    started, machine = datetime.now(), machine_info()
    outcomes: list[Outcome] = []
    interrupted = False
    for i, name in enumerate(names):
        if name not in selected or interrupted:
            outcomes.append(earlier(name))
            continue
        timeout_s = args.timeout or load(name).timeout_s
        _progress(f"[{i + 1}/{len(names)}] {name}: running (timeout {timeout_s:.0f} s)")
        o = run_one(name, timeout_s, env)
        outcomes.append(o)
        took = f" in {o.seconds:.1f} s" if o.seconds else ""
        _progress(f"[{i + 1}/{len(names)}] {name}: {o.status}{took}" + (f" - {o.detail}" if o.detail else ""))
        interrupted = o.status == "interrupted"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(render_summary(outcomes, started, machine))
    _progress(f"summary: {SUMMARY.relative_to(ROOT)}")
    if interrupted:
        return 130
    ran = [o for o in outcomes if o.name in selected and o.status != "not run"]
    return 0 if all(o.status == "ok" for o in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
