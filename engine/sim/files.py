"""The simulator's Files API: upload (multipart), list, retrieve, content, delete.

As OpenAI documents it: ``POST /v1/files`` with ``purpose`` and ``file``
(a batch input must be ``.jsonl``, at most 200 MB); ``DELETE /v1/files/{id}``
answers ``{id, object: "file", deleted: true}`` and the file is gone (a later
GET of it or its content is a 404). A test can make deletions fail
(``delete_status``) to check that a client never loses data over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from .batch_state import BatchState, api_error, denied
from .server import Simulator

__all__ = ["MAX_FILE_BYTES", "FilesSim", "SimFile"]

#: OpenAI's limit on an uploaded batch input file.
MAX_FILE_BYTES = 200 * 1024 * 1024
_PURPOSES = ("batch", "fine-tune", "assistants", "user_data")


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
        }


class FilesSim:
    """The ``/v1/files`` routes over a dict of files; the batch routes add their output files to it."""

    def __init__(
        self,
        sim: Simulator,
        state: BatchState,
        next_id: Callable[[str], str],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.sim = sim
        self.state = state
        self._next_id = next_id
        self._wall = wall
        self.files: dict[str, SimFile] = {}
        #: A test's fault: answer every ``DELETE`` with this status (e.g. 500, or 405 as a server without it).
        self.delete_status: int | None = None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self.upload)
        router.add_get("/v1/files", self.list_files)
        router.add_get("/v1/files/{file_id}", self.retrieve_file)
        router.add_delete("/v1/files/{file_id}", self.delete_file)
        router.add_get("/v1/files/{file_id}/content", self.file_content)

    def add(self, filename: str, purpose: str, content: bytes) -> SimFile:
        rec = SimFile(self._next_id("file"), filename, purpose, content, int(self._wall()))
        self.files[rec.id] = rec
        return rec

    async def upload(self, request: web.Request) -> web.Response:
        if (no := denied(self.sim, self.state, request)) is not None:
            return no
        if not request.content_type.startswith("multipart/"):
            return api_error(400, "Expected a multipart/form-data body with 'file' and 'purpose'.")
        purpose, filename, content = None, "", b""
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not part of this API
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or "upload.jsonl"
                chunks = []
                size = 0
                while chunk := await part.read_chunk(1 << 20):
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        msg = f"File is larger than the {MAX_FILE_BYTES // 2**20} MB limit."
                        return api_error(400, msg, param="file")
                    chunks.append(chunk)
                content = b"".join(chunks)
        if purpose is None:
            return api_error(400, "Missing required parameter: 'purpose'.", "missing_required_parameter", "purpose")
        if purpose not in _PURPOSES:
            return api_error(400, f"Invalid value for 'purpose': {purpose!r}.", "invalid_value", "purpose")
        if not content:
            return api_error(400, "Missing required parameter: 'file' (or the file is empty).", param="file")
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return api_error(400, "Invalid file format for Batch API. Must be .jsonl", "invalid_file_format", "file")
        rec = self.add(filename, purpose, content)
        self.state.uploads += 1
        return web.json_response(rec.public())

    def _file(self, request: web.Request) -> SimFile | web.Response:
        rec = self.files.get(request.match_info["file_id"])
        if rec is None:
            return api_error(404, f"No such File object: {request.match_info['file_id']}", param="id")
        return rec

    async def list_files(self, request: web.Request) -> web.Response:
        if (no := denied(self.sim, self.state, request)) is not None:
            return no
        purpose = request.query.get("purpose")
        data = [f.public() for f in self.files.values() if purpose is None or f.purpose == purpose]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def retrieve_file(self, request: web.Request) -> web.Response:
        if (no := denied(self.sim, self.state, request)) is not None:
            return no
        rec = self._file(request)
        return rec if isinstance(rec, web.Response) else web.json_response(rec.public())

    async def delete_file(self, request: web.Request) -> web.Response:
        if (no := denied(self.sim, self.state, request)) is not None:
            return no
        if self.delete_status is not None:
            self.state.deletes_refused += 1
            if self.delete_status == 405:
                return web.Response(status=405, text="405: Method Not Allowed")  # a server without the route
            return api_error(self.delete_status, "The server had an error while deleting the file.")
        rec = self._file(request)
        if isinstance(rec, web.Response):
            return rec
        del self.files[rec.id]
        self.state.files_deleted += 1
        return web.json_response({"id": rec.id, "object": "file", "deleted": True})

    async def file_content(self, request: web.Request) -> web.Response:
        if (no := denied(self.sim, self.state, request)) is not None:
            return no
        rec = self._file(request)
        if isinstance(rec, web.Response):
            return rec
        return web.Response(body=rec.content, content_type="application/octet-stream")
