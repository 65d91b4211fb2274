"""The simulator's own admin API under ``/sim/``: packages, state, faults, tokens, reset."""

from __future__ import annotations

import msgspec

from ._app import SimApp
from ._core_api import canonical_uuid
from ._errors import Rejection
from ._faults import decode_faults
from ._http import Request, Response, json_response
from ._store import PackageBlob, check_registered_path, store_upload

__all__ = [
    "clear_faults",
    "device_state",
    "expire_tokens",
    "inject_faults",
    "list_devices",
    "list_faults",
    "list_packages",
    "put_package",
    "request_log",
    "reset",
]


class _PathRegistration(msgspec.Struct, forbid_unknown_fields=True):
    path: str


_REGISTRATION = msgspec.json.Decoder(_PathRegistration)


def put_package(app: SimApp, req: Request) -> Response:
    """Upload bytes (any non-JSON body, streamed to disk) or register a local file by path."""
    name, version = req.params["name"], req.params["version"]
    app.state.check_package_id(name, version)
    if req.stream is not None:
        blob = store_upload(req.stream, app.data_dir)
    else:
        try:
            path = _REGISTRATION.decode(req.body).path
        except msgspec.DecodeError as exc:
            raise Rejection(400, f'expected {{"path": "/absolute/file"}}: {exc}') from None
        try:
            blob = PackageBlob(path=check_registered_path(path, app.path_roots), source="path")
        except PermissionError as exc:
            raise Rejection(403, str(exc)) from None
        except ValueError as exc:
            raise Rejection(400, str(exc)) from None
    try:
        app.state.put_package(name, version, blob)
    except BaseException:
        blob.discard()
        raise
    info = next(p for p in app.state.packages() if (p.name, p.version) == (name, version))
    return json_response(200, info)


def list_packages(app: SimApp, req: Request) -> Response:
    return json_response(200, app.state.packages())


def list_devices(app: SimApp, req: Request) -> Response:
    return json_response(200, app.state.devices())


def device_state(app: SimApp, req: Request) -> Response:
    device = canonical_uuid(req.params["device"])
    return json_response(200, app.state.device_state(device))


def request_log(app: SimApp, req: Request) -> Response:
    return json_response(200, app.state.requests())


def list_faults(app: SimApp, req: Request) -> Response:
    pending = [{"fault": fault, "remaining": left} for fault, left in app.faults.pending()]
    return json_response(200, pending)


def inject_faults(app: SimApp, req: Request) -> Response:
    try:
        faults = decode_faults(req.body)
    except msgspec.DecodeError as exc:
        raise Rejection(400, f"bad fault spec: {exc}") from None
    for fault in faults:
        app.faults.add(fault)
    return json_response(200, {"armed": len(faults)})


def clear_faults(app: SimApp, req: Request) -> Response:
    app.faults.clear()
    return Response(204)


def expire_tokens(app: SimApp, req: Request) -> Response:
    revoked = app.tokens.revoke_all() if app.tokens is not None else 0
    return json_response(200, {"revoked": revoked})


def reset(app: SimApp, req: Request) -> Response:
    app.reset()
    return Response(204)
