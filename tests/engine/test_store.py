import json
import os

import pytest

from engine.errors import ConfigError
from engine.runstate import RunState
from engine.store import RunStore, read_jsonl
from engine.types import Example


def manifest(**fp):
    return {"version": 1, "fingerprint": {"task": "bbc-news", "seed": 0, **fp}}


def ex(rid, j, label="sport"):
    return Example(id=f"{rid}-{j}", fields={"text": f"text {rid} {j}"}, label=label, request_id=rid)


def test_write_then_resume_loads_done_requests(tmp_path):
    with RunStore(tmp_path) as store:
        state = store.open(manifest(), resume=False)
        assert not state.done_requests
        store.write_batch(
            accepted=[ex("sport-0000000", 0), ex("sport-0000001", 0)],
            rejected=[({"id": "x"}, "near_duplicate")],
            failures=[{"request_id": "tech-0000000", "reason": "Timeout"}],
            journal=[
                {"request_id": "sport-0000000", "label": "sport"},
                {"request_id": "sport-0000001", "label": "sport"},
                {"request_id": "tech-0000000", "label": "tech"},
            ],
        )
    with RunStore(tmp_path) as store:
        state = store.open(manifest(), resume=True)
        kept = [e.id for chunk in store.iter_examples(chunk=1) for e in chunk]
    assert state.done_requests == {"sport-0000000", "sport-0000001", "tech-0000000"}
    assert state.accepted_by_label["sport"] == 2
    assert kept == ["sport-0000000-0", "sport-0000001-0"]
    assert [r["reason"] for r in read_jsonl(tmp_path / "rejects.jsonl")] == ["near_duplicate"]


def test_torn_last_line_is_repaired_and_data_without_journal_counts_as_done(tmp_path):
    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
        store.write_batch(accepted=[ex("sport-0000000", 0)], rejected=[], failures=[], journal=[])
    # a crash in the middle of the next write: half a line
    with open(tmp_path / "data.jsonl", "ab") as f:
        f.write(b'{"id": "sport-0000001-0", "lab')
    with RunStore(tmp_path) as store:
        state = store.open(manifest(), resume=True)
        assert state.repaired_bytes > 0
        assert state.done_requests == {"sport-0000000"}
        store.write_batch(accepted=[ex("sport-0000001", 0)], rejected=[], failures=[], journal=[])
    rows = list(read_jsonl(tmp_path / "data.jsonl"))
    assert [r["id"] for r in rows] == ["sport-0000000-0", "sport-0000001-0"]
    assert (tmp_path / "data.jsonl").read_bytes().endswith(b"\n")


def test_existing_run_without_resume_is_refused(tmp_path):
    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
    with pytest.raises(ConfigError, match="--resume"):
        RunStore(tmp_path).open(manifest(), resume=False)


def test_resume_with_different_configuration_says_what_differs(tmp_path):
    with RunStore(tmp_path) as store:
        store.open(manifest(seed=0), resume=False)
    with pytest.raises(ConfigError) as info:
        RunStore(tmp_path).open(manifest(seed=7), resume=True)
    assert "seed: 0 -> 7" in str(info.value)


def test_resume_of_an_empty_directory_starts_fresh(tmp_path):
    with RunStore(tmp_path / "new") as store:
        state = store.open(manifest(), resume=True)
    assert not state.done_requests and state.accepted == 0
    assert json.loads((tmp_path / "new" / "manifest.json").read_text())["fingerprint"]["task"] == "bbc-news"


def test_stats_and_state_are_written_atomically(tmp_path):
    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
        store.write_stats({"accepted": 3})
        store.write_state(RunState(structured=False))
        assert store.read_state() == RunState(structured=False)
    assert json.loads((tmp_path / "stats.json").read_text()) == {"accepted": 3}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path):
    import subprocess
    import sys

    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
        # another process, as a second `generate --resume` would be
        code = (
            "import sys; from engine.store import RunStore; from engine.errors import ConfigError\n"
            f"try:\n    RunStore({str(tmp_path)!r}).open({manifest()!r}, resume=True)\n"
            "except ConfigError as e:\n    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 3, proc.stderr
        assert f"in use by another corpusforge process (PID {os.getpid()})" in proc.stdout
    # released on close (and by the kernel if the process dies): the next writer gets in
    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=True)


def test_counters_are_rebuilt_from_the_files_not_the_last_snapshot(tmp_path):
    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
        store.write_batch(
            accepted=[ex("sport-0000000", 0), ex("sport-0000000", 1)],
            rejected=[({"id": "a"}, "near_duplicate"), ({"id": "b"}, "surplus")],
            failures=[{"request_id": "tech-0000000", "reason": "Timeout"}],
            journal=[
                {"request_id": "sport-0000000", "label": "sport", "status": "ok", "kept": 2, "attempts": 3,
                 "rate_limited": 2, "prompt_tokens": 100, "completion_tokens": 40},
                {"request_id": "tech-0000000", "label": "tech", "status": "failed", "kept": 0, "attempts": 6},
            ],
        )  # fmt: skip
        store.write_stats({"accepted": 0, "requests": 1, "errors:Timeout": 5, "requests_per_s": 3.5})
    with RunStore(tmp_path) as store:
        state = store.open(manifest(), resume=True)
    assert state.stats["accepted"] == 2 and state.stats["rejected"] == 2
    assert state.stats["rejected:near_duplicate"] == 1 and state.stats["rejected:surplus"] == 1
    assert (state.stats["requests"], state.stats["retries"], state.stats["rate_limited"]) == (9, 7, 2)
    assert (state.stats["prompt_tokens"], state.stats["completion_tokens"], state.stats["failed"]) == (100, 40, 1)
    assert state.stats["errors:Timeout"] == 5 and "requests_per_s" not in state.stats


def test_duplicate_ids_in_data_are_detected_and_counted_once(tmp_path):
    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
        store.write_batch(accepted=[ex("sport-0000000", 0)], rejected=[], failures=[], journal=[])
        store.write_batch(accepted=[ex("sport-0000000", 0)], rejected=[], failures=[], journal=[])
    with RunStore(tmp_path) as store:
        state = store.open(manifest(), resume=True)
        assert [e.id for chunk in store.iter_examples() for e in chunk] == ["sport-0000000-0"]
    assert state.duplicate_ids == 1 and state.accepted == 1 and state.stats["accepted"] == 1


def test_run_state_round_trips_through_state_and_topics_files(tmp_path):
    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
        assert store.read_state() == RunState()
        store.write_state(RunState(structured=False, topics={"sport": ["golf"]}, topics_fallback=["tech"]))
        assert store.read_state() == RunState(structured=False, topics={"sport": ["golf"]}, topics_fallback=["tech"])
    assert json.loads((tmp_path / "topics.json").read_text())["topics"] == {"sport": ["golf"]}


def test_discard_removes_only_a_new_directory_without_results(tmp_path):
    with RunStore(tmp_path / "new") as store:
        store.open(manifest(), resume=False)
        store.discard()
    assert not (tmp_path / "new").exists()
    with RunStore(tmp_path / "paid") as store:
        store.open(manifest(), resume=False)
        store.write_batch(accepted=[], rejected=[], failures=[], journal=[{"request_id": "x", "label": "sport"}])
        store.discard()
    assert (tmp_path / "paid" / "requests.jsonl").exists()


def test_inspect_reports_duplicate_ids_in_a_run(tmp_path, capsys):
    from engine.cli import main

    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
        for _ in range(2):  # the same examples written twice, as two writers on one directory did
            store.write_batch(accepted=[ex("sport-0000000", 0), ex("tech-0000000", 0, "tech")], rejected=[],
                              failures=[], journal=[])  # fmt: skip
    assert main(["inspect", str(tmp_path), "--no-embed"]) == 0
    assert "2 lines repeat the id of an earlier line" in capsys.readouterr().out
