"""``POST /v1/rerank`` in the Cohere/Jina shape, ``{model, query, documents, top_n}`` →
``{results: [{index, relevance_score}], ...}``, relayed byte for byte.

Only providers with ``rerank = true`` are tried (vLLM's and Jina's ``/v1/rerank``; kind
``cohere``: Cohere's ``/v2/rerank``). ``usage.total_tokens`` (Jina's ``prompt_tokens`` first)
is recorded as prompt tokens, Cohere's ``meta.billed_units.search_units`` as prompt units
(``kraken.providers.body_family``). Task type ``embedding``: a retrieval workload, routed with
the embedding models by ``auto``.
"""
from __future__ import annotations

from kraken.errors import InvalidValue
from kraken.gateway.body import with_model
from kraken.gateway.endpoint import Endpoint, Parsed, model_not_served
from kraken.policy.router import Route
from kraken.providers.family import UpstreamRequest

PATH = "/v1/rerank"


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    return route.provider.family.rerank_request(parsed.payload, route.model)


def reranks(route: Route) -> bool:
    return route.provider.family.cfg.rerank


def parse(body: bytes) -> dict:
    payload = with_model(body)
    if not isinstance(payload.get("query"), str) or not payload["query"]:
        raise InvalidValue("'query' is required and must be a non-empty string", param="query")
    docs = payload.get("documents")
    if not isinstance(docs, list) or not docs or not all(isinstance(d, (str, dict)) for d in docs):
        raise InvalidValue("'documents' must be a non-empty array of strings or objects",
                           param="documents")
    top_n = payload.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise InvalidValue("'top_n' must be a positive integer", param="top_n")
    if payload.get("stream") not in (None, False):
        raise InvalidValue("'stream' is not supported for rerank", param="stream")
    return payload


def _task(parsed: Parsed) -> str:
    return "embedding"


ENDPOINT = Endpoint(path=PATH, route="rerank", parse=parse, task=_task, shape=shape,
                    serves=reranks, not_served=model_not_served("does not serve rerank here"))
