"""OpenAI's Files and Batch APIs passed through, and a batch's usage read from its results.

Requests go to ``{base}/files...`` and ``{base}/batches...`` of one configured provider with
the client's method, body (uploads streamed, ``kraken.gateway.upload``) and a checked query.
Answers are relayed byte for byte. A batch's usage is known only from its output file: when a
file's content is downloaded, ``JsonlUsageTap`` reads each JSONL line as it passes (a bounded
line buffer; the bytes still go out unchanged) and sums ``response.body.usage``; the record
then carries the batch's model and a ``BatchUsage`` priced at half the model's price (OpenAI's
Batch API discount). A file id is metered once per process (a bounded memory of ids), so a
second download of the same results does not count them again.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import orjson

from kraken.errors import KrakenError
from kraken.providers.family import FamilyBase, Headers, UpstreamRequest, WireFamily
from kraken.providers.usage import MAX_COUNT, Usage, token_count

__all__ = ["BATCH_PRICE_FACTOR", "BatchUsage", "FilesFamily", "JsonlUsageTap", "files_request"]

BATCH_PRICE_FACTOR = 0.5
MAX_LINE = 1 << 20
"""A results line longer than this is passed through unread (its usage not counted)."""
_METERED_IDS = 4096


@dataclass(slots=True)  # not frozen, as Usage (kraken/http/exchange.py Request says why)
class BatchUsage(Usage):
    """The summed usage of a batch's results, with the model they name and the price factor."""

    model: str | None = None
    price_factor: float = BATCH_PRICE_FACTOR


class JsonlUsageTap:
    """Sums ``response.body.usage`` over a JSONL body's lines as they pass (``BodyTap``'s
    interface: ``feed`` and ``document``)."""

    __slots__ = ("_line", "_skip", "_sums", "_model", "_seen")

    def __init__(self, key: bytes = b"usage"):
        self._line = bytearray()
        self._skip = False
        self._sums = [0, 0, 0, 0]
        self._model: str | None = None
        self._seen = 0

    def feed(self, data: bytes) -> None:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                if not self._skip:
                    self._line += data[start:]
                    if len(self._line) > MAX_LINE:
                        self._line.clear()
                        self._skip = True
                return
            if not self._skip:
                self._line += data[start:end]
                self._read_line(bytes(self._line))
            self._line.clear()
            self._skip = False
            start = end + 1

    def _read_line(self, line: bytes) -> None:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        response = obj.get("response") if isinstance(obj, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        u = Usage.from_openai(usage)
        if u.prompt_tokens is None and isinstance(usage.get("input_tokens"), int):
            get = usage.get  # /v1/responses
            u = Usage(token_count(get("input_tokens")), token_count(get("output_tokens")))
        for i, value in enumerate((u.prompt_tokens, u.completion_tokens, u.cached_tokens,
                                   u.reasoning_tokens)):
            # a sum past the bound stays just past it (read as unknown), never beyond 64 bits
            self._sums[i] = min(self._sums[i] + (value or 0), MAX_COUNT + 1)
        model = body.get("model")
        if self._model is None and isinstance(model, str) and len(model) <= 200:
            self._model = model
        self._seen += 1

    def document(self) -> bytes | None:
        if self._line and not self._skip:
            self._read_line(bytes(self._line))  # a last line without its newline
            self._line.clear()
        if not self._seen:
            return None
        return orjson.dumps({"usage": self._sums, "model": self._model})


class FilesFamily(FamilyBase):
    """``base``'s errors and key placement; a file download's results usage (once per id)."""

    _metered: collections.OrderedDict = collections.OrderedDict()

    def __init__(self, base: WireFamily, file_id: str | None = None):
        self.base, self.cfg, self.name = base, base.cfg, base.name
        self.authorized = base.authorized
        self._file_id = file_id
        self.body_tap = JsonlUsageTap if file_id is not None else None

    def usage_from_body(self, body: bytes) -> Usage | None:
        if self._file_id is None or body is None:
            return None
        try:
            doc = orjson.loads(body)
            sums, model = doc["usage"], doc["model"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not isinstance(sums, list) or self._file_id in self._metered:
            return None
        self._metered[self._file_id] = True
        while len(self._metered) > _METERED_IDS:
            self._metered.popitem(last=False)
        return BatchUsage(*map(token_count, sums), model=model)

    def usage_parser(self):
        return _no_usage

    def map_error(self, status: int, body: bytes) -> KrakenError:
        return self.base.map_error(status, body)

    def sse_error_event(self, exc: KrakenError) -> bytes:
        return self.base.sse_error_event(exc)


def files_request(family, method: str, path: str, query: str, body: bytes,
                  framing: Headers | None, file_id: str | None = None) -> UpstreamRequest:
    """``method {base}{path}?{query}``: ``body`` (the upload's first bytes with ``framing``, or
    a JSON body); ``file_id`` when the answer is a file's content (results usage read)."""
    headers = [h for h in family.headers_for(None) if h[0] not in (b"content-type", b"accept")]
    headers.append((b"accept", b"*/*"))
    if framing is not None:
        headers += framing
    elif method == "POST":
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
    base = family.embeddings_target[: -len("/embeddings")]
    target = base + path + ("?" + query if query else "")
    return UpstreamRequest(target, headers, body, FilesFamily(family, file_id), method=method)


def _no_usage(event: bytes) -> None:
    return None
