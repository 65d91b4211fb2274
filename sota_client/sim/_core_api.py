"""Core's own routes: the device API (mydevice and legacy), the operator API, token and health."""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import TypeVar

import msgspec

from swlm_sdk.protocol import Package

from ._app import SimApp
from ._auth import parse_basic
from ._errors import Rejection, malformed
from ._http import (
    OCTETS,
    UNSATISFIABLE,
    FileBody,
    Request,
    Response,
    json_response,
    parse_range,
    text_response,
)
from ._models import (
    UUID_PATTERN,
    LegacyInstallReport,
    PackageIdIn,
    ReportedResult,
    Uuid,
)
from ._store import PackageBlob

__all__ = [
    "blocked",
    "cancel",
    "canonical_uuid",
    "download",
    "health",
    "installed",
    "legacy_report",
    "order",
    "queue",
    "report",
    "results",
    "storage",
    "system_info",
    "token",
    "updates",
]

T = TypeVar("T")

_UUID_RE = re.compile(UUID_PATTERN)
_UNSUPPORTED_TYPE = "The request's Content-Type is not supported. Expected:\napplication/json"

_REPORT = msgspec.json.Decoder(list[ReportedResult])
_LEGACY_REPORT = msgspec.json.Decoder(LegacyInstallReport)
_PACKAGE_IDS = msgspec.json.Decoder(list[PackageIdIn])
_PACKAGE_ID = msgspec.json.Decoder(PackageIdIn)
_ORDER = msgspec.json.Decoder(dict[int, Uuid])


def canonical_uuid(value: str, what: str = "device") -> str:
    """The lower-case form of a UUID string.

    :raises Rejection: 400 naming the segment when ``value`` is not an 8-4-4-4-12 hex UUID.
    """
    if not _UUID_RE.search(value):
        raise Rejection(400, f"{what} id {value!r} is not a valid UUID")
    return value.lower()


def _param(req: Request, name: str) -> str:
    return canonical_uuid(req.params[name], name)


def _body_text(req: Request) -> str:
    return req.body.decode("utf-8", "backslashreplace")


def _require_json(req: Request) -> None:
    if req.media_type() != "application/json":
        raise Rejection(415, _UNSUPPORTED_TYPE)


def _decode(decoder: msgspec.json.Decoder[T], req: Request) -> T:
    try:
        return decoder.decode(req.body)
    except msgspec.DecodeError as exc:
        raise malformed(str(exc)) from None


def _check_ids(app: SimApp, ids: list[PackageIdIn]) -> list[Package]:
    for pid in ids:
        try:
            app.state.check_package_id(pid.name, pid.version)
        except Rejection as exc:
            raise malformed(exc.text) from None
    return [Package(pid.name, pid.version) for pid in ids]


# -- device API ---------------------------------------------------------------------------


def updates(app: SimApp, req: Request, *, seen: bool = True) -> Response:
    device = _param(req, "device")
    return json_response(200, app.state.pending(device, seen=seen))


def download(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    update_id = _param(req, "update")
    _, blob = app.state.start_download(device, update_id)
    if req.redirect:
        location = f"{app.base_url}/storage/{app.state.add_redirect(update_id)}"
        return Response(302, b"", None, [("Location", location)])
    return serve_blob(req, blob)


def serve_blob(req: Request, blob: PackageBlob) -> Response:
    """The package bytes, honouring one byte range."""
    if blob.data is not None:
        size = len(blob.data)
        fd = None
    else:
        fd, size = blob.open_file()
    headers = [("Accept-Ranges", "bytes")]
    wanted = parse_range(req.headers.get("Range"), size)
    if wanted == UNSATISFIABLE:
        if fd is not None:
            os.close(fd)
        return text_response(
            416,
            "The requested range is not satisfiable",
            [*headers, ("Content-Range", f"bytes */{size}")],
        )
    status, start, length = 200, 0, size
    if isinstance(wanted, tuple):
        first, last = wanted
        status, start, length = 206, first, last - first + 1
        headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    if blob.data is not None:
        body: bytes | memoryview | FileBody = memoryview(blob.data)[start : start + length]
    else:
        assert fd is not None
        body = FileBody(fd, start, length)
    return Response(status, body, OCTETS, headers)


def _report_body(
    app: SimApp, req: Request, decoder: msgspec.json.Decoder[T], device: str, update_id: str
) -> T:
    """Decode a report body; a refused one is still recorded, for tests to inspect."""
    try:
        _require_json(req)
        return _decode(decoder, req)
    except Rejection as exc:
        app.state.record_rejected_report(
            device, update_id, path=req.path, status=exc.status, body=_body_text(req)
        )
        raise


def report(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    update_id = _param(req, "update")
    results = _report_body(app, req, _REPORT, device, update_id)
    app.state.report(device, update_id, results, path=req.path, body=_body_text(req))
    return Response(204)


def legacy_report(app: SimApp, req: Request) -> Response:
    """The pre-mydevice report: device and update id come from the body, not the path."""
    body = _report_body(app, req, _LEGACY_REPORT, _param(req, "device"), "")
    app.state.report(
        body.device.lower(),
        body.update_report.update_id.lower(),
        body.update_report.operation_results,
        path=req.path,
        body=_body_text(req),
    )
    return Response(204)


def installed(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    _require_json(req)
    packages = _check_ids(app, _decode(_PACKAGE_IDS, req))
    app.state.set_installed(device, packages)
    return text_response(200, "OK")


def system_info(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    _require_json(req)
    try:
        msgspec.json.decode(req.body)
    except msgspec.DecodeError as exc:
        raise malformed(str(exc)) from None
    app.state.set_system_info(device, req.body)
    return json_response(200, {})


# -- operator API ---------------------------------------------------------------------------


def queue(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    _require_json(req)
    (package,) = _check_ids(app, [_decode(_PACKAGE_ID, req)])
    return json_response(200, app.state.queue(device, package.name, package.version))


def cancel(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    app.state.cancel(device, _param(req, "update"))
    return Response(204)


def order(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    _require_json(req)
    positions = _decode(_ORDER, req)
    app.state.set_order(device, [positions[k].lower() for k in sorted(positions)])
    return Response(204)


def results(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    update_id = _param(req, "update") if "update" in req.params else None
    return json_response(200, app.state.results(device, update_id))


def blocked(app: SimApp, req: Request) -> Response:
    device = _param(req, "device")
    if req.method in ("GET", "HEAD"):
        return json_response(200, app.state.blocked(device))
    app.state.set_blocked(device, req.method == "PUT")
    return Response(204)


# -- auth server, storage, health ------------------------------------------------------------


def _oauth_error(status: int, error: str, description: str) -> Response:
    response = json_response(status, {"error": error, "error_description": description})
    response.headers.append(("Cache-Control", "no-store"))
    if status == 401:
        response.headers.append(("WWW-Authenticate", 'Basic realm="sota-core-sim"'))
    return response


def token(app: SimApp, req: Request) -> Response:
    """``POST /token``: OAuth2 client credentials, HTTP Basic client authentication."""
    if app.tokens is None:
        return text_response(404, "The requested resource could not be found.")
    credentials = parse_basic(req.headers.get("Authorization"))
    if credentials is None:
        return _oauth_error(401, "invalid_client", "HTTP Basic client credentials are required")
    if not app.tokens.credentials_ok(*credentials):
        return _oauth_error(401, "invalid_client", "unknown client id or wrong secret")
    if req.media_type() != "application/x-www-form-urlencoded":
        return _oauth_error(
            400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
        )
    try:
        form = urllib.parse.parse_qs(req.body.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the body is not a valid form")
    if "grant_type" not in form:
        return _oauth_error(400, "invalid_request", "grant_type is missing")
    if form["grant_type"] != ["client_credentials"]:
        return _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
    response = json_response(200, app.tokens.issue())
    response.headers.append(("Cache-Control", "no-store"))
    return response


def storage(app: SimApp, req: Request) -> Response:
    """The second URL of a redirected download; like a presigned S3 URL it refuses tokens."""
    if req.headers.get("Authorization") is not None:
        return text_response(
            400, "InvalidArgument: Only one auth mechanism allowed; Authorization was sent"
        )
    _, blob = app.state.redirect_target(req.params["token"])
    return serve_blob(req, blob)


def health(app: SimApp, req: Request) -> Response:
    return json_response(200, {"status": "OK"})
