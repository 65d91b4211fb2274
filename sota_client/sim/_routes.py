"""The route table: method and path to handler, with each route's access rule, and dispatch."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Literal
from urllib.parse import unquote

import msgspec

from . import _admin as admin
from . import _core_api as core
from ._app import SimApp
from ._errors import CoreError, Rejection
from ._http import Request, Response, error_response, json_response, text_response

__all__ = ["ROUTES", "Route", "RouteMatch", "dispatch", "resolve"]

Handler = Callable[[SimApp, Request], Response]
Access = Literal["read", "write", "open", "admin"]

NOT_FOUND = "The requested resource could not be found."


class Route(msgspec.Struct, frozen=True):
    """``access``: read/write are device calls (token-checked when auth is on); admin routes
    are never faulted; ``upload`` routes stream non-JSON bodies instead of buffering them."""

    name: str
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    handler: Handler
    access: Access
    upload: bool = False


def _route(
    name: str, methods: str, pattern: str, handler: Handler, access: Access, upload: bool = False
) -> Route:
    return Route(name, tuple(methods.split()), re.compile(pattern), handler, access, upload)


_SEG = r"[^/]+"
_MY = rf"/api/v1/mydevice/(?P<device>{_SEG})"
_LEGACY = rf"/api/v1/(?:device|vehicle)_updates/(?P<device>{_SEG})"
_OP = rf"/api/v1/device_updates/(?P<device>{_SEG})"
_UPD = rf"(?P<update>{_SEG})"

ROUTES: tuple[Route, ...] = (
    _route("health", "GET", r"/health", core.health, "open"),
    _route("token", "POST", r"/token", core.token, "open"),
    _route("storage", "GET", rf"/storage/(?P<token>{_SEG})", core.storage, "open"),
    # The device API Core has had since 2016-10-26.
    _route("updates", "GET", rf"{_MY}/updates", core.updates, "read"),
    _route("download", "GET", rf"{_MY}/updates/{_UPD}/download", core.download, "read"),
    _route("report", "POST", rf"{_MY}/updates/{_UPD}", core.report, "write"),
    _route("installed", "PUT", rf"{_MY}/installed", core.installed, "write"),
    _route("system_info", "PUT", rf"{_MY}/system_info", core.system_info, "write"),
    # The operator API (device_updates only).
    _route("queue", "POST", _OP, core.queue, "open"),
    _route("cancel", "PUT", rf"{_OP}/{_UPD}/cancelupdate", core.cancel, "open"),
    _route("order", "PUT", rf"{_OP}/order", core.order, "open"),
    _route("results", "GET", rf"{_OP}/results", core.results, "open"),
    _route("results", "GET", rf"{_OP}/{_UPD}/results", core.results, "open"),
    _route("blocked", "GET PUT DELETE", rf"{_OP}/blocked", core.blocked, "open"),
    # The device routes of older clients, under both legacy prefixes.
    _route("updates", "GET", _LEGACY, core.updates, "read"),
    _route(
        "updates",
        "GET",
        rf"{_LEGACY}/queued",
        functools.partial(core.updates, seen=False),
        "read",
    ),
    _route("download", "GET", rf"{_LEGACY}/{_UPD}/download", core.download, "read"),
    _route("installed", "PUT", rf"{_LEGACY}/installed", core.installed, "write"),
    _route("system_info", "PUT", rf"{_LEGACY}/system_info", core.system_info, "write"),
    _route("report", "POST", rf"{_LEGACY}/{_SEG}", core.legacy_report, "write"),
    # The simulator's admin API.
    _route("admin", "GET", r"/sim/packages", admin.list_packages, "admin"),
    _route(
        "admin",
        "PUT",
        rf"/sim/packages/(?P<name>{_SEG})/(?P<version>{_SEG})",
        admin.put_package,
        "admin",
        upload=True,
    ),
    _route("admin", "GET", r"/sim/devices", admin.list_devices, "admin"),
    _route("admin", "GET", rf"/sim/devices/(?P<device>{_SEG})", admin.device_state, "admin"),
    _route("admin", "GET", r"/sim/requests", admin.request_log, "admin"),
    _route("admin", "GET", r"/sim/faults", admin.list_faults, "admin"),
    _route("admin", "POST", r"/sim/faults", admin.inject_faults, "admin"),
    _route("admin", "DELETE", r"/sim/faults", admin.clear_faults, "admin"),
    _route("admin", "POST", r"/sim/tokens/expire", admin.expire_tokens, "admin"),
    _route("admin", "POST", r"/sim/reset", admin.reset, "admin"),
)


class RouteMatch(msgspec.Struct, frozen=True):
    """The outcome of routing: a route with its decoded path parameters, or why there is none.

    ``route`` is None when nothing matched; ``allowed`` then lists the methods other routes
    accept for this path (empty: 404, else 405).
    """

    route: Route | None
    params: dict[str, str]
    allowed: tuple[str, ...] = ()


def resolve(method: str, path: str) -> RouteMatch:
    """Find the route for a request; HEAD is routed as GET (akka's transparent HEAD)."""
    wanted = "GET" if method == "HEAD" else method
    allowed: list[str] = []
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if wanted in route.methods:
            params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            return RouteMatch(route, params)
        allowed.extend(m for m in route.methods if m not in allowed)
    return RouteMatch(None, {}, tuple(allowed))


def dispatch(app: SimApp, match: RouteMatch, req: Request) -> Response:
    """Run the matched route, with the token check; every failure becomes a response."""
    route = match.route
    if route is None:
        if match.allowed:
            methods = ", ".join(match.allowed)
            return text_response(
                405,
                f"HTTP method not allowed, supported methods: {methods}",
                [("Allow", methods)],
            )
        return text_response(404, NOT_FOUND)
    try:
        if app.tokens is not None and route.access in ("read", "write"):
            device = req.params.get("device", "").lower()
            problem = app.tokens.check(req.headers.get("Authorization"), device, route.access)
            if problem is not None:
                status, text = problem
                if status != 401:
                    return text_response(status, text)
                challenge = 'Bearer realm="sota-core-sim"'
                if req.headers.get("Authorization"):
                    challenge += ', error="invalid_token"'
                return text_response(status, text, [("WWW-Authenticate", challenge)])
        return route.handler(app, req)
    except (CoreError, Rejection) as exc:
        return error_response(exc)
    except (ConnectionError, TimeoutError):
        # The client went away mid-upload: nobody to answer; the server drops the connection.
        raise
    except OSError as exc:
        # A registered package file vanished or became unreadable: Core's 500 shape.
        return json_response(500, {"error": f"package file unavailable: {exc}"})
