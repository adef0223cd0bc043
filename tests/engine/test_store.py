import json
import os

import pytest

from engine.errors import ConfigError
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
    assert state.done_requests == {"sport-0000000", "sport-0000001", "tech-0000000"}
    assert state.accepted_by_label["sport"] == 2
    assert [e.id for e in state.examples] == ["sport-0000000-0", "sport-0000001-0"]
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
    assert not state.examples
    assert json.loads((tmp_path / "new" / "manifest.json").read_text())["fingerprint"]["task"] == "bbc-news"


def test_stats_and_state_are_written_atomically(tmp_path):
    with RunStore(tmp_path) as store:
        store.open(manifest(), resume=False)
        store.write_stats({"accepted": 3})
        store.write_state({"structured": False})
        assert store.read_state() == {"structured": False}
    assert json.loads((tmp_path / "stats.json").read_text()) == {"accepted": 3}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
