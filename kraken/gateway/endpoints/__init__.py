"""The endpoints the gateway serves, each a value the lifecycle engine runs: the one list."""
from __future__ import annotations

from kraken.gateway.endpoint import Endpoint
from kraken.gateway.endpoints import (
    audio,
    chat,
    completions,
    embeddings,
    files,
    gemini_native,
    images,
    messages,
    moderations,
    rerank,
    responses,
    speech,
)
from kraken.providers.error_formats import ANTHROPIC, GOOGLE, ErrorFormat

__all__ = ["ERROR_FORMATS", "METERED"]

METERED: tuple[Endpoint, ...] = (
    chat.ENDPOINT,
    messages.MESSAGES,
    messages.COUNT_TOKENS,
    embeddings.ENDPOINT,
    responses.ENDPOINT,
    gemini_native.ENDPOINT,
    completions.ENDPOINT,
    moderations.ENDPOINT,
    images.ENDPOINT,
    rerank.ENDPOINT,
    audio.TRANSCRIPTIONS,
    audio.TRANSLATIONS,
    speech.ENDPOINT,
    files.FILES,
    files.FILE,
    files.BATCHES,
    files.BATCH,
)
"""Every metered endpoint: one record per admitted call."""

ERROR_FORMATS: tuple[tuple[str, ErrorFormat], ...] = (
    (messages.PATH, ANTHROPIC),  # 404 and 405 under /v1/messages too
    ("/v1beta/", GOOGLE),
)
"""Path prefixes whose errors no endpoint answered (404, 405) are still in their API's shape."""
