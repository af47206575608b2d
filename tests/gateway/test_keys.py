"""Kraken key format, generation and bcrypt hashing (rounds=4 for speed)."""
from __future__ import annotations

import re

import bcrypt
import pytest

from kraken.config import DEMO_KEY
from kraken.accounts.keys import (
    KEY_PATTERN,
    KEY_RE,
    MAX_KEY_LEN,
    check_key,
    generate_key,
    hash_key,
    parse_key,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_pattern_is_published_as_string_and_compiled():
    assert isinstance(KEY_PATTERN, str)
    assert KEY_RE.pattern == KEY_PATTERN
    # Usable by a secret scanner on free text.
    found = re.findall(KEY_PATTERN, f"token={DEMO_KEY}; other")
    assert found == [("test", "demo", "krakendemokeyfordocs0000")]


def test_demo_key_parses():
    assert parse_key(DEMO_KEY) == ("demo", "krakendemokeyfordocs0000")


@pytest.mark.parametrize(
    "token, expected",
    [
        ("kr_live_abc_" + "A1b2" * 6, ("abc", "A1b2" * 6)),
        ("kr_test_" + "a" * 32 + "_" + "Z" * 64, ("a" * 32, "Z" * 64)),
        ("kr_live_0_" + "x" * 24, ("0", "x" * 24)),
    ],
)
def test_well_formed_keys_parse(token, expected):
    assert parse_key(token) == expected


@pytest.mark.parametrize(
    "token",
    [
        "",
        "kr_live_abc",
        "kr_live_abc_" + "a" * 23,  # secret too short
        "kr_live_abc_" + "a" * 65,  # secret too long
        "kr_live_" + "a" * 33 + "_" + "a" * 24,  # id too long
        "kr_live__" + "a" * 24,  # empty id
        "kr_prod_abc_" + "a" * 24,  # unknown env
        "KR_live_abc_" + "a" * 24,
        "kr_live_ABC_" + "a" * 24,  # id is lower-case only
        "kr_live_a_b_" + "a" * 24,  # underscore in id
        "kr_live_abc_" + "a" * 23 + "-",
        "kr_live_abc_" + "a" * 24 + "\n",
        " kr_live_abc_" + "a" * 24,
        "Bearer kr_live_abc_" + "a" * 24,
        "kr_live_abc_" + "a" * 23 + "\u00e9",
        "kr_live_abc_" + "a" * 23 + "\u0661",  # Arabic-Indic digit
        "sk-" + "a" * 48,
    ],
)
def test_malformed_keys_do_not_parse(token):
    assert parse_key(token) is None


@pytest.mark.parametrize("token", [None, b"kr_live_abc_" + b"a" * 24, 42])
def test_non_strings_do_not_parse(token):
    assert parse_key(token) is None


def test_longest_key_length_is_bounded():
    longest = "kr_live_" + "a" * 32 + "_" + "a" * 64
    assert len(longest) == MAX_KEY_LEN
    assert parse_key(longest) is not None


def test_generate_key_defaults():
    key = generate_key()
    parsed = parse_key(key)
    assert parsed is not None
    key_id, secret = parsed
    assert key.startswith("kr_live_")
    assert re.fullmatch(r"[a-z0-9]{12}", key_id)
    assert len(secret) == 32
    assert generate_key() != key


def test_generate_key_with_id_and_env():
    key = generate_key("acme42", env="test")
    assert key.startswith("kr_test_acme42_")
    assert parse_key(key)[0] == "acme42"


@pytest.mark.parametrize("key_id", ["", "Acme", "a_b", "a-b", "a" * 33, "caf\u00e9"])
def test_generate_key_rejects_bad_id(key_id):
    with pytest.raises(ValueError):
        generate_key(key_id)


def test_generate_key_rejects_bad_env():
    with pytest.raises(ValueError):
        generate_key("abc", env="prod")


def test_hash_then_check():
    key = generate_key("k1")
    hashed = hash_key(key, rounds=4)
    assert isinstance(hashed, str)
    assert hashed.startswith("$2b$04$")
    assert key not in hashed
    assert check_key(key, hashed)
    assert not check_key(generate_key("k1"), hashed)


def test_hash_default_cost_is_12():
    hashed = hash_key(DEMO_KEY)
    assert hashed.startswith("$2b$12$")
    assert check_key(DEMO_KEY, hashed)


def test_every_character_of_a_long_key_counts():
    # bcrypt reads only 72 bytes; a 105-byte key differing in its last character must fail.
    base = "kr_live_" + "a" * 32 + "_" + "b" * 63
    assert len(base + "c") == MAX_KEY_LEN
    hashed = hash_key(base + "c", rounds=4)
    assert check_key(base + "c", hashed)
    assert not check_key(base + "d", hashed)


def test_plain_bcrypt_hash_of_a_default_length_key_verifies():
    key = generate_key()
    hashed = bcrypt.hashpw(key.encode(), bcrypt.gensalt(4)).decode()
    assert check_key(key, hashed)


def test_hash_key_refuses_a_non_kraken_string():
    with pytest.raises(ValueError):
        hash_key("hunter2", rounds=4)


@pytest.mark.parametrize(
    "hashed", ["", "not-a-hash", "$2b$04$short", "$2b$04$" + "\u00e9" * 53, None, b"$2b$", 7]
)
def test_check_key_is_false_for_malformed_hash(hashed):
    assert check_key(DEMO_KEY, hashed) is False


@pytest.mark.parametrize("key", [None, b"kr_live_abc", 3, "x" * 1000])
def test_check_key_is_false_for_bad_key_input(key):
    hashed = hash_key(DEMO_KEY, rounds=4)
    assert check_key(key, hashed) is False
