"""Hypothesis on what the Core client decodes: Core's update list and the auth server's token.

Whatever bytes a server sends, the only outcome besides a value is the daemon's own error
(``DecodeError``, or ``TokenError`` for a token), never a library exception; and a token that
decodes is one that can go into a header.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_client._backend import (
    _TOKEN_DECODER,
    _UPDATES_DECODER,
    AccessToken,
    _check_token,
    _decode,
)
from sota_client._errors import DecodeError, TokenError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
UPDATE_KEYS = ["requestId", "status", "packageId", "installPos", "createdAt", "name", "version"]
NEARLY_AN_UPDATE = st.lists(
    st.dictionaries(st.sampled_from(UPDATE_KEYS), JSON | st.text(), max_size=7), max_size=4
)
NEARLY_A_TOKEN = st.dictionaries(
    st.sampled_from(["access_token", "token_type", "expires_in", "scope", "other"]),
    JSON | st.text(),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | JSON.map(msgspec.json.encode))
def test_any_update_list_decodes_or_is_a_decode_error(body: bytes) -> None:
    try:
        requests = _decode(_UPDATES_DECODER, body)
    except DecodeError as exc:
        message = str(exc)
        assert message.startswith("Failed to decode JSON: ")
        return
    assert isinstance(requests, list)


@settings(max_examples=300, deadline=None)
@given(NEARLY_AN_UPDATE.map(msgspec.json.encode))
def test_nearly_an_update_list_decodes_or_is_a_decode_error(body: bytes) -> None:
    try:
        _decode(_UPDATES_DECODER, body)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | NEARLY_A_TOKEN.map(msgspec.json.encode))
def test_any_token_decodes_to_a_header_value_or_is_refused(body: bytes) -> None:
    try:
        token = _decode(_TOKEN_DECODER, body)
        _check_token(token)
    except (DecodeError, TokenError):
        return
    assert isinstance(token, AccessToken)
    assert token.access_token.isascii()
    assert f"Bearer {token.access_token}".encode("ascii").isascii()
    assert not any(c in token.access_token for c in " \r\n\t")


@pytest.mark.parametrize("decoder", [_UPDATES_DECODER, _TOKEN_DECODER])
def test_deep_nesting_is_a_decode_error(decoder: msgspec.json.Decoder[Any]) -> None:
    with pytest.raises(DecodeError):
        _decode(decoder, b"[" * 100_000)
