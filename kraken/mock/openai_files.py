"""The OpenAI mock's Files and Batch APIs, in OpenAI's published wire formats.

Files live in the mock's memory (it is the provider): ``POST /files`` (multipart ``purpose`` and
``file``) answers a file object ``{id, object: "file", bytes, created_at, filename, purpose,
status}``; ``GET /files`` a list ``{object: "list", data, first_id, last_id, has_more}``, paged
as OpenAI pages it (``_page``: ``limit``, ``after``, ``order``; ``purpose`` filters);
``GET /files/{id}`` the object; ``GET /files/{id}/content`` the bytes; ``DELETE /files/{id}``
``{id, object, deleted}``.
Batches: ``POST /batches`` ``{input_file_id, endpoint, completion_window}`` answers a batch object
in ``validating``; each ``GET /batches/{id}`` moves it on (``in_progress``, then ``completed``
with an ``output_file_id``); ``POST /batches/{id}/cancel`` answers ``cancelling``, then
``cancelled``; ``GET /batches`` a page of the list, newest first (``limit``, ``after``). The
output file is JSONL, one line per input line: ``{id, custom_id, response: {status_code,
request_id, body: <a chat.completion with usage>}, error}``; line ``i`` uses ``prompt_tokens``
10 + i and ``completion_tokens`` 5. Unknown ids are 404 in OpenAI's envelope.
"""
from __future__ import annotations

import itertools
import re
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson

from kraken.mock.openai_audio import multipart_fields
from kraken.mock.openai_mock import error_body
from kraken.mock.server import BadRequest, Reply

__all__ = ["FilesApi"]

_FILENAME = re.compile(rb'name="file"; filename="([^"]*)"')
_NEXT = {"validating": "in_progress", "in_progress": "completed", "cancelling": "cancelled"}
_RANK = re.compile(r"(?:file-|batch_)mock(\d+)")
FILES_LIMIT = (10_000, 10_000)
"""OpenAI's files list ``limit``: (default, maximum)."""
BATCHES_LIMIT = (20, 100)
"""OpenAI's batches list ``limit``: (default, maximum)."""


class FilesApi:
    """One mock provider's files and batches."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[dict, bytes]] = {}
        self.batches: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self.lists: list[dict[str, str]] = []
        """Each list call's query parameters, in order (a test counts the pages asked for)."""
        self.refused_after: dict[str, int] = {}
        """A list call whose ``after`` is a key here answers that status, naming the id (a
        test's provider failing one page of a list)."""

    def reply(self, req: Any, path: str) -> Reply:
        parts = path.strip("/").split("/")
        if parts[0] == "files":
            return self._files(req, parts[1:])
        return self._batches(req, parts[1:])

    def _files(self, req: Any, rest: list[str]) -> Reply:
        if not rest:
            if req.method == "POST":
                return self._upload(req)
            return self._listed(req, list(self.files.values()), FILES_LIMIT)
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
            return self._listed(req, list(self.batches.values()), BATCHES_LIMIT, "desc")
        batch = self.batches.get(rest[0])
        if batch is None:
            return Reply(404, error_body(404, f"No batch found with id '{rest[0]}'.", "batch_id"))
        if len(rest) == 2 and rest[1] == "cancel":
            if batch["status"] in ("validating", "in_progress"):
                batch.update(status="cancelling", cancelling_at=int(time.time()))
            return _json(batch)
        self._advance(batch)
        return _json(batch)

    def _listed(self, req: Any, objects: list, limits: tuple[int, int],
                order: str | None = None) -> Reply:
        """A page of the files (``(object, bytes)``, of ``purpose`` if the query names one) or
        the batches; the query is kept in ``lists``."""
        query = dict(parse_qsl(req.target.partition("?")[2]))
        self.lists.append(query)
        refused = self.refused_after.get(query.get("after", ""))
        if refused is not None:
            return Reply(refused, error_body(refused, f"No such object: {query['after']}", "after"))
        if order is None:  # files
            purpose = query.get("purpose")
            objects = [o for o, _ in objects if purpose is None or o["purpose"] == purpose]
        return _json(_page(objects, query, limits, order))

    def _create(self, raw: bytes) -> Reply:
        body = orjson.loads(raw)
        input_id = body.get("input_file_id")
        if input_id not in self.files:
            raise BadRequest(f"No such File object: {input_id}", "input_file_id")
        return _json(self.add_batch(input_id, body.get("endpoint"),
                                    body.get("completion_window", "24h"), body.get("metadata")))

    def add_batch(self, input_id: str, endpoint: str | None, window: str = "24h",
                  metadata: dict | None = None) -> dict:
        now = int(time.time())
        batch = {"id": "batch_mock%06d" % next(self._ids), "object": "batch",
                 "endpoint": endpoint, "errors": None, "input_file_id": input_id,
                 "completion_window": window,
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
                 "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": metadata}
        self.batches[batch["id"]] = batch
        return batch

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


def _page(objects: list[dict], query: dict[str, str], limits: tuple[int, int],
          order: str | None) -> dict:
    """One page of ``objects`` as OpenAI lists them: ordered by creation
    (``order``, else the query's ``order``, newest first by default), those after the object
    ``after`` names (which may since be deleted: the mock's ids count up), ``limit`` at most
    (``limits``: default, maximum), ``has_more`` when others follow."""
    default, maximum = limits
    raw_limit = query.get("limit", str(default))
    limit = int(raw_limit) if raw_limit.isdigit() else -1
    if not 1 <= limit <= maximum:
        raise BadRequest(f"Invalid 'limit': expected an integer between 1 and {maximum}, "
                         f"got {raw_limit[:20]!r}.", "limit")
    order = order or query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest(f"Invalid 'order': expected 'asc' or 'desc', got {order[:20]!r}.",
                         "order")
    ranked = sorted(objects, key=lambda o: _rank(o["id"]), reverse=order == "desc")
    after = query.get("after")
    if after is not None:
        mark = _rank(after)
        if mark < 0:
            raise BadRequest(f"Invalid 'after': no object has the id {after[:64]!r}.", "after")
        ranked = [o for o in ranked if (_rank(o["id"]) < mark if order == "desc"
                                        else _rank(o["id"]) > mark)]
    data = ranked[:limit]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last,
            "has_more": len(ranked) > limit}


def _rank(object_id: str) -> int:
    """An object's place in creation order (its id's count), -1 for an id the mock never made."""
    found = _RANK.fullmatch(object_id)
    return int(found.group(1)) if found else -1


def _json(obj: dict) -> Reply:
    return Reply(200, orjson.dumps(obj))
