"""The OpenAI mock's Files and Batch APIs, in OpenAI's published wire formats.

Files live in the mock's memory (it is the provider): ``POST /files`` (multipart ``purpose`` and
``file``) answers a file object ``{id, object: "file", bytes, created_at, filename, purpose,
status}``; ``GET /files`` a list ``{object: "list", data, first_id, last_id, has_more}``;
``GET /files/{id}`` the object; ``GET /files/{id}/content`` the bytes; ``DELETE /files/{id}``
``{id, object, deleted}``.
Batches: ``POST /batches`` ``{input_file_id, endpoint, completion_window}`` answers a batch object
in ``validating``; each ``GET /batches/{id}`` moves it on (``in_progress``, then ``completed``
with an ``output_file_id``); ``POST /batches/{id}/cancel`` answers ``cancelling``, then
``cancelled``. The output file is JSONL, one line per input line: ``{id, custom_id, response:
{status_code, request_id, body: <a chat.completion with usage>}, error}``; line ``i`` uses
``prompt_tokens`` 10 + i and ``completion_tokens`` 5. Unknown ids are 404 in OpenAI's envelope.
"""
from __future__ import annotations

import itertools
import re
import time
from typing import Any

import orjson

from kraken.mock.openai_audio import multipart_fields
from kraken.mock.openai_mock import error_body
from kraken.mock.server import BadRequest, Reply

__all__ = ["FilesApi"]

_FILENAME = re.compile(rb'name="file"; filename="([^"]*)"')
_NEXT = {"validating": "in_progress", "in_progress": "completed", "cancelling": "cancelled"}


class FilesApi:
    """One mock provider's files and batches."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[dict, bytes]] = {}
        self.batches: dict[str, dict] = {}
        self._ids = itertools.count(1)

    def reply(self, req: Any, path: str) -> Reply:
        parts = path.strip("/").split("/")
        if parts[0] == "files":
            return self._files(req, parts[1:])
        return self._batches(req, parts[1:])

    def _files(self, req: Any, rest: list[str]) -> Reply:
        if not rest:
            if req.method == "POST":
                return self._upload(req)
            return _json(_page([obj for obj, _ in self.files.values()]))
        entry = self.files.get(rest[0])
        if entry is None:
            return Reply(404, error_body(404, f"No such File object: {rest[0]}", "id"))
        if len(rest) == 2 and rest[1] == "content":
            return Reply(200, entry[1], ctype=b"application/octet-stream")
        if req.method == "DELETE":
            del self.files[rest[0]]
            return _json({"id": rest[0], "object": "file", "deleted": True})
        return _json(entry[0])

    def _upload(self, req: Any) -> Reply:
        ctype = next((v for k, v in req.headers if k == b"content-type"), None)
        fields = multipart_fields(ctype, req.body)
        if b"file" not in fields:
            raise BadRequest("you must provide a file parameter", "file")
        name = _FILENAME.search(req.body)
        return _json(self.add(fields[b"file"], fields.get(b"purpose", b"").decode(),
                              name.group(1).decode() if name else "upload"))

    def add(self, content: bytes, purpose: str, filename: str) -> dict:
        file_id = "file-mock%06d" % next(self._ids)
        obj = {"id": file_id, "object": "file", "bytes": len(content),
               "created_at": int(time.time()), "filename": filename, "purpose": purpose,
               "status": "processed"}
        self.files[file_id] = (obj, content)
        return obj

    def _batches(self, req: Any, rest: list[str]) -> Reply:
        if not rest:
            if req.method == "POST":
                return self._create(req.body)
            return _json(_page(list(self.batches.values())))
        batch = self.batches.get(rest[0])
        if batch is None:
            return Reply(404, error_body(404, f"No batch found with id '{rest[0]}'.", "batch_id"))
        if len(rest) == 2 and rest[1] == "cancel":
            if batch["status"] in ("validating", "in_progress"):
                batch.update(status="cancelling", cancelling_at=int(time.time()))
            return _json(batch)
        self._advance(batch)
        return _json(batch)

    def _create(self, raw: bytes) -> Reply:
        body = orjson.loads(raw)
        input_id = body.get("input_file_id")
        if input_id not in self.files:
            raise BadRequest(f"No such File object: {input_id}", "input_file_id")
        now = int(time.time())
        batch = {"id": "batch_mock%06d" % next(self._ids), "object": "batch",
                 "endpoint": body.get("endpoint"), "errors": None, "input_file_id": input_id,
                 "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
                 "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}
        self.batches[batch["id"]] = batch
        return _json(batch)

    def _advance(self, batch: dict) -> None:
        status = _NEXT.get(batch["status"])
        if status is None:
            return
        batch["status"] = status
        batch[f"{status}_at"] = int(time.time())
        if status == "completed":
            lines = [line for line in self.files[batch["input_file_id"]][1].splitlines() if line]
            out = b"".join(_result(i, orjson.loads(line)) for i, line in enumerate(lines))
            batch["output_file_id"] = self.add(out, "batch_output", "batch_output.jsonl")["id"]
            batch["request_counts"] = {"total": len(lines), "completed": len(lines), "failed": 0}


def _result(i: int, line: dict) -> bytes:
    model = line.get("body", {}).get("model", "gpt-4o-mini")
    usage = {"prompt_tokens": 10 + i, "completion_tokens": 5, "total_tokens": 15 + i}
    body = {"id": f"chatcmpl-batch{i}", "object": "chat.completion", "created": 0,
            "model": model + "-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}], "usage": usage}
    return orjson.dumps({"id": f"batch_req_{i}", "custom_id": line.get("custom_id"),
                         "response": {"status_code": 200, "request_id": f"req_{i}", "body": body},
                         "error": None}) + b"\n"


def _page(data: list[dict]) -> dict:
    """One page holding every object (OpenAI's list shape)."""
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}


def _json(obj: dict) -> Reply:
    return Reply(200, orjson.dumps(obj))
