"""The JSON-RPC of the RVI gateway, sans-IO: what the edge server receives and what it sends.

Incoming requests are validated in the 2016 order with its error codes (reference 8.5.2); the
outgoing bodies are byte for byte what the 2016 client sent, except where the 2016 server
decoded something else (``installed_software``, see gateways-observed.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeAlias

import msgspec

from swlm_sdk.protocol import InstalledSoftware, UpdateAvailable, UpdateReport
from swlm_sdk.protocol._json import encode

from .._errors import InvalidIdError, SotaError, one_line
from .._ids import check_update_id

__all__ = [
    "HANDLER_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_CHUNKS",
    "MAX_REQUEST_BYTES",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SERVICES",
    "Abort",
    "BackendServices",
    "Chunk",
    "Finish",
    "GetPackages",
    "LocalServices",
    "Message",
    "Notify",
    "Parameter",
    "RpcError",
    "RviReplyError",
    "ServicesAvailable",
    "Start",
    "chunk_received",
    "download_started",
    "encode_error",
    "encode_message",
    "encode_register",
    "encode_result",
    "handler_error",
    "installed_software",
    "parse_edge_request",
    "parse_message_reply",
    "parse_register_reply",
    "update_report",
]

SERVICES = (
    "/sota/notify",
    "/sota/start",
    "/sota/chunk",
    "/sota/abort",
    "/sota/finish",
    "/sota/getpackages",
)
"""The local services, in the order 2016 registered them."""

MAX_REQUEST_BYTES = 1 << 20
"""Bound on a request body: a 64 KiB chunk (the 2016 server's size) is about 88 KB of base64."""

MAX_CHUNKS = 65_536
"""Bound on ``chunkscount``: 4 GiB in the 2016 server's 64 KiB chunks."""

_MAX_INDEX = (1 << 63) - 1  # 2016 took a u64; msgspec bounds stop at i64, more than enough
_MAX_ECHO = 200  # characters of a peer's text echoed back in an error

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HANDLER_ERROR = -32100


# -- errors of the edge server ------------------------------------------------------------------


class RpcError(Exception):
    """A request the edge server refuses, with the 2016 JSON-RPC error (replied with HTTP 400)."""

    def __init__(self, code: int, message: str, data: str, id: int = 0) -> None:
        super().__init__(f"{code} {message}: {data}")
        self.code = code
        self.message = message
        self.data = data
        self.id = id


def handler_error(request_id: int, reason: str) -> RpcError:
    """The 2016 answer to a request that decoded but could not be handled (-32100)."""
    return RpcError(
        HANDLER_ERROR,
        "Couldn't handle request",
        f"couldn't handle parameters: {reason}",
        request_id,
    )


def encode_error(error: RpcError) -> bytes:
    """``{"jsonrpc":"2.0","id":..,"error":{"code":..,"message":..,"data":..}}``."""
    body = {
        "jsonrpc": "2.0",
        "id": error.id,
        "error": {"code": error.code, "message": error.message, "data": error.data},
    }
    try:
        return encode(body)
    except UnicodeEncodeError:  # a lone surrogate from a caller's text: never fail to answer
        body["error"] = {
            "code": error.code,
            "message": _valid_text(error.message),
            "data": _valid_text(error.data),
        }
        return encode(body)


def encode_result(request_id: int) -> bytes:
    """``{"jsonrpc":"2.0","id":..,"result":null}``, the 2016 success answer."""
    return encode({"jsonrpc": "2.0", "id": request_id, "result": None})


def _valid_text(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


# -- what the edge server receives --------------------------------------------------------------


class ServicesAvailable(msgspec.Struct, frozen=True):
    """The node announcing services (``services_available``); answered and otherwise ignored."""

    id: int
    services: tuple[str, ...]


class BackendServices(msgspec.Struct, frozen=True):
    """Where the backend wants its messages, as told in ``/sota/notify``."""

    start: str
    ack: str
    report: str
    packages: str


class Notify(msgspec.Struct, frozen=True):
    """``/sota/notify``: an update is available, and the backend's service names."""

    update: UpdateAvailable
    services: BackendServices


class Start(msgspec.Struct, frozen=True):
    """``/sota/start``: a transfer of ``chunkscount`` chunks begins."""

    update_id: str
    checksum: str
    chunkscount: int


class Chunk(msgspec.Struct, frozen=True):
    """``/sota/chunk``: one chunk, already base64-decoded."""

    update_id: str
    index: int
    data: bytes


class Finish(msgspec.Struct, frozen=True):
    """``/sota/finish``: every chunk was sent; join them."""

    update_id: str
    signature: str


class GetPackages(msgspec.Struct, frozen=True):
    """``/sota/getpackages``: the backend wants the installed software."""


class Abort(msgspec.Struct, frozen=True):
    """``/sota/abort``: drop the transfer of ``update_id``, or every transfer when None."""

    update_id: str | None = None


Parameter: TypeAlias = Notify | Start | Chunk | Finish | GetPackages | Abort


class Message(msgspec.Struct, frozen=True):
    """A ``message`` call; ``service`` is the entry of SERVICES it was addressed to."""

    id: int
    service: str
    parameter: Parameter


class _Invalid(Exception):
    """Parameters that fail to decode; the text follows ``couldn't decode message: ``."""


def parse_edge_request(body: bytes) -> ServicesAvailable | Message:
    """Validate a request to the edge server in 2016's order (reference 8.5.2).

    Deviations that fix 2016's bugs: ``id`` may be any integer (2016 wanted a u64); ``timeout``
    and ``jsonrpc`` are not checked; ``params`` of ``services_available`` must be an object if
    present; ``parameters`` that is not a non-empty array is -32602 (2016 panicked on an empty
    one); the service name may be fully qualified (``genivi.org/node/<id>/sota/start``); update
    ids must pass the one id rule; the base64 of a chunk and the checksum are checked here.

    :raises RpcError: the request is refused; ``encode_error`` gives the answer.
    """
    if len(body) > MAX_REQUEST_BYTES:
        raise _parse_error(f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _parse_error(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise _parse_error(f"not JSON: {exc}") from None
    except RecursionError:
        raise _parse_error("not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise _parse_error("not an object")
    request_id = data.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise _parse_error("expected id")
    method = data.get("method")
    if not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, "Invalid Request", "expected method", request_id)
    if method == "services_available":
        return _services_available(request_id, data)
    if method != "message":
        raise RpcError(
            METHOD_NOT_FOUND, "Method not found", f"unknown method: {_echo(method)}", request_id
        )
    params = data.get("params")
    if not isinstance(params, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request", "expected params", request_id)
    service_name = params.get("service_name")
    if not isinstance(service_name, str):
        raise RpcError(
            INVALID_REQUEST, "Invalid Request", "expected params.service_name", request_id
        )
    service = _our_service(service_name)
    if service is None:
        raise RpcError(
            INVALID_REQUEST,
            "Invalid Request",
            f"unknown service: {_echo(service_name)}",
            request_id,
        )
    try:
        parameter = _DECODERS[service](_first_parameter(params))
    except _Invalid as exc:
        raise RpcError(
            INVALID_PARAMS, "Invalid params", f"couldn't decode message: {exc}", request_id
        ) from None
    return Message(request_id, service, parameter)


def _parse_error(data: str) -> RpcError:
    return RpcError(PARSE_ERROR, "Parse error", data, 0)


def _echo(text: str) -> str:
    """A peer's text in an error answer, cut short: a 1 MiB method name need not come back."""
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 1] + "…"


def _services_available(request_id: int, data: dict[str, Any]) -> ServicesAvailable:
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request", "expected params", request_id)
    services = params.get("services")
    names = tuple(s for s in services if isinstance(s, str)) if isinstance(services, list) else ()
    return ServicesAvailable(request_id, names)


def _our_service(name: str) -> str | None:
    """The entry of SERVICES that ``name`` addresses, stripped or fully qualified.

    Every entry starts with ``/``, so a suffix match is always on a ``/`` boundary.
    """
    for service in SERVICES:
        if name.endswith(service):
            return service
    return None


def _first_parameter(params: dict[str, Any]) -> Any:
    """``parameters[0]``: 2016 used only the first element."""
    if "parameters" not in params:
        raise _Invalid("expected params.parameters, an array")
    parameters = params["parameters"]
    if not isinstance(parameters, list):
        # The RVI Python tools of the time sent the parameters as one object of strings.
        raise _Invalid(f"params.parameters is {_json_kind(parameters)}, not an array")
    if not parameters:
        raise _Invalid("params.parameters is an empty array")
    return parameters[0]


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# The wire forms of the parameters: unknown fields are ignored (the node and servers add some).


class _UpdateAvailableWire(msgspec.Struct, frozen=True):
    update_id: str
    signature: str
    description: str
    request_confirmation: bool
    size: Annotated[int, msgspec.Meta(ge=0)] = 0


class _NotifyWire(msgspec.Struct, frozen=True):
    update_available: _UpdateAvailableWire
    services: BackendServices


class _StartWire(msgspec.Struct, frozen=True):
    update_id: str
    checksum: str
    chunkscount: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNKS)]


class _ChunkWire(msgspec.Struct, frozen=True):
    update_id: str
    index: Annotated[int, msgspec.Meta(ge=0, le=_MAX_INDEX)]
    data: str = msgspec.field(name="bytes")


class _FinishWire(msgspec.Struct, frozen=True):
    update_id: str
    signature: str


_SHA1_HEX = re.compile(r"[0-9a-f]{40}")


def _convert(value: Any, type_: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if " - at `$" in text:
            raise _Invalid(text.replace(" - at `$", " - at `params.parameters[0]")) from None
        raise _Invalid(f"{text} - at `params.parameters[0]`") from None
    except RecursionError:
        raise _Invalid("nested too deeply") from None


def _checked_id(update_id: str) -> str:
    try:
        return check_update_id(update_id)
    except InvalidIdError as exc:
        raise _Invalid(str(exc)) from None


def _notify(value: Any) -> Notify:
    wire: _NotifyWire = _convert(value, _NotifyWire)
    offer = wire.update_available
    update = UpdateAvailable(
        update_id=_checked_id(offer.update_id),
        signature=offer.signature,
        description=offer.description,
        request_confirmation=offer.request_confirmation,
        size=offer.size,
    )
    return Notify(update, wire.services)


def _start(value: Any) -> Start:
    wire: _StartWire = _convert(value, _StartWire)
    update_id = _checked_id(wire.update_id)
    if not _SHA1_HEX.fullmatch(wire.checksum):
        raise _Invalid(
            f"checksum {_echo(repr(wire.checksum))} is not a SHA-1: expected 40 lower-case hex "
            "digits"
        )
    return Start(update_id, wire.checksum, wire.chunkscount)


def _chunk(value: Any) -> Chunk:
    wire: _ChunkWire = _convert(value, _ChunkWire)
    update_id = _checked_id(wire.update_id)
    return Chunk(update_id, wire.index, _decode_base64(wire.data))


def _finish(value: Any) -> Finish:
    wire: _FinishWire = _convert(value, _FinishWire)
    return Finish(_checked_id(wire.update_id), wire.signature)


def _getpackages(value: Any) -> GetPackages:
    return GetPackages()  # the 2016 server sends null; anything is accepted, as in 2016


def _abort(value: Any) -> Abort:
    # 2016 dropped every transfer whatever the parameter (its server sends null); naming one
    # update drops only that one.
    if isinstance(value, dict) and isinstance(value.get("update_id"), str):
        return Abort(_checked_id(value["update_id"]))
    return Abort(None)


_DECODERS: dict[str, Callable[[Any], Parameter]] = {
    "/sota/notify": _notify,
    "/sota/start": _start,
    "/sota/chunk": _chunk,
    "/sota/abort": _abort,
    "/sota/finish": _finish,
    "/sota/getpackages": _getpackages,
}

_BASE64_BODY = re.compile(r"[A-Za-z0-9+/]*")
_DROPPED = str.maketrans({" ": None, "\t": None, "\r": None, "\n": None, "-": "+", "_": "/"})


def _decode_base64(text: str) -> bytes:
    """Base64 as rustc-serialize read it: either alphabet, padding optional, line breaks allowed."""
    compact = text.translate(_DROPPED)
    body = compact.rstrip("=")
    if len(compact) - len(body) > 2 or not _BASE64_BODY.fullmatch(body):
        raise _Invalid("chunk `bytes` is not base64: invalid character or padding")
    if len(body) % 4 == 1:
        raise _Invalid("chunk `bytes` is not base64: invalid length")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:  # not expected after the checks above, but never a crash
        raise _Invalid(f"chunk `bytes` is not base64: {exc}") from None


# -- what goes to the node ----------------------------------------------------------------------


class RviReplyError(SotaError):
    """The RVI node's answer to a call is an error, a non-zero status, or not what we need."""


class LocalServices(msgspec.Struct, frozen=True):
    """The fully qualified names of our services, as the node returned them at registration."""

    start: str
    abort: str
    chunk: str
    finish: str
    getpackages: str


def encode_register(request_id: int, network_address: str, service: str) -> bytes:
    """The ``register_service`` call for one of SERVICES at our edge server's address."""
    return encode(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "register_service",
            "params": {"network_address": network_address, "service": service},
        }
    )


def encode_message(request_id: int, service_name: str, body: bytes, timeout: int) -> bytes:
    """A ``message`` call carrying ``body`` (one JSON value, embedded as is) to a service.

    ``timeout`` is the absolute Unix time after which the node may drop it (2016: now + 60).
    """
    return encode(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "message",
            "params": {
                "service_name": service_name,
                "parameters": [msgspec.Raw(body)],
                "timeout": timeout,
            },
        }
    )


def parse_register_reply(body: bytes) -> str:
    """The fully qualified service name from the node's answer to ``register_service``.

    :raises RviReplyError: an error answer, a non-zero status, or a bad shape.
    """
    what = "register_service"
    result = _reply_object(body, what).get("result")
    if not isinstance(result, dict):
        raise RviReplyError(f"RVI {what} reply has no result object")
    _check_status(result, what, required=True)
    service = result.get("service")
    if not isinstance(service, str) or not service:
        raise RviReplyError(f"RVI {what} reply has no service name")
    return service


def parse_message_reply(body: bytes) -> None:
    """Check the node's answer to a ``message`` call (``result`` with status 0, or null).

    :raises RviReplyError: an error answer, a non-zero status, or a bad shape.
    """
    what = "message"
    reply = _reply_object(body, what)
    if "result" not in reply:
        raise RviReplyError(f"RVI {what} reply has neither result nor error")
    result = reply["result"]
    if result is None:
        return
    if not isinstance(result, dict):
        raise RviReplyError(f"RVI {what} reply has a result that is not an object")
    _check_status(result, what, required=False)


def _reply_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        reply = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise RviReplyError(f"RVI {what} reply is not JSON: {exc}") from None
    except RecursionError:
        raise RviReplyError(f"RVI {what} reply is not JSON: nested too deeply") from None
    if not isinstance(reply, dict):
        raise RviReplyError(f"RVI {what} reply is not a JSON object")
    error = reply.get("error")
    if error is not None:
        raise RviReplyError(f"RVI {what} failed: {_described_error(error)}")
    return reply


def _check_status(result: dict[str, Any], what: str, *, required: bool) -> None:
    if "status" not in result and not required:
        return
    status = result.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        raise RviReplyError(f"RVI {what} reply has no integer status")
    if status != 0:
        raise RviReplyError(f"RVI {what} failed: status {status}")


def _described_error(error: object) -> str:
    """A JSON-RPC error object from the node on one short line."""
    if not isinstance(error, dict):
        return one_line(f"error {msgspec.json.encode(error).decode()}")
    parts = ["error"]
    code = error.get("code")
    if isinstance(code, int | str):
        parts.append(str(code))
    message = error.get("message")
    if isinstance(message, str):
        parts.append(message)
    text = " ".join(parts)
    data = error.get("data")
    if data is not None:
        text += f": {data if isinstance(data, str) else msgspec.json.encode(data).decode()}"
    return one_line(text)


def download_started(device: str, update_id: str, services: LocalServices) -> bytes:
    """``DownloadStarted`` to the backend's ``start``: where to push the chunks."""
    return encode({"device": device, "update_id": update_id, "services": services})


def chunk_received(device: str, update_id: str, chunks: Sequence[int]) -> bytes:
    """``ChunkReceived`` to the backend's ``ack``: every index received so far."""
    return encode({"device": device, "update_id": update_id, "chunks": list(chunks)})


def update_report(device: str, report: UpdateReport) -> bytes:
    """``UpdateReportResult`` to the backend's ``report``."""
    return encode({"device": device, "update_report": report})


def installed_software(device: str, software: InstalledSoftware) -> bytes:
    """The installed software to the backend's ``packages``, in the form the 2016 server decoded.

    2016 sent ``{"device_id": .., "installed": ..}``, which its server could not read.
    """
    return encode({"device": device, "installed_software": software})
