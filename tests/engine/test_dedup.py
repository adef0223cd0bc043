"""Unit tests for engine.dedup: normalisation, shingles, signatures that datasketch accepts, the filter stage."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

import engine.dedup as dedup
from engine.dedup import (
    DedupConfig,
    DedupFilter,
    DedupIndex,
    Reference,
    exact_key,
    normalize,
    shingle_batch,
    shingle_strings,
    signatures,
    to_lean,
)
from engine.errors import ConfigError
from engine.pipeline import Work
from engine.stages import DedupStage
from engine.stats import Stats
from engine.types import Example

SHORT = [
    "The new phone's battery lasts two full days, which is honestly amazing.",
    "Worst customer service ever, I waited three hours and nobody answered.",
    "abc",
    "",
    "!!!",
    "Le café était délicieux et le service très rapide ce matin",
]
LONG = " ".join(f"word{i % 97} filler{i % 13} token{i}" for i in range(120))


def ex(i: object, text: str) -> Example:
    return Example(id=str(i), fields={"text": text}, label="x")


class ListSink:
    def __init__(self) -> None:
        self.items: list[tuple[Example, str]] = []

    def reject(self, record: Example, reason: str) -> None:
        self.items.append((record, reason))


# -- normalisation -----------------------------------------------------------------------------


def test_normalize_folds_case_punctuation_spacing_and_unicode():
    assert normalize("  Hello,   WORLD!!  It's\tfine.\n") == "hello world its fine"
    assert normalize("ﬁne ＡＢＣ") == "fine abc"  # NFKC: ligature and full-width letters
    assert normalize("state-of-the-art") == "state of the art"
    assert normalize("!!!") == "!!!"  # all punctuation: falls back rather than becoming ""


def test_exact_key_ignores_surface_differences_only():
    assert exact_key("Hello, world!") == exact_key("hello world")
    assert exact_key("hello world") != exact_key("hello there world")
    assert exact_key("") != exact_key("!!!")
    assert 0 <= exact_key("x") < 2**64


# -- shingles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "char", "word"])
def test_batch_hashes_match_string_shingles_one_to_one(mode):
    texts = [normalize(t) for t in [*SHORT, LONG, "one two", "x"]]
    batch = shingle_batch(texts, mode=mode)
    assert len(batch) == len(texts)
    seen: dict[str, int] = {}
    for i, text in enumerate(texts):
        strings, hashes = shingle_strings(text, mode=mode), batch.doc(i).tolist()
        assert len(strings) == len(hashes) >= 1
        for s, h in zip(strings, hashes, strict=True):
            assert seen.setdefault(s, h) == h  # the hash is a function of the shingle
    assert len(set(seen.values())) == len(seen)  # and no collisions on this tiny set


def test_batch_is_independent_of_neighbours_and_stable():
    texts = [normalize(t) for t in [*SHORT, LONG]]
    together = shingle_batch(texts)
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(shingle_batch([text]).doc(0), together.doc(i))
    # Fixed constants, no per-process salt: this value must never change.
    assert shingle_batch(["hello"]).hashes.tolist() == shingle_batch(["hello"]).hashes.tolist()


def test_auto_mode_uses_chars_for_short_and_words_for_long():
    assert shingle_strings("a short text here") == [
        "a sho",
        " shor",
        "short",
        "hort ",
        "ort t",
        "rt te",
        "t tex",
        " text",
        "text ",
        "ext h",
        "xt he",
        "t her",
        " here",
    ]
    long = normalize(LONG)
    assert shingle_strings(long)[0] == "word0 filler0 token0"
    assert shingle_strings("ab") == ["ab"]


# -- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_signatures_equal_datasketch_minhash_fed_the_same_hashes(scheme):
    texts = [normalize(t) for t in [*SHORT, LONG]]
    batch = shingle_batch(texts)
    sigs = signatures(batch, num_perm=64, seed=7, scheme=scheme, block_cells=1000)  # force several blocks
    for i, text in enumerate(texts):
        lookup = dict(zip(shingle_strings(text), batch.doc(i).tolist(), strict=True))
        m = MinHash(num_perm=64, seed=7, scheme=scheme, hashfunc=lookup.__getitem__)
        for s in shingle_strings(text):
            m.update(s)
        np.testing.assert_array_equal(sigs[i], m.hashvalues)


def test_lean_minhash_works_in_datasketch_lsh():
    texts = [normalize(t) for t in [SHORT[0], SHORT[0] + " really", SHORT[1]]]
    sigs = signatures(shingle_batch(texts))
    lsh = MinHashLSH(threshold=0.5, num_perm=128)
    leans = [to_lean(row) for row in sigs]
    assert all(isinstance(m, LeanMinHash) for m in leans)
    lsh.insert("a", leans[0])
    assert lsh.query(leans[1]) == ["a"]
    assert lsh.query(leans[2]) == []
    assert leans[0].jaccard(leans[1]) > 0.7


# -- index -------------------------------------------------------------------------------------


def test_index_query_and_add_and_rebuild_from_signatures():
    f = DedupFilter()
    signed = f.sign([SHORT[0], SHORT[0].upper(), SHORT[0] + " wow", SHORT[1]])
    index = DedupIndex(threshold=0.5)
    got = [index.query_and_add(i, k, s) for i, (k, s) in enumerate(zip(signed.keys, signed.signatures, strict=True))]
    assert got == [None, 0, 0, None]
    assert len(index) == 2
    clone = DedupIndex(threshold=0.5)
    clone.add_many(["a", "b"], [signed.keys[0], signed.keys[3]], signed.signatures[[0, 3]])
    assert clone.query_and_add("c", signed.keys[2], signed.signatures[2]) == "a"


# -- the filter --------------------------------------------------------------------------------


def test_config_is_validated():
    assert DedupConfig().threshold == dedup.DEFAULT_THRESHOLD
    for bad in ({"threshold": 0.0}, {"threshold": 1.5}, {"num_perm": 4}, {"shingle_mode": "x"}, {"char_ngram": 0}):
        with pytest.raises(ConfigError):
            DedupConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DedupConfig(0.5)  # type: ignore[misc]  # keyword-only


def test_keep_reasons_counting_and_rejects():
    stats, sink = Stats(), ListSink()
    f = DedupFilter(stats=stats, rejects=sink)
    f.add_reference(["Please write a review of a hotel you stayed in last summer."])
    records = [
        ex(1, SHORT[0]),
        ex(2, SHORT[0].upper() + "!!"),  # exact after normalisation
        ex(3, SHORT[0].replace("amazing", "great")),  # one word changed
        ex(4, SHORT[1]),
        ex(5, "please write a review of a hotel you stayed in last summer"),
        ex(6, "Please write a short review of a hotel you stayed in last summer."),
    ]
    reasons = [f.check(r) for r in records]
    assert reasons == [None, "exact_duplicate", "near_duplicate", None, "copies_reference", "copies_reference"]
    assert stats.get("dedup.seen") == 6
    assert stats.get("dedup.kept") == 2
    assert stats.get("dedup.dropped:exact_duplicate") == 1
    assert stats.get("dedup.dropped:near_duplicate") == 1
    assert stats.get("dedup.dropped:copies_reference") == 2
    assert [(r.id, reason) for r, reason in sink.items] == [
        ("2", "exact_duplicate"),
        ("3", "near_duplicate"),
        ("5", "copies_reference"),
        ("6", "copies_reference"),
    ]
    assert isinstance(f.last_match, Reference)


def test_check_batch_matches_check_one_by_one_and_catches_in_batch_copies():
    texts = [SHORT[0], SHORT[1], SHORT[0] + " Really.", LONG, LONG.replace("token50", "tokenX"), SHORT[1], "abc"]
    records = [ex(i, t) for i, t in enumerate(texts)]
    one, s1, k1 = DedupFilter(stats=Stats()), ListSink(), None
    one.rejects = s1
    batch, s2 = DedupFilter(stats=Stats()), ListSink()
    batch.rejects = s2
    k1 = [one.check(r) for r in records]
    k2 = batch.check_batch(records)
    assert k1 == k2 == [None, None, "near_duplicate", None, "near_duplicate", "exact_duplicate", None]
    assert one.stats.counters == batch.stats.counters
    assert [(r.id, why) for r, why in s1.items] == [(r.id, why) for r, why in s2.items]
    assert batch.check_batch([]) == []


def test_rebuild_restores_state_without_counting():
    first = DedupFilter()
    kept = [r for r in (ex(i, t) for i, t in enumerate(SHORT)) if first.check(r) is None]
    resumed = DedupFilter(stats=Stats())
    assert resumed.rebuild(kept) == len(kept)
    assert resumed.stats.counters == {}
    assert resumed.check(ex("new", SHORT[0] + " indeed")) == "near_duplicate"
    assert resumed.check(ex("new2", "Something entirely different about trains and weather")) is None


def test_pair_examples_use_all_fields():
    f = DedupFilter()
    a = Example(id="a", fields={"premise": SHORT[0], "hypothesis": SHORT[1]}, label="x")
    b = Example(
        id="b", fields={"premise": SHORT[0], "hypothesis": "A completely different claim about cats."}, label="x"
    )
    c = Example(id="c", fields={"premise": SHORT[0], "hypothesis": SHORT[1] + "!"}, label="y")
    assert [f.check(e) for e in (a, b, c)] == [None, None, "exact_duplicate"]


def test_filter_is_the_dedup_stage_of_the_chain():
    stats = Stats()
    work = Work(outcomes=[])
    for example in (ex(1, SHORT[0]), ex(2, SHORT[0]), ex(3, SHORT[1])):
        work.add(example, example.text)
    DedupStage(DedupFilter(stats=stats), stats=stats).process(work)
    assert [r.id for r in work.examples] == ["1", "3"]
    assert [(row["id"], reason) for row, reason in work.rejected] == [("2", "exact_duplicate")]
    assert stats.get("rejected:exact_duplicate") == 1


def test_index_candidates_equal_datasketch_lsh_query_across_levels():
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    texts = []
    for i in range(400):
        if i >= 50 and rng.random() < 0.3:  # plant near-duplicates of earlier texts
            base = texts[rng.randrange(len(texts))].split()
            base[rng.randrange(len(base))] = rng.choice(words)
            texts.append(" ".join(base))
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(25)))
    signed = DedupFilter().sign(texts)
    # a tiny fresh limit: most keys end up in sorted levels, several merges happen, and the merge cap stops some
    index = DedupIndex(threshold=0.5, fresh_limit=200, max_merge_keys=2000)
    reference = MinHashLSH(threshold=0.5, num_perm=128)
    for slot, (key, row) in enumerate(zip(signed.keys, signed.signatures, strict=True)):
        assert index.candidates(row) == set(reference.query(to_lean(row))), slot
        index.add(slot, key, row)
        reference.insert(slot, to_lean(row))
    assert len(index._levels) >= 2 and index._fresh  # levels and the fresh dict are both searched
    assert max(len(keys) for keys, _ in index._levels) <= 2000
    for slot, row in enumerate(signed.signatures):
        assert index.candidates(row) == set(reference.query(to_lean(row)))
        assert np.array_equal(index.signature(slot), row)
    # batch band keys equal one-at-a-time keys
    assert np.array_equal(index.band_keys(signed.signatures)[7], index.band_keys(signed.signatures[7:8])[0])


def test_index_memory_per_example_is_small():
    rng = np.random.default_rng(0)
    n = 2 * 16384  # whole storage blocks
    sigs = rng.integers(0, 2**32, size=(n, 128), dtype=np.uint64).astype(np.uint32)
    index = DedupIndex(threshold=0.5, fresh_limit=1 << 15)
    index.add_many(list(range(n)), list(range(n)), sigs)
    index.flush()
    # signatures (512 B) and 12 bytes per band: about 0.8 KB per example in arrays (datasketch's tables: ~5 KB)
    assert index.nbytes / n < 1024
