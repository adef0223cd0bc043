"""The simulator's Files + Batches API, as a real server on 127.0.0.1 driven by a fake clock."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from engine.errors import ConfigError
from engine.sim import SimConfig, cli_args, running_sim


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _line(cid: str, label: str = "positive", **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Write one movie review of about twenty words.\nLabel: {label}"}]
    return {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "sim", "messages": messages, "max_tokens": 200, **body},
    }


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


async def _upload(
    s: aiohttp.ClientSession, url: str, content: bytes, *, name: str = "in.jsonl", purpose: str = "batch"
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("purpose", purpose)
    form.add_field("file", content, filename=name, content_type="application/jsonl")
    async with s.post(url + "/files", data=form) as r:
        return r.status, await r.json()


async def _create(s: aiohttp.ClientSession, url: str, file_id: str, **kw: Any) -> dict[str, Any]:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **kw}
    async with s.post(url + "/batches", json=body) as r:
        assert r.status == 200, await r.text()
        data: dict[str, Any] = await r.json()
        return data


async def _get(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _content(s: aiohttp.ClientSession, url: str, file_id: str) -> list[dict[str, Any]]:
    async with s.get(f"{url}/files/{file_id}/content") as r:
        assert r.status == 200
        return [json.loads(line) for line in (await r.read()).splitlines()]


async def test_files_upload_retrieve_content_list_delete() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        content = _jsonl([_line("a"), _line("b")])
        status, f = await _upload(s, sim.url, content)
        assert status == 200
        assert f["object"] == "file" and f["purpose"] == "batch" and f["bytes"] == len(content)
        assert f["filename"] == "in.jsonl" and f["id"].startswith("file-")
        assert (await _get(s, f"{sim.url}/files/{f['id']}"))["id"] == f["id"]
        async with s.get(f"{sim.url}/files/{f['id']}/content") as r:
            assert await r.read() == content
        listed = await _get(s, f"{sim.url}/files?purpose=batch")
        assert [x["id"] for x in listed["data"]] == [f["id"]]
        async with s.delete(f"{sim.url}/files/{f['id']}") as r:
            assert await r.json() == {"id": f["id"], "object": "file", "deleted": True}
        async with s.get(f"{sim.url}/files/{f['id']}") as r:
            assert r.status == 404
        async with s.get(f"{sim.url}/files/{f['id']}/content") as r:
            assert r.status == 404
        async with s.delete(f"{sim.url}/files/{f['id']}") as r:  # deleting twice: the file is gone
            assert r.status == 404 and "No such File" in (await r.json())["error"]["message"]
        assert sim.batches.state.files_deleted == 1 and sim.batches.files == {}


async def test_upload_rejections_say_why() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        status, body = await _upload(s, sim.url, b'{"a": 1}\n', name="in.csv")
        assert status == 400 and "jsonl" in body["error"]["message"]
        status, body = await _upload(s, sim.url, b'{"a": 1}\n', purpose="nonsense")
        assert status == 400 and body["error"]["param"] == "purpose"
        async with s.post(sim.url + "/files", json={"purpose": "batch"}) as r:
            assert r.status == 400


async def test_batch_walks_its_statuses_with_the_clock_and_answers_every_line() -> None:
    clock = FakeClock()
    cfg = SimConfig(batch_rps=10, batch_phase_s=1.0)
    async with running_sim(cfg, clock=clock) as sim, aiohttp.ClientSession() as s:
        lines = [_line(f"r{i}", label="negative" if i % 2 else "positive") for i in range(20)]
        _, f = await _upload(s, sim.url, _jsonl(lines))
        batch = await _create(s, sim.url, f["id"], metadata={"run": "x"})
        assert batch["status"] == "validating" and batch["metadata"] == {"run": "x"}
        assert (
            batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
            or batch["request_counts"]["completed"] == 0
        )
        url = f"{sim.url}/batches/{batch['id']}"
        clock.now += 1.5  # 1 s validating, then 0.5 s at 10 lines/s
        b = await _get(s, url)
        assert b["status"] == "in_progress" and b["request_counts"]["completed"] == 5
        assert b["request_counts"]["total"] == 20 and b["output_file_id"] is None
        clock.now += 1.5  # all 20 done at t+3: finalizing
        b = await _get(s, url)
        assert b["status"] == "finalizing" and b["request_counts"]["completed"] == 20
        clock.now += 1.0
        b = await _get(s, url)
        assert b["status"] == "completed" and b["completed_at"] is not None and b["error_file_id"] is None
        out = await _content(s, sim.url, b["output_file_id"])
        assert sorted(x["custom_id"] for x in out) == sorted(f"r{i}" for i in range(20))
        for x in out:
            assert x["error"] is None and x["response"]["status_code"] == 200 and x["response"]["request_id"]
            body = x["response"]["body"]
            assert body["object"] == "chat.completion" and body["usage"]["prompt_tokens"] > 0
            example = json.loads(body["choices"][0]["message"]["content"])
            assert example["label"] == ("negative" if int(x["custom_id"][1:]) % 2 else "positive")
        listed = await _get(s, f"{sim.url}/batches?limit=5")
        assert [x["id"] for x in listed["data"]] == [batch["id"]] and listed["has_more"] is False
        stats = await _get(s, sim.url.removesuffix("/v1") + "/sim/batch-stats")
        assert stats["executed_lines"] == 20 and stats["executed_custom_ids"] == 20 and stats["executed_twice"] == 0
        assert sim.state.ok == 20  # counted with the chat route's answers


async def test_invalid_input_file_fails_validation_with_line_numbers() -> None:
    clock = FakeClock()
    async with running_sim(SimConfig(batch_phase_s=1.0), clock=clock) as sim, aiohttp.ClientSession() as s:
        content = _jsonl([_line("a"), _line("a")]) + b"not json\n" + _jsonl([{**_line("c"), "url": "/v1/embeddings"}])
        _, f = await _upload(s, sim.url, content)
        batch = await _create(s, sim.url, f["id"])
        clock.now += 1.0
        b = await _get(s, f"{sim.url}/batches/{batch['id']}")
        assert b["status"] == "failed" and b["failed_at"] is not None
        errors = b["errors"]["data"]
        assert [(e["code"], e["line"]) for e in errors] == [
            ("duplicate_custom_id", 2),
            ("invalid_json_line", 3),
            ("invalid_url", 4),
        ]
        assert sim.batches.state.executed == {}


async def test_create_rejects_bad_parameters() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        _, f = await _upload(s, sim.url, _jsonl([_line("a")]))
        for body, param in (
            (
                {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "1h"},
                "completion_window",
            ),
            ({"input_file_id": f["id"], "endpoint": "/v1/x", "completion_window": "24h"}, "endpoint"),
            ({"endpoint": "/v1/chat/completions", "completion_window": "24h"}, "input_file_id"),
        ):
            async with s.post(sim.url + "/batches", json=body) as r:
                assert r.status == 400 and (await r.json())["error"]["param"] == param
        body = {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        async with s.post(sim.url + "/batches", json=body) as r:
            assert r.status == 404


async def test_enqueued_token_limit_fails_the_batch_until_the_queue_drains() -> None:
    clock = FakeClock()
    cfg = SimConfig(batch_rps=10, batch_phase_s=0.0, batch_token_limit=400)
    async with running_sim(cfg, clock=clock) as sim, aiohttp.ClientSession() as s:
        _, f1 = await _upload(s, sim.url, _jsonl([_line(f"a{i}") for i in range(10)]))  # 10 x 16 tokens
        _, f2 = await _upload(s, sim.url, _jsonl([_line(f"b{i}") for i in range(20)]))
        first = await _create(s, sim.url, f1["id"])
        second = await _create(s, sim.url, f2["id"])
        b2 = await _get(s, f"{sim.url}/batches/{second['id']}")
        assert b2["status"] == "failed"
        (err,) = b2["errors"]["data"]
        assert err["code"] == "token_limit_exceeded" and "Limit: 400 enqueued tokens" in err["message"]
        clock.now += 10  # the first batch completes; its tokens leave the queue
        assert (await _get(s, f"{sim.url}/batches/{first['id']}"))["status"] == "completed"
        retry = await _create(s, sim.url, f2["id"])  # the same uploaded file, a new batch
        clock.now += 10
        assert (await _get(s, f"{sim.url}/batches/{retry['id']}"))["status"] == "completed"
        summary = sim.batches.state.summary()
        assert summary["executed_custom_ids"] == 30 and summary["executed_twice"] == 0
        assert summary["token_limit_failures"] == 1


async def test_token_limit_can_refuse_at_creation_instead() -> None:
    cfg = SimConfig(batch_phase_s=100.0, batch_token_limit=100, batch_token_limit_on_create=True)
    async with running_sim(cfg) as sim, aiohttp.ClientSession() as s:
        _, f = await _upload(s, sim.url, _jsonl([_line(f"a{i}") for i in range(10)]))
        body = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        async with s.post(sim.url + "/batches", json=body) as r:
            assert r.status == 400
            err = (await r.json())["error"]
        assert err["code"] == "token_limit_exceeded" and "Limit: 100 enqueued tokens" in err["message"]
        assert sim.batches.batches == {} and sim.batches.state.token_limit_failures == 1


async def test_expired_batch_keeps_half_the_output_and_lists_the_rest_as_expired() -> None:
    clock = FakeClock()
    cfg = SimConfig(batch_rps=10, batch_phase_s=0.0, batch_expire_every=2)
    async with running_sim(cfg, clock=clock) as sim, aiohttp.ClientSession() as s:
        _, f = await _upload(s, sim.url, _jsonl([_line(f"r{i}") for i in range(10)]))
        ok = await _create(s, sim.url, f["id"])
        doomed = await _create(s, sim.url, f["id"])
        clock.now += 100
        assert (await _get(s, f"{sim.url}/batches/{ok['id']}"))["status"] == "completed"
        b = await _get(s, f"{sim.url}/batches/{doomed['id']}")
        assert b["status"] == "expired" and b["expired_at"] is not None
        assert b["request_counts"] == {"total": 10, "completed": 5, "failed": 5}
        out = await _content(s, sim.url, b["output_file_id"])
        errs = await _content(s, sim.url, b["error_file_id"])
        assert len(out) == 5 and len(errs) == 5
        assert {x["custom_id"] for x in out} | {x["custom_id"] for x in errs} == {f"r{i}" for i in range(10)}
        assert all(x["response"] is None and x["error"]["code"] == "batch_expired" for x in errs)


async def test_every_kth_batch_fails_validation_on_demand() -> None:
    clock = FakeClock()
    cfg = SimConfig(batch_fail_every=1, batch_phase_s=0.0)
    async with running_sim(cfg, clock=clock) as sim, aiohttp.ClientSession() as s:
        _, f = await _upload(s, sim.url, _jsonl([_line("a")]))
        batch = await _create(s, sim.url, f["id"])
        b = await _get(s, f"{sim.url}/batches/{batch['id']}")
        assert b["status"] == "failed" and b["errors"]["data"][0]["message"]


async def test_cancel_keeps_what_was_done() -> None:
    clock = FakeClock()
    cfg = SimConfig(batch_rps=10, batch_phase_s=1.0)
    async with running_sim(cfg, clock=clock) as sim, aiohttp.ClientSession() as s:
        _, f = await _upload(s, sim.url, _jsonl([_line(f"r{i}") for i in range(20)]))
        batch = await _create(s, sim.url, f["id"])
        clock.now += 1.3  # 3 lines done
        async with s.post(f"{sim.url}/batches/{batch['id']}/cancel") as r:
            assert r.status == 200 and (await r.json())["status"] == "cancelling"
        clock.now += 5  # nothing more executes while cancelling
        b = await _get(s, f"{sim.url}/batches/{batch['id']}")
        assert b["status"] == "cancelled" and b["request_counts"] == {"total": 20, "completed": 3, "failed": 17}
        errs = await _content(s, sim.url, b["error_file_id"])
        assert {x["error"]["code"] for x in errs} == {"batch_cancelled"}
        async with s.post(f"{sim.url}/batches/{batch['id']}/cancel") as r:
            assert r.status == 409


async def test_error_lines_go_to_the_error_file_at_the_configured_rate() -> None:
    clock = FakeClock()
    cfg = SimConfig(batch_rps=1000, batch_phase_s=0.0, batch_error_rate=0.3, seed=3)
    async with running_sim(cfg, clock=clock) as sim, aiohttp.ClientSession() as s:
        _, f = await _upload(s, sim.url, _jsonl([_line(f"r{i}") for i in range(400)]))
        batch = await _create(s, sim.url, f["id"])
        clock.now += 10
        b = await _get(s, f"{sim.url}/batches/{batch['id']}")
        assert b["status"] == "completed"
        errs = await _content(s, sim.url, b["error_file_id"])
        out = await _content(s, sim.url, b["output_file_id"])
        assert len(errs) + len(out) == 400 and 80 < len(errs) < 160
        assert all(x["response"]["status_code"] == 500 and "error" in x["response"]["body"] for x in errs)


async def test_list_pages_newest_first() -> None:
    async with running_sim(SimConfig(batch_phase_s=100.0)) as sim, aiohttp.ClientSession() as s:
        _, f = await _upload(s, sim.url, _jsonl([_line("a")]))
        ids = [(await _create(s, sim.url, f["id"]))["id"] for _ in range(5)]
        page = await _get(s, f"{sim.url}/batches?limit=2")
        assert [x["id"] for x in page["data"]] == ids[::-1][:2] and page["has_more"]
        page = await _get(s, f"{sim.url}/batches?limit=10&after={page['last_id']}")
        assert [x["id"] for x in page["data"]] == ids[::-1][2:] and not page["has_more"]


async def test_without_the_batch_api_the_routes_are_404() -> None:
    async with running_sim(SimConfig(batch_api=False)) as sim, aiohttp.ClientSession() as s:
        status, _ = 0, None
        async with s.post(sim.url + "/files", data=b"x") as r:
            status = r.status
        assert status == 404
        async with s.get(sim.url + "/batches") as r:
            assert r.status == 404


async def test_require_key_applies_to_batch_routes() -> None:
    async with running_sim(SimConfig(require_key="k")) as sim, aiohttp.ClientSession() as s:
        async with s.get(sim.url + "/batches") as r:
            assert r.status == 401
        async with s.get(sim.url + "/batches", headers={"Authorization": "Bearer k"}) as r:
            assert r.status == 200


def test_batch_config_is_validated_and_round_trips_through_cli_args() -> None:
    from engine.cli import build_parser

    with pytest.raises(ConfigError):
        SimConfig(batch_rps=0)
    with pytest.raises(ConfigError):
        SimConfig(batch_error_rate=2)
    cfg = SimConfig(
        batch_api=False,
        batch_rps=7,
        batch_phase_s=0.5,
        batch_token_limit=99,
        batch_fail_every=3,
        batch_expire_every=4,
        batch_error_rate=0.25,
        batch_token_limit_on_create=True,
    )
    args = build_parser().parse_args(["serve-sim", *cli_args(cfg)])
    assert args.no_batch_api and args.batch_rps == 7 and args.batch_phase_s == 0.5 and args.batch_token_limit == 99
    assert args.batch_fail_every == 3 and args.batch_expire_every == 4 and args.batch_error_rate == 0.25
    assert args.batch_token_limit_on_create
