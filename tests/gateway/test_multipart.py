"""The incremental multipart reader: where ``model`` lies, that more bytes are needed, or that
it is not among the first parts (a file part, the end, or the bound came first)."""
from __future__ import annotations

import pytest

from kraken.errors import InvalidValue
from kraken.gateway.multipart import MAX_PREFIX, MORE, Field, boundary_of, find_field

FIELD = b'--xb\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
FILE = b'--xb\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'


def test_model_after_other_fields_is_found_with_its_place():
    body = FIELD % (b"language", b"en") + FIELD % (b"model", b"whisper-1") + FILE
    found = find_field(body, b"xb", b"model")
    assert isinstance(found, Field) and found.value == b"whisper-1"
    assert body[found.start:found.end] == b"whisper-1"


@pytest.mark.parametrize("cut", [1, 10, 40, 60, 70])
def test_bytes_ending_before_the_value_ends_ask_for_more(cut):
    body = FIELD % (b"model", b"whisper-1") + FILE
    end = body.index(b"whisper-1") + 9 + 2  # the value and its CRLF, before the delimiter
    assert find_field(body[:min(cut, end)], b"xb", b"model") == MORE


@pytest.mark.parametrize("body", [
    FILE + b"\r\n" + FIELD % (b"model", b"whisper-1"),  # the file came first
    FIELD % (b"language", b"en") + b"--xb--\r\n",  # the end, no model
    b"not multipart at all",
])
def test_model_not_among_the_first_parts_is_none(body):
    assert find_field(body, b"xb", b"model") is None


def test_bound_reached_without_the_value_is_none():
    body = b'--xb\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n' + b"x" * MAX_PREFIX
    assert find_field(body, b"xb", b"model") is None


def test_boundary_quoted_or_not_and_missing():
    assert boundary_of(b'multipart/form-data; boundary="a b"') == b"a b"
    assert boundary_of(b"multipart/form-data; boundary=----x1") == b"----x1"
    with pytest.raises(InvalidValue):
        boundary_of(b"multipart/form-data")
