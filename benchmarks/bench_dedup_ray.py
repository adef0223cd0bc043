"""The Ray dedup pass vs single-machine ``dedup`` on the same 2 cores, and ``score --ray`` vs ``score``.

Corpus (made here, seeded): short texts of 10-20 pseudo-words from a 20,000-word
vocabulary, 10% of them planted near-duplicates (one or two words of an earlier
text replaced), shuffled, written as ``PARTS`` JSONL parts and as one file.

* ``single components``: ``corpusforge dedup all.jsonl --mode components`` (one process);
* ``single greedy``: the same with ``--mode greedy`` (the streaming filter, today's default);
* ``ray``: ``ray_dedup`` over the parts on a local Ray instance of 2 CPUs (started before the clock runs; its
  start-up is reported apart).

Figures: docs/s of each and the ratio ray / single (the price of distribution on one machine), peak RSS of the
largest process (the single-machine process; for Ray the largest of the driver and every Ray process, sampled
every 0.2 s), recall of the planted pairs (both ends end up in one kept group), false drops (a record dropped
for a twin outside its planted family) and the agreement of Ray with single-machine components (same decision
and twin for every record). Scoring: texts/s of ``score --ray`` (one actor per CPU) vs ``score`` in one process
on the same texts with a classifier trained by ``corpusforge eval`` on the test fixture, and the share of equal
predictions.

Run: ``python -m benchmarks.bench_dedup_ray [--docs 1000000] [--score-texts 20000]``;
writes ``benchmarks/results/dedup_ray.json`` (other sizes: ``benchmarks/results/sizes/dedup_ray_DOCS.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .markdown import Headline, fmt, get, ratio, table
from .record import RESULTS_DIR, write_results

DOCS = 200_000
PARTS = 8
PLANTED = 0.10
VOCAB = 20_000
SEED = 0
CPUS = 2
SCORE_TEXTS = 4000
TIMEOUT_S = 3600
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "eval"


# -- corpus ------------------------------------------------------------------------------------------


def make_corpus(n: int, seed: int = SEED) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts, their family (the index of the text they copy, or their own) and whether they were planted."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "an", "el", "or", "um", "be", "di", "fa", "gu"]
    vocab = sorted({"".join(rng.choice(syllables, size=rng.integers(2, 5))) for _ in range(VOCAB * 2)})[:VOCAB]
    n_planted = int(n * PLANTED)
    n_base = n - n_planted
    lengths = rng.integers(10, 21, size=n_base)
    words = rng.integers(0, len(vocab), size=int(lengths.sum()))
    base: list[list[int]] = np.split(words, np.cumsum(lengths)[:-1])  # type: ignore[assignment]
    sources = rng.integers(0, n_base, size=n_planted)
    texts = [" ".join(vocab[w] for w in ws) for ws in base]
    family = list(range(n_base))
    for src in sources.tolist():
        ws = list(base[src])
        for _ in range(int(rng.integers(1, 3))):
            ws[int(rng.integers(0, len(ws)))] = int(rng.integers(0, len(vocab)))
        texts.append(" ".join(vocab[w] for w in ws))
        family.append(src)
    order = rng.permutation(n)
    planted = np.arange(n) >= n_base
    return [texts[i] for i in order], np.asarray(family)[order], planted[order]


def write_inputs(folder: Path, texts: list[str], parts: int) -> tuple[Path, Path]:
    """``parts/`` (consecutive slices, so input order is the same) and ``all.jsonl``."""
    part_dir = folder / "parts"
    part_dir.mkdir(parents=True)
    lines = [json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)]
    bounds = np.linspace(0, len(lines), parts + 1).astype(int)
    for k in range(parts):
        (part_dir / f"p{k:03d}.jsonl").write_text("".join(lines[bounds[k] : bounds[k + 1]]), encoding="utf-8")
    whole = folder / "all.jsonl"
    whole.write_text("".join(lines), encoding="utf-8")
    return part_dir, whole


# -- memory ------------------------------------------------------------------------------------------


class PeakRSS:
    """Samples the RSS of the chosen processes every ``period`` s; keeps the largest single and the largest sum.

    ``private`` is RSS less shared pages: Ray's object store is shared memory that every process touching it
    counts in its RSS, so RSS overstates what a Ray process holds of its own.
    """

    def __init__(self, pick: Any, period: float = 0.2, driver: int | None = None) -> None:
        self.pick = pick
        self.period = period
        self.driver = driver
        self.largest = 0
        self.total = 0
        #: The largest private memory of a process other than ``driver`` (which holds the benchmark's corpus too:
        #: its own figure is ``driver_growth``, the peak over what it held at the start).
        self.private = 0
        self.private_name = ""
        self.driver_growth = 0
        self._driver_start: int | None = None
        #: Peak growth of the used space on the disk Ray spills to (its object store overflows there), overall and
        #: since the last :meth:`stage_disk` call.
        self.disk_growth = 0
        self.stage_disk_growth = 0
        self._disk_at_start = shutil.disk_usage(tempfile.gettempdir()).used
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            sizes = []
            for proc in psutil.process_iter(["pid", "ppid", "cmdline", "name"]):
                try:
                    if self.pick(proc):
                        mem = proc.memory_info()
                        sizes.append(mem.rss)
                        private = mem.rss - mem.shared
                        if proc.info["pid"] == self.driver:
                            self._driver_start = private if self._driver_start is None else self._driver_start
                            self.driver_growth = max(self.driver_growth, private - self._driver_start)
                        elif private > self.private:
                            self.private, self.private_name = private, proc.info["name"] or ""
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            grown = shutil.disk_usage(tempfile.gettempdir()).used - self._disk_at_start
            self.disk_growth = max(self.disk_growth, grown)
            self.stage_disk_growth = max(self.stage_disk_growth, grown)
            if sizes:
                self.largest = max(self.largest, max(sizes))
                self.total = max(self.total, sum(sizes))
            self._stop.wait(self.period)

    def stage_disk(self) -> int:
        """The peak disk growth since the last call (a stage's)."""
        peak, self.stage_disk_growth = self.stage_disk_growth, 0
        return peak

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


# -- runs --------------------------------------------------------------------------------------------


def run_single(whole: Path, out: Path, mode: str) -> dict[str, Any]:
    rejects = out.with_suffix(".rejects.jsonl")
    cmd = [sys.executable, "-m", "engine", "dedup", str(whole), "--out", str(out), "--mode", mode]
    cmd += ["--rejects", str(rejects), "--quiet"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    with PeakRSS(lambda p: p.info["pid"] == proc.pid) as rss:
        proc.wait()
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"single-machine dedup failed ({proc.returncode})")
    drops = {}
    for line in rejects.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        drops[int(d["record"]["id"])] = (d["reason"], int(d["duplicate_of"]))
    return {
        "seconds": round(elapsed, 2),
        "peak_rss_mb": _mb(rss.largest),
        "peak_private_mb": _mb(rss.private),
        "drops": drops,
    }


def run_ray(parts: Path, out: Path, partitions: int | None) -> dict[str, Any]:
    from engine.dedup.filter import DedupConfig
    from engine.dedup.ray_dedup import ray_dedup
    from engine.dedup.records import expand_inputs, inspect_parts
    from engine.ray_cluster import connect

    started = time.perf_counter()
    connect(None, num_cpus=CPUS)
    startup = time.perf_counter() - started
    me = os.getpid()
    stages: list[str] = []

    def is_ray(p: Any) -> bool:
        cmd = " ".join(p.info["cmdline"] or [])
        return p.info["pid"] == me or "ray" in (p.info["name"] or "") or "ray/" in cmd or "ray::" in cmd

    parts_list = inspect_parts(expand_inputs([str(parts)]))
    started = time.perf_counter()
    with PeakRSS(is_ray, driver=me) as rss:

        def note(line: str) -> None:
            stages.append(f"{line}, disk at most +{_mb(rss.stage_disk()):,.0f} MB")

        result = ray_dedup(
            parts_list, fields=["text"], out=out, fmt="jsonl", config=DedupConfig(), partitions=partitions, note=note
        )
    elapsed = time.perf_counter() - started
    drops = {}
    for f in sorted((out / "dropped").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            drops[int(d["record"]["id"])] = (d["reason"], int(d["duplicate_of"]))
    return {
        "seconds": round(elapsed, 2),
        "startup_s": round(startup, 2),
        "peak_rss_mb": _mb(rss.largest),
        "peak_rss_sum_mb": _mb(rss.total),
        "peak_private_mb": _mb(rss.private),
        "largest_private_process": rss.private_name,
        "driver_growth_mb": _mb(rss.driver_growth),
        "peak_disk_growth_mb": _mb(rss.disk_growth),
        "stages": stages,
        "partitions": result.partitions,
        "edges": result.edges,
        "rounds": result.rounds,
        "drops": drops,
    }


def quality(drops: dict[int, tuple[str, int]], family: np.ndarray, planted: np.ndarray) -> dict[str, Any]:
    n = len(family)
    group = np.arange(n)
    for doc, (_, twin) in drops.items():
        group[doc] = twin
    copies = np.flatnonzero(planted)
    # the planted copy and the text it copies end in one kept group
    source_at = {int(f): i for i, f in enumerate(family.tolist()) if not planted[i]}
    found = sum(group[c] == group[source_at[int(family[c])]] for c in copies.tolist())
    false = sum(family[doc] != family[twin] for doc, (_, twin) in drops.items())
    return {
        "dropped": len(drops),
        "planted_pairs": len(copies),
        "recall": round(found / max(1, len(copies)), 5),
        "false_drops": int(false),
        "false_drop_rate": round(false / n, 6),
    }


def agreement(a: dict[int, tuple[str, int]], b: dict[int, tuple[str, int]], n: int) -> dict[str, Any]:
    same_decision = n - len(set(a) ^ set(b))
    same_twin = sum(a[k] == b[k] for k in set(a) & set(b))
    return {"same_decision": round(same_decision / n, 6), "same_drop_and_twin": same_twin, "drops": [len(a), len(b)]}


# -- scoring -----------------------------------------------------------------------------------------


def bench_score(folder: Path, texts: list[str], n: int) -> dict[str, Any]:
    from engine.cli import main as cli

    model_out = folder / "ev"
    train = ["eval", "--train", str(FIXTURES / "train.jsonl"), "--test", str(FIXTURES / "test.jsonl")]
    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            assert cli([*train, "--out", str(model_out)]) == 0
        finally:
            sys.stdout = stdout
    model = model_out / "model"
    src = folder / "score_parts"
    src.mkdir()
    rows = [json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts[:n])]
    for k in range(CPUS * 2):
        (src / f"p{k}.jsonl").write_text("".join(rows[k :: CPUS * 2]), encoding="utf-8")
    whole = folder / "score_all.jsonl"
    whole.write_text("".join(rows[k] for part in range(CPUS * 2) for k in range(part, n, CPUS * 2)), "utf-8")

    started = time.perf_counter()
    single = folder / "scored.jsonl"
    subprocess.run(
        [sys.executable, "-m", "engine", "score", "--model", str(model), str(whole), "--out", str(single)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    single_s = time.perf_counter() - started

    from engine.dedup.records import expand_inputs, inspect_parts
    from engine.scoring_ray import ray_score

    parts = inspect_parts(expand_inputs([str(src)]))
    started = time.perf_counter()
    result = ray_score(parts, model=model, fields=["text"], out=folder / "scored_ray")
    ray_s = time.perf_counter() - started

    single_pred = {r["id"]: r["pred"] for r in map(json.loads, single.read_text().splitlines())}
    ray_pred = {
        r["id"]: r["pred"] for p in sorted((folder / "scored_ray").glob("part-*.jsonl"))
        for r in map(json.loads, p.read_text().splitlines())
    }  # fmt: skip
    same = sum(single_pred[k] == ray_pred.get(k) for k in single_pred)
    return {
        "texts": n,
        "single_texts_per_s": round(n / single_s, 1),
        "ray_texts_per_s": round(n / ray_s, 1),
        "ratio": round(single_s / ray_s, 3),
        "actors": result.actors,
        "same_predictions": round(same / n, 5),
        "note": "single: one process, onnxruntime on all cores, model load included; ray: warm cluster, actor start and model load included",
    }


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=int(os.environ.get("BENCH_DEDUP_RAY_DOCS", DOCS)))
    ap.add_argument("--parts", type=int, default=PARTS)
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--score-texts", type=int, default=SCORE_TEXTS, help="0 skips the scoring comparison")
    ap.add_argument("--skip-greedy", action="store_true")
    ap.add_argument(
        "--skip-components",
        action="store_true",
        help="skip single-machine components (its signatures and pairs live in one process: ~2.3 GB per 1M texts)",
    )
    args = ap.parse_args(argv)

    texts, family, planted = make_corpus(args.docs)
    with tempfile.TemporaryDirectory(prefix="bench_dedup_ray-") as tmp:
        folder = Path(tmp)
        parts, whole = write_inputs(folder, texts, args.parts)
        print(f"corpus: {args.docs} texts, {int(planted.sum())} planted, {args.parts} parts", file=sys.stderr)
        ray = run_ray(parts, folder / "ray_out", args.partitions)
        print(f"ray: {ray['seconds']} s", file=sys.stderr)
        single = None if args.skip_components else run_single(whole, folder / "single.jsonl", "components")
        if single is not None:
            print(f"single components: {single['seconds']} s", file=sys.stderr)
        greedy = None if args.skip_greedy else run_single(whole, folder / "greedy.jsonl", "greedy")
        scoring = bench_score(folder, texts, args.score_texts) if args.score_texts else None

    n = args.docs
    runs: dict[str, Any] = {}
    for name, run in (("ray", ray), ("single_components", single), ("single_greedy", greedy)):
        if run is None:
            continue
        runs[name] = {k: v for k, v in run.items() if k != "drops"}
        runs[name]["docs_per_s"] = round(n / run["seconds"], 1)
        runs[name].update(quality(run["drops"], family, planted))
    results = {
        "knobs": {"docs": n, "parts": args.parts, "planted": PLANTED, "cpus": CPUS, "threshold": 0.5, "num_perm": 128},
        "runs": runs,
        "ray_vs_single_components_ratio": (
            round(runs["ray"]["docs_per_s"] / runs["single_components"]["docs_per_s"], 3) if single else None
        ),
        "ray_vs_single_greedy_ratio": (
            round(runs["ray"]["docs_per_s"] / runs["single_greedy"]["docs_per_s"], 3) if greedy else None
        ),
        "agreement_ray_vs_single_components": agreement(ray["drops"], single["drops"], n) if single else None,
        "scoring": scoring,
    }
    # the default size is this benchmark's result; other sizes go beside it, in results/sizes/
    if n == DOCS:
        write_results("dedup_ray", results)
    else:
        write_results(f"dedup_ray_{n}", results, RESULTS_DIR / "sizes")
    print(render(results))
    return results


def headline(data: dict[str, Any]) -> Headline:
    return [
        ("ray / single components docs/s", ratio(get(data, "ray_vs_single_components_ratio"))),
        ("score: ray / single texts/s", ratio(get(data, "scoring.ratio"))),
    ]


def render(data: dict[str, Any]) -> str:
    rows = []
    for name in ("ray", "single_components", "single_greedy"):
        run = get(data, f"runs.{name}")
        if not isinstance(run, dict):
            continue
        rows.append(
            [
                name,
                fmt(run.get("seconds"), " s"),
                fmt(run.get("docs_per_s")),
                fmt(run.get("peak_rss_mb"), " MB"),
                fmt(run.get("peak_private_mb"), " MB"),
                fmt(100 * run.get("recall", 0), "%"),
                fmt(run.get("false_drops")),
                fmt(run.get("dropped")),
            ]
        )
    header = ["run", "time", "docs/s", "peak RSS (largest process)", "peak RSS less shared pages"]
    header += ["planted recall", "false drops", "dropped"]
    agree = get(data, "agreement_ray_vs_single_components.same_decision")
    lines = [
        f"{fmt(get(data, 'knobs.docs'))} short texts, 10% planted near-duplicates, {get(data, 'knobs.cpus')} CPUs.",
        "",
        *table(header, rows),
        "",
        f"ray / single components: {ratio(get(data, 'ray_vs_single_components_ratio'))}; "
        f"same keep/drop decisions: {fmt(100 * agree, '%') if isinstance(agree, float) else '-'}",
        f"ray / single greedy: {ratio(get(data, 'ray_vs_single_greedy_ratio'))}",
        f"disk used by Ray's spilled objects at the peak: {fmt(get(data, 'runs.ray.peak_disk_growth_mb'), ' MB')}; "
        f"the Ray driver grew by {fmt(get(data, 'runs.ray.driver_growth_mb'), ' MB')} (the largest Ray process above "
        "is a worker: the driver also holds this benchmark's corpus)",
    ]
    scoring = get(data, "scoring")
    if isinstance(scoring, dict):
        lines += [
            "",
            f"score: {fmt(scoring['single_texts_per_s'])} texts/s in one process, {fmt(scoring['ray_texts_per_s'])} "
            f"on Ray ({scoring['actors']} actors): {ratio(scoring['ratio'])}; same predictions "
            f"{fmt(100 * scoring['same_predictions'], '%')}",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
