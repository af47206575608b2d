"""OpenAICompat's chat and completions bodies: the upstream model, usage asked for on a stream,
``hide_usage`` when the client had not asked, exactly as the step-by-step rules give them."""
from __future__ import annotations

import itertools

import orjson
import pytest

from kraken import config
from kraken.errors import InvalidValue
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.pool import Origin


def family(stream_usage: str | None) -> OpenAICompat:
    extra = {} if stream_usage is None else {"stream_usage": stream_usage}
    cfg = config.from_mapping({"providers": {"p": {
        "kind": "openai_compatible", "base_url": "http://h:8/v1", "api_key": "sk-p", **extra}}},
        "<t>", env={})
    p = cfg.providers[0]
    origin = Origin(p.base_url)
    return OpenAICompat(p, origin.base_path, origin.authority)


def step_by_step(fam: OpenAICompat, payload: dict, model: str, api_key: str | None):
    """The rules one step at a time: (body, headers, hide_usage), or the error raised."""
    body = dict(payload)
    body["model"] = model
    hide_usage = False
    if body.get("stream") is True and fam.stream_usage == "include_usage":
        options = body.get("stream_options")
        if options is None:
            options = {}
        elif not isinstance(options, dict):
            return InvalidValue
        if options.get("include_usage") is not True:
            hide_usage = True
            body["stream_options"] = {**options, "include_usage": True}
    data = orjson.dumps(body)
    return data, fam.headers_for(api_key) + [(b"content-length", str(len(data)).encode())], hide_usage


STREAMS = [True, False, None, "true", 1, "absent"]
OPTIONS = [None, "absent", {}, {"include_usage": False}, {"include_usage": True},
           {"include_usage": 1}, {"continuous_usage_stats": True}, [], "yes"]


@pytest.mark.parametrize("stream_usage", [None, "include_usage", "always"])
def test_bodies_headers_and_hiding_follow_the_rules(stream_usage):
    fam = family(stream_usage)
    for stream, options, has_model, api_key, completions in itertools.product(
            STREAMS, OPTIONS, (True, False), (None, "sk-customer"), (False, True)):
        payload = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
        if has_model:
            payload = {"model": "client-name", **payload}
        if stream != "absent":
            payload["stream"] = stream
        if options != "absent":
            payload["stream_options"] = options
        before = orjson.dumps(payload)
        expected = step_by_step(fam, payload, "up-model", api_key)
        shape = fam.completions_request if completions else fam.chat_request
        if expected is InvalidValue:
            with pytest.raises(InvalidValue):
                shape(payload, "up-model", api_key)
            continue
        req = shape(payload, "up-model", api_key)
        assert (req.body, req.headers, req.hide_usage) == expected, payload
        assert orjson.dumps(payload) == before  # the client's payload is left as it was
        assert req.family is fam


def test_streams_without_options_each_get_the_same_options():
    """The options a stream without any gets are never shared into anything that changes."""
    fam = family(None)
    expected = b'{"stream":true,"messages":[],"model":"m","stream_options":{"include_usage":true}}'
    assert fam.chat_request({"stream": True, "messages": []}, "m").body == expected
    asked = fam.chat_request({"stream": True, "messages": [], "stream_options": {"x": 1}}, "m")
    assert b'"stream_options":{"x":1,"include_usage":true}' in asked.body
    assert fam.chat_request({"stream": True, "messages": []}, "m").body == expected
