"""The OpenAI-compatible provider against the project's simulator: a real server on 127.0.0.1, a real session."""

import json

import pytest

from engine.config import ProviderConfig
from engine.errors import (
    AuthError,
    MalformedResponse,
    NotFound,
    ProviderUnavailable,
    RateLimited,
    Timeout,
)
from engine.limits import parse_retry_after
from engine.providers.openai import OpenAIProvider, make_session
from engine.sim.config import SimConfig
from engine.sim.server import running_sim
from engine.types import Request

SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "example",
        "schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "label": {"type": "string", "enum": ["sport"]}},
            "required": ["text", "label"],
        },
    },
}


def req(i=0, **kw):
    return Request(id=f"r{i}", messages=[{"role": "user", "content": "Write one example.\nLabel: sport"}], **kw)


async def call(sim_cfg, request, *, key=None, model="sim", timeout_s=5.0):
    async with running_sim(sim_cfg) as sim:
        cfg = ProviderConfig(base_url=sim.url, model=model, api_key=key, timeout_s=timeout_s)
        async with make_session(cfg) as session:
            return await OpenAIProvider(session, cfg).complete(request)


async def test_non_streaming_with_schema_returns_conforming_json():
    c = await call(SimConfig(rpm_limit=600), req(response_format=SCHEMA))
    data = json.loads(c.text)
    assert data["label"] == "sport" and data["text"]
    assert c.prompt_tokens > 0 and c.completion_tokens > 0
    assert c.headers["x-ratelimit-limit-requests"] == "600"


async def test_streaming_collects_chunks_and_usage():
    c = await call(SimConfig(), req(stream=True, response_format=SCHEMA))
    assert json.loads(c.text)["label"] == "sport"
    assert c.chunk_times and c.ttft_s > 0
    assert c.completion_tokens > 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", ProviderUnavailable),
        ("503", ProviderUnavailable),
        ("drop", ProviderUnavailable),
        ("malformed", MalformedResponse),
        ("truncated", MalformedResponse),
    ],
)
async def test_faults_become_retryable_engine_errors(fault, error):
    with pytest.raises(error):
        await call(SimConfig(faults={fault: 1.0}), req())


async def test_truncated_stream_is_malformed():
    with pytest.raises(MalformedResponse, match="truncated"):
        await call(SimConfig(faults={"truncated": 1.0}), req(stream=True))


async def test_hang_becomes_timeout():
    with pytest.raises(Timeout):
        await call(SimConfig(faults={"timeout": 1.0}, hang_s=5.0), req(), timeout_s=0.3)


async def test_rate_limited_carries_retry_after_and_headers():
    async with running_sim(SimConfig(rpm_limit=1)) as sim:
        cfg = ProviderConfig(base_url=sim.url, model="sim")
        async with make_session(cfg) as session:
            p = OpenAIProvider(session, cfg)
            await p.complete(req(0))
            with pytest.raises(RateLimited) as info:
                await p.complete(req(1))
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert info.value.status == 429
    assert "x-ratelimit-remaining-requests" in info.value.headers


async def test_wrong_key_is_fatal_and_never_echoed():
    secret = "sk-test-wrong-key-1234567890"
    with pytest.raises(AuthError) as info:
        await call(SimConfig(require_key="right"), req(), key=secret)
    assert secret not in str(info.value)
    assert "OPENAI_API_KEY" in str(info.value)


async def test_unknown_model_is_not_found():
    with pytest.raises(NotFound, match="not found"):
        await call(SimConfig(strict_model=True), req(), model="nope")


async def test_unreachable_url_is_unavailable():
    cfg = ProviderConfig(base_url="http://127.0.0.1:9/v1", model="m", timeout_s=2)
    async with make_session(cfg) as session:
        with pytest.raises(ProviderUnavailable, match="cannot connect"):
            await OpenAIProvider(session, cfg).complete(req())


async def test_list_models():
    async with running_sim(SimConfig(model="sim-1")) as sim:
        cfg = ProviderConfig(base_url=sim.url, model="sim-1")
        async with make_session(cfg) as session:
            assert await OpenAIProvider(session, cfg).list_models() == ["sim-1"]


def test_parse_retry_after_prefers_ms():
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({}) is None


def test_encoded_body_is_the_body_as_json():
    cfg = ProviderConfig(base_url="http://127.0.0.1:9/v1", model='m "quoted"')
    p = OpenAIProvider.__new__(OpenAIProvider)
    OpenAIProvider.__init__(p, None, cfg)  # type: ignore[arg-type]
    shared = SCHEMA
    for r in (
        req(0),
        req(1, response_format=shared, seed=7, top_p=0.9, temperature=0.3),
        req(2, response_format=shared, stream=True),
        req(3, response_format={**SCHEMA}),  # an equal but distinct object
    ):
        assert json.loads(p.encode(r)) == p.body(r)


def test_shared_prompts_are_serialised_once_and_stay_right():
    from engine.strategies import make_strategy
    from engine.tasks import load_task

    cfg = ProviderConfig(base_url="http://127.0.0.1:9/v1", model="m")
    p = OpenAIProvider.__new__(OpenAIProvider)
    OpenAIProvider.__init__(p, None, cfg)  # type: ignore[arg-type]
    task = load_task("bbc-news")
    zero = make_strategy("zero-shot", task)
    a, b = zero.build(request_id="a", label="sport", seed=1), zero.build(request_id="b", label="sport", seed=2)
    c = zero.build(request_id="c", label="tech", seed=3)
    assert a.shared_messages and a.messages is b.messages and a.messages is not c.messages
    assert a.meta is not b.meta  # per-request metadata stays per request
    for r in (a, b, c, a):
        assert json.loads(p.encode(r)) == p.body(r)
    assert id(a.messages) in p._format_json and id(c.messages) in p._format_json  # serialised once, then reused
    # a strategy that samples builds fresh messages per request, which are not cached
    attrs = make_strategy("zero-shot", task, attributes=True)
    d = attrs.build(request_id="d", label="sport", seed=1)
    assert not d.shared_messages
    assert json.loads(p.encode(d)) == p.body(d)
    assert id(d.messages) not in p._format_json
