"""The OpenAI-compatible provider against the project's simulator: a real server on 127.0.0.1, a real session."""

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web

from engine.config import ProviderConfig
from engine.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    EngineError,
    MalformedResponse,
    NotFound,
    ProviderUnavailable,
    RateLimited,
    Timeout,
)
from engine.headers import parse_retry_after
from engine.providers.openai import REDACTED, OpenAIProvider, make_session, redact
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


# -- secrets: a server that echoes the Authorization header ------------------------------------

KEY = "sk-proj-Secret0123456789abcdefXYZ"
ROOT = str(Path(__file__).resolve().parents[2])


def echo_app() -> web.Application:
    """Every route answers an error that quotes the Authorization header back, the way careless proxies do."""

    async def chat(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        kind = request.query.get("kind") or request.match_info.get("kind", "")
        if kind == "stream":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            event = {"error": {"message": f"bad credentials {auth}"}}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            await resp.write_eof()
            return resp
        if kind == "plain":  # a proxy's text page, the key cut short in the middle
            return web.Response(status=502, text=f"upstream refused header: Authorization: {auth[:30]}...\nmore")
        status = {"auth": 401, "bad": 400, "server": 500, "limited": 429}[kind]
        body = {"error": {"message": f"header Authorization: {auth} is not valid", "code": auth}}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/{kind}/v1/chat/completions", chat)
    app.router.add_get("/{kind}/v1/models", chat)
    return app


@pytest.fixture
async def echo_url(aiohttp_server):
    server = await aiohttp_server(echo_app(), host="127.0.0.1", port=0)
    return f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("auth", AuthError),
        ("bad", BadRequest),
        ("server", ProviderUnavailable),
        ("limited", RateLimited),
        ("plain", ProviderUnavailable),
        ("stream", ProviderUnavailable),
    ],
)
async def test_an_echoed_key_never_reaches_an_error(echo_url, kind, error):
    cfg = ProviderConfig(base_url=f"{echo_url}/{kind}/v1", model="m", api_key=KEY)
    async with make_session(cfg) as session:
        provider = OpenAIProvider(session, cfg)
        with pytest.raises(error) as info:
            await provider.complete(req(stream=kind == "stream"))
        errors: list[EngineError] = [info.value]
        if kind != "stream":
            with pytest.raises(EngineError) as listed:
                await provider.list_models()
            errors.append(listed.value)
    for exc in errors:
        text = f"{exc} {exc.args} {exc.hint} {exc.message}"
        assert KEY not in text and KEY[:12] not in text and KEY[-12:] not in text, text
    assert kind == "auth" or REDACTED in str(info.value)  # the message is kept, the key cut out


def test_redact_cuts_whole_and_partial_keys_only():
    assert redact(f"a {KEY} b {KEY}", KEY) == f"a {REDACTED} b {REDACTED}"
    assert redact(f"x{KEY[:15]}", KEY) == f"x{REDACTED}"
    assert redact(f"{KEY[5:25]}!", KEY) == f"{REDACTED}!"
    assert redact("sk-proj- is a prefix; so is Secret", KEY) == "sk-proj- is a prefix; so is Secret"
    assert redact("text", None) == "text" and redact("", KEY) == ""


@pytest.mark.parametrize("key", ["sk-abc\ndef", "sk-abc\r", "sk-\x00", "sk-\x7f"])
def test_a_key_with_a_control_character_is_one_config_error(key):
    with pytest.raises(ConfigError) as info:
        ProviderConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key=key)
    assert "OPENAI_API_KEY" in str(info.value) and "--api-key-env" in str(info.value)
    assert key not in str(info.value)


def _generate_argv(url: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "engine", "generate", "bbc-news", "--n", "2", "--base-url", url, "--model", "m",
        "--out", str(out), "--no-progress", "--max-attempts", "1", "--max-requests", "2", "--no-dedup",
    ]  # fmt: skip


async def run_cli(argv: list[str], key: str) -> tuple[int, str]:
    env = {**os.environ, "OPENAI_API_KEY": key, "PYTHONPATH": ROOT}
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


@pytest.mark.parametrize("kind", ["auth", "server"])
async def test_the_cli_keeps_an_echoed_key_off_stderr_and_disk(echo_url, tmp_path, kind):
    out = tmp_path / "run"
    code, text = await run_cli(_generate_argv(f"{echo_url}/{kind}/v1", out), KEY)
    assert code != 0
    assert "Traceback" not in text
    written = " ".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()) if out.exists() else ""
    for where in (text, written):
        assert KEY not in where and KEY[:12] not in where and KEY[-12:] not in where


async def test_the_cli_says_one_line_for_a_key_with_a_newline(tmp_path):
    code, text = await run_cli(_generate_argv("http://127.0.0.1:9/v1", tmp_path / "run"), "sk-abc\ndef")
    assert code != 0 and "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("corpusforge: error:")]
    assert len(errors) == 1 and "OPENAI_API_KEY" in errors[0] and "sk-abc" not in text
