"""The simulator, tested as a real server on 127.0.0.1 with a real aiohttp client."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import aiohttp
import pytest

import engine.sim
from engine.errors import ConfigError
from engine.sim import FAULT_KINDS, SimConfig, running_sim
from engine.sim.content import TextSource
from engine.sim.limits import format_duration
from engine.sim.process import sim_process

USER = {"role": "user", "content": "Write one movie review.\nLabel: positive"}


def _body(**kw: Any) -> dict[str, Any]:
    return {"model": "sim", "messages": [USER], "max_tokens": 200, **kw}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _post(session: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, dict[str, str], str]:
    async with session.post(url + "/chat/completions", json=body, **kw) as r:
        return r.status, dict(r.headers), await r.text()


def _sse(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


async def test_models_route() -> None:
    async with running_sim(SimConfig(model="tiny")) as sim, aiohttp.ClientSession() as s:
        assert sim.url.startswith("http://127.0.0.1:") and sim.url.endswith("/v1")
        async with s.get(sim.url + "/models") as r:
            assert r.status == 200
            assert await r.json() == {
                "object": "list",
                "data": [{"id": "tiny", "object": "model", "owned_by": "corpusforge-sim"}],
            }


async def test_plain_completion_has_openai_shape_and_label() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        status, _, text = await _post(s, sim.url, _body())
        assert status == 200
        data = json.loads(text)
        assert data["id"].startswith("chatcmpl-") and data["model"] == "sim"
        choice = data["choices"][0]
        assert choice["finish_reason"] == "stop"
        content = json.loads(choice["message"]["content"])
        assert content["label"] == "positive"
        assert 12 <= len(content["text"].split()) <= 40
        usage = data["usage"]
        assert usage["prompt_tokens"] == len(USER["content"]) // 4
        assert 0 < usage["completion_tokens"] <= 200
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        # no "Label:" line -> "unknown"
        _, _, text = await _post(s, sim.url, {"messages": [{"role": "user", "content": "hello"}]})
        assert json.loads(json.loads(text)["choices"][0]["message"]["content"])["label"] == "unknown"
        assert sim.state.requests == 2 and sim.state.ok == 2


async def test_max_tokens_truncates_with_length() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        _, _, text = await _post(s, sim.url, _body(max_tokens=5))
        data = json.loads(text)
        assert data["choices"][0]["finish_reason"] == "length"
        assert data["usage"]["completion_tokens"] == 5
        assert len(data["choices"][0]["message"]["content"].split(" ")) <= 5


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_format(include_usage: bool) -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        body = _body(stream=True, stream_options={"include_usage": include_usage})
        status, headers, text = await _post(s, sim.url, body)
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        events = _sse(text)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert json.loads(content)["label"] == "positive"
        finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
        usage_chunks = [c for c in chunks if c.get("usage")]
        if include_usage:
            assert len(usage_chunks) == 1 and chunks[-1]["choices"] == []
            assert usage_chunks[0]["usage"]["completion_tokens"] > 0
        else:
            assert usage_chunks == []
        assert sim.state.streams == 1 and sim.state.ok == 1


async def test_bad_requests() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        async with s.post(sim.url + "/chat/completions", data=b"{not json") as r:
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "invalid_request_error"
        status, _, _ = await _post(s, sim.url, {"model": "sim"})
        assert status == 400
        assert sim.state.bad_request == 2


async def test_model_check_only_when_strict() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        assert (await _post(s, sim.url, {**_body(), "model": "gpt-x"}))[0] == 200
    async with running_sim(SimConfig(strict_model=True)) as sim, aiohttp.ClientSession() as s:
        status, _, text = await _post(s, sim.url, {**_body(), "model": "gpt-x"})
        assert status == 404 and json.loads(text)["error"]["code"] == "model_not_found"
        assert (await _post(s, sim.url, _body()))[0] == 200


async def test_require_key() -> None:
    async with running_sim(SimConfig(require_key="sk-sim")) as sim, aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, _, text = await _post(s, sim.url, _body(), headers=headers)
            err = json.loads(text)["error"]
            assert status == 401 and err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
            assert "sk-sim" not in text
        status, _, _ = await _post(s, sim.url, _body(), headers={"Authorization": "Bearer sk-sim"})
        assert status == 200
        assert sim.state.unauthorized == 2


async def test_rpm_limit_429_headers_and_refill() -> None:
    clock = FakeClock()
    async with running_sim(SimConfig(rpm_limit=3), clock=clock) as sim, aiohttp.ClientSession() as s:
        remaining = []
        for _ in range(3):
            status, headers, _ = await _post(s, sim.url, _body())
            assert status == 200
            assert headers["x-ratelimit-limit-requests"] == "3"
            remaining.append(int(headers["x-ratelimit-remaining-requests"]))
        assert remaining == [2, 1, 0]
        assert headers["x-ratelimit-reset-requests"] == "1m0s"  # 3 requests at 3/min take a minute to refill
        status, headers, text = await _post(s, sim.url, _body())
        assert status == 429
        assert json.loads(text)["error"] == {
            "message": json.loads(text)["error"]["message"],
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "rate_limit_exceeded",
        }
        assert headers["Retry-After"] == "20" and headers["retry-after-ms"] == "20000"  # one request refills in 20 s
        clock.now += 19.5
        status, headers, _ = await _post(s, sim.url, _body())
        assert status == 429 and headers["Retry-After"] == "1" and headers["retry-after-ms"] == "500"
        clock.now += 0.5
        assert (await _post(s, sim.url, _body()))[0] == 200
        assert sim.state.rate_limited == 2 and sim.state.ok == 4


async def test_tpm_limit_charges_prompt_plus_max_tokens() -> None:
    clock = FakeClock()
    prompt = len(USER["content"]) // 4
    cfg = SimConfig(tpm_limit=1000)
    async with running_sim(cfg, clock=clock) as sim, aiohttp.ClientSession() as s:
        status, headers, _ = await _post(s, sim.url, _body(max_tokens=400))
        assert status == 200
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        assert int(headers["x-ratelimit-remaining-tokens"]) == 1000 - 400 - prompt
        assert "x-ratelimit-limit-requests" not in headers
        assert (await _post(s, sim.url, _body(max_tokens=400)))[0] == 200
        status, headers, _ = await _post(s, sim.url, _body(max_tokens=400))
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert sim.state.rate_limited == 1


def test_format_duration() -> None:
    assert format_duration(0.12) == "120ms"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(3723) == "1h2m3s"
    assert format_duration(0) == "0s"


@pytest.mark.parametrize("stream", [False, True])
async def test_fault_500_503(stream: bool) -> None:
    for kind in ("500", "503"):
        async with running_sim(SimConfig(faults={kind: 1.0})) as sim, aiohttp.ClientSession() as s:
            status, _, text = await _post(s, sim.url, _body(stream=stream))
            assert status == int(kind) and json.loads(text)["error"]["type"] == "server_error"
            assert sim.state.faults[kind] == 1 and sim.state.ok == 0


async def test_fault_timeout_hangs_past_client_timeout() -> None:
    async with running_sim(SimConfig(faults={"timeout": 1.0}, hang_s=30)) as sim, aiohttp.ClientSession() as s:
        with pytest.raises(TimeoutError):
            await _post(s, sim.url, _body(), timeout=aiohttp.ClientTimeout(total=0.3))
        assert sim.state.faults["timeout"] == 1
    # leaving the block released the hanging handler instead of waiting 30 s (pytest-timeout would catch that)


@pytest.mark.parametrize("stream", [False, True])
async def test_fault_drop(stream: bool) -> None:
    async with running_sim(SimConfig(faults={"drop": 1.0})) as sim, aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await _post(s, sim.url, _body(stream=stream))
        assert sim.state.faults["drop"] == 1


async def test_fault_malformed() -> None:
    async with running_sim(SimConfig(faults={"malformed": 1.0})) as sim, aiohttp.ClientSession() as s:
        status, _, text = await _post(s, sim.url, _body())
        assert status == 200 and text.startswith("{")
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        status, _, text = await _post(s, sim.url, _body(stream=True))
        assert status == 200
        with pytest.raises(json.JSONDecodeError):
            for event in _sse(text)[:-1]:
                json.loads(event)
        assert sim.state.faults["malformed"] == 2 and sim.state.ok == 0


async def test_fault_truncated() -> None:
    async with running_sim(SimConfig(faults={"truncated": 1.0})) as sim, aiohttp.ClientSession() as s:
        status, _, text = await _post(s, sim.url, _body())
        assert status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        status, _, text = await _post(s, sim.url, _body(stream=True))
        events = _sse(text)
        assert status == 200 and len(events) >= 2
        assert "[DONE]" not in events
        chunks = [json.loads(e) for e in events]  # every chunk parses; the end is just missing
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
        assert sim.state.faults["truncated"] == 2 and sim.state.ok == 0


async def test_error_rate_splits_across_kinds() -> None:
    cfg = SimConfig(error_rate=0.6, faults={"timeout": 0.0, "drop": 0.0}, seed=3)
    assert cfg.fault_rates()["500"] == pytest.approx(0.1)
    async with running_sim(cfg) as sim, aiohttp.ClientSession() as s:
        statuses = [(await _post(s, sim.url, _body()))[0] for _ in range(200)]
        faults = sim.state.faults
        assert set(faults) <= {"500", "503", "malformed", "truncated"}
        assert statuses.count(500) == faults["500"] and statuses.count(503) == faults["503"]
        assert 40 <= sum(faults.values()) <= 120  # expected 80 (0.4 x 200)
        assert sim.state.ok == 200 - sum(faults.values())


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        SimConfig(faults={"404": 0.1})
    with pytest.raises(ConfigError):
        SimConfig(faults={"500": 0.7, "503": 0.7})
    with pytest.raises(ConfigError):
        SimConfig(rpm_limit=0)
    assert set(SimConfig().fault_rates()) == set(FAULT_KINDS)


def _schema(labels: list[str]) -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "label": {"type": "string", "enum": labels},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "n": {"type": "integer", "minimum": 1, "maximum": 5},
            "ok": {"type": "boolean"},
        },
        "required": ["text", "label", "score", "n", "ok"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"examples": {"type": "array", "items": item, "minItems": 2, "maxItems": 4}},
        "required": ["examples"],
    }


async def test_json_schema_output_conforms() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        for labels in (["sports"], ["a", "b", "c"]):
            fmt = {"type": "json_schema", "json_schema": {"name": "batch", "schema": _schema(labels), "strict": True}}
            seen = set()
            for _ in range(20):
                _, _, text = await _post(s, sim.url, _body(max_tokens=4000, response_format=fmt))
                value = json.loads(json.loads(text)["choices"][0]["message"]["content"])
                assert set(value) == {"examples"} and 2 <= len(value["examples"]) <= 4
                for ex in value["examples"]:
                    assert set(ex) == {"text", "label", "score", "n", "ok"}
                    assert ex["label"] in labels
                    assert isinstance(ex["text"], str) and len(ex["text"].split()) >= 12
                    assert 0 <= ex["score"] <= 1 and 1 <= ex["n"] <= 5 and isinstance(ex["ok"], bool)
                    seen.add(ex["label"])
            assert seen == set(labels)
        # json_object falls back to the plain {"text", "label"} object
        _, _, text = await _post(s, sim.url, _body(response_format={"type": "json_object"}))
        assert set(json.loads(json.loads(text)["choices"][0]["message"]["content"])) == {"text", "label"}


def _jaccard(a: str, b: str) -> float:
    sa, sb = set(a.split()), set(b.split())
    return len(sa & sb) / len(sa | sb)


def test_random_texts_are_distinct_and_dups_are_near() -> None:
    import random

    plain = TextSource(random.Random(1))
    texts = [plain.sentence() for _ in range(300)]
    worst = max(_jaccard(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :])
    assert worst < 0.3
    dups = TextSource(random.Random(1), dup_rate=0.5)
    out = [dups.sentence() for _ in range(400)]
    assert 120 <= dups.planted <= 280
    near = sum(1 for i, t in enumerate(out) if any(_jaccard(t, u) >= 0.8 for u in out[:i]))
    assert near == dups.planted


async def test_dup_rate_plants_near_duplicates_over_http() -> None:
    async with running_sim(SimConfig(dup_rate=0.3, seed=5)) as sim, aiohttp.ClientSession() as s:
        texts = []
        for _ in range(60):
            _, _, text = await _post(s, sim.url, _body())
            texts.append(json.loads(json.loads(text)["choices"][0]["message"]["content"])["text"])
        near = sum(1 for i, t in enumerate(texts) if any(_jaccard(t, u) >= 0.8 for u in texts[:i]))
        assert sim.state.planted_dups > 5
        assert near == sim.state.planted_dups


async def test_seed_makes_output_deterministic() -> None:
    async def contents(seed: int) -> list[str]:
        cfg = SimConfig(seed=seed, faults={"500": 0.1, "truncated": 0.1, "malformed": 0.1}, dup_rate=0.2)
        async with running_sim(cfg) as sim, aiohttp.ClientSession() as s:
            out = []
            for i in range(15):
                status, _, text = await _post(s, sim.url, _body(stream=i % 2 == 1, max_tokens=400))
                out.append(f"{status}:{text.replace(sim.url, '')}")
            return out

    def strip(items: list[str]) -> list[str]:
        import re

        return [re.sub(r'"created":\d+', "", t) for t in items]

    first, second, other = strip(await contents(7)), strip(await contents(7)), strip(await contents(8))
    assert first == second
    assert first != other


def test_sim_process_serves_in_a_child_process() -> None:
    import urllib.request

    with sim_process(SimConfig(model="child", rpm_limit=600)) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/models", timeout=10) as r:
            assert json.load(r)["data"][0]["id"] == "child"
        req = urllib.request.Request(
            url + "/chat/completions", data=json.dumps(_body()).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["x-ratelimit-limit-requests"] == "600"
            assert json.load(r)["choices"][0]["finish_reason"] == "stop"


async def test_bad_max_tokens_is_400() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as s:
        for bad in ("ten", -1, True):
            assert (await _post(s, sim.url, _body(max_tokens=bad)))[0] == 400
        assert sim.state.bad_request == 3


async def test_stream_with_token_delay_arrives_in_pieces() -> None:
    async with running_sim(SimConfig(token_delay_ms=1, latency_ms=1)) as sim, aiohttp.ClientSession() as s:
        async with s.post(sim.url + "/chat/completions", json=_body(stream=True)) as r:
            pieces = [chunk async for chunk in r.content.iter_any()]
        text = b"".join(pieces).decode()
        assert len(pieces) > 2  # written chunk by chunk, not in one go
        assert _sse(text)[-1] == "[DONE]"
        assert sim.state.ok == 1


def test_cli_rejects_bad_flags_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(["serve-sim", "--port", "0", "--error-rate", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("corpusforge: error:") and "error_rate" in err and "\n" not in err
    assert main(["serve-sim", "--port", "0", "--fault", "404=0.1"]) == 2
    assert "unknown fault kind" in capsys.readouterr().err


def _non_default(f: dataclasses.Field[object]) -> object:
    """A valid value of a ``SimConfig`` field that differs from its default."""
    special: dict[str, object] = {
        "model": "m",
        "faults": {"drop": 0.1, "500": 0.05},
        "require_key": "k",
        "error_rate": 0.2,
        "dup_rate": 0.3,
        "batch_error_rate": 0.1,
    }
    if f.name in special:
        return special[f.name]
    default = f.default
    if isinstance(default, bool):
        return not default
    if default is None:
        return 7 if "token" in f.name or "limit" in f.name else 7.5
    assert isinstance(default, int | float), f"add a non-default value for SimConfig.{f.name} here"
    return default + 3


def test_cli_args_round_trip_every_field() -> None:
    """``cli_args`` then the serve-sim parser rebuilds the same config: every field, none dropped (dup_ring was)."""
    from engine.cli import build_parser
    from engine.commands.serve_sim import sim_config

    assert sim_config(build_parser().parse_args(["serve-sim"])) == SimConfig()  # the flags' defaults are the config's
    for f in dataclasses.fields(SimConfig):
        cfg = SimConfig(**{f.name: _non_default(f)})
        assert cfg != SimConfig(), f.name
        args = build_parser().parse_args(["serve-sim", *engine.sim.cli_args(cfg)])
        assert sim_config(args) == cfg, f"SimConfig.{f.name} does not survive cli_args -> serve-sim"
