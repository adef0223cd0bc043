"""Batch mode's pieces: the Files/Batches client, input files, the ledger, polling and output lines.

The client runs against the simulator as a real server on 127.0.0.1 (one test
puts a connection-dropping middleware in front of it to lose an answer).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.batch import (
    BatchClient,
    InputWriter,
    Ledger,
    NoBatchApi,
    PollPolicy,
    encode_line,
    parse_size,
    read_requests,
)
from engine.batch.results import outcome_of, read_outcomes
from engine.config import ProviderConfig, RetryPolicy
from engine.errors import BadRequest, ConfigError, FatalError, MalformedResponse, ProviderUnavailable
from engine.providers.openai import OpenAIProvider
from engine.sim import SimConfig, build_app, running_sim
from engine.types import Request

FAST_RETRY = RetryPolicy(max_attempts=3, initial_s=0.01, max_backoff_s=0.02)


def _request(i: int, label: str = "positive") -> Request:
    messages = [{"role": "user", "content": f"Write one review, number {i}.\nLabel: {label}"}]
    return Request(id=f"{label}-{i:07d}", messages=messages, max_tokens=100, label=label, meta={"k": i})


def _client(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[OpenAIProvider, BatchClient]:
    provider = OpenAIProvider(session, ProviderConfig(base_url=url, model="sim", **kw))
    return provider, BatchClient(provider, FAST_RETRY)


def _write(tmp_path: Path, provider: OpenAIProvider, n: int, **limits: Any) -> list[Any]:
    writer = InputWriter(
        tmp_path,
        max_requests=limits.get("max_requests", 1000),
        max_bytes=limits.get("max_bytes", 10**9),
        max_tokens=limits.get("max_tokens"),
    )
    files = []
    for i in range(n):
        req = _request(i, "negative" if i % 2 else "positive")
        line = encode_line(req.id, provider.encode(req))
        if not writer.fits(len(line), 10):
            files.append(writer.close())
        writer.add(req, line, 10)
    files.append(writer.close())
    return [f for f in files if f is not None]


async def _until_final(client: BatchClient, batch_id: str) -> Any:
    for _ in range(500):
        info = await client.retrieve(batch_id)
        if info.status in ("completed", "failed", "expired", "cancelled"):
            return info
        await asyncio.sleep(0.01)
    raise AssertionError("the batch never finished")


async def test_round_trip_upload_create_poll_download(tmp_path: Path) -> None:
    async with running_sim(SimConfig(batch_phase_s=0.0)) as sim, aiohttp.ClientSession() as s:
        provider, client = _client(s, sim.url)
        await client.check()
        (f,) = _write(tmp_path, provider, 30)
        file_id = await client.upload(tmp_path / f"{f.name}.jsonl")
        info = await client.create_once(file_id, metadata={"corpusforge_file": f.name})
        assert info.status == "validating" and info["metadata"] == {"corpusforge_file": f.name}
        info = await _until_final(client, info.id)
        assert info.status == "completed" and info.counts == {"total": 30, "completed": 30, "failed": 0}
        size = await client.download(info["output_file_id"], tmp_path / "out.jsonl")
        assert size == (tmp_path / "out.jsonl").stat().st_size
        assert not (tmp_path / "out.jsonl.part").exists()
        pending = {r.id: r for r in read_requests(tmp_path, f.name)}
        assert pending["positive-0000000"].meta == {"k": 0} and pending["negative-0000001"].label == "negative"
        (chunk,) = list(read_outcomes(pending, [tmp_path / "out.jsonl", None], provider))
        assert len(chunk) == 30 and not pending
        for outcome in chunk:
            assert outcome.error is None and outcome.completion is not None
            assert json.loads(outcome.completion.text)["label"] == outcome.request.label
            assert outcome.completion.prompt_tokens > 0 and outcome.completion.request_id == outcome.request.id
        assert client.calls >= 5
        found = await client.find_batch(file_id)
        assert found is not None and found.id == info.id
        assert await client.find_batch(file_id, exclude=frozenset({info.id})) is None


async def test_a_server_without_the_batch_api_is_one_error_naming_the_online_path(tmp_path: Path) -> None:
    async with running_sim(SimConfig(batch_api=False)) as sim, aiohttp.ClientSession() as s:
        provider, client = _client(s, sim.url)
        with pytest.raises(NoBatchApi) as info:
            await client.check()
        assert "no Batch API" in str(info.value) and "without --batch" in str(info.value)
        (f,) = _write(tmp_path, provider, 2)
        with pytest.raises(NoBatchApi):
            await client.upload(tmp_path / f"{f.name}.jsonl")


async def test_a_rejected_upload_says_why(tmp_path: Path) -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        _, client = _client(s, sim.url)
        bad = tmp_path / "input.csv"
        bad.write_text("a,b\n")
        with pytest.raises(BadRequest) as info:
            await client.upload(bad)
        assert "rejected the batch input file input.csv" in str(info.value) and "jsonl" in str(info.value)


async def test_wrong_key_is_the_providers_auth_error(tmp_path: Path) -> None:
    async with running_sim(SimConfig(require_key="right")) as sim, aiohttp.ClientSession() as s:
        _, client = _client(s, sim.url, api_key="wrong")
        with pytest.raises(FatalError) as info:
            await client.check()
        assert info.value.status == 401 and "API key" in str(info.value)


async def test_create_once_finds_the_batch_whose_answer_was_lost(tmp_path: Path) -> None:
    app = build_app(SimConfig(batch_phase_s=0.0))
    dropped: list[bool] = []

    @web.middleware
    async def lose_first_create(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if request.method == "POST" and request.path == "/v1/batches" and not dropped:
            dropped.append(True)  # the batch exists now; its answer never arrives
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        return response

    app.middlewares.append(lose_first_create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as s:
            provider, client = _client(s, f"http://127.0.0.1:{port}/v1")
            (f,) = _write(tmp_path, provider, 3)
            file_id = await client.upload(tmp_path / f"{f.name}.jsonl")
            info = await client.create_once(file_id)
            assert dropped and info["input_file_id"] == file_id
            listed = [b async for b in client.list_batches(page=1)]
            assert len(listed) == 1 and listed[0].id == info.id  # one batch: nothing created (paid) twice
    finally:
        await runner.cleanup()


def test_writer_splits_by_requests_bytes_and_tokens(tmp_path: Path) -> None:
    provider = OpenAIProvider(None, ProviderConfig(base_url="http://x/v1", model="sim"))  # type: ignore[arg-type]
    (tmp_path / "a").mkdir()
    files = _write(tmp_path / "a", provider, 25, max_requests=10)
    assert [f.requests for f in files] == [10, 10, 5] and [f.name for f in files] == [
        "input-00001",
        "input-00002",
        "input-00003",
    ]
    one = len(encode_line("positive-0000000", provider.encode(_request(0))))
    (tmp_path / "b").mkdir()
    files = _write(tmp_path / "b", provider, 10, max_bytes=one * 3 + 5)
    assert [f.requests for f in files] == [3, 3, 3, 1]
    for f in files:
        assert (tmp_path / "b" / f"{f.name}.jsonl").stat().st_size == f.bytes <= one * 3 + 5
    (tmp_path / "c").mkdir()
    files = _write(tmp_path / "c", provider, 10, max_tokens=40)
    assert [f.requests for f in files] == [4, 4, 2] and files[0].tokens == 40
    line = json.loads((tmp_path / "c" / "input-00001.jsonl").read_text().splitlines()[0])
    assert line["custom_id"] == "positive-0000000" and line["method"] == "POST"
    assert line["url"] == "/v1/chat/completions"
    assert line["body"] == provider.body(_request(0))  # exactly what the online path would POST


def test_parse_size() -> None:
    assert parse_size("200MB") == 200_000_000 and parse_size("1MiB") == 1 << 20 and parse_size("512") == 512
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_ledger_replays_each_files_phase_and_survives_a_torn_line(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        ledger.append("written", file="input-00001", requests=3, bytes=10, tokens=30)
        ledger.append("written", file="input-00002", requests=2, bytes=10, tokens=20)
        ledger.append("uploaded", file="input-00001", file_id="file-1")
        ledger.append("uploaded", file="input-00002", file_id="file-2")
        ledger.append("creating", file="input-00001", at=5)
        ledger.append("created", file="input-00001", batch_id="b1")
        ledger.append("created", file="input-00002", batch_id="b2")
        ledger.append("requeue", file="input-00002", reason="token_limit_exceeded")
        ledger.append("limit", tokens=25)
        assert ledger.enqueued_tokens() == 30
    with open(tmp_path / "ledger.jsonl", "ab") as f:
        f.write(b'{"event":"ended","file":"input-00001","status":"comp')  # killed mid-append
    with Ledger(tmp_path) as ledger:
        one, two = ledger.files["input-00001"], ledger.files["input-00002"]
        assert one.phase == "poll" and one.batch_id == "b1"
        assert two.phase == "create" and two.refused == ["b2"] and two.reason == "token_limit_exceeded"
        assert ledger.token_limit == 25 and ledger.next_index() == 3
        ledger.append("ended", file="input-00001", status="expired", output_file_id="o", error_file_id="e")
        assert one.phase == "download"
        ledger.append("downloaded", file="input-00001")
        assert one.phase == "ingest"
        ledger.append("ingested", file="input-00001")
        assert one.phase == "done" and [f.name for f in ledger.active()] == ["input-00002"]
        summary = ledger.summary()
        assert summary["batches_submitted"] == 1 and summary["batches_expired"] == 1
        assert summary["batches_refused"] == 1
    assert (tmp_path / "ledger.jsonl").read_bytes().endswith(b"\n")


def test_poll_backs_off_and_resets_on_change() -> None:
    policy = PollPolicy(initial_s=1.0)
    delays = [policy.next(None, changed=False)]
    for _ in range(10):
        delays.append(policy.next(delays[-1], changed=False))
    assert delays[:3] == [1.0, 1.5, 2.25] and delays[-1] == 12.0
    assert policy.next(12.0, changed=True) == 1.0
    assert PollPolicy(initial_s=10).ceiling == 60.0
    with pytest.raises(ConfigError):
        PollPolicy(initial_s=0)


def test_output_lines_become_outcomes_like_online_responses() -> None:
    provider = OpenAIProvider(None, ProviderConfig(base_url="http://x/v1", model="sim"))  # type: ignore[arg-type]
    req = _request(1)
    body = {
        "model": "sim",
        "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    ok = outcome_of({"custom_id": req.id, "response": {"status_code": 200, "body": body}, "error": None}, req, provider)
    assert ok.completion is not None and ok.completion.text == "hi" and ok.completion.prompt_tokens == 3
    bad = outcome_of({"response": {"status_code": 200, "body": {"nope": 1}}}, req, provider)
    assert isinstance(bad.error, MalformedResponse)
    server = outcome_of({"response": {"status_code": 500, "body": {"error": {"message": "boom"}}}}, req, provider)
    assert isinstance(server.error, ProviderUnavailable) and "boom" in str(server.error)
    rejected = outcome_of({"response": {"status_code": 400, "body": {"error": {"message": "bad"}}}}, req, provider)
    assert isinstance(rejected.error, BadRequest)
    expired = outcome_of({"response": None, "error": {"code": "batch_expired", "message": "late"}}, req, provider)
    assert isinstance(expired.error, ProviderUnavailable) and "batch_expired" in str(expired.error)
    pending = {req.id: req, "positive-0000002": _request(2)}
    (chunk,) = list(read_outcomes(pending, [], provider))
    assert sorted(o.request.id for o in chunk) == sorted([req.id, "positive-0000002"])
    assert all(isinstance(o.error, ProviderUnavailable) for o in chunk)
