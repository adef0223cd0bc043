"""The components mode and the distributed dedup pass: numpy kernels, the single-machine reference, Ray end to end.

The Ray tests run on the session's shared two-node cluster (tests/ray_cluster.py).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli import main
from engine.dedup import graph
from engine.dedup.components import components
from engine.dedup.filter import DedupFilter

ROOT = Path(__file__).resolve().parents[2]

# A~B and B~C at the default threshold (0.5), A and C not (checked in the test that uses them).
A = "the quick brown fox jumps over the lazy dog near the old river bank today"
B = "the quick brown fox jumps over the lazy cat near the old river bank at dusk"
C = "the quick brown fox leaps over the lazy cat near a new river bank at dusk"

WORDS = [f"w{i}" for i in range(20)] + ["red", "green", "blue", "cat", "dog", "tree", "river", "stone"]


def corpus(
    seed: int = 7, n: int = 600, near: int = 60, exact: int = 8
) -> tuple[list[dict[str, Any]], set[tuple[str, str]]]:
    """Random 12-word texts plus planted one-word edits and case-only copies; returns rows and planted pairs."""
    rng = random.Random(seed)
    base = [" ".join(rng.choice(WORDS) for _ in range(12)) + f" {i}" for i in range(n)]
    rows = [{"id": f"d{i}", "text": t, "label": "orig"} for i, t in enumerate(base)]
    planted = set()
    for j in range(near):
        src = rng.randrange(n)
        words = base[src].split()
        words[rng.randrange(11)] = rng.choice(WORDS)
        rows.append({"id": f"n{j}", "text": " ".join(words), "label": "copy"})
        planted.add((f"d{src}", f"n{j}"))
    for j in range(exact):
        src = rng.randrange(n)
        rows.append({"id": f"e{j}", "text": base[src].upper() + "!", "label": "copy"})
        planted.add((f"d{src}", f"e{j}"))
    rng.shuffle(rows)
    return rows, planted


def write_parts(folder: Path, rows: list[dict[str, Any]], parts: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(parts):
        path = folder / f"p{k}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[k::parts]), encoding="utf-8")
        paths.append(path)
    return paths


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def union_find_components(n: int, edges: list[tuple[int, int]]) -> dict[int, int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return {v: find(v) for v in range(n) if find(v) != v}


# -- numpy kernels ------------------------------------------------------------------------------------


def run_stars(a: np.ndarray, b: np.ndarray, partitions: int) -> tuple[dict[int, int], int]:
    """The driver's loop, with each shuffle done by splitting rows on graph.partition_of."""

    def shuffle(key: np.ndarray, *cols: np.ndarray) -> list[tuple[np.ndarray, ...]]:
        p = graph.partition_of(key, partitions)
        return [tuple(c[p == i] for c in (key, *cols)) for i in range(partitions)]

    rounds = 0
    while True:
        rounds += 1
        u, v = np.concatenate([a, b]), np.concatenate([b, a])
        groups = shuffle(u, v)
        if sum(graph.star_violations(gu, gv) for gu, gv in groups) == 0:
            return {int(leaf): int(root) for root, leaf in zip(a, b, strict=True)}, rounds
        big, small = (np.concatenate(x) for x in zip(*(graph.large_star(gu, gv) for gu, gv in groups), strict=True))
        out = [graph.small_star(gu, gv) for gu, gv in shuffle(big, small)]
        b, a = (np.concatenate(x) for x in zip(*out, strict=True))


@pytest.mark.parametrize("seed", range(6))
def test_large_small_star_finds_the_components_of_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = 300
    edges = rng.integers(0, n, size=(int(rng.integers(50, 400)), 2))
    edges = edges[edges[:, 0] != edges[:, 1]]
    a, b = np.minimum(edges[:, 0], edges[:, 1]), np.maximum(edges[:, 0], edges[:, 1])
    found, rounds = run_stars(a.astype(np.uint64), b.astype(np.uint64), partitions=3)
    assert found == union_find_components(n, list(zip(a.tolist(), b.tolist(), strict=True)))
    assert rounds < 20


def test_a_path_collapses_to_its_first_node():
    path = np.arange(64, dtype=np.uint64)
    found, _ = run_stars(path[:-1], path[1:], partitions=4)
    assert found == {i: 0 for i in range(1, 64)}


def test_band_pairs_joins_representatives_sharing_a_key_and_reports_exact_copies():
    # docs 1 and 5 share band key 10; 2 is an exact copy of 1 (same exact key); 7 is alone
    keys = np.array([10, 10, 10, 30, 20, 20, 20, 40], dtype=np.uint64)
    docs = np.array([1, 5, 2, 7, 1, 2, 5, 7], dtype=np.uint64)
    ekey = np.array([100, 500, 100, 700, 100, 100, 500, 700], dtype=np.uint64)
    band = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.uint8)
    a, b, exact_doc, exact_rep = graph.band_pairs(keys, docs, ekey, band)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == [(1, 5)]
    assert list(zip(exact_doc.tolist(), exact_rep.tolist(), strict=True)) == [(2, 1)]


def test_verification_keeps_pairs_at_or_above_the_threshold():
    sigs = np.array([[1, 2, 3, 4], [1, 2, 3, 9], [1, 9, 9, 9]], dtype=np.uint32)
    docs = np.array([2, 0, 1], dtype=np.uint64)  # signature rows in any order
    sigs = sigs[[2, 0, 1]]
    pair_a, pair_b = np.array([0, 0, 0], dtype=np.uint64), np.array([1, 2, 1], dtype=np.uint64)  # (0, 1) twice
    b, a, sig_a = graph.attach(docs, sigs, pair_a, pair_b)
    assert len(b) == 2  # deduplicated
    ea, eb = graph.verified(docs, sigs, b, a, sig_a, threshold=0.75, num_perm=4)
    assert list(zip(ea.tolist(), eb.tolist(), strict=True)) == [(0, 1)]


# -- single machine -----------------------------------------------------------------------------------


def test_chain_greedy_keeps_a_and_c_components_keeps_a_only(tmp_path):
    sig = DedupFilter().sign([A, B, C]).signatures
    sim = lambda i, j: np.mean(sig[i] == sig[j])  # noqa: E731
    assert sim(0, 1) >= 0.5 and sim(1, 2) >= 0.5 and sim(0, 2) < 0.5  # the premise: a chain

    src = tmp_path / "chain.jsonl"
    src.write_text(
        "".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in zip("ABC", (A, B, C), strict=True)), "utf-8"
    )
    kept = {}
    for mode in ("greedy", "components"):
        out = tmp_path / f"{mode}.jsonl"
        assert main(["dedup", str(src), "--out", str(out), "--mode", mode, "--quiet"]) == 0
        kept[mode] = [r["id"] for r in read_jsonl(out)]
    assert kept == {"greedy": ["A", "C"], "components": ["A"]}
    drops = components([A, B, C])
    assert {i: (d.reason, d.twin) for i, d in drops.items()} == {1: ("near_duplicate", 0), 2: ("near_duplicate", 0)}


def test_components_exact_copy_of_a_dropped_record_points_to_the_kept_one():
    drops = components([A, B, B.upper(), "something else entirely, nothing alike at all"])
    assert {i: (d.reason, d.twin) for i, d in drops.items()} == {1: ("near_duplicate", 0), 2: ("near_duplicate", 0)}
    drops = components([A, A.upper(), None])
    assert {i: (d.reason, d.twin) for i, d in drops.items()} == {1: ("exact_duplicate", 0)}


def test_non_ray_path_and_help_do_not_import_ray(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": A}) + "\n" + json.dumps({"text": B}) + "\n", "utf-8")
    code = (
        "import sys\n"
        "from engine.cli import main\n"
        f"assert main(['dedup', {str(src)!r}, '--out', {str(tmp_path / 'o.jsonl')!r}, '--mode', 'components']) == 0\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('RAY_LOADED' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'NO_RAY')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO_RAY"


def test_several_inputs_without_ray_get_one_line(tmp_path, capsys):
    paths = write_parts(tmp_path / "in", corpus(n=10, near=0, exact=0)[0], 2)
    assert main(["dedup", *map(str, paths), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == (
        "corpusforge: error: several inputs need --ray (merge them into one file, or add --ray)"
    )


# -- Ray ----------------------------------------------------------------------------------------------


def ray_run(*args: str) -> int:
    return main(["dedup", *args, "--ray"])


def kept_and_dropped(out: Path) -> tuple[list[str], dict[str, tuple[str, str]]]:
    kept = [r["id"] for p in sorted(out.glob("part-*.jsonl")) for r in read_jsonl(p)]
    dropped = {
        d["record"]["id"]: (d["reason"], d["duplicate_of"]) for p in sorted((out / "dropped").glob("*.jsonl"))
        for d in read_jsonl(p)
    }  # fmt: skip
    return kept, dropped


@pytest.mark.parametrize("band_rounds", [1, 3])
def test_ray_finds_planted_duplicates_across_parts_and_matches_the_single_machine_components(
    ray_cluster, tmp_path, capsys, monkeypatch, band_rounds
):
    from engine.dedup import ray_dedup

    rows, planted = corpus()
    if band_rounds > 1:  # the bands shuffled 10 at a time (25 bands: 3 rounds), as a large corpus does
        monkeypatch.setattr(ray_dedup, "BAND_ROWS_PER_ROUND", 10 * len(rows))
    paths = write_parts(tmp_path / "in", rows, 4)
    out = tmp_path / "out"
    assert ray_run(str(tmp_path / "in"), "--out", str(out), "--partitions", "3") == 0
    kept, dropped = kept_and_dropped(out)

    # planted copies were spread over the parts at random, and every one is found
    part_of = {r["id"]: k for k, p in enumerate(paths) for r in read_jsonl(p)}
    assert sum(part_of[s] != part_of[c] for s, c in planted) > len(planted) // 2
    kept_ids = set(kept)
    assert all(not (s in kept_ids and c in kept_ids) for s, c in planted)  # one of each planted pair drops
    assert all(twin in kept_ids for _, twin in dropped.values())

    # the single machine, same mode, over the parts concatenated in input order
    whole = tmp_path / "whole.jsonl"
    whole.write_text("".join(p.read_text("utf-8") for p in paths), "utf-8")
    rejects = tmp_path / "rejects.jsonl"
    assert main(["dedup", str(whole), "--out", str(tmp_path / "one.jsonl"), "--mode", "components",
                 "--rejects", str(rejects), "--quiet"]) == 0  # fmt: skip
    assert kept == [r["id"] for r in read_jsonl(tmp_path / "one.jsonl")]
    assert dropped == {d["record"]["id"]: (d["reason"], d["duplicate_of"]) for d in read_jsonl(rejects)}
    assert {reason for reason, _ in dropped.values()} == {"exact_duplicate", "near_duplicate"}
    # JSONL lines are written back byte for byte
    originals = {json.loads(line)["id"]: line for p in paths for line in p.read_text("utf-8").splitlines()}
    assert (out / "part-00001.jsonl").read_text("utf-8").splitlines() == [
        originals[r["id"]] for r in read_jsonl(out / "part-00001.jsonl")
    ]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["kept"] == len(kept) and manifest["rows"] == len(rows)
    assert "kept" in capsys.readouterr().out


def test_ray_rerun_gives_identical_parts_and_leaves_no_temp_dirs(ray_cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, _ = corpus(seed=3, n=300, near=30, exact=3)
    (tmp_path / "in").mkdir()
    for k in range(3):
        pq.write_table(pa.Table.from_pylist(rows[k::3]), tmp_path / "in" / f"p{k}.parquet")
    out = tmp_path / "out"
    snapshots = []
    for _ in range(2):
        assert ray_run(str(tmp_path / "in" / "*.parquet"), "--out", str(out)) == 0
        snapshots.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert snapshots[0] == snapshots[1]
    assert sorted(str(p) for p in snapshots[0]) == [
        "_manifest.json", "dropped/part-00000.jsonl", "dropped/part-00001.jsonl", "dropped/part-00002.jsonl",
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
    ]  # fmt: skip
    kept = pq.read_table(out / "part-00000.parquet")
    assert kept.schema == pq.read_schema(tmp_path / "in" / "p0.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def bad_case(tmp_path: Path, case: str) -> list[str]:
    good = [{"id": "a", "text": A}, {"id": "b", "text": B}]
    folder = tmp_path / "in"
    write_parts(folder, good, 1)
    if case == "missing field":
        return [str(folder), "--field", "body"]
    if case == "empty part":
        (folder / "p1.jsonl").write_text("\n", "utf-8")
    elif case == "mixed schemas":
        (folder / "p1.jsonl").write_text(json.dumps({"id": "c", "body": C}) + "\n", "utf-8")
    elif case == "bad json late in a part":
        lines = [json.dumps({"id": f"x{i}", "text": f"{C} {i}"}) for i in range(50)] + ["{not json"]
        (folder / "p1.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    elif case == "no such path":
        return [str(tmp_path / "nowhere")]
    return [str(folder)]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing field", "field 'body' not found in"),
        ("empty part", "holds no records (remove the empty part)"),
        ("mixed schemas", "mixed schemas:"),
        ("bad json late in a part", "p1.jsonl:51: not valid JSON"),
        ("no such path", "does not exist (check the path)"),
    ],
)
def test_ray_bad_inputs_get_one_line_and_write_nothing(ray_cluster, tmp_path, capsys, case, message):
    args = bad_case(tmp_path, case)
    out = tmp_path / "out"
    assert ray_run(*args, "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("corpusforge: error: ") and "\n" not in err, err
    assert message in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left behind


def test_ray_refuses_greedy_and_an_output_that_is_not_its_own(ray_cluster, tmp_path, capsys):
    write_parts(tmp_path / "in", [{"text": A}], 1)
    assert ray_run(str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--mode", "greedy") == 2
    assert "use --mode components" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    assert ray_run(str(tmp_path / "in"), "--out", str(tmp_path / "mine")) == 2
    assert "is not a corpusforge dedup output" in capsys.readouterr().err
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"
