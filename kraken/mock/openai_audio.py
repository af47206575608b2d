"""The OpenAI mock's audio endpoints, in OpenAI's published wire formats.

- ``POST /audio/transcriptions`` and ``/audio/translations``: a ``multipart/form-data`` body
  with ``file`` and ``model`` (required, else 400 naming it), optional ``response_format``
  (``json`` default, ``text``, ``srt``, ``verbose_json``, ``vtt``). ``json`` answers
  ``{"text", "usage"}``: whisper-1 ``{"type": "duration", "seconds"}`` (one second per 16,000
  bytes of file, rounded up), other models ``{"type": "tokens", "input_tokens",
  "output_tokens", "total_tokens", "input_token_details"}``; ``verbose_json`` adds
  ``task``, ``language``, ``duration``, ``segments`` (translations: no usage, as OpenAI's);
  ``text``/``srt``/``vtt`` are text bodies without usage.
- ``POST /audio/speech``: JSON ``{model, input, voice, response_format}``; the answer is
  fake audio bytes (``audio_bytes`` in ``"mock"``, default 48,000), sent chunked in 4 KiB
  pieces under the format's Content-Type.

The transcript is fixed fake text; nothing of the upload is echoed.
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import orjson

from kraken.mock.server import BadRequest, Reply, stream_reply

__all__ = ["audio_reply", "multipart_fields"]

TEXT = "The kraken rises from the deep."
_CTYPES = {"mp3": b"audio/mpeg", "opus": b"audio/opus", "aac": b"audio/aac", "flac": b"audio/flac",
           "wav": b"audio/wav", "pcm": b"audio/pcm"}
_BOUNDARY = re.compile(rb'boundary="?([^";\s]+)"?', re.I)
_NAME = re.compile(rb'name="([^"]*)"')


def multipart_fields(ctype: bytes | None, body: bytes) -> dict[bytes, bytes]:
    """Field name -> value bytes of a ``multipart/form-data`` body (RFC 7578)."""
    m = _BOUNDARY.search(ctype or b"")
    if m is None:
        raise BadRequest("Content-Type must be multipart/form-data with a boundary.")
    delim = b"--" + m.group(1)
    fields: dict[bytes, bytes] = {}
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, value = part[2:].partition(b"\r\n\r\n")
        name = _NAME.search(head)
        if sep and name is not None:
            fields[name.group(1)] = value[:-2] if value.endswith(b"\r\n") else value
    return fields


def audio_reply(server: Any, req: Any, path: str) -> Reply:
    if path == "/audio/speech":
        return _speech(server, req.body)
    ctype = next((v for k, v in req.headers if k == b"content-type"), None)
    fields = multipart_fields(ctype, req.body)
    model = fields.get(b"model", b"").decode()
    if not model:
        raise BadRequest("you must provide a model parameter", "model")
    audio = fields.get(b"file")
    if not audio:
        raise BadRequest("you must provide a file parameter", "file")
    fmt = fields.get(b"response_format", b"json").decode()
    translation = path == "/audio/translations"
    seconds = math.ceil(len(audio) / 16000)
    if fmt == "text":
        return Reply(200, TEXT.encode() + b"\n", ctype=b"text/plain; charset=utf-8")
    if fmt in ("srt", "vtt"):
        cue = f"00:00:00{',' if fmt == 'srt' else '.'}000 --> 00:00:0{min(seconds, 9)}"
        text = (f"1\n{cue}\n{TEXT}\n\n" if fmt == "srt" else f"WEBVTT\n\n{cue}\n{TEXT}\n\n")
        return Reply(200, text.encode(), ctype=b"text/plain; charset=utf-8")
    if fmt not in ("json", "verbose_json"):
        raise BadRequest(f"Invalid response_format: {fmt}", "response_format")
    out: dict[str, Any] = {"text": TEXT}
    if fmt == "verbose_json":
        out = {"task": "translate" if translation else "transcribe", "language": "english",
               "duration": float(seconds), "text": TEXT, "segments": []}
    if not translation:
        out["usage"] = ({"type": "duration", "seconds": seconds} if model.startswith("whisper")
                        else {"type": "tokens", "input_tokens": 14 + seconds, "output_tokens": 9,
                              "total_tokens": 23 + seconds,
                              "input_token_details": {"text_tokens": 0, "audio_tokens": 14 + seconds}})
    return Reply(200, orjson.dumps(out))


def _speech(server: Any, raw: bytes) -> Reply:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    for name in ("model", "input", "voice"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise BadRequest(f"you must provide a {name} parameter", name)
    fmt = body.get("response_format", "mp3")
    if fmt not in _CTYPES:
        raise BadRequest(f"Invalid response_format: {fmt}", "response_format")
    mock = body.get("mock") if isinstance(body.get("mock"), dict) else {}
    size = int(mock.get("audio_bytes", 48_000))
    audio = fake_audio(body["input"], size)
    chunks = [audio[i:i + 4096] for i in range(0, len(audio), 4096)]
    return stream_reply(chunks, ctype=_CTYPES[fmt])


def fake_audio(seed: str, size: int) -> bytes:
    """Deterministic bytes standing in for encoded audio."""
    block = hashlib.sha256(seed.encode()).digest() * 128
    return (block * (size // len(block) + 1))[:size]
