"""``batch export`` → a ``vllm run-batch`` stand-in → ``batch import``, for every strategy.

The stand-in turns each exported input line into an output line in the Batch
API format (``{id, custom_id, response: {status_code, request_id, body},
error}``, as ``vllm run-batch`` writes it) by posting the line's body to the
simulator's chat route. The topic strategy's phase one runs through
``--base-url`` once; a later export of the same run reuses the stored topics.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.sim import SimConfig, sim_process
from engine.store import read_jsonl

N = 12


def vllm_run_batch(url: str, inputs: list[Path], results: Path) -> int:
    """What ``vllm run-batch -i INPUT -o RESULTS`` does: each body to the chat route, one output line each."""
    lines: list[dict[str, Any]] = []
    for path in inputs:
        for raw in path.read_text().splitlines():
            req = json.loads(raw)
            assert req["method"] == "POST" and req["url"] == "/v1/chat/completions"
            post = urllib.request.Request(
                url + "/chat/completions",
                data=json.dumps(req["body"]).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(post, timeout=10) as r:
                body = json.loads(r.read())
            rid = f"vllm-{len(lines)}"
            response = {"status_code": 200, "request_id": rid, "body": body}
            lines.append({"id": rid, "custom_id": req["custom_id"], "response": response, "error": None})
    results.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return len(lines)


def _sidecar_meta(inputs: list[Path]) -> list[dict[str, Any]]:
    metas = []
    for path in inputs:
        sidecar = path.with_name(path.name.replace(".jsonl", ".requests.jsonl"))
        metas += [row["meta"] for row in read_jsonl(sidecar)]
    return metas


@pytest.mark.parametrize("strategy", ["zero-shot", "one-shot", "few-shot", "topic"])
def test_export_run_import_round_trip_for_every_strategy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strategy: str
) -> None:
    out = tmp_path / "run"
    rounds: list[tuple[int, int]] = []  # (requests exported, results imported)
    with sim_process(SimConfig(seed=5)) as url:
        for round_no in range(1, 10):
            argv = ["batch", "export", str(out), "--task", "bbc-news", "--model", "sim", "--n", str(N)]
            argv += ["--strategy", strategy, "--shots", "3"]
            if strategy == "topic" and round_no == 1:
                argv += ["--base-url", url]  # phase one, once: later rounds read topics.json
            assert main(argv) == 0, capsys.readouterr().err
            exported = [Path(p) for p in capsys.readouterr().out.split() if p.endswith(".jsonl")]
            assert exported
            metas = _sidecar_meta(exported)
            assert {m["strategy"] for m in metas} == {strategy}
            if strategy == "one-shot":
                assert all(len(m["shots"]) == 1 for m in metas)
            elif strategy == "few-shot":
                assert all(len(m["shots"]) == 3 for m in metas)
            elif strategy == "topic":
                assert all(m["topic"] for m in metas)
                bodies = [json.loads(line)["body"] for p in exported for line in p.read_text().splitlines()]
                assert all(m["topic"] in b["messages"][-1]["content"] for m, b in zip(metas, bodies, strict=True))
            results = tmp_path / f"results-{round_no}.jsonl"
            imported = vllm_run_batch(url, exported, results)
            code = main(["batch", "import", str(out), str(results)])
            text = capsys.readouterr().out
            assert f"imported {imported} results (0 exported requests still waiting)" in text
            rounds.append((len(metas), imported))
            if code == 0:
                break
        else:
            pytest.fail(f"the round trip never reached --n: {rounds}")
    data = list(read_jsonl(out / "data.jsonl"))
    assert len(data) == N and len({r["id"] for r in data}) == N
    counts = Counter(r["label"] for r in data)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert json.loads((out / "manifest.json").read_text())["run"]["strategy"] == strategy
    if strategy == "topic":
        assert set(json.loads((out / "topics.json").read_text())["topics"]) == set(counts)
        # the run grows without an endpoint: phase one is done, its topics are reused
        assert main(["batch", "export", str(out), "--n", str(N + 4)]) == 0
        more = [Path(p) for p in capsys.readouterr().out.split() if p.endswith(".jsonl")]
        assert more and all(m["topic"] for m in _sidecar_meta(more))


def test_topic_export_without_an_endpoint_is_one_line_and_leaves_out_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["batch", "export", str(out), "--task", "bbc-news", "--model", "M", "--strategy", "topic"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("corpusforge: error:") and len(err.splitlines()) == 1
    assert "--base-url" in err and "vllm serve M" in err
    assert not out.exists()


def test_export_flags_that_disagree_with_the_run_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["batch", "export", str(out), "--task", "bbc-news", "--model", "M", "--n", "5"]) == 0
    capsys.readouterr()
    assert main(["batch", "export", str(out), "--strategy", "few-shot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("corpusforge: error:") and len(err.splitlines()) == 1
    assert "--strategy zero-shot, not few-shot" in err and "drop --strategy" in err
    assert main(["batch", "export", str(out), "--model", "other"]) == 2
    assert "--model M, not other" in capsys.readouterr().err
