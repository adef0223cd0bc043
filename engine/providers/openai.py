"""OpenAI-compatible chat completions over aiohttp: OpenAI, vLLM, llama.cpp's server, Ollama, LiteLLM, the simulator.

This module is the boundary: aiohttp exceptions and HTTP statuses become engine
errors here (``raise ... from exc``), and nothing above ``providers/`` imports
aiohttp's exception types. The session is passed in; ``make_session`` builds
one with a bounded connector. The API key is sent as a header and never appears
in an error message: a server that echoes the ``Authorization`` header in its
error body has the key cut out of every error raised here (:func:`redact`), so
nothing above (stderr, ``failures.jsonl``) can see it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from ..config import ProviderConfig
from ..errors import (
    AuthError,
    BadRequest,
    EngineError,
    FatalError,
    MalformedResponse,
    NotFound,
    ProviderUnavailable,
    RateLimited,
    Timeout,
)
from ..headers import RATE_LIMIT_HEADERS, parse_retry_after
from ..types import Completion, Request
from .base import Provider

__all__ = ["REDACTED", "OpenAIProvider", "make_session", "redact"]

#: What stands in an error text where the API key was.
REDACTED = "[redacted]"
#: Any piece of the key at least this long counts as the key (an echo cut short).
_MIN_KEY_PART = 12
#: Error bodies are read this far (an HTML error page can be large; the first line is all we show).
_MAX_ERROR_TEXT = 8192

_dumps = json.JSONEncoder().encode
#: Shared request parts whose JSON is kept (a run has one or a few per label).
_FORMAT_CACHE = 256


def make_session(cfg: ProviderConfig) -> aiohttp.ClientSession:
    """One shared session with a bounded connector; call inside the running loop."""
    connector = aiohttp.TCPConnector(limit=cfg.max_connections, limit_per_host=cfg.max_connections, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s, sock_connect=min(10.0, cfg.timeout_s))
    return aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)


def _kept_headers(raw: Any) -> dict[str, str]:
    """The rate-limit headers of a response (``raw`` is case-insensitive), under lower-case names."""
    return {name: value for name in RATE_LIMIT_HEADERS if (value := raw.get(name)) is not None}


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` cut out: whole, and any long run of characters that is a piece of it.

    The pieces matter because a server may echo a header cut short, and we cut
    messages short too: every cut happens after this.
    """
    if not secret or not text:
        return text
    text = text.replace(secret, REDACTED)
    n = _MIN_KEY_PART
    if len(secret) < n or len(text) < n:
        return text
    pieces = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    out: list[str] = []
    start = i = 0
    while i <= len(text) - n:
        if text[i : i + n] not in pieces:
            i += 1
            continue
        end = i + n
        while end < len(text) and text[i : end + 1] in secret:
            end += 1
        out += [text[start:i], REDACTED]
        start = i = end
    return "".join(out) + text[start:] if out else text


def _error_detail(body: bytes, secret: str | None = None) -> tuple[str, str]:
    """(message, code) from an OpenAI-style error body, tolerant of anything else; ``secret`` redacted."""
    try:
        data = json.loads(body)
    except ValueError:
        text = redact(body[:_MAX_ERROR_TEXT].decode("utf-8", "replace").strip(), secret).splitlines()
        return (text[0][:200] if text else ""), ""
    err = data.get("error", data) if isinstance(data, dict) else {}
    if isinstance(err, str):
        return redact(err, secret)[:300], ""
    if not isinstance(err, dict):
        return "", ""
    code = redact(str(err.get("code") or err.get("type") or ""), secret)
    return redact(str(err.get("message", "")), secret)[:300], code


class OpenAIProvider(Provider):
    """``POST {base_url}/chat/completions``, non-streaming or streaming (SSE)."""

    def __init__(self, session: aiohttp.ClientSession, cfg: ProviderConfig) -> None:
        self.session = session
        self.cfg = cfg
        self.name = cfg.name
        self._url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", **cfg.extra_headers}
        if cfg.api_key:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._prefix = '{"model": ' + _dumps(cfg.model) + ', "messages": '
        self._format_json: dict[int, tuple[Any, str]] = {}

    # -- request body -------------------------------------------------------------------------

    def body(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.seed is not None:
            body["seed"] = request.seed
        if request.response_format is not None:
            body["response_format"] = request.response_format
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _shared_json(self, obj: Any) -> str:
        """The JSON of an object many requests share (a label's response format, a fixed prompt), made once.

        Cached by identity; the cache holds the object, so its id cannot be reused while cached. Shared
        request parts are never mutated.
        """
        cached = self._format_json.get(id(obj))
        if cached is None or cached[0] is not obj:
            if len(self._format_json) >= _FORMAT_CACHE:
                self._format_json.clear()
            cached = self._format_json[id(obj)] = (obj, _dumps(obj))
        return cached[1]

    def encode(self, request: Request) -> bytes:
        """``json.dumps(self.body(request))``, with the parts that repeat across requests serialised once."""
        messages = self._shared_json(request.messages) if request.shared_messages else _dumps(request.messages)
        parts = [self._prefix, messages, ', "max_tokens": ', str(int(request.max_tokens))]
        parts += [', "temperature": ', _dumps(request.temperature)]
        if request.top_p is not None:
            parts += [', "top_p": ', _dumps(request.top_p)]
        if request.seed is not None:
            parts += [', "seed": ', str(int(request.seed))]
        if request.response_format is not None:
            parts += [', "response_format": ', self._shared_json(request.response_format)]
        if request.stream:
            parts.append(', "stream": true, "stream_options": {"include_usage": true}')
        parts.append("}")
        return "".join(parts).encode()

    # -- the one real method ------------------------------------------------------------------

    async def complete(self, request: Request) -> Completion:
        payload = self.encode(request)
        started = time.perf_counter()
        try:
            async with self.session.post(self._url, data=payload, headers=self._headers) as resp:
                headers = _kept_headers(resp.headers)
                if resp.status != 200:
                    raise self._status_error(resp.status, await resp.read(), headers, request.id)
                if request.stream:
                    return await self._read_stream(resp, request, headers, started)
                raw = await resp.read()
        except EngineError as exc:
            self._scrub(exc)
            raise
        except TimeoutError as exc:
            raise Timeout(
                f"no answer within {self.cfg.timeout_s:g}s", provider=self.name, request_id=request.id
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ProviderUnavailable(
                f"cannot connect to {self.cfg.base_url}: {exc.os_error.strerror or exc}",
                provider=self.name,
                request_id=request.id,
            ) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise ProviderUnavailable(
                f"connection dropped: {type(exc).__name__}", provider=self.name, request_id=request.id
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(
                f"HTTP client error: {type(exc).__name__}", provider=self.name, request_id=request.id
            ) from exc
        return self._parse_body(raw, request, headers, time.perf_counter() - started)

    # -- responses ----------------------------------------------------------------------------

    def _parse_body(self, raw: bytes, request: Request, headers: dict[str, str], latency: float) -> Completion:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise MalformedResponse(
                "the response is not a valid chat completion", provider=self.name, request_id=request.id
            ) from exc
        return self.completion_from(data, request, headers, latency)

    def completion_from(
        self, data: Any, request: Request, headers: dict[str, str] | None = None, latency: float = 0.0
    ) -> Completion:
        """The ``Completion`` in a decoded chat-completion body (a response, or a line of a batch output file)."""
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise MalformedResponse(
                "the response is not a valid chat completion", provider=self.name, request_id=request.id
            ) from exc
        usage = data.get("usage") or {}
        return Completion(
            request_id=request.id,
            text=text,
            model=str(data.get("model") or self.cfg.model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=str(choice.get("finish_reason") or ""),
            headers=headers or {},
            latency_s=latency,
            server_timings=data.get("timings") or {},
        )

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, request: Request, headers: dict[str, str], started: float
    ) -> Completion:
        parts: list[str] = []
        chunk_times: list[float] = []
        usage: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        model = self.cfg.model
        finish = ""
        done = False
        buffer = b""
        protocol = resp.connection.protocol if resp.connection is not None else None
        if protocol is not None and resp.headers.get("Server", "").startswith("llama.cpp"):
            # llama.cpp's server closes the connection after a streamed response without saying so (no
            # "Connection: close"), so a pooled reuse fails the next request: keep it out of the pool.
            protocol.force_close()
        async for piece in resp.content.iter_any():
            buffer += piece
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    event = json.loads(data)
                except ValueError as exc:
                    raise MalformedResponse(
                        "a streamed chunk is not valid JSON", provider=self.name, request_id=request.id
                    ) from exc
                if isinstance(event, dict) and "error" in event:
                    message, _ = _error_detail(data, self.cfg.api_key)
                    raise ProviderUnavailable(f"error in stream: {message}", provider=self.name, request_id=request.id)
                model = event.get("model") or model
                if event.get("usage"):
                    usage = event["usage"]
                if event.get("timings"):
                    timings = event["timings"]
                for choice in event.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        parts.append(content)
                        chunk_times.append(time.perf_counter() - started)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            if done:
                break
        if not done:
            raise MalformedResponse(
                "the stream ended before [DONE] (truncated)", provider=self.name, request_id=request.id
            )
        return Completion(
            request_id=request.id,
            text="".join(parts),
            model=str(model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or len(chunk_times)),
            finish_reason=str(finish),
            headers=headers,
            latency_s=time.perf_counter() - started,
            ttft_s=chunk_times[0] if chunk_times else 0.0,
            chunk_times=chunk_times,
            server_timings=timings,
        )

    def _scrub(self, exc: EngineError) -> None:
        """``exc`` with the API key cut out of its text, wherever the text came from (a last line of defence)."""
        key = self.cfg.api_key
        if key:
            exc.message, exc.hint = redact(exc.message, key), redact(exc.hint, key)
            exc.args = (exc.message, *exc.args[1:])

    def _status_error(self, status: int, body: bytes, headers: dict[str, str], request_id: str) -> EngineError:
        message, code = _error_detail(body, self.cfg.api_key)
        kw: dict[str, Any] = {"status": status, "provider": self.name, "request_id": request_id}
        if status == 429:
            if code == "insufficient_quota":
                return FatalError(message or "quota exhausted", hint="add credit or raise the account's quota", **kw)
            err: EngineError = RateLimited(message or "rate limited", retry_after=parse_retry_after(headers), **kw)
        elif status in (401, 403):
            return AuthError(
                "the API key was rejected" if status == 401 else "access denied",
                hint="check the key in $OPENAI_API_KEY (or the variable named by --api-key-env)",
                **kw,
            )
        elif status == 404:
            if code == "model_not_found" or "model" in message.lower():
                return NotFound(
                    f"model {self.cfg.model!r} not found", hint="check --model against GET /v1/models", **kw
                )
            return NotFound(
                f"no chat completions endpoint at {self.cfg.base_url}",
                hint="--base-url should end in /v1, e.g. http://127.0.0.1:8000/v1",
                **kw,
            )
        elif status in (400, 422):
            return BadRequest(message or "the request was rejected", hint="check the model's supported options", **kw)
        elif status in (408, 409) or status >= 500:
            err = ProviderUnavailable(message or "server error", retry_after=parse_retry_after(headers), **kw)
        else:
            return FatalError(message or f"unexpected HTTP status {status}", **kw)
        err.headers = headers
        return err

    async def list_models(self) -> list[str]:
        """``GET {base_url}/models``; used as a preflight check (reachability, key, model)."""
        url = self.cfg.base_url.rstrip("/") + "/models"
        try:
            async with self.session.get(url, headers=self._headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise self._status_error(resp.status, body, _kept_headers(resp.headers), "")
        except EngineError as exc:
            self._scrub(exc)
            raise
        except TimeoutError as exc:
            raise Timeout(f"{url} did not answer in time", provider=self.name) from exc
        except aiohttp.ClientError as exc:
            message = redact(f"cannot connect to {self.cfg.base_url}: {exc}", self.cfg.api_key)
            raise ProviderUnavailable(message, provider=self.name) from exc
        try:
            data = json.loads(body)
            return [str(m["id"]) for m in data.get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return []
