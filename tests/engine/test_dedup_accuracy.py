"""Accuracy of DedupFilter on real texts: tweets (short) and BBC News articles (long).

Targets: planted near-duplicates (a word changed, added or removed, plus case or
punctuation changes) are caught with recall >= 0.95, and distinct texts are
dropped <= 0.5% of the time.

Real corpora contain genuine near-duplicates (retweets, quote tweets, updated
versions of the same news story), so the "distinct" set is made first: exact
copies go (letters and digits only), then anything a much looser, independently
seeded filter (threshold 0.3, 256 permutations, seed 99) considers similar.
Every text left has estimated shingle Jaccard < ~0.3 to every other; a default
filter that drops one of them is wrong.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from engine.dedup import DedupConfig, DedupFilter
from engine.types import Example

N_TWEETS = 8000
N_PLANTED = 1000


def _corpus() -> ModuleType:
    path = Path(__file__).parents[1] / "fixtures" / "dedup" / "corpus.py"
    spec = importlib.util.spec_from_file_location("dedup_corpus", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["dedup_corpus"] = module
    spec.loader.exec_module(module)
    return module


corpus = _corpus()


def examples(texts: list[str], prefix: str = "") -> list[Example]:
    return [Example(id=f"{prefix}{i}", fields={"text": t}, label="") for i, t in enumerate(texts)]


def distinct(texts: list[str]) -> list[str]:
    loose = DedupFilter(DedupConfig(threshold=0.3, num_perm=256, seed=99))
    return [t for t, why in zip(texts, loose.check_batch(examples(texts)), strict=True) if why is None]


@pytest.fixture(scope="module", params=["short", "long"])
def real(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    texts = corpus.load_tweets()[:N_TWEETS] if request.param == "short" else corpus.load_articles()
    return request.param, distinct(texts)


def test_corpora_are_what_we_think(real):
    kind, texts = real
    words = [len(t.split()) for t in texts]
    lo, hi = corpus.SHORT_WORDS if kind == "short" else corpus.LONG_WORDS
    assert min(words) >= lo and max(words) <= hi
    assert len(texts) > (5000 if kind == "short" else 1000)


def test_distinct_texts_are_rarely_dropped(real):
    kind, texts = real
    f = DedupFilter()
    verdicts = f.check_batch(examples(texts))
    dropped = [t for t, why in zip(texts, verdicts, strict=True) if why is not None]
    rate = len(dropped) / len(texts)
    assert rate <= 0.005, (kind, rate, dropped[:5])


def test_planted_near_duplicates_are_caught(real):
    kind, texts = real
    f = DedupFilter()
    f.rebuild(examples(texts))
    planted = corpus.plant(texts, N_PLANTED, seed=3)
    verdicts = f.check_batch(examples([p.text for p in planted], "p"))
    missed = [p for p, why in zip(planted, verdicts, strict=True) if why is None]
    recall = 1 - len(missed) / len(planted)
    assert recall >= 0.95, (kind, recall, [(m.edit, m.text[:80]) for m in missed[:5]])
    assert all(why in ("near_duplicate", "exact_duplicate") for why in verdicts if why)


def test_planted_copies_of_references_are_reported_as_such(real):
    kind, texts = real
    f = DedupFilter()
    f.add_reference(texts[:200])
    planted = [p for p in corpus.plant(texts[:200], 100, seed=4)]
    verdicts = f.check_batch(examples([p.text for p in planted], "p"))
    assert sum(why == "copies_reference" for why in verdicts) >= 95
