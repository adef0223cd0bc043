"""Vectorised dedup vs datasketch's per-document path, on the same real corpus in the same run.

Both paths normalise the same way, cut the same shingles and decide the same
way (exact key, then ``MinHashLSH`` candidates verified by estimated Jaccard,
first of a group kept). They differ in how signatures are made and indexed:

* ``vectorised``: ``DedupFilter.check_batch`` (numpy shingle hashes for the
  whole batch, permutations applied with ``np.minimum.reduceat``, 64-bit band
  keys for the whole batch, looked up in ``DedupIndex``'s compact tables with
  datasketch's banding);
* ``datasketch update``: one ``MinHash`` per document, ``m.update(shingle)`` per
  shingle (SHA-1), ``lsh.query`` / ``lsh.insert``, ``m.jaccard`` to verify;
* ``datasketch update_batch``: the same with ``m.update_batch(shingles)``.

Corpora: distinct tweets (short) and BBC News articles (long) with planted
near-duplicates mixed in. Agreement = share of documents on which the
vectorised keep/drop decision equals the ``datasketch update`` decision.

Run: ``python -m benchmarks.bench_dedup``; writes ``benchmarks/results/dedup.json``.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .markdown import Headline, fmt, get, headline_generic, is_number, ratio, table
from .record import write_results

N_SHORT = 6000
N_LONG = 1200
PLANTED_FRACTION = 0.2
NUM_PERM = 128
THRESHOLD = 0.5
SEED = 0
REPEATS = 2  # best of


def _corpus_module() -> ModuleType:
    path = Path(__file__).parents[1] / "tests" / "fixtures" / "dedup" / "corpus.py"
    spec = importlib.util.spec_from_file_location("dedup_corpus", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["dedup_corpus"] = module
    spec.loader.exec_module(module)
    return module


def build(kind: str) -> list[str]:
    corpus = _corpus_module()
    texts = corpus.load_tweets()[:N_SHORT] if kind == "short" else corpus.load_articles()[:N_LONG]
    planted = [p.text for p in corpus.plant(texts, int(len(texts) * PLANTED_FRACTION), seed=SEED)]
    rng = random.Random(SEED)
    mixed = texts + planted
    rng.shuffle(mixed)
    return mixed


def vectorised(texts: list[str]) -> list[bool]:
    from engine.dedup import DedupConfig, DedupFilter
    from engine.types import Example

    f = DedupFilter(DedupConfig(threshold=THRESHOLD, num_perm=NUM_PERM))
    verdicts = f.check_batch([Example(id=str(i), fields={"text": t}, label="") for i, t in enumerate(texts)])
    return [v is None for v in verdicts]


def datasketch_path(texts: list[str], *, batch_update: bool) -> list[bool]:
    from datasketch import MinHash, MinHashLSH

    from engine.dedup import exact_key, normalize, shingle_strings

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    exact: set[int] = set()
    kept: dict[int, MinHash] = {}
    out = []
    for i, text in enumerate(texts):
        norm = normalize(text)
        key = exact_key(norm, normalized=True)
        m = MinHash(num_perm=NUM_PERM, seed=1)
        shingles = [s.encode("utf-8") for s in shingle_strings(norm)]
        if batch_update:
            m.update_batch(shingles)
        else:
            for s in shingles:
                m.update(s)
        duplicate = key in exact or any(m.jaccard(kept[c]) >= THRESHOLD for c in lsh.query(m))
        if not duplicate:
            exact.add(key)
            kept[i] = m
            lsh.insert(i, m)
        out.append(not duplicate)
    return out


def _timed(fn: Any, texts: list[str]) -> tuple[float, list[bool]]:
    best, result = float("inf"), []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn(texts)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> dict[str, Any]:
    results: dict[str, Any] = {
        "knobs": {
            "n_short": N_SHORT,
            "n_long": N_LONG,
            "planted_fraction": PLANTED_FRACTION,
            "num_perm": NUM_PERM,
            "threshold": THRESHOLD,
            "repeats": REPEATS,
        },
        "corpora": {},
    }
    for kind in ("short", "long"):
        texts = build(kind)
        t_vec, d_vec = _timed(vectorised, texts)
        t_upd, d_upd = _timed(lambda t: datasketch_path(t, batch_update=False), texts)
        t_bat, d_bat = _timed(lambda t: datasketch_path(t, batch_update=True), texts)
        n = len(texts)
        results["corpora"][kind] = {
            "docs": n,
            "docs_per_s": {
                "vectorised": n / t_vec,
                "datasketch_update": n / t_upd,
                "datasketch_update_batch": n / t_bat,
            },
            "speedup_vs_update": t_upd / t_vec,
            "speedup_vs_update_batch": t_bat / t_vec,
            "agreement": sum(a == b for a, b in zip(d_vec, d_upd, strict=True)) / n,
            "kept": {"vectorised": sum(d_vec), "datasketch_update": sum(d_upd), "datasketch_update_batch": sum(d_bat)},
        }
    write_results("dedup", results)
    print(render(results))
    return results


def _corpora(data: dict[str, Any]) -> dict[str, Any]:
    corpora = get(data, "corpora")
    return corpora if isinstance(corpora, dict) else {}


def headline(data: dict[str, Any]) -> Headline:
    out = []
    for kind in _corpora(data):
        for key, what in (("speedup_vs_update", "update"), ("speedup_vs_update_batch", "update_batch")):
            out.append((f"{kind} texts, vectorised / datasketch {what}", ratio(get(data, f"corpora.{kind}.{key}"))))
    return out or headline_generic(data)


def render(data: dict[str, Any]) -> str:
    knobs = ", ".join(
        f"{k} {fmt(get(data, f'knobs.{k}'))}" for k in ("num_perm", "threshold", "planted_fraction", "repeats")
    )
    rows = []
    for kind in _corpora(data):
        corpus = f"corpora.{kind}"
        agreement = get(data, f"{corpus}.agreement")
        rows.append(
            [
                kind,
                fmt(get(data, f"{corpus}.docs")),
                fmt(get(data, f"{corpus}.docs_per_s.vectorised")),
                fmt(get(data, f"{corpus}.docs_per_s.datasketch_update")),
                fmt(get(data, f"{corpus}.docs_per_s.datasketch_update_batch")),
                ratio(get(data, f"{corpus}.speedup_vs_update")),
                ratio(get(data, f"{corpus}.speedup_vs_update_batch")),
                fmt(100 * agreement, "%") if is_number(agreement) else "-",
            ]
        )
    header = ["texts", "docs", "vectorised docs/s", "datasketch update docs/s", "update_batch docs/s"]
    header += ["speedup vs update", "speedup vs update_batch", "same keep/drop decisions"]
    return "\n".join([f"Same texts, shingles and LSH index ({knobs}).", "", *table(header, rows)])


if __name__ == "__main__":
    main()
