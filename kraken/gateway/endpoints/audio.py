"""``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: uploads relayed as they arrive.

The multipart body is never held whole (``kraken.gateway.upload``): Kraken reads it only as
far as the ``model`` form field (the SDKs send it before the file; otherwise 400 naming
``model``), routes on it, and relays the rest in bounded chunks while the provider takes them.
Over ``[server] max_audio_bytes`` (default OpenAI's own 25 MB): 413 in OpenAI's format, before the body when
its Content-Length says so, else as soon as the count passes it (the provider exchange is cut).
Answers (``json``, ``text``, ``srt``, ``verbose_json``, ``vtt``) are relayed byte for byte;
``usage`` is recorded when the answer has one (``kraken.providers.openai_audio``). Served by
OpenAI-compatible providers (kinds ``openai`` and ``openai_compatible``). Task type ``other``.
"""
from __future__ import annotations

from kraken.gateway.endpoint import Endpoint, Parsed, model_not_served
from kraken.gateway.upload import UPLOAD, Upload, UploadLimits
from kraken.http.exchange import Request
from kraken.policy.router import Route
from kraken.providers.family import UpstreamRequest
from kraken.providers.openai_audio import upload_request

MAX_AUDIO_BYTES = UploadLimits().audio
"""The default limit (``[server] max_audio_bytes``)."""
KINDS = ("openai", "openai_compatible")


def hears(route: Route) -> bool:
    return route.provider.family.cfg.kind in KINDS


async def read(req: Request, limits: UploadLimits) -> dict:
    upload = await Upload.open(req, limits.audio)
    return {"model": upload.model, UPLOAD: upload}


def _task(parsed: Parsed) -> str:
    return "other"


def _shape(path: str):
    def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
        upload: Upload = parsed.payload[UPLOAD]
        return upload_request(route.provider.family, path, upload.first_bytes(route.model),
                              upload.headers(route.model))
    return shape


def _endpoint(path: str, route_name: str) -> Endpoint:
    return Endpoint(path="/v1" + path, route=route_name, parse=_unused, read=read, task=_task,
                    shape=_shape(path), serves=hears,
                    not_served=model_not_served("does not serve audio here"))


def _unused(body: bytes) -> dict:
    raise AssertionError("an upload is read, not parsed")


TRANSCRIPTIONS = _endpoint("/audio/transcriptions", "audio_transcriptions")
TRANSLATIONS = _endpoint("/audio/translations", "audio_translations")
