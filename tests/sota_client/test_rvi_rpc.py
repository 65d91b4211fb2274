"""The RVI JSON-RPC codec: the 2016 errors of the edge server, the messages the RVI node really
sends (gateways-observed.md), the golden bytes of everything sent, and fuzzing."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sota_client._errors import SotaError
from sota_client.gateways._rvi_rpc import (
    MAX_CHUNKS,
    MAX_REQUEST_BYTES,
    SERVICES,
    Abort,
    BackendServices,
    Chunk,
    Finish,
    GetPackages,
    LocalServices,
    Message,
    Notify,
    Parameter,
    RpcError,
    RviReplyError,
    ServicesAvailable,
    Start,
    chunk_received,
    download_started,
    encode_error,
    encode_message,
    encode_register,
    encode_result,
    handler_error,
    installed_software,
    parse_edge_request,
    parse_message_reply,
    parse_register_reply,
    update_report,
)
from sota_client.gateways._rvi_transfers import Transfers
from swlm_sdk.protocol import (
    InstalledFirmware,
    InstalledPackage,
    InstalledSoftware,
    OperationResult,
    ResultCode,
    UpdateAvailable,
    UpdateReport,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UUID = "123e4567-e89b-12d3-a456-426655440000"
SHA1_TEST = "4e1243bd22c66e76c2ba9eddc1f91394e57f9f83"  # of b"test\n"

# -- the wire as observed (gateways-observed.md, "RVI: the node and the 2016 server"), verbatim ----

OBSERVED_REGISTER_REPLY = '{"jsonrpc":"2.0","id":<same id>,"result":{"status":0,"service":"genivi.org/node/default_id/sota/notify","method":"register_service"}}'  # noqa: E501
OBSERVED_SERVICES_AVAILABLE = '{"jsonrpc":"2.0","id":1,"method":"services_available","params":{"services":["genivi.org/node/default_id/backend/sota/start"]}}'  # noqa: E501
OBSERVED_NOTIFY = '{"jsonrpc":"2.0","id":1,"method":"message","params":{"service_name":"/sota/notify","parameters":[{"update_available":{"update_id":"...","signature":"...","description":"...","request_confirmation":false,"size":90},"services":{"start":"...","ack":"...","report":"...","packages":"..."}}]}}'  # noqa: E501
OBSERVED_START = '{"jsonrpc":"2.0","id":1,"method":"message","params":{"service_name":"/sota/start","parameters":[{"update_id":"...","checksum":"<sha1 hex>","chunkscount":1}]}}'  # noqa: E501
OBSERVED_CHUNK = '{"jsonrpc":"2.0","id":1,"method":"message","params":{"service_name":"/sota/chunk","parameters":[{"update_id":"...","bytes":"<base64>","index":1}]}}'  # noqa: E501
OBSERVED_FINISH = '{"jsonrpc":"2.0","id":1,"method":"message","params":{"service_name":"/sota/finish","parameters":[{"update_id":"...","signature":"sig"}]}}'  # noqa: E501
OBSERVED_GETPACKAGES = '{"jsonrpc":"2.0","id":1,"method":"message","params":{"service_name":"/sota/getpackages","parameters":[null]}}'  # noqa: E501
OBSERVED_MESSAGE_REPLY = '{"result":{"status":0,"transaction_id":-1,"method":"message"}}'
OBSERVED_PYTHON_TOOLS_PARAMETERS = '{"update_id":"u1","chunkscount":"1"}'


def filled(observed: str, **values: str) -> bytes:
    """An observed line with its placeholders (``"..."``, ``<sha1 hex>``, ...) given values:
    ``key="value"`` for ``"key":"..."``; other keys get ``<key>-value``."""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        return f'"{key}":"{values.get(key, f"{key}-value")}"'

    text = re.sub(r'"(\w+)":"\.\.\."', value, observed)
    for placeholder, key in (("<sha1 hex>", "checksum"), ("<base64>", "bytes")):
        text = text.replace(placeholder, values.get(key, placeholder))
    text = text.replace("<same id>", values.get("id", "<same id>"))
    return text.encode()


def refused(body: bytes) -> RpcError:
    with pytest.raises(RpcError) as caught:
        parse_edge_request(body)
    return caught.value


def parameter_of(body: bytes) -> Parameter:
    parsed = parse_edge_request(body)
    assert isinstance(parsed, Message)
    return parsed.parameter


def request(method: str = "message", **params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()


def message(service: str, parameter: Any) -> bytes:
    return request(service_name=service, parameters=[parameter])


# -- the observed messages ----------------------------------------------------------------------


def test_observed_notify() -> None:
    parsed = parse_edge_request(filled(OBSERVED_NOTIFY, update_id=UUID))
    assert parsed == Message(
        1,
        "/sota/notify",
        Notify(
            UpdateAvailable(
                update_id=UUID,
                signature="signature-value",
                description="description-value",
                request_confirmation=False,
                size=90,
            ),
            BackendServices("start-value", "ack-value", "report-value", "packages-value"),
        ),
    )


def test_observed_notify_with_its_placeholder_id_is_refused_by_the_id_rule() -> None:
    error = refused(OBSERVED_NOTIFY.encode())
    assert (error.code, error.message, error.id) == (-32602, "Invalid params", 1)
    assert error.data == "couldn't decode message: Invalid update id '...': it starts with '.'"


def test_observed_start() -> None:
    parsed = parse_edge_request(filled(OBSERVED_START, update_id="u1", checksum=SHA1_TEST))
    assert parsed == Message(1, "/sota/start", Start("u1", SHA1_TEST, 1))


def test_observed_chunk() -> None:
    body = filled(OBSERVED_CHUNK, update_id="u1", bytes=base64.b64encode(b"test\n").decode())
    assert parse_edge_request(body) == Message(1, "/sota/chunk", Chunk("u1", 1, b"test\n"))


def test_observed_finish() -> None:
    parsed = parse_edge_request(filled(OBSERVED_FINISH, update_id="u1"))
    assert parsed == Message(1, "/sota/finish", Finish("u1", "sig"))


def test_observed_getpackages() -> None:
    assert parse_edge_request(OBSERVED_GETPACKAGES.encode()) == Message(
        1, "/sota/getpackages", GetPackages()
    )


def test_observed_services_available() -> None:
    assert parse_edge_request(OBSERVED_SERVICES_AVAILABLE.encode()) == ServicesAvailable(
        1, ("genivi.org/node/default_id/backend/sota/start",)
    )


def test_observed_registration_reply_with_its_extra_method_field() -> None:
    reply = filled(OBSERVED_REGISTER_REPLY, id="1477000000000000000")
    assert parse_register_reply(reply) == "genivi.org/node/default_id/sota/notify"


def test_observed_message_reply() -> None:
    parse_message_reply(OBSERVED_MESSAGE_REPLY.encode())


def test_python_tools_object_parameters_are_invalid_params() -> None:
    body = (
        '{"jsonrpc":"2.0","id":1,"method":"message","params":{"service_name":"/sota/start",'
        f'"parameters":{OBSERVED_PYTHON_TOOLS_PARAMETERS}}}}}'
    ).encode()
    error = refused(body)
    assert (error.code, error.message, error.id) == (-32602, "Invalid params", 1)
    assert error.data == "couldn't decode message: params.parameters is an object, not an array"
    assert encode_error(error) == (
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid params",'
        b'"data":"couldn\'t decode message: params.parameters is an object, not an array"}}'
    )


# -- every error of the edge server, in 2016's order --------------------------------------------

ENVELOPE_ERRORS = [
    (b"\xff{}", -32700, "Parse error", "not UTF-8: invalid start byte at byte 0", 0),
    (b"{", -32700, "Parse error", "not JSON: Input data was truncated", 0),
    (b"", -32700, "Parse error", "not JSON: Input data was truncated", 0),
    (b"[1]", -32700, "Parse error", "not an object", 0),
    (b'"message"', -32700, "Parse error", "not an object", 0),
    (b'{"method":"message"}', -32700, "Parse error", "expected id", 0),
    (b'{"id":"1","method":"message"}', -32700, "Parse error", "expected id", 0),
    (b'{"id":1.0,"method":"message"}', -32700, "Parse error", "expected id", 0),
    (b'{"id":true,"method":"message"}', -32700, "Parse error", "expected id", 0),
    (b'{"id":null,"method":"message"}', -32700, "Parse error", "expected id", 0),
    (b'{"id":5}', -32600, "Invalid Request", "expected method", 5),
    (b'{"id":5,"method":3}', -32600, "Invalid Request", "expected method", 5),
    (b'{"id":5,"method":"register"}', -32601, "Method not found", "unknown method: register", 5),
    (b'{"id":5,"method":"message"}', -32600, "Invalid Request", "expected params", 5),
    (b'{"id":5,"method":"message","params":[]}', -32600, "Invalid Request", "expected params", 5),
    (
        b'{"id":5,"method":"message","params":{}}',
        -32600,
        "Invalid Request",
        "expected params.service_name",
        5,
    ),
    (
        b'{"id":5,"method":"message","params":{"service_name":1}}',
        -32600,
        "Invalid Request",
        "expected params.service_name",
        5,
    ),
    (
        b'{"id":5,"method":"message","params":{"service_name":"/sota/install"}}',
        -32600,
        "Invalid Request",
        "unknown service: /sota/install",
        5,
    ),
    (
        b'{"id":5,"method":"message","params":{"service_name":"/sota/start"}}',
        -32602,
        "Invalid params",
        "couldn't decode message: expected params.parameters, an array",
        5,
    ),
    (
        b'{"id":5,"method":"message","params":{"service_name":"/sota/getpackages",'
        b'"parameters":[]}}',
        -32602,
        "Invalid params",
        "couldn't decode message: params.parameters is an empty array",
        5,
    ),
    (
        b'{"id":5,"method":"message","params":{"service_name":"/sota/abort","parameters":null}}',
        -32602,
        "Invalid params",
        "couldn't decode message: params.parameters is null, not an array",
        5,
    ),
    (
        b'{"id":5,"method":"services_available","params":[]}',
        -32600,
        "Invalid Request",
        "expected params",
        5,
    ),
]


@pytest.mark.parametrize(("body", "code", "text", "data", "request_id"), ENVELOPE_ERRORS)
def test_envelope_errors(body: bytes, code: int, text: str, data: str, request_id: int) -> None:
    error = refused(body)
    assert (error.code, error.message, error.data, error.id) == (code, text, data, request_id)


def test_error_answer_is_the_2016_form() -> None:
    error = refused(b'{"id":5,"method":"register"}')
    assert encode_error(error) == (
        b'{"jsonrpc":"2.0","id":5,"error":{"code":-32601,"message":"Method not found",'
        b'"data":"unknown method: register"}}'
    )
    assert str(error) == "-32601 Method not found: unknown method: register"


def test_parse_error_answers_with_id_0() -> None:
    assert encode_error(refused(b"<html>")) == (
        b'{"jsonrpc":"2.0","id":0,"error":{"code":-32700,"message":"Parse error",'
        b'"data":"not JSON: JSON is malformed: invalid character (byte 0)"}}'
    )


def test_handler_error_is_the_2016_32100() -> None:
    error = handler_error(3, "BackendServices not set")
    assert encode_error(error) == (
        b'{"jsonrpc":"2.0","id":3,"error":{"code":-32100,"message":"Couldn\'t handle request",'
        b'"data":"couldn\'t handle parameters: BackendServices not set"}}'
    )


def test_result_answer() -> None:
    assert encode_result(1) == b'{"jsonrpc":"2.0","id":1,"result":null}'
    assert encode_result(-4) == b'{"jsonrpc":"2.0","id":-4,"result":null}'


def test_error_answer_survives_a_lone_surrogate() -> None:
    body = encode_error(RpcError(-32602, "Invalid params", "bad \ud800 text", 1))
    assert json.loads(body)["error"]["data"] == "bad ? text"


def test_long_echoes_are_cut() -> None:
    error = refused(json.dumps({"id": 1, "method": "m" * 100_000}).encode())
    assert error.data.startswith("unknown method: mmm")
    assert len(error.data) < 300


def test_request_larger_than_the_bound_is_refused() -> None:
    error = refused(b" " * (MAX_REQUEST_BYTES + 1))
    assert (error.code, error.id) == (-32700, 0)
    assert "larger than" in error.data


def test_the_bound_fits_a_64k_chunk() -> None:
    data = bytes(range(256)) * 256
    body = message(
        "/sota/chunk", {"update_id": UUID, "bytes": base64.b64encode(data).decode(), "index": 1}
    )
    assert len(body) * 4 < MAX_REQUEST_BYTES
    assert parse_edge_request(body) == Message(7, "/sota/chunk", Chunk(UUID, 1, data))


# -- deviations that fix 2016 bugs --------------------------------------------------------------


@pytest.mark.parametrize("request_id", [0, 1, -1, 2**64 - 1, 2**64, -(2**63) - 1, 10**30])
def test_any_integer_id(request_id: int) -> None:
    body = json.dumps({"id": request_id, "method": "services_available"}).encode()
    assert parse_edge_request(body) == ServicesAvailable(request_id, ())
    assert json.loads(encode_result(request_id))["id"] == request_id


def test_timeout_is_optional_and_ignored() -> None:
    for timeout in (1700000000, "soon", None):
        body = request(service_name="/sota/getpackages", parameters=[None], timeout=timeout)
        assert parse_edge_request(body) == Message(7, "/sota/getpackages", GetPackages())


def test_services_available_without_params() -> None:
    assert parse_edge_request(b'{"id":2,"method":"services_available"}') == ServicesAvailable(2, ())
    body = b'{"id":2,"method":"services_available","params":{"services":["a",3,"b"]}}'
    assert parse_edge_request(body) == ServicesAvailable(2, ("a", "b"))
    body = b'{"id":2,"method":"services_available","params":{"services":"a"}}'
    assert parse_edge_request(body) == ServicesAvailable(2, ())


def test_only_the_first_parameter_is_used() -> None:
    body = request(
        service_name="/sota/finish",
        parameters=[{"update_id": "u1", "signature": "s"}, {"update_id": "u2", "signature": "t"}],
    )
    assert parse_edge_request(body) == Message(7, "/sota/finish", Finish("u1", "s"))


@pytest.mark.parametrize(
    "name",
    [
        "/sota/start",
        "genivi.org/node/default_id/sota/start",
        "genivi.org/vin/123e4567/sota/start",
    ],
)
def test_stripped_or_fully_qualified_service_names(name: str) -> None:
    body = message(name, {"update_id": "u1", "checksum": SHA1_TEST, "chunkscount": 3})
    assert parse_edge_request(body) == Message(7, "/sota/start", Start("u1", SHA1_TEST, 3))


@pytest.mark.parametrize("name", ["sota/start", "/sota/startx", "xsota/start", "/sota/", ""])
def test_other_service_names_are_unknown(name: str) -> None:
    error = refused(message(name, {}))
    assert (error.code, error.data) == (-32600, f"unknown service: {name}")


@pytest.mark.parametrize("parameter", [None, {}, [], "x", 3, {"update_id": 5}])
def test_getpackages_and_abort_accept_anything(parameter: Any) -> None:
    assert parameter_of(message("/sota/getpackages", parameter)) == GetPackages()
    assert parameter_of(message("/sota/abort", parameter)) == Abort(None)


def test_abort_naming_an_update_aborts_only_that_one() -> None:
    parsed = parameter_of(message("/sota/abort", {"update_id": "u1", "extra": 1}))
    assert parsed == Abort("u1")


def test_abort_naming_an_unsafe_update_is_refused() -> None:
    error = refused(message("/sota/abort", {"update_id": "../x"}))
    assert error.code == -32602
    assert error.data == "couldn't decode message: Invalid update id '../x': it starts with '.'"


def test_extra_fields_are_ignored_everywhere() -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message",
            "extra": [1],
            "params": {
                "service_name": "/sota/notify",
                "extra": {},
                "parameters": [
                    {
                        "update_available": {
                            "update_id": "u1",
                            "signature": "s",
                            "description": "d",
                            "request_confirmation": True,
                            "extra": None,
                        },
                        "services": {
                            "start": "a",
                            "ack": "b",
                            "report": "c",
                            "packages": "d",
                            "extra": 1,
                        },
                        "extra": "x",
                    }
                ],
            },
        }
    ).encode()
    parsed = parse_edge_request(body)
    assert parsed == Message(
        1,
        "/sota/notify",
        Notify(UpdateAvailable("u1", "s", "d", True, 0), BackendServices("a", "b", "c", "d")),
    )


def test_jsonrpc_version_is_not_checked() -> None:
    body = (
        b'{"id":1,"method":"message","params":{"service_name":"/sota/getpackages",'
        b'"parameters":[0]}}'
    )
    assert parse_edge_request(body) == Message(1, "/sota/getpackages", GetPackages())


# -- parameters that fail to decode -------------------------------------------------------------

PARAMETER_ERRORS = [
    ("/sota/start", 3, "Expected `object`, got `int` - at `params.parameters[0]`"),
    ("/sota/start", {}, "Object missing required field `update_id` - at `params.parameters[0]`"),
    (
        "/sota/start",
        {"update_id": "u1", "checksum": SHA1_TEST, "chunkscount": "1"},
        "Expected `int`, got `str` - at `params.parameters[0].chunkscount`",
    ),
    (
        "/sota/start",
        {"update_id": "u1", "checksum": SHA1_TEST, "chunkscount": 0},
        "Expected `int` >= 1 - at `params.parameters[0].chunkscount`",
    ),
    (
        "/sota/start",
        {"update_id": "u1", "checksum": SHA1_TEST, "chunkscount": MAX_CHUNKS + 1},
        f"Expected `int` <= {MAX_CHUNKS} - at `params.parameters[0].chunkscount`",
    ),
    (
        "/sota/start",
        {"update_id": "u1", "checksum": SHA1_TEST.upper(), "chunkscount": 1},
        f"checksum '{SHA1_TEST.upper()}' is not a SHA-1: expected 40 lower-case hex digits",
    ),
    (
        "/sota/start",
        {"update_id": "u1", "checksum": SHA1_TEST + "\n", "chunkscount": 1},
        f"checksum '{SHA1_TEST}\\n' is not a SHA-1: expected 40 lower-case hex digits",
    ),
    (
        "/sota/start",
        {"update_id": "u1", "checksum": "invalid", "chunkscount": 1},
        "checksum 'invalid' is not a SHA-1: expected 40 lower-case hex digits",
    ),
    (
        "/sota/start",
        {"update_id": "a/b", "checksum": SHA1_TEST, "chunkscount": 1},
        "Invalid update id 'a/b': it contains '/'",
    ),
    (
        "/sota/chunk",
        {"update_id": "u1", "bytes": "dGVzdAo=", "index": -1},
        "Expected `int` >= 0 - at `params.parameters[0].index`",
    ),
    (
        "/sota/chunk",
        {"update_id": "u1", "bytes": "dGVzdAo=", "index": 2**64},
        "Expected `int` <= 9223372036854775807 - at `params.parameters[0].index`",
    ),
    (
        "/sota/chunk",
        {"update_id": "u1", "index": 1},
        "Object missing required field `bytes` - at `params.parameters[0]`",
    ),
    (
        "/sota/chunk",
        {"update_id": "u1", "bytes": "dGVz*AoK", "index": 1},
        "chunk `bytes` is not base64: invalid character or padding",
    ),
    (
        "/sota/chunk",
        {"update_id": "u1", "bytes": "dGVzd", "index": 1},
        "chunk `bytes` is not base64: invalid length",
    ),
    (
        "/sota/chunk",
        {"update_id": "u1", "bytes": "dG=VzdAo=", "index": 1},
        "chunk `bytes` is not base64: invalid character or padding",
    ),
    (
        "/sota/chunk",
        {"update_id": "u1", "bytes": "dGVzdA===", "index": 1},
        "chunk `bytes` is not base64: invalid character or padding",
    ),
    (
        "/sota/finish",
        {"update_id": "u1"},
        "Object missing required field `signature` - at `params.parameters[0]`",
    ),
    (
        "/sota/finish",
        {"update_id": "", "signature": ""},
        "Invalid update id '': it is empty",
    ),
    (
        "/sota/notify",
        {"update_available": {"update_id": "u1"}, "services": {}},
        "Object missing required field `signature` - at `params.parameters[0].update_available`",
    ),
    (
        "/sota/notify",
        {
            "update_available": {
                "update_id": "u1",
                "signature": "s",
                "description": "d",
                "request_confirmation": 0,
            },
            "services": {"start": "a", "ack": "b", "report": "c", "packages": "d"},
        },
        "Expected `bool`, got `int` - at `params.parameters[0].update_available"
        ".request_confirmation`",
    ),
    (
        "/sota/notify",
        {
            "update_available": {
                "update_id": "u1",
                "signature": "s",
                "description": "d",
                "request_confirmation": False,
                "size": -1,
            },
            "services": {"start": "a", "ack": "b", "report": "c", "packages": "d"},
        },
        "Expected `int` >= 0 - at `params.parameters[0].update_available.size`",
    ),
    (
        "/sota/notify",
        {
            "update_available": {
                "update_id": "u1",
                "signature": "s",
                "description": "d",
                "request_confirmation": False,
            },
            "services": {"start": "a", "ack": "b", "report": "c"},
        },
        "Object missing required field `packages` - at `params.parameters[0].services`",
    ),
]


@pytest.mark.parametrize(("service", "parameter", "why"), PARAMETER_ERRORS)
def test_parameters_that_fail_to_decode(service: str, parameter: Any, why: str) -> None:
    error = refused(message(service, parameter))
    assert (error.code, error.message, error.id) == (-32602, "Invalid params", 7)
    assert error.data == f"couldn't decode message: {why}"


# -- base64 as 2016 read it ---------------------------------------------------------------------

DATA = bytes(range(256))


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(DATA).decode(),
        base64.urlsafe_b64encode(DATA).decode(),
        base64.b64encode(DATA).decode().rstrip("="),
        base64.urlsafe_b64encode(DATA).decode().rstrip("="),
        base64.encodebytes(DATA).decode(),  # lines of 76 and a final newline
        base64.encodebytes(DATA).decode().replace("\n", "\r\n"),
        " " + base64.b64encode(DATA).decode() + "\t",
    ],
)
def test_chunk_base64_forms(text: str) -> None:
    parsed = parameter_of(message("/sota/chunk", {"update_id": "u1", "bytes": text, "index": 0}))
    assert parsed == Chunk("u1", 0, DATA)


def test_empty_chunk() -> None:
    parsed = parameter_of(message("/sota/chunk", {"update_id": "u1", "bytes": "", "index": 0}))
    assert parsed == Chunk("u1", 0, b"")


@given(
    data=st.binary(max_size=300),
    urlsafe=st.booleans(),
    pad=st.booleans(),
    line=st.sampled_from([0, 4, 76]),
)
@FUZZ
def test_base64_round_trip(data: bytes, urlsafe: bool, pad: bool, line: int) -> None:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    if not pad:
        text = text.rstrip("=")
    if line:
        text = "\n".join(text[i : i + line] for i in range(0, len(text), line))
    parsed = parameter_of(message("/sota/chunk", {"update_id": "u", "bytes": text, "index": 3}))
    assert parsed == Chunk("u", 3, data)


def test_reference_checksum_chunk_through_the_codec(tmp_path: Path) -> None:
    """10.8 test_checksum end to end: base64url("test\\n") as chunk 0 joins to the known SHA-1."""
    encoded = base64.urlsafe_b64encode(b"test\n").decode()
    start = parameter_of(
        message("/sota/start", {"update_id": "u1", "checksum": SHA1_TEST, "chunkscount": 1})
    )
    chunk = parameter_of(message("/sota/chunk", {"update_id": "u1", "bytes": encoded, "index": 0}))
    assert isinstance(start, Start)
    assert isinstance(chunk, Chunk)
    transfers = Transfers(str(tmp_path))
    transfers.start(start.update_id, start.checksum, start.chunkscount)
    assert transfers.chunk(chunk.update_id, chunk.index, chunk.data) == [0]
    destination = str(tmp_path / "packages" / "u1.spkg")
    assert transfers.finish("u1", destination) == destination
    assert (tmp_path / "packages" / "u1.spkg").read_bytes() == b"test\n"


# -- outgoing: golden bytes ---------------------------------------------------------------------

LOCAL = LocalServices(
    start="genivi.org/node/default_id/sota/start",
    abort="genivi.org/node/default_id/sota/abort",
    chunk="genivi.org/node/default_id/sota/chunk",
    finish="genivi.org/node/default_id/sota/finish",
    getpackages="genivi.org/node/default_id/sota/getpackages",
)


def test_services_in_2016_registration_order() -> None:
    assert SERVICES == (
        "/sota/notify",
        "/sota/start",
        "/sota/chunk",
        "/sota/abort",
        "/sota/finish",
        "/sota/getpackages",
    )


def test_encode_register() -> None:
    assert encode_register(1477000000123456789, "http://127.0.0.1:9080", "/sota/start") == (
        b'{"jsonrpc":"2.0","id":1477000000123456789,"method":"register_service",'
        b'"params":{"network_address":"http://127.0.0.1:9080","service":"/sota/start"}}'
    )


def test_encode_message_embeds_the_body_raw() -> None:
    body = chunk_received(UUID, "u1", [1, 2])
    assert encode_message(42, "genivi.org/backend/sota/ack", body, 1477000060) == (
        b'{"jsonrpc":"2.0","id":42,"method":"message","params":{"service_name":'
        b'"genivi.org/backend/sota/ack","parameters":[{"device":"' + UUID.encode() + b'",'
        b'"update_id":"u1","chunks":[1,2]}],"timeout":1477000060}}'
    )


def test_download_started() -> None:
    assert download_started(UUID, "u1", LOCAL) == (
        b'{"device":"123e4567-e89b-12d3-a456-426655440000","update_id":"u1","services":'
        b'{"start":"genivi.org/node/default_id/sota/start",'
        b'"abort":"genivi.org/node/default_id/sota/abort",'
        b'"chunk":"genivi.org/node/default_id/sota/chunk",'
        b'"finish":"genivi.org/node/default_id/sota/finish",'
        b'"getpackages":"genivi.org/node/default_id/sota/getpackages"}}'
    )


def test_chunk_received() -> None:
    assert chunk_received(UUID, "u1", []) == (
        b'{"device":"123e4567-e89b-12d3-a456-426655440000","update_id":"u1","chunks":[]}'
    )
    assert chunk_received(UUID, "u1", (1, 2, 3)) == (
        b'{"device":"123e4567-e89b-12d3-a456-426655440000","update_id":"u1","chunks":[1,2,3]}'
    )


def test_update_report() -> None:
    report = UpdateReport(
        "u1",
        (
            OperationResult("op1", ResultCode.OK, "fine"),
            OperationResult("op2", ResultCode.GENERAL_ERROR),
        ),
    )
    assert update_report(UUID, report) == (
        b'{"device":"123e4567-e89b-12d3-a456-426655440000","update_report":{"update_id":"u1",'
        b'"operation_results":[{"id":"op1","result_code":0,"result_text":"fine"},'
        b'{"id":"op2","result_code":19,"result_text":""}]}}'
    )


def test_update_report_matches_how_the_report_encodes_today() -> None:
    report = UpdateReport.single("u1", ResultCode.INSTALL_FAILED, "no")
    wrapped = json.loads(update_report(UUID, report))
    assert wrapped["update_report"] == json.loads(msgspec.json.encode(report))


def test_installed_software_in_the_2016_server_form() -> None:
    software = InstalledSoftware(
        packages=(InstalledPackage("p1", "name", "desc", 1477000000),),
        firmwares=(InstalledFirmware("ecu", "fw1", 1477000001),),
    )
    assert installed_software(UUID, software) == (
        b'{"device":"123e4567-e89b-12d3-a456-426655440000","installed_software":{"packages":'
        b'[{"package_id":"p1","name":"name","description":"desc","last_modified":1477000000}],'
        b'"firmwares":[{"module":"ecu","firmware_id":"fw1","last_modified":1477000001}]}}'
    )
    assert installed_software(UUID, InstalledSoftware()) == (
        b'{"device":"123e4567-e89b-12d3-a456-426655440000","installed_software":'
        b'{"packages":[],"firmwares":[]}}'
    )


def test_del_is_escaped_as_rustc_serialize_did() -> None:
    assert chunk_received(UUID, "a\x7fb", []).count(b"\\u007f") == 1


# -- the node's replies -------------------------------------------------------------------------


def test_register_reply_as_2016_expected_it() -> None:
    assert (
        parse_register_reply(
            b'{"jsonrpc":"2.0","id":9,"result":{"service":"x/sota/start","status":0}}'
        )
        == "x/sota/start"
    )


REGISTER_REPLY_ERRORS = [
    (b"", "RVI register_service reply is not JSON: Input data was truncated"),
    (b"[]", "RVI register_service reply is not a JSON object"),
    (
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found","data":"x"}}',
        "RVI register_service failed: error -32601 Method not found: x",
    ),
    (b'{"error":"down"}', 'RVI register_service failed: error "down"'),
    (b'{"id":1}', "RVI register_service reply has no result object"),
    (b'{"result":null}', "RVI register_service reply has no result object"),
    (b'{"result":{"service":"s"}}', "RVI register_service reply has no integer status"),
    (
        b'{"result":{"service":"s","status":"0"}}',
        "RVI register_service reply has no integer status",
    ),
    (b'{"result":{"service":"s","status":1}}', "RVI register_service failed: status 1"),
    (b'{"result":{"status":0}}', "RVI register_service reply has no service name"),
    (b'{"result":{"status":0,"service":""}}', "RVI register_service reply has no service name"),
]


@pytest.mark.parametrize(("body", "text"), REGISTER_REPLY_ERRORS)
def test_register_reply_errors(body: bytes, text: str) -> None:
    with pytest.raises(RviReplyError) as caught:
        parse_register_reply(body)
    assert str(caught.value) == text
    assert isinstance(caught.value, SotaError)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"result":{"status":0,"transaction_id":-1,"method":"message"}}',
        b'{"jsonrpc":"2.0","id":1,"result":null}',
        b'{"result":{}}',
        b'{"result":{"status":0},"error":null,"more":[1]}',
    ],
)
def test_message_replies_accepted(body: bytes) -> None:
    parse_message_reply(body)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"<html>", "RVI message reply is not JSON: JSON is malformed: invalid character (byte 0)"),
        (b"1", "RVI message reply is not a JSON object"),
        (b"{}", "RVI message reply has neither result nor error"),
        (b'{"result":"ok"}', "RVI message reply has a result that is not an object"),
        (b'{"result":{"status":3}}', "RVI message failed: status 3"),
        (b'{"result":{"status":true}}', "RVI message reply has no integer status"),
        (
            b'{"error":{"code":-32000,"message":"no\\nroute"}}',
            "RVI message failed: error -32000 no route",
        ),
    ],
)
def test_message_reply_errors(body: bytes, text: str) -> None:
    with pytest.raises(RviReplyError) as caught:
        parse_message_reply(body)
    assert str(caught.value) == text


# -- fuzzing ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

PARAMETER_KEYS = (
    "update_id",
    "checksum",
    "chunkscount",
    "bytes",
    "index",
    "signature",
    "update_available",
    "services",
    "start",
    "ack",
    "report",
    "packages",
    "description",
    "request_confirmation",
    "size",
)
plausible_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=2**64)
    | st.sampled_from(["u1", "", "..", "a/b", SHA1_TEST, "dGVzdAo=", "-_==", "x" * 300])
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(PARAMETER_KEYS) | st.text(max_size=4), children, max_size=6
        )
    ),
    max_leaves=20,
)


def outcome(body: bytes) -> ServicesAvailable | Message | RpcError:
    """The parse, or the RpcError, whose answer must encode to JSON; nothing else may escape."""
    try:
        return parse_edge_request(body)
    except RpcError as exc:
        error = exc
    answer = json.loads(encode_error(error))
    assert answer["error"]["code"] in (-32700, -32600, -32601, -32602)
    assert answer["id"] == error.id
    return error


@given(st.binary(max_size=2000))
@FUZZ
def test_fuzz_arbitrary_bytes(body: bytes) -> None:
    outcome(body)


@given(json_values)
@FUZZ
def test_fuzz_arbitrary_json(value: Any) -> None:
    outcome(json.dumps(value).encode())


@given(
    request_id=json_values,
    method=st.sampled_from(["message", "services_available", "other"]) | json_values,
    params=json_values,
)
@FUZZ
def test_fuzz_arbitrary_envelopes(request_id: Any, method: Any, params: Any) -> None:
    outcome(
        json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        ).encode()
    )


@given(
    service=st.sampled_from(SERVICES) | st.text(max_size=20),
    parameters=st.lists(plausible_values, max_size=2) | plausible_values,
)
@FUZZ
def test_fuzz_messages(service: str, parameters: Any) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message",
            "params": {"service_name": service, "parameters": parameters},
        }
    ).encode()
    parsed = outcome(body)
    if isinstance(parsed, Message):
        assert parsed.service in SERVICES
        update_id = getattr(parsed.parameter, "update_id", None)
        if update_id is not None:
            assert "/" not in update_id
            assert not update_id.startswith(".")


def test_deep_nesting_is_a_parse_error() -> None:
    for body in (b"[" * 100_000, b'{"id":1,"method":"message","params":' + b"[" * 50_000):
        assert isinstance(outcome(body), RpcError)


def assert_one_line_error(parse: Callable[[], object]) -> None:
    """``parse`` succeeds or raises RviReplyError with a one-line text; nothing else escapes."""
    try:
        parse()
    except RviReplyError as exc:
        text = str(exc)
    else:
        return
    assert text.splitlines() == [text]


@given(st.binary(max_size=500) | json_values.map(lambda v: json.dumps(v).encode()))
@FUZZ
def test_fuzz_register_reply(body: bytes) -> None:
    assert_one_line_error(lambda: parse_register_reply(body))


@given(st.binary(max_size=500) | json_values.map(lambda v: json.dumps(v).encode()))
@FUZZ
def test_fuzz_message_reply(body: bytes) -> None:
    assert_one_line_error(lambda: parse_message_reply(body))


@given(
    result=st.dictionaries(
        st.sampled_from(["status", "service", "method", "transaction_id"]) | st.text(max_size=4),
        json_values,
        max_size=5,
    ),
    error=st.none() | json_values,
)
@FUZZ
def test_fuzz_reply_shapes(result: dict[str, Any], error: Any) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": result, "error": error}).encode()
    assert_one_line_error(lambda: parse_register_reply(body))
    assert_one_line_error(lambda: parse_message_reply(body))
