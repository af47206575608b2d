"""``GET /v1/models`` and ``GET /v1/models/{id}`` (the OpenAI SDK's ``models.list`` and
``models.retrieve``): the public model names the calling key may use.

A name is listed when the router serves it (models, aliases, ``auto``) and neither the key's
allow-list nor the customer's plan excludes it: the same rules a call is refused by (403
``model_not_allowed``), so a listed model is one the key can call. ``provider/<model>`` names
are dispatchable but never listed. No record: these answers call no provider.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import unquote

import orjson

from kraken.errors import ModelNotFound
from kraken.gateway.answers import send_json
from kraken.policy.auth import Principal
from kraken.http.exchange import Request, ResponseSink

if TYPE_CHECKING:
    from kraken.gateway.pipeline import Gateway

PATH = "/v1/models"


def register(gateway: Gateway) -> None:
    gateway.add_endpoint(PATH, partial(list_models, gateway), "GET")
    gateway.add_endpoint(PATH + "/*", partial(retrieve_model, gateway), "GET")


def usable(gateway: Gateway, principal: Principal) -> dict[str, str]:
    """Public model name -> owning provider, for the models ``principal`` may call."""
    allowed = principal.allowed_models
    plan = (gateway.billing.plan_for(principal.customer_id, principal.plan)
            if gateway.billing is not None else None)
    return {name: owner for name, owner in gateway.router.models()
            if (allowed is None or name in allowed) and (plan is None or plan.allows(name))}


def _model(name: str, owner: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


async def list_models(gateway: Gateway, req: Request, sink: ResponseSink) -> None:
    principal = await gateway.authenticate(req)
    data = [_model(name, owner) for name, owner in usable(gateway, principal).items()]
    send_json(sink, 200, orjson.dumps({"object": "list", "data": data}))


async def retrieve_model(gateway: Gateway, req: Request, sink: ResponseSink) -> None:
    principal = await gateway.authenticate(req)
    name = unquote(req.path[len(PATH) + 1:])  # the SDK sends "org/model" as "org%2Fmodel"
    owner = usable(gateway, principal).get(name)
    if owner is None:
        raise ModelNotFound(f"The model '{name[:200]}' does not exist or this key may not use it")
    send_json(sink, 200, orjson.dumps(_model(name, owner)))
