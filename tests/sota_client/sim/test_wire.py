"""Sans-IO pieces driven with bytes, and golden bytes of every JSON shape the simulator emits."""

from __future__ import annotations

import io
from email.message import Message

import msgspec
import pytest

from sota_client.sim import PendingUpdateRequest, ReportedResult, TokenResponse
from sota_client.sim._errors import CoreError, Rejection
from sota_client.sim._http import (
    UNSATISFIABLE,
    error_response,
    format_head,
    parse_range,
    read_body,
    request_body_length,
)
from sota_client.sim._models import OperationResultRow
from sota_client.sim._state import format_instant
from swlm_sdk.protocol import Package, UpdateRequestStatus


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-9", 10, (0, 9)),
        ("bytes=0-", 10, (0, 9)),
        ("bytes=3-5", 10, (3, 5)),
        ("BYTES=3-5", 10, (3, 5)),
        (" bytes=3-5 ", 10, (3, 5)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=10-", 10, UNSATISFIABLE),
        ("bytes=-0", 10, UNSATISFIABLE),
        ("bytes=0-0", 0, UNSATISFIABLE),
        ("bytes=-1", 0, UNSATISFIABLE),
        ("bytes=5-3", 10, None),
        ("bytes=-", 10, None),
        ("bytes=1-2,4-5", 10, None),
        ("bytes=a-b", 10, None),
        ("lines=1-2", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


def _headers(*pairs: tuple[str, str]) -> Message:
    msg = Message()
    for name, value in pairs:
        msg[name] = value
    return msg


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((), 0),
        ((("Content-Length", "12"),), 12),
        ((("Content-Length", "12"), ("Content-Length", "12")), 12),
        ((("Transfer-Encoding", "Chunked"),), None),
    ],
)
def test_request_body_length(pairs: tuple[tuple[str, str], ...], expected: int | None) -> None:
    assert request_body_length(_headers(*pairs)) == expected


@pytest.mark.parametrize(
    "pairs",
    [
        (("Content-Length", "1e3"),),
        (("Content-Length", "٣"),),  # a non-ASCII digit
        (("Content-Length", "1"), ("Content-Length", "2")),
        (("Content-Length", "1"), ("Transfer-Encoding", "chunked")),
        (("Transfer-Encoding", "identity"),),
    ],
)
def test_request_body_length_refuses_ambiguous_framing(pairs: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(Rejection):
        request_body_length(_headers(*pairs))


def test_read_chunked_body() -> None:
    wire = io.BytesIO(b"3\r\nabc\r\nA;x=y\r\n0123456789\r\n0\r\nT: 1\r\n\r\nNEXT")
    assert b"".join(read_body(wire, None, 100)) == b"abc0123456789"
    assert wire.read() == b"NEXT"  # the next request on the connection is untouched


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"3\r\nabc\r\n0\r\n\r\n", None),
        (b"0x3\r\nabc\r\n0\r\n\r\n", Rejection),
        (b"-3\r\nabc\r\n0\r\n\r\n", Rejection),
        (b"3\r\nabcX\r\n0\r\n\r\n", Rejection),
        (b"3\r\nab", ConnectionError),
        (b"", ConnectionError),
        (b"65\r\n" + b"x" * 0x65 + b"\r\n0\r\n\r\n", Rejection),  # over the 100-byte limit
    ],
)
def test_read_chunked_body_errors(wire: bytes, error: type[Exception] | None) -> None:
    pieces = read_body(io.BytesIO(wire), None, 100)
    if error is None:
        assert b"".join(pieces) == b"abc"
    else:
        with pytest.raises(error):
            b"".join(pieces)


def test_read_body_with_length() -> None:
    assert b"".join(read_body(io.BytesIO(b"abcdef"), 3, 10)) == b"abc"
    with pytest.raises(ConnectionError):
        b"".join(read_body(io.BytesIO(b"ab"), 3, 10))
    with pytest.raises(Rejection, match="exceeds the limit"):
        b"".join(read_body(io.BytesIO(b"abc"), 3, 2))


def test_format_head() -> None:
    head = format_head(206, [("Content-Range", "bytes 0-9/100"), ("Content-Length", "10")])
    assert head == (
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n"
        b"Content-Length: 10\r\n\r\n"
    )
    with pytest.raises(ValueError, match="line break"):
        format_head(200, [("X", "a\r\nInjected: 1")])


def test_format_instant_like_java() -> None:
    assert format_instant(1477649730123) == "2016-10-28T10:15:30.123Z"
    assert format_instant(1477649730000) == "2016-10-28T10:15:30Z"
    assert format_instant(1477649730007) == "2016-10-28T10:15:30.007Z"


def test_golden_pending_update_request() -> None:
    entry = PendingUpdateRequest(
        request_id="5f3c6a2e-0d5b-4a49-9a1e-2b8d5f0c7e11",
        package_id=Package("libats", "2.0.0"),
        install_pos=0,
        status=UpdateRequestStatus.IN_FLIGHT,
        created_at="2016-10-28T10:15:30.123Z",
        updated_at="2016-10-28T10:15:31Z",
    )
    assert msgspec.json.encode([entry]) == (
        b'[{"requestId":"5f3c6a2e-0d5b-4a49-9a1e-2b8d5f0c7e11",'
        b'"packageId":{"name":"libats","version":"2.0.0"},"installPos":0,"status":"InFlight",'
        b'"createdAt":"2016-10-28T10:15:30.123Z","updatedAt":"2016-10-28T10:15:31Z"}]'
    )


def test_golden_token_response() -> None:
    token = TokenResponse("tok", "bearer", 3600, "ota-core")
    assert msgspec.json.encode(token) == (
        b'{"access_token":"tok","token_type":"bearer","expires_in":3600,"scope":"ota-core"}'
    )


def test_golden_operation_result_row() -> None:
    row = OperationResultRow("r", "u", 4, "failed", "d", "2016-10-28T10:15:30Z")
    assert msgspec.json.encode(row) == (
        b'{"id":"r","updateId":"u","resultCode":4,"resultText":"failed","device":"d",'
        b'"receivedAt":"2016-10-28T10:15:30Z"}'
    )


def test_golden_error_bodies() -> None:
    json_error = error_response(CoreError(404, "missing_package", "package not found"))
    assert (json_error.status, json_error.content_type, json_error.body) == (
        404,
        "application/json",
        b'{"code":"missing_package","description":"package not found"}',
    )
    text_error = error_response(Rejection(400, "bad"))
    assert (text_error.content_type, text_error.body) == ("text/plain; charset=UTF-8", b"bad")


def test_reported_result_decoding_matches_core() -> None:
    decoder = msgspec.json.Decoder(list[ReportedResult])
    uuid = "b9e3865e-9d35-11e5-b235-eb755e788c52"
    (result,) = decoder.decode(
        f'[{{"id":"{uuid}","result_code":-2,"result_text":"","extra":1}}]'.encode()
    )
    assert (result.id, result.result_code) == (uuid, -2)  # any Int; extra fields ignored
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(f'[{{"id":"{uuid}\\n","result_code":0,"result_text":""}}]'.encode())
