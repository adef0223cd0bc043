"""Run every benchmark, each in its own process, and write ``benchmarks/results/SUMMARY.md``.

Each ``benchmarks/bench_NAME.py`` runs as ``python -m benchmarks.bench_NAME`` in a
subprocess of its own (its own process group, so a timeout also ends the servers it
started), and writes ``benchmarks/results/NAME.json``. One benchmark failing,
timing out or not existing yet does not stop the others: it is reported with the
tail of its stderr. Full output goes to ``benchmarks/results/logs/NAME.{stdout,stderr}.txt``.

The summary shows, per benchmark, the headline ratios: each one a comparison with
its baseline measured in the same run. Benchmarks not run this time (``--only``,
``--skip``) keep their last results, marked with the time they were written.

    python -m benchmarks.run_all                       # everything (what `make bench` runs)
    python -m benchmarks.run_all --only client,dedup
    python -m benchmarks.run_all --skip e2e --skip endpoint
    python -m benchmarks.run_all --full                # BENCH_FULL=1: the full sizes
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
LOGS = RESULTS / "logs"
SUMMARY = RESULTS / "SUMMARY.md"

#: Known benchmarks, in the order they run; any other ``bench_*.py`` found runs after them.
BENCHMARKS = ("client", "dedup", "encoder", "e2e", "endpoint")
#: Seconds a benchmark may run before its process group is stopped.
TIMEOUT_S = 1800.0
#: Longer budgets for the benchmarks that drive the local LLM.
TIMEOUTS_S = {"e2e": 3600.0, "endpoint": 3600.0}
#: Seconds between SIGTERM and SIGKILL when stopping a benchmark.
KILL_GRACE_S = 10.0
#: Lines of stderr shown in the summary for a failed benchmark.
STDERR_TAIL = 15
#: Most rows of figures shown for a benchmark without its own renderer.
GENERIC_ROWS = 40

MISSING = "-"


@dataclass(slots=True)
class Outcome:
    name: str
    status: str  # ok | failed | timeout | missing | interrupted | not run
    seconds: float = 0.0
    detail: str = ""
    stderr_tail: str = ""
    results: dict[str, Any] | None = None
    results_time: float | None = None  # mtime of the results file, when it is from an earlier run


def discover() -> list[str]:
    """Known benchmarks first (present or not), then any other ``bench_*.py`` in this folder."""
    extra = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return list(BENCHMARKS) + [n for n in extra if n not in BENCHMARKS]


def _names(values: Sequence[str] | None) -> set[str]:
    out: set[str] = set()
    for value in values or ():
        out.update(v.strip().removeprefix("bench_") for v in value.split(",") if v.strip())
    return out


def results_path(name: str) -> Path:
    return RESULTS / f"{name}.json"


def load_results(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else {"value": data}


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
    module = f"benchmarks.bench_{name}"
    if not (HERE / f"bench_{name}.py").exists():
        return Outcome(name, "missing", detail=f"benchmarks/bench_{name}.py does not exist")
    out_file = results_path(name)
    before = out_file.stat().st_mtime if out_file.exists() else None
    LOGS.mkdir(parents=True, exist_ok=True)
    stdout_log, stderr_log = LOGS / f"{name}.stdout.txt", LOGS / f"{name}.stderr.txt"
    t0 = time.perf_counter()
    with stdout_log.open("wb") as out, stderr_log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return Outcome(
                name, "timeout", time.perf_counter() - t0, f"stopped after {timeout_s:.0f} s", _tail(stderr_log)
            )
        except KeyboardInterrupt:
            _stop(proc)
            return Outcome(name, "interrupted", time.perf_counter() - t0, "interrupted", _tail(stderr_log))
    seconds = time.perf_counter() - t0
    fresh = out_file.exists() and (before is None or out_file.stat().st_mtime > before)
    if code != 0:
        return Outcome(name, "failed", seconds, f"exit code {code}", _tail(stderr_log))
    if not fresh:
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
    return Outcome(name, "not run", detail="not run this time", results=data, results_time=path.stat().st_mtime)


def get(data: Any, dotted: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``, or None when any step is missing."""
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def fmt(value: Any, suffix: str = "") -> str:
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
    return MISSING if not isinstance(value, int | float) or isinstance(value, bool) else f"{value:.3g}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out += _flatten(value, f"{prefix}{key}.")
        return out
    return [(prefix.rstrip("."), data)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def headline_generic(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every numeric value under a key that says ``ratio`` or ``speedup``, at any depth."""
    return [
        (key, ratio(v))
        for key, v in _flatten(data)
        if _is_number(v) and ("ratio" in key.lower() or "speedup" in key.lower())
    ]


def section_generic(data: dict[str, Any]) -> list[str]:
    """Numbers at the top level and one level down, then the ratios and speedups."""
    heads = headline_generic(data)
    shown = {k for k, _ in heads}
    rows: list[list[str]] = []
    for key, value in data.items():
        if _is_number(value) and key not in shown:
            rows.append([key, fmt(value)])
        elif isinstance(value, dict):
            rows += [[f"{key}.{k}", fmt(v)] for k, v in value.items() if _is_number(v) and f"{key}.{k}" not in shown]
    lines = _table(["figure", "value"], rows[:GENERIC_ROWS]) if rows else []
    if heads:
        lines += ([""] if lines else []) + _table(["ratio", "value"], [[k, v] for k, v in heads])
    return lines or ["(no numeric figures near the top level; see the JSON)"]


def headline_client(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            "engine / bare aiohttp, requests per CPU-s (median pair)",
            ratio(get(data, "ratios.engine_vs_bare_requests_per_cpu_s")),
        ),
        ("engine / openai SDK, requests per CPU-s", ratio(get(data, "ratios.engine_vs_sdk_requests_per_cpu_s"))),
        ("engine / openai SDK, requests per s", ratio(get(data, "ratios.engine_vs_sdk_requests_per_s"))),
        (
            "engine with dedup / bare aiohttp, requests per CPU-s",
            ratio(get(data, "ratios.engine_with_dedup_vs_bare_requests_per_cpu_s")),
        ),
    ]


def section_client(data: dict[str, Any]) -> list[str]:
    sizes = ", ".join(
        f"{label} {fmt(get(data, key))}"
        for label, key in (("requests", "n_requests"), ("concurrency", "concurrency"), ("loop", "loop"))
    )
    rows = [
        [
            name,
            fmt(get(data, f"{name}.requests_per_s")),
            fmt(get(data, f"{name}.cpu_s_per_1k")),
            fmt(get(data, f"{name}.peak_rss_mb")),
        ]
        for name in ("bare_aiohttp", "openai_sdk", "engine", "engine_with_dedup")
    ]
    per_round = get(data, "ratios.engine_vs_bare_per_round")
    pairs = (
        f" The bare loop and the engine ran in {len(per_round)} adjacent pairs (engine / bare per pair: "
        f"{', '.join(ratio(x) for x in per_round)}); the table shows the median pair."
        if isinstance(per_round, list) and per_round
        else ""
    )
    lines = [f"Same simulator, one client after another ({sizes}).{pairs}", ""]
    lines += _table(["client", "requests/s", "CPU s / 1k requests", "peak RSS MB"], rows)
    lines += ["", *_table(["ratio", "value"], [list(r) for r in headline_client(data)]), ""]
    lines.append(
        f"- Learned rate limit ({fmt(get(data, 'rate_limit.rpm_limit'))} RPM on the server, not told to the engine): "
        f"{fmt(get(data, 'rate_limit.utilisation_pct'), '%')} of capacity used, "
        f"{fmt(get(data, 'rate_limit.rate_limited_pct'), '%')} of requests got 429."
    )
    lines.append(
        f"- Memory over {fmt(get(data, 'memory.requests'))} requests: RSS grew "
        f"{fmt(get(data, 'memory.growth_pct_after_20pct'), '%')} after the first 20% on the request path; "
        f"with the dedup index {fmt(get(data, 'memory_with_dedup.growth_pct_after_20pct'), '%')} "
        f"({fmt(get(data, 'memory_with_dedup.growth_bytes_per_request'))} bytes per kept example)."
    )
    return lines


def _corpora(data: dict[str, Any]) -> dict[str, Any]:
    corpora = get(data, "corpora")
    return corpora if isinstance(corpora, dict) else {}


def headline_dedup(data: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for kind in _corpora(data):
        out.append(
            (f"{kind} texts, vectorised / datasketch update", ratio(get(data, f"corpora.{kind}.speedup_vs_update")))
        )
        out.append(
            (
                f"{kind} texts, vectorised / datasketch update_batch",
                ratio(get(data, f"corpora.{kind}.speedup_vs_update_batch")),
            )
        )
    return out or headline_generic(data)


def section_dedup(data: dict[str, Any]) -> list[str]:
    knobs = ", ".join(
        f"{k} {fmt(get(data, f'knobs.{k}'))}" for k in ("num_perm", "threshold", "planted_fraction", "repeats")
    )
    rows = [
        [
            kind,
            fmt(get(data, f"corpora.{kind}.docs")),
            fmt(get(data, f"corpora.{kind}.docs_per_s.vectorised")),
            fmt(get(data, f"corpora.{kind}.docs_per_s.datasketch_update")),
            fmt(get(data, f"corpora.{kind}.docs_per_s.datasketch_update_batch")),
            ratio(get(data, f"corpora.{kind}.speedup_vs_update")),
            ratio(get(data, f"corpora.{kind}.speedup_vs_update_batch")),
            fmt(100 * a, "%") if _is_number(a := get(data, f"corpora.{kind}.agreement")) else MISSING,
        ]
        for kind in _corpora(data)
    ]
    if not rows:
        return section_generic(data)
    header = ["texts", "docs", "vectorised docs/s", "datasketch update docs/s", "update_batch docs/s"]
    header += ["speedup vs update", "speedup vs update_batch", "same keep/drop decisions"]
    return [f"Same texts, shingles and LSH index ({knobs}).", "", *_table(header, rows)]


def headline_e2e(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            "engine / sequential openai SDK, accepted examples/s",
            ratio(get(data, "ratios.engine_vs_sdk_accepted_per_s")),
        ),
        (
            "engine / sequential openai SDK, output tokens/s",
            ratio(get(data, "ratios.engine_vs_sdk_output_tokens_per_s")),
        ),
    ]


def headline_encoder(data: dict[str, Any]) -> list[tuple[str, str]]:
    name = str(get(data, "default_variant"))
    row = get(data, f"backends.{name}") or {}

    def points(key: str) -> str:
        value = row.get(f"{key}_delta_points")
        return f"{value:+.2f} points" if _is_number(value) else "-"

    def share(value: Any) -> str:
        return f"{100 * value:.1f}%" if _is_number(value) else "-"

    return [
        (f"{name} (default) / PyTorch, short texts per s", ratio(row.get("short_speedup"))),
        (f"{name} (default) / PyTorch, long texts per s", ratio(row.get("long_speedup"))),
        (
            f"{name} (default), accuracy change vs PyTorch, BBC / tweets",
            f"{points('accuracy')} / {points('tweets_accuracy')}",
        ),
        (f"{name} (default), BBC predictions agreeing with PyTorch", share(row.get("agreement_with_pytorch"))),
    ]


def section_encoder(data: dict[str, Any]) -> list[str]:
    from .bench_encoder import table as encoder_table

    what = ", ".join(
        f"{label} {fmt(get(data, key))}"
        for label, key in (
            ("short texts", "n_short"),
            ("long texts", "n_long"),
            ("batch size", "batch_size"),
            ("max tokens per batch", "max_batch_tokens"),
            ("torch threads", "torch_threads"),
        )
    )
    return [
        f"BBC News train {fmt(get(data, 'n_train'))} / test {fmt(get(data, 'n_test'))}; {what}.",
        "",
        *encoder_table(data).splitlines(),
    ]


def section_e2e(data: dict[str, Any]) -> list[str]:
    rows = [
        [name]
        + [fmt(get(data, f"{name}.{k}")) for k in ("accepted", "requests", "completion_tokens", "elapsed_s")]
        + [fmt(get(data, f"{name}.{k}")) for k in ("accepted_per_s", "requests_per_s", "output_tokens_per_s")]
        for name in ("engine", "sdk_sequential")
    ]
    what = (
        f"{fmt(get(data, 'task'))} {fmt(get(data, 'strategy'))}, {fmt(get(data, 'n_examples'))} examples, "
        f"{fmt(get(data, 'model'))}, {fmt(get(data, 'local_server.threads'))} llama.cpp threads"
    )
    header = ["client", "accepted", "requests", "output tokens", "s", "accepted/s", "requests/s", "output tokens/s"]
    return [
        f"Same server and prompts ({what}).",
        "",
        *_table(header, rows),
        "",
        *_table(["ratio", "value"], [list(r) for r in headline_e2e(data)]),
    ]


def headline_endpoint(data: dict[str, Any]) -> list[tuple[str, str]]:
    return headline_generic({"ratios": get(data, "ratios") or {}})


def section_endpoint(data: dict[str, Any]) -> list[str]:
    steps = get(data, "per_step")
    if not isinstance(steps, list) or not steps:
        return section_generic(data)
    keys = ("output_tokens_per_s", "requests_per_s", "ttft_ms_p50", "e2e_ms_p50", "decode_tps_p50")
    rows = [
        [fmt(s.get("concurrency")), f"{fmt(s.get('ok'))}/{fmt(s.get('sent'))}"]
        + [fmt(s.get(k)) for k in keys]
        + [fmt(s.get("server_decode_tps_p50")), ratio(s.get("decode_agreement"))]
        for s in steps
    ]
    header = ["concurrency", "ok/sent", "output tokens/s", "requests/s", "TTFT p50 ms", "E2E p50 ms"]
    header += ["decode tok/s ours", "server", "ours / server"]
    what = f"{fmt(get(data, 'model'))}, {fmt(get(data, 'requests_per_step'))} requests per step"
    return [
        f"Streaming, closed loop per level ({what}).",
        "",
        *_table(header, rows),
        "",
        *_table(["ratio", "value"], [list(r) for r in headline_endpoint(data)]),
    ]


@dataclass(frozen=True, slots=True)
class Renderer:
    title: str
    headline: Callable[[dict[str, Any]], list[tuple[str, str]]]
    section: Callable[[dict[str, Any]], list[str]]


RENDERERS: dict[str, Renderer] = {
    "client": Renderer(
        "The engine's request path vs the openai SDK vs a bare aiohttp loop, on the simulator",
        headline_client,
        section_client,
    ),
    "dedup": Renderer("Vectorised MinHash vs datasketch's per-document path", headline_dedup, section_dedup),
    "encoder": Renderer(
        "The ONNX encoder on onnxruntime vs the same model on PyTorch", headline_encoder, section_encoder
    ),
    "e2e": Renderer("End to end: accepted examples per second with the local LLM", headline_e2e, section_e2e),
    "endpoint": Renderer("bench-endpoint against the local llama.cpp server", headline_endpoint, section_endpoint),
}


def renderer(name: str) -> Renderer:
    return RENDERERS.get(name, Renderer(name, headline_generic, section_generic))


def _safe(fn: Callable[[dict[str, Any]], Any], data: dict[str, Any], default: Any) -> Any:
    """A renderer must never lose the summary: on a surprise shape, fall back."""
    try:
        return fn(data)
    except Exception as exc:
        return default(exc)


def render_summary(outcomes: Sequence[Outcome], started: datetime) -> str:
    lines = [
        "# Benchmark summary",
        "",
        f"Written by `python -m benchmarks.run_all` on {started:%Y-%m-%d %H:%M}. "
        "Every ratio compares the measured path with its baseline **in the same run**; "
        "the raw figures are in `benchmarks/results/NAME.json`.",
        "",
    ]
    rows = []
    for o in outcomes:
        r = renderer(o.name)
        heads = _safe(r.headline, o.results, lambda exc: []) if o.results is not None else []
        shown = "<br>".join(f"{k}: {v}" for k, v in heads) or MISSING
        status = o.status + (f" ({o.detail})" if o.status not in ("ok", "not run") and o.detail else "")
        if o.results_time is not None:
            status += f" (results from {datetime.fromtimestamp(o.results_time):%Y-%m-%d %H:%M})"
        rows.append([o.name, status, f"{o.seconds:.1f} s" if o.seconds else MISSING, shown])
    lines += _table(["benchmark", "status", "time", "headline ratios"], rows, numeric_from=4)
    for o in outcomes:
        r = renderer(o.name)
        lines += ["", f"## {o.name}", "", f"{r.title}.", ""]
        if o.status not in ("ok", "not run"):
            lines.append(f"**{o.status}**: {o.detail}.")
            if o.stderr_tail:
                lines += ["", "Tail of stderr:", "", "```text", o.stderr_tail, "```"]
            continue
        if o.results is None:
            lines.append(f"Not run this time, and no earlier results in `results/{o.name}.json`.")
            continue
        if o.results_time is not None:
            when = datetime.fromtimestamp(o.results_time)
            lines += [f"*Not run this time: results from an earlier run ({when:%Y-%m-%d %H:%M}).*", ""]
        lines += _safe(r.section, o.results, lambda exc: [f"(could not render: {exc!r}; see the JSON)"])
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", metavar="NAME[,NAME]", help="run only these (e.g. client,dedup)")
    p.add_argument("--skip", action="append", metavar="NAME", help="do not run this one (repeatable)")
    p.add_argument("--timeout", type=float, help=f"seconds per benchmark (default {TIMEOUT_S:.0f}, more for LLM ones)")
    p.add_argument("--full", action="store_true", help="set BENCH_FULL=1: the full sizes")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return p


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = discover()
    if args.list:
        for n in names:
            print(n if (HERE / f"bench_{n}.py").exists() else f"{n} (missing)")
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
    started = datetime.now()
    outcomes: list[Outcome] = []
    interrupted = False
    for i, name in enumerate(names):
        if name not in selected or interrupted:
            outcomes.append(earlier(name))
            continue
        if not (HERE / f"bench_{name}.py").exists():
            outcomes.append(Outcome(name, "missing", detail=f"benchmarks/bench_{name}.py does not exist"))
            _progress(f"[{i + 1}/{len(names)}] {name}: missing (no benchmarks/bench_{name}.py)")
            continue
        timeout_s = args.timeout or TIMEOUTS_S.get(name, TIMEOUT_S)
        _progress(f"[{i + 1}/{len(names)}] {name}: running (timeout {timeout_s:.0f} s)")
        o = run_one(name, timeout_s, env)
        outcomes.append(o)
        took = f" in {o.seconds:.1f} s" if o.seconds else ""
        _progress(f"[{i + 1}/{len(names)}] {name}: {o.status}{took}" + (f" - {o.detail}" if o.detail else ""))
        interrupted = o.status == "interrupted"
    RESULTS.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(render_summary(outcomes, started))
    _progress(f"summary: {SUMMARY.relative_to(ROOT)}")
    ran = [o for o in outcomes if o.name in selected and o.status != "not run"]
    if interrupted:
        return 130
    return 0 if all(o.status in ("ok", "missing") for o in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
