"""Each stage of the chain alone, then the chain through ``Run.consume`` (where is an example dropped as surplus?)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import RunConfig
from engine.errors import AuthError, Timeout
from engine.pipeline import Chain, Work
from engine.plan import Planner
from engine.run import GenerateOptions, open_run
from engine.stages import CheckStage, ParseStage, QuotaStage, StoreStage
from engine.stats import Stats
from engine.store import RunStore
from engine.tasks import load_task
from engine.types import Completion, Example, Outcome, Request

BBC = load_task("bbc-news")
ARTICLE = "The chancellor said on Tuesday that the budget would cut taxes for small firms across the country."


def outcome(rid: str, label: str, text: str | None = None, error: Exception | None = None) -> Outcome:
    request = Request(id=rid, messages=[], label=label, attempts=1)
    if error is not None:
        return Outcome(request, error=error)  # type: ignore[arg-type]
    completion = Completion(request_id=rid, text=text or "", prompt_tokens=50, completion_tokens=20)
    return Outcome(request, completion=completion)


def reply(text: str, label: str) -> str:
    return json.dumps({"text": text, "label": label})


def parse_stage(stats: Stats) -> ParseStage:
    return ParseStage(task=BBC, strategy_name="zero-shot", model="m", per_request=1, stats=stats)


def test_parse_turns_replies_into_candidates_and_errors_into_failures_or_a_fatal():
    stats = Stats()
    fatal = AuthError("bad key", status=401)
    work = Work(
        [
            outcome("business-0000000", "business", reply(ARTICLE, "business")),
            outcome("business-0000001", "business", reply(ARTICLE, "sport")),
            outcome("tech-0000000", "tech", error=Timeout("slow")),
            outcome("tech-0000001", "tech", error=fatal),
        ]
    )
    parse_stage(stats).process(work)
    assert [e.id for e in work.examples] == ["business-0000000-0"]
    assert [reason for _, reason in work.rejected] == ["wrong_label"]
    assert [f["request_id"] for f in work.failures] == ["tech-0000000"]
    assert work.fatal is fatal
    assert stats.get("failed") == 1 and stats.get("rejected:wrong_label") == 1


def test_checks_drop_filler_with_the_model_text_as_the_reject_record():
    stats = Stats()
    work = Work([outcome("tech-0000000", "tech", "x")])
    for j, text in enumerate(["<text here>", "I'm sorry, I can't help with that request.", ARTICLE]):
        work.add(Example(id=f"tech-0000000-{j}", fields={"text": text}, label="tech", request_id="tech-0000000"), text)
    CheckStage(task=BBC, stats=stats).process(work)
    assert [e.id for e in work.examples] == ["tech-0000000-2"]
    assert [(row["raw"], reason) for row, reason in work.rejected] == [
        ("<text here>", "placeholder"),
        ("I'm sorry, I can't help with that request.", "refusal"),
    ]


def test_quota_is_where_surplus_is_dropped_and_each_request_is_journaled():
    stats = Stats()
    planner = Planner(["a", "b"], n=2, cap=100)
    first, second = planner.next(), planner.next()
    assert first is not None and second is not None
    outcomes = [outcome(first.id, first.label, "x"), outcome(second.id, second.label, "x")]
    work = Work(outcomes)
    for o in outcomes:
        for j in range(2):  # two examples per request, one per label is wanted
            rid, label = o.request.id, o.request.label or ""
            work.add(Example(id=f"{rid}-{j}", fields={"text": f"{rid} {j}"}, label=label, request_id=rid), "")
    QuotaStage(planner, stats=stats).process(work)
    assert len(work.examples) == 2 and {e.label for e in work.examples} == {"a", "b"}
    assert [reason for _, reason in work.rejected] == ["surplus", "surplus"]
    assert [(line["kept"], line["attempts"], line["prompt_tokens"]) for line in work.journal] == [(1, 1, 50)] * 2
    assert work.done and planner.finished


def test_store_writes_the_batch_and_refreshes_stats_on_its_clock(tmp_path: Path):
    now = [0.0]
    stats = Stats()
    with RunStore(tmp_path) as store:
        store.open({"fingerprint": {}}, resume=False)
        stage = StoreStage(
            store, stats=stats, snapshot=lambda: {"accepted": stats.get("accepted")}, clock=lambda: now[0]
        )
        work = Work([], journal=[{"request_id": "a-0", "label": "a"}])
        work.add(Example(id="a-0-0", fields={"text": "t"}, label="a", request_id="a-0"), "")
        stage.process(work)
        assert not (tmp_path / "stats.json").exists()
        now[0] = 5.0
        stage.process(Work([]))
    assert json.loads((tmp_path / "stats.json").read_text()) == {"accepted": 1}
    assert (tmp_path / "data.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "requests.jsonl").read_text().count("\n") == 1


def test_the_chain_runs_stages_in_order():
    order: list[str] = []

    class Probe:
        def __init__(self, name: str) -> None:
            self.name = name

        def process(self, work: Work) -> None:
            order.append(self.name)

    Chain([Probe("parse"), Probe("checks"), Probe("store")]).run([])
    assert order == ["parse", "checks", "store"]


async def test_run_consume_writes_the_batch_before_raising_a_fatal_error(tmp_path: Path):
    options = GenerateOptions(out_dir=tmp_path / "run", progress=False)
    with open_run(RunConfig(task="bbc-news", n=5), model="m", manifest={"fingerprint": {}}, options=options) as run:
        planned = run.next_request()
        assert planned is not None
        ok = outcome(planned.id, planned.label or "", reply(ARTICLE, planned.label or ""))
        ok.request = planned
        denied = [outcome(f"tech-000000{k}", "tech", error=AuthError("bad key", status=401)) for k in range(3)]
        with pytest.raises(AuthError):
            await run.consume([ok, *denied])
    lines = (tmp_path / "run" / "data.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [planned.id]
    # requests stopped by a fatal error are not done: none is journaled, so a resumed run asks again
    journal = (tmp_path / "run" / "requests.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in journal] == [planned.id]
