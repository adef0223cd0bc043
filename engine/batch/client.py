"""The OpenAI Files + Batches endpoints over aiohttp, with errors translated at this boundary.

It rides on an :class:`OpenAIProvider`: the same session, base URL, headers
(API key) and HTTP-status translation, so a batch run fails the same way an
online one does (a wrong key is one line naming ``$OPENAI_API_KEY``). What is
specific to batches is translated here: a server without the Batch API, a
rejected upload. Retryable errors (5xx, connection drops) are retried with the
run's retry policy; creating a batch is the one call that is not blindly
retried, since a lost answer may hide a batch that exists (and is paid for):
the caller reconciles through :meth:`find_batch` first.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import aiohttp

from ..config import RetryPolicy
from ..errors import BadRequest, EngineError, NotFound, ProviderUnavailable, RetryableError, Timeout
from ..providers.openai import OpenAIProvider
from ..retry import build_retrying

__all__ = ["ENDPOINT", "BatchClient", "BatchInfo", "NoBatchApi"]

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
_LIST_PAGE = 100
T = TypeVar("T")


class NoBatchApi(NotFound):
    """The server answers 404/405 on ``/v1/files`` or ``/v1/batches``: it does not implement the Batch API."""


class BatchInfo(dict[str, Any]):
    """A batch object as the server returned it, with typed accessors for the fields the engine reads."""

    @property
    def id(self) -> str:
        return str(self["id"])

    @property
    def status(self) -> str:
        return str(self.get("status") or "")

    @property
    def counts(self) -> dict[str, int]:
        raw = self.get("request_counts") or {}
        return {k: int(raw.get(k) or 0) for k in ("total", "completed", "failed")}

    @property
    def errors(self) -> list[dict[str, Any]]:
        errs = self.get("errors") or {}
        data = errs.get("data") if isinstance(errs, dict) else None
        return [e for e in data or () if isinstance(e, dict)]

    def reason(self) -> str:
        """The provider's reason for a failed batch, on one line."""
        parts = []
        for e in self.errors[:3]:
            where = f" (line {e['line']})" if e.get("line") is not None else ""
            parts.append(f"{e.get('code') or 'error'}{where}: {e.get('message') or ''}".strip())
        more = len(self.errors) - 3
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "") if parts else "no reason given"


class BatchClient:
    """Upload, create, retrieve, list, cancel and download, counting every HTTP call it makes."""

    def __init__(
        self, provider: OpenAIProvider, retry: RetryPolicy | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.provider = provider
        self.session: aiohttp.ClientSession = provider.session
        self.name = provider.name
        self.base = provider.cfg.base_url.rstrip("/")
        self._headers = {k: v for k, v in provider._headers.items() if k.lower() != "content-type"}
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random(0)
        #: HTTP calls made (every attempt), for the display and the benchmark.
        self.calls = 0

    # -- the boundary ---------------------------------------------------------------------------

    async def _call(self, method: str, path: str, *, collection: bool = False, **kw: Any) -> bytes:
        """One HTTP call; the body of a 200, else the error that status means (``raise ... from``)."""
        url = self.base + path
        self.calls += 1
        try:
            async with self.session.request(method, url, headers=self._headers, **kw) as resp:
                body = await resp.read()
                if resp.status == 200:
                    return body
                if resp.status in (404, 405) and (collection or not _is_api_error(body)):
                    raise NoBatchApi(
                        f"{self.base} has no Batch API ({resp.status} on {method} {path})",
                        hint="run without --batch to use the online path, or point --base-url at a server "
                        "with /v1/files and /v1/batches",
                        status=resp.status,
                        provider=self.name,
                    )
                raise self.provider._status_error(resp.status, body, {}, "")
        except EngineError:
            raise
        except TimeoutError as exc:
            raise Timeout(f"{method} {path}: no answer in time", provider=self.name) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ProviderUnavailable(
                f"cannot connect to {self.base}: {exc.os_error.strerror or exc}", provider=self.name
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"{method} {path}: {type(exc).__name__}", provider=self.name) from exc

    async def _retried(self, fn: Callable[[], Awaitable[T]]) -> T:
        async for attempt in build_retrying(self._retry, rng=self._rng):
            with attempt:
                return await fn()
        raise AssertionError("unreachable")  # pragma: no cover - tenacity re-raises the last error

    async def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        body = await self._retried(lambda: self._call(method, path, **kw))
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ProviderUnavailable(f"{method} {path}: the answer is not JSON", provider=self.name) from exc
        if not isinstance(data, dict):
            raise ProviderUnavailable(f"{method} {path}: the answer is not a JSON object", provider=self.name)
        return data

    # -- files ----------------------------------------------------------------------------------

    async def upload(self, path: Path, *, filename: str | None = None) -> str:
        """``POST /files`` (purpose ``batch``); the file id. A rejected file is a ``BadRequest`` with the reason."""

        async def once() -> bytes:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            with _open(path, "rb") as f:
                form.add_field("file", f, filename=filename or path.name, content_type="application/jsonl")
                return await self._call("POST", "/files", collection=True, data=form)

        try:
            raw = await self._retried(once)
        except BadRequest as exc:
            raise BadRequest(
                f"the server rejected the batch input file {path.name}: {exc.message}",
                hint="see the reason above; --batch-max-bytes / --batch-max-requests set the file limits",
                status=exc.status,
                provider=self.name,
            ) from exc
        data = json.loads(raw)
        return str(data["id"])

    async def delete_file(self, file_id: str) -> None:
        await self._json("DELETE", f"/files/{file_id}")

    async def download(self, file_id: str, dest: Path) -> int:
        """``GET /files/{id}/content`` into ``dest`` atomically (tmp, fsync, rename); the bytes written."""

        async def once() -> int:
            tmp = dest.with_name(dest.name + ".part")
            url = f"/files/{file_id}/content"
            self.calls += 1
            size = 0
            try:
                async with self.session.get(self.base + url, headers=self._headers) as resp:
                    if resp.status != 200:
                        raise self.provider._status_error(resp.status, await resp.read(), {}, "")
                    with _open(tmp, "wb") as f:
                        async for chunk in resp.content.iter_chunked(1 << 20):
                            f.write(chunk)
                            size += len(chunk)
                        f.flush()
                        os.fsync(f.fileno())
            except EngineError:
                raise
            except TimeoutError as exc:
                raise Timeout(f"GET {url}: no answer in time", provider=self.name) from exc
            except aiohttp.ClientError as exc:
                raise ProviderUnavailable(f"GET {url}: {type(exc).__name__}", provider=self.name) from exc
            os.replace(tmp, dest)
            return size

        return await self._retried(once)

    # -- batches --------------------------------------------------------------------------------

    async def create(self, input_file_id: str, *, metadata: dict[str, str] | None = None) -> BatchInfo:
        """``POST /batches`` once (no blind retry: a lost answer may hide a created batch)."""
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": ENDPOINT,
            "completion_window": COMPLETION_WINDOW,
        }
        if metadata:
            body["metadata"] = metadata
        raw = await self._call("POST", "/batches", collection=True, json=body)
        return BatchInfo(json.loads(raw))

    async def create_once(
        self, input_file_id: str, *, metadata: dict[str, str] | None = None, exclude: frozenset[str] = frozenset()
    ) -> BatchInfo:
        """Create a batch for ``input_file_id`` exactly once, even when an answer is lost on the way back.

        After a retryable error the batch may exist; it is looked up by its input file (ignoring the earlier
        batches in ``exclude``) before trying again.
        """
        async for attempt in build_retrying(self._retry, rng=self._rng):
            with attempt:
                try:
                    return await self.create(input_file_id, metadata=metadata)
                except RetryableError:
                    found = await self.find_batch(input_file_id, exclude=exclude)
                    if found is not None:
                        return found
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo(await self._json("GET", f"/batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> BatchInfo | None:
        """``POST /batches/{id}/cancel``; None when the batch can no longer be cancelled (it already ended)."""
        try:
            body = await self._call("POST", f"/batches/{batch_id}/cancel")
        except EngineError as exc:
            if exc.status in (400, 409):  # "cannot cancel a batch with status completed": not worth a retry
                return None
            raise
        return BatchInfo(json.loads(body))

    async def list_batches(self, *, page: int = _LIST_PAGE) -> AsyncIterator[BatchInfo]:
        """Every batch the account has, newest first, page by page."""
        after: str | None = None
        while True:
            params: dict[str, str] = {"limit": str(page)}
            if after:
                params["after"] = after
            data = await self._json("GET", "/batches", collection=True, params=params)
            items = [BatchInfo(b) for b in data.get("data") or () if isinstance(b, dict)]
            for item in items:
                yield item
            if not data.get("has_more") or not items:
                return
            after = items[-1].id

    async def find_batch(
        self, input_file_id: str, *, exclude: frozenset[str] = frozenset(), newer_than: int = 0
    ) -> BatchInfo | None:
        """The newest batch created from ``input_file_id`` and not in ``exclude``, if any.

        Listing stops at batches created before ``newer_than`` (a Unix time), so a long account history is not
        paged through.
        """
        async for batch in self.list_batches():
            if int(batch.get("created_at") or 0) < newer_than:
                return None
            if batch.get("input_file_id") == input_file_id and batch.id not in exclude:
                return batch
        return None

    async def check(self) -> None:
        """Fail within one call if the server has no Batch API (``GET /batches?limit=1``)."""
        await self._json("GET", "/batches", collection=True, params={"limit": "1"})


def _open(path: Path, mode: str) -> BinaryIO:
    """A local file for an upload or a download: local disk I/O in chunks, cheap next to the network."""
    return cast(BinaryIO, open(path, mode))  # noqa: SIM115 - the caller closes it


def _is_api_error(body: bytes) -> bool:
    """Whether a 404 body is an OpenAI-style error object (an unknown id) rather than a missing route."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), dict)
