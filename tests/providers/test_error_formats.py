"""The error table: each wire format's answer and stream event, byte for byte, from one value."""
from __future__ import annotations

import pytest

from kraken.errors import (
    BadRequest, InvalidJson, KrakenError, ModelNotAllowed, ModelNotFound, RateLimited,
    UpstreamCredentialsRejected, UpstreamError, UpstreamFailed, UpstreamOverloaded,
    UpstreamRateLimited, UpstreamStatus, UpstreamTimeout,
)
from kraken.providers.error_formats import (
    ANTHROPIC, FORMATS, GOOGLE, OPENAI, OPENAI_RESPONSES,
)
from kraken.providers.scrub import provider_error

RID = b"req_0123"


def test_every_format_is_in_the_table_by_name():
    assert FORMATS == {"openai": OPENAI, "openai_responses": OPENAI_RESPONSES,
                       "anthropic": ANTHROPIC, "google": GOOGLE}


def test_openai_answer():
    exc = InvalidJson("bad body")
    assert OPENAI.body(exc) == (b'{"error":{"message":"bad body","type":"invalid_request_error",'
                                b'"param":null,"code":"invalid_json"}}')
    assert OPENAI.head(exc, RID, [(b"x-ratelimit-limit-requests", b"5")]) == [
        (b"content-type", b"application/json"), (b"x-ratelimit-limit-requests", b"5"),
        (b"x-request-id", RID)]
    assert OPENAI.sse_event(exc) == b"event: error\ndata: " + OPENAI.body(exc) + b"\n\n"


def test_error_headers_come_between_the_content_type_and_the_request_id():
    exc = RateLimited("slow down", retry_after_s=3, limit=5)
    for fmt in (OPENAI, GOOGLE):
        head = fmt.head(exc, RID, [])
        assert head[0][0] == b"content-type" and head[-1] == (b"x-request-id", RID)
        assert head[1:-1] == exc.headers


def test_an_errors_own_headers_win_over_the_calls():
    """A 429 says the limits that refused it, not the call's earlier ones (no name twice)."""
    exc = RateLimited("slow down", retry_after_s=3, limit=5)
    call_headers = [(b"x-ratelimit-remaining-requests", b"4"), (b"x-other", b"1")]
    for fmt in (OPENAI, GOOGLE, ANTHROPIC):
        head = fmt.head(exc, RID, call_headers)
        assert (b"x-ratelimit-remaining-requests", b"0") in head and (b"x-other", b"1") in head
        names = [name for name, _ in head]
        assert len(names) == len(set(names))


def test_anthropic_answer_names_the_request_and_carries_the_calls_headers():
    exc = ModelNotAllowed("no")
    call_headers = [(b"x-ratelimit-limit-requests", b"5"), (b"request-id", b"other")]
    assert ANTHROPIC.head(exc, RID, call_headers) == [
        (b"content-type", b"application/json"), (b"x-request-id", RID), (b"request-id", RID),
        (b"x-ratelimit-limit-requests", b"5")]
    assert ANTHROPIC.body(exc) == (b'{"type":"error","error":{"type":"permission_error",'
                                   b'"message":"no"}}')


def test_google_answer_and_event():
    exc = ModelNotFound("models/x is not served here")
    assert GOOGLE.head(exc, RID, [])[0] == (b"content-type", b"application/json; charset=UTF-8")
    assert GOOGLE.body(exc) == (b'{"error":{"code":404,"message":"models/x is not served here",'
                                b'"status":"NOT_FOUND"}}')
    assert GOOGLE.sse_event(exc) == b"data: " + GOOGLE.body(exc) + b"\r\n\r\n"


def test_responses_stream_event_has_its_own_shape_and_answers_are_openais():
    exc = UpstreamError("provider connection failed")
    assert OPENAI_RESPONSES.sse_event(exc) == (
        b'event: error\ndata: {"type":"error","code":"upstream_error",'
        b'"message":"provider connection failed","param":null}\n\n')
    assert OPENAI_RESPONSES.body(exc) == OPENAI.body(exc)


@pytest.mark.parametrize("fmt, relayed", [(OPENAI, True), (GOOGLE, True), (ANTHROPIC, False)])
def test_a_providers_own_4xx_body_is_relayed_where_the_format_takes_it(fmt, relayed):
    exc = UpstreamStatus(400, b'{"error":{"message":"provider says no"}}')
    assert (fmt.body(exc) == exc.body) is relayed
    assert fmt.body(UpstreamStatus(400, b"")) == fmt.render(UpstreamStatus(400, b""))


@pytest.mark.parametrize("fmt", [OPENAI, OPENAI_RESPONSES, GOOGLE])
def test_a_provider_body_not_in_an_error_envelope_is_said_in_the_format(fmt):
    html = UpstreamStatus(404, b"<html>404 Not Found</html>")
    assert fmt.body(html) == fmt.render(html)
    said = UpstreamStatus(400, b"")
    said.message = "m"
    for body in (b'[{"error":{"code":400,"message":"m","status":"X"}}]',  # Gemini's OpenAI API
                 b'{"error":"m","error_type":"validation"}',  # TGI
                 b'{"object":"error","message":"m","type":"BadRequestError","code":400}'):
        assert fmt.body(UpstreamStatus(400, body)) == fmt.render(said)


def test_anthropic_keeps_a_provider_body_already_in_its_shape():
    body = b'{"type":"error","error":{"type":"invalid_request_error","message":"m"}}'
    assert ANTHROPIC.body(UpstreamStatus(400, body)) == body


@pytest.mark.parametrize("status, kind", [
    (401, UpstreamCredentialsRejected), (403, UpstreamCredentialsRejected),
    (429, UpstreamRateLimited), (500, UpstreamFailed), (502, UpstreamFailed),
    (503, UpstreamFailed), (504, UpstreamTimeout), (302, UpstreamFailed),
    (400, UpstreamStatus), (422, UpstreamStatus),
])
def test_a_provider_failure_is_a_class_per_meaning(status, kind):
    assert type(provider_error("p", "", status, b"{}")) is kind


def test_error_classes_carry_their_status_and_type():
    assert (UpstreamRateLimited.status, UpstreamRateLimited.error_type) == (
        429, "upstream_rate_limited")
    assert (UpstreamOverloaded.status, UpstreamOverloaded.error_type) == (
        503, "upstream_overloaded")
    assert (UpstreamTimeout.status, UpstreamTimeout.error_type) == (504, "upstream_timeout")
    assert (UpstreamFailed.status, UpstreamFailed.error_type) == (502, "upstream_error")
    assert BadRequest("x").code is None and InvalidJson("x").code == "invalid_json"
    assert KrakenError("x").status == 500
