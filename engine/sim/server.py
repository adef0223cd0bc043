"""The OpenAI-compatible simulator: an ``aiohttp.web`` app and a way to run it in-process.

The hot path is kept tiny so a benchmark measures the client, not this server:
one ``json.loads`` of the body, a few dict lookups, a cached schema generator
and a string template for the response. Faults, limits and latency cost nothing
when they are off.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .config import DEFAULT_MAX_TOKENS, FAULT_KINDS, SimConfig
from .content import SchemaCache, TextSource
from .limits import Bucket, format_duration

__all__ = ["BATCH_KEY", "SIM_KEY", "RunningSim", "SimState", "Simulator", "build_app", "running_sim"]

#: Words per streamed content chunk (OpenAI sends about one token per chunk; fewer, larger chunks keep the sim cheap).
WORDS_PER_CHUNK = 3
TOKENS_PER_WORD = 1.3
_LABEL_LINE = re.compile(r"^\s*Label:\s*(.+?)\s*$", re.MULTILINE)
_JSON = {"Content-Type": "application/json"}


@dataclass
class SimState:
    """Counters a test or benchmark can read while the simulator runs."""

    requests: int = 0
    ok: int = 0
    streams: int = 0
    rate_limited: int = 0
    unauthorized: int = 0
    bad_request: int = 0
    not_found: int = 0
    in_flight: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    planted_dups: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Tokens charged against the TPM budget when a request was admitted (prompt + max_tokens, as OpenAI does).
    tokens_charged: int = 0


def _error(
    status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def _count_completion(content: str) -> int:
    return math.ceil((content.count(" ") + 1) * TOKENS_PER_WORD)


def _prompt_tokens(messages: list[Any]) -> int:
    chars = 0
    for m in messages:
        c = m.get("content") if isinstance(m, dict) else None
        chars += len(c) if isinstance(c, str) else len(str(c or ""))
    return max(1, chars // 4)


def _label_of(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            found = _LABEL_LINE.findall(str(m.get("content") or ""))
            return found[-1] if found else "unknown"
    return "unknown"


class Simulator:
    """Request handlers plus the state they share (rng, buckets, counters)."""

    def __init__(self, cfg: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.state = SimState()
        self.rng = random.Random(cfg.seed)
        self.text = TextSource(self.rng, dup_rate=cfg.dup_rate, ring=cfg.dup_ring)
        self.schemas = SchemaCache(self.text)
        self.rpm = Bucket(cfg.rpm_limit, clock) if cfg.rpm_limit else None
        self.tpm = Bucket(cfg.tpm_limit, clock) if cfg.tpm_limit else None
        rates = cfg.fault_rates()
        self._faults = [(kind, rates[kind]) for kind in FAULT_KINDS if rates[kind] > 0]
        self._auth = f"Bearer {cfg.require_key}" if cfg.require_key is not None else None
        self._model_json = json.dumps(cfg.model)
        self._closing = asyncio.Event()
        self._seq = 0

    def close(self) -> None:
        """Release requests hanging in a ``timeout`` fault (used on shutdown)."""
        self._closing.set()

    async def models(self, request: web.Request) -> web.Response:
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            self.state.unauthorized += 1
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        body = {"object": "list", "data": [{"id": self.cfg.model, "object": "model", "owned_by": "corpusforge-sim"}]}
        return web.json_response(body)

    # -- chat completions ------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        st = self.state
        st.requests += 1
        st.in_flight += 1
        try:
            return await self._chat(request)
        finally:
            st.in_flight -= 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        st, cfg = self.state, self.cfg
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            st.unauthorized += 1
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = json.loads(await request.read())
        except ValueError:
            st.bad_request += 1
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error", None)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            st.bad_request += 1
            return _error(400, "'messages' is a required property", "invalid_request_error", None)
        if cfg.strict_model and body.get("model") != cfg.model:
            st.not_found += 1
            msg = f"The model `{body.get('model')}` does not exist or you do not have access to it."
            return _error(404, msg, "invalid_request_error", "model_not_found")

        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            st.bad_request += 1
            return _error(
                400, f"Invalid max_tokens {max_tokens!r}: expected an integer >= 1.", "invalid_request_error", None
            )
        prompt_tokens = _prompt_tokens(messages)
        headers: dict[str, str] = {}
        if self.rpm is not None or self.tpm is not None:
            limited = self._admit(prompt_tokens + max_tokens, headers)
            if limited is not None:
                return limited

        if self._faults:
            kind = self._draw_fault()
            if kind is not None:
                st.faults[kind] += 1
                early = await self._early_fault(kind, request)
                if early is not None:
                    return early
        else:
            kind = None

        content, finish, completion_tokens = self._content(body, messages, max_tokens)
        self._seq += 1
        rid = f"chatcmpl-sim{self._seq}"
        headers["x-request-id"] = f"req_sim{self._seq}"
        usage = (prompt_tokens, completion_tokens)
        if body.get("stream"):
            st.streams += 1
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            return await self._stream(request, rid, content, finish, usage, include_usage, headers, kind)
        return await self._plain(rid, content, finish, usage, headers, kind)

    def _admit(self, tokens: int, headers: dict[str, str]) -> web.Response | None:
        """Charge the buckets or return a 429; fill the rate-limit headers either way."""
        wait = 0.0
        for bucket, amount in ((self.rpm, 1), (self.tpm, tokens)):
            if bucket is not None:
                wait = max(wait, bucket.delay(amount))
        if wait <= 0:
            if self.rpm is not None:
                self.rpm.take(1)
            if self.tpm is not None:
                self.tpm.take(tokens)
                self.state.tokens_charged += tokens
        for bucket, suffix in ((self.rpm, "requests"), (self.tpm, "tokens")):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{suffix}"] = str(int(bucket.capacity))
                headers[f"x-ratelimit-remaining-{suffix}"] = str(bucket.remaining())
                headers[f"x-ratelimit-reset-{suffix}"] = format_duration(bucket.reset_s())
        if wait <= 0:
            return None
        self.state.rate_limited += 1
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        msg = f"Rate limit reached for {self.cfg.model}. Please try again in {format_duration(wait)}."
        return _error(429, msg, "rate_limit_exceeded", "rate_limit_exceeded", headers)

    def _draw_fault(self) -> str | None:
        x = self.rng.random()
        for kind, rate in self._faults:
            if x < rate:
                return kind
            x -= rate
        return None

    async def _early_fault(self, kind: str, request: web.Request) -> web.StreamResponse | None:
        """Faults that replace the response entirely; ``None`` for those shaped inside a response."""
        if kind == "500":
            return _error(500, "The server had an error while processing your request.", "server_error", None)
        if kind == "503":
            return _error(503, "The engine is currently overloaded, please try again later.", "server_error", None)
        if kind == "timeout":
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.cfg.hang_s)
            return _error(504, "Gateway timeout.", "server_error", None)
        if kind == "drop":
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # aiohttp drops the connection quietly
        return None

    def _content(self, body: dict[str, Any], messages: list[Any], max_tokens: int) -> tuple[str, str, int]:
        fmt = body.get("response_format")
        schema = None
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
        planted = self.text.planted
        if isinstance(schema, dict):
            value = self.schemas.get(schema)()
        else:
            value = {"text": self.text.sentence(), "label": _label_of(messages)}
        self.state.planted_dups += self.text.planted - planted
        content = json.dumps(value, ensure_ascii=False)
        tokens = _count_completion(content)
        if tokens <= max_tokens:
            return content, "stop", tokens
        words = content.split(" ")[: max(1, int(max_tokens / TOKENS_PER_WORD))]
        return " ".join(words), "length", max_tokens

    async def _plain(
        self, rid: str, content: str, finish: str, usage: tuple[int, int], headers: dict[str, str], fault: str | None
    ) -> web.Response:
        cfg = self.cfg
        delay = cfg.latency_ms + cfg.token_delay_ms * usage[1]
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        text = (
            f'{{"id":"{rid}","object":"chat.completion","created":{int(time.time())},"model":{self._model_json},'
            f'"choices":[{{"index":0,"message":{{"role":"assistant","content":{json.dumps(content)}}},'
            f'"finish_reason":"{finish}"}}],"usage":{{"prompt_tokens":{usage[0]},"completion_tokens":{usage[1]},'
            f'"total_tokens":{usage[0] + usage[1]}}}}}'
        )
        if fault == "malformed":
            text = text.replace('"choices":[', '"choices":[,', 1)  # still looks like JSON, does not parse
        elif fault == "truncated":
            text = text[: len(text) // 2]
        else:
            self._count_ok(usage)
        headers.update(_JSON)
        return web.Response(text=text, headers=headers)

    async def _stream(
        self,
        request: web.Request,
        rid: str,
        content: str,
        finish: str,
        usage: tuple[int, int],
        include_usage: bool,
        headers: dict[str, str],
        fault: str | None,
    ) -> web.StreamResponse:
        cfg = self.cfg
        if cfg.latency_ms > 0:
            await asyncio.sleep(cfg.latency_ms / 1000)
        headers["Content-Type"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        head = f'data: {{"id":"{rid}","object":"chat.completion.chunk","created":{int(time.time())},"model":{self._model_json},'
        tail = ',"usage":null}\n\n' if include_usage else "}\n\n"
        words = content.split(" ")
        pieces = [" ".join(words[i : i + WORDS_PER_CHUNK]) for i in range(0, len(words), WORDS_PER_CHUNK)]
        out = [
            f'{head}"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]{tail}'
        ]
        delay = cfg.token_delay_ms / 1000 * WORDS_PER_CHUNK * TOKENS_PER_WORD
        cut = len(pieces) // 2 if fault == "truncated" else len(pieces)
        for i, piece in enumerate(pieces[:cut]):
            text = piece if i == 0 else " " + piece
            out.append(
                f'{head}"choices":[{{"index":0,"delta":{{"content":{json.dumps(text)}}},"finish_reason":null}}]{tail}'
            )
            if fault == "malformed" and i == 0:
                out[-1] = out[-1][: len(out[-1]) // 2] + "\n\n"
            if delay > 0:
                await resp.write("".join(out).encode())
                out.clear()
                await asyncio.sleep(delay)
        if fault != "truncated":
            out.append(f'{head}"choices":[{{"index":0,"delta":{{}},"finish_reason":"{finish}"}}]{tail}')
            if include_usage:
                out.append(
                    f'{head}"choices":[],"usage":{{"prompt_tokens":{usage[0]},"completion_tokens":{usage[1]},'
                    f'"total_tokens":{usage[0] + usage[1]}}}}}\n\n'
                )
            out.append("data: [DONE]\n\n")
            if fault is None:
                self._count_ok(usage)
        await resp.write("".join(out).encode())
        await resp.write_eof()
        return resp

    def _count_ok(self, usage: tuple[int, int]) -> None:
        st = self.state
        st.ok += 1
        st.prompt_tokens += usage[0]
        st.completion_tokens += usage[1]


SIM_KEY: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)
#: The Batch API half of the simulator (``engine.sim.batch.BatchSim``), when ``batch_api`` is on.
BATCH_KEY: web.AppKey[Any] = web.AppKey("batches")


def build_app(cfg: SimConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> web.Application:
    """The simulator as an ``aiohttp.web`` app; ``app[SIM_KEY]`` holds its ``Simulator`` (and ``.state``)."""
    sim = Simulator(cfg or SimConfig(), clock)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[SIM_KEY] = sim
    app.router.add_get("/v1/models", sim.models)
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_post("/chat/completions", sim.chat)
    if sim.cfg.batch_api:
        from .batch import BatchSim  # imports this module

        app[BATCH_KEY] = BatchSim(sim, clock)
        app[BATCH_KEY].add_routes(app.router)

    async def _release_hangs(_: web.Application) -> None:
        sim.close()

    app.on_shutdown.append(_release_hangs)
    return app


@dataclass(frozen=True)
class RunningSim:
    """A simulator serving on ``url`` (the base URL, ending in ``/v1``)."""

    url: str
    host: str
    port: int
    app: web.Application

    @property
    def sim(self) -> Simulator:
        return self.app[SIM_KEY]

    @property
    def state(self) -> SimState:
        return self.app[SIM_KEY].state

    @property
    def config(self) -> SimConfig:
        return self.app[SIM_KEY].cfg

    @property
    def batches(self) -> Any:
        """The simulator's ``BatchSim`` (files, batches and ``.state``); ``KeyError`` without the Batch API."""
        return self.app[BATCH_KEY]


@asynccontextmanager
async def running_sim(
    cfg: SimConfig | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[RunningSim]:
    """Serve the simulator on ``host:port`` (0 = any free port) for the duration of the block."""
    app = build_app(cfg, clock=clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield RunningSim(url=f"http://{bound_host}:{bound_port}/v1", host=bound_host, port=bound_port, app=app)
    finally:
        app[SIM_KEY].close()
        await runner.cleanup()
