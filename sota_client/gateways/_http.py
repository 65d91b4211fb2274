"""The HTTP gateway (``gateway.http``): the 2016 JSON commands, plus the HMI page, status, events.

As in 2016 (reference 8.2), a request carrying the JSON of a command, on any path and with any
method, runs it and gets 200 with the final event's JSON. Additions: ``GET /`` (the HMI page),
``GET /status`` and ``GET /events`` (server-sent events). Bad input gets 4xx with an ``Error``
event saying why (2016 sent an empty 400). A browser on the head unit must not be a way in for
any web page it opens, so a command needs ``Content-Type: application/json`` (which a page can
only send with the gateway's consent) and a request from a page of another origin is refused.
"""

from __future__ import annotations

import http
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import anyio
from anyio.abc import TaskStatus

from swlm_sdk.protocol import (
    Command,
    ErrorEvent,
    ProtocolError,
    encode_event,
)
from swlm_sdk.protocol._json_commands import JSON_COMMAND_EXAMPLE, decode_json_command

from .._errors import one_line
from .._ids import command_update_id, id_problem, shown_id
from .._warn_once import WarnOnce
from ._local_http import (
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    Connection,
    LocalServer,
    Request,
    RequestError,
    host_allowed,
    origin_allowed,
    own_origins,
)
from ._socket import Execute

__all__ = ["HttpGateway"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A command's JSON: 64 KiB, as on the commands socket; 64 connections of it are 4 MiB.
MAX_COMMAND_BYTES = MAX_BODY_BYTES
READ_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 15.0  # an SSE comment, so that idle proxies and clients keep the stream

JSON = "application/json; charset=utf-8"
EVENT_STREAM = "text/event-stream"
HTML = "text/html; charset=utf-8"
NOSNIFF = ("X-Content-Type-Options", "nosniff")
# The HMI page: its own scripts and styles (inline ones too), its own requests, and the
# websocket gateway on the loopback; no framing (clickjacking), no plugins, no foreign forms.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self' ws://127.0.0.1:* ws://localhost:* ws://[::1]:*; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_ROUTES = ("/", "/status", "/events")
_EXAMPLE = JSON_COMMAND_EXAMPLE


class HttpGateway:
    """Serves ``network.http_server``; ``execute`` runs a command and returns its final event.

    ``status()`` gives the JSON of ``sota_client status --json``; ``events()`` subscribes to
    the event JSON lines (its iterator ends when the subscriber is dropped); ``hmi_page`` is
    the page at ``/`` (404 without one). ``allowed_origins`` are the web pages, besides the
    gateway's own, that may use it; ``page_policy`` is the page's Content-Security-Policy
    (widen its ``connect-src`` for a websocket gateway that is not on the loopback).
    """

    def __init__(
        self,
        address: str,
        execute: Execute,
        *,
        status: Callable[[], bytes],
        events: Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]] | None = None,
        hmi_page: bytes | None = None,
        allowed_origins: Sequence[str] = (),
        max_connections: int = MAX_CONNECTIONS,
        max_body: int = MAX_COMMAND_BYTES,
        read_timeout: float = READ_TIMEOUT,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        page_policy: str = PAGE_POLICY,
    ) -> None:
        """:raises SotaError: ``address`` is not an IP address and port."""
        self._execute = execute
        self._status = status
        self._events = events
        self._page = hmi_page
        self._allowed = tuple(allowed_origins)
        self._max_body = max_body
        self._read_timeout = read_timeout
        self._keepalive = keepalive_interval
        self._page_policy = page_policy
        self._server = LocalServer(
            address,
            self._handle,
            name="http gateway",
            max_connections=max_connections,
            setting="network.http_server",
            busy_body=(
                JSON,
                _error_body(
                    "Service Unavailable: too many connections to the http gateway; try again"
                ),
            ),
        )
        self._warn = WarnOnce(logger)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind, report readiness, and serve until cancelled.

        :raises SotaError: the address cannot be bound, saying what to do about it.
        """
        await self._server.serve(task_status=task_status)

    @property
    def port(self) -> int:
        """The bound port once serving (tests bind port 0)."""
        return self._server.port

    @property
    def origins(self) -> tuple[str, ...]:
        """The origins allowed: the gateway's own pages, then ``allowed_origins``."""
        return (*own_origins(self._server.host, self._server.port), *self._allowed)

    # -- one connection -------------------------------------------------------------------------

    async def _handle(self, conn: Connection) -> None:
        """Answer the connection's requests in order until it closes (keep-alive)."""
        while True:
            try:
                request = await conn.read_request(
                    max_body=self._max_body, timeout=self._read_timeout
                )
            except RequestError as exc:
                self._warn(f"request {exc.status}", "Rejected an http request: %s", exc.message)
                await self._error(conn, exc.status, exc.message, close=True)
                return
            if request is None or not await self._answer(conn, request):
                return

    async def _answer(self, conn: Connection, request: Request) -> bool:
        """Answer one request; False when the connection must end after it."""
        origins = self.origins
        if not host_allowed(request, origins):
            host = one_line(request.header("host") or "", 200)
            self._warn("host", "Refused an http request for Host %r (not this device)", host)
            await self._error(
                conn,
                403,
                f"Host {host!r} is not this device; use its IP address or localhost",
            )
            return True
        if not origin_allowed(request, origins):
            origin = one_line(request.header("origin") or "", 200)
            self._warn("origin", "Refused an http request from the web page at %s", origin)
            await self._error(
                conn,
                403,
                f"the web page at {origin} may not use the local API; allow it in "
                "network.local_api_origins",
            )
            return True
        method, path = request.method, request.path
        if not request.body and path in _ROUTES and not (method == "POST" and path == "/"):
            if method not in ("GET", "HEAD"):
                allow = "GET, HEAD, POST" if path == "/" else "GET, HEAD"
                await self._error(
                    conn,
                    405,
                    f"{path} takes {allow}",
                    headers=[("Allow", allow)],
                )
                return True
            if path == "/":
                return await self._page_of(conn)
            if path == "/status":
                return await self._status_of(conn)
            return await self._stream_events(conn, head_only=method == "HEAD")
        return await self._command(conn, request)

    async def _command(self, conn: Connection, request: Request) -> bool:
        """The 2016 contract: the JSON of a command in, its final event out."""
        if not request.body:
            self._warn("empty", "Rejected an http command: the request has no body")
            await self._error(
                conn, 400, f"no command in the request body; send one such as {_EXAMPLE}"
            )
            return True
        content_type = request.header("content-type")
        if not _is_json(content_type):
            shown = "no Content-Type"
            if content_type is not None:
                shown = f"Content-Type {one_line(content_type, 100)!r}"
            self._warn("415", "Rejected an http command sent with %s", shown)
            await self._error(
                conn,
                415,
                f"a command needs Content-Type: application/json, not {shown}",
            )
            return True
        try:
            command = decode_json_command(request.body)
            _check_ids(command)
        except ProtocolError as exc:
            self._warn("malformed", "Rejected an http command: %s", exc)
            await self._error(conn, 400, str(exc))
            return True
        try:
            event = await self._execute(command)
        except Exception:
            # Never reached with the daemon's interpreter; a bug must not cost the connection.
            logger.exception("Command %s from the http gateway failed unexpectedly", command)
            await self._error(conn, 500, "the command failed unexpectedly; see the daemon's log")
            return True
        if event is None:  # Shutdown: 2016 exited without an answer; the peer gets an empty one
            await conn.respond(200, headers=[NOSNIFF], close=True)
            return False
        await conn.respond(200, encode_event(event), content_type=JSON, headers=[NOSNIFF])
        return True

    async def _page_of(self, conn: Connection) -> bool:
        if self._page is None:
            await self._error(conn, 404, "this daemon serves no HMI page")
            return True
        headers = [
            NOSNIFF,
            ("Content-Security-Policy", self._page_policy),
            ("Cache-Control", "no-cache"),
        ]
        await conn.respond(200, self._page, content_type=HTML, headers=headers)
        return True

    async def _status_of(self, conn: Connection) -> bool:
        try:
            body = self._status()
        except Exception:
            logger.exception("The status for the http gateway could not be read")
            await self._error(conn, 500, "the status could not be read; see the daemon's log")
            return True
        await conn.respond(200, body, content_type=JSON, headers=[NOSNIFF, _NO_STORE])
        return True

    async def _stream_events(self, conn: Connection, *, head_only: bool) -> bool:
        """Server-sent events until the subscription or the peer ends; then close."""
        if self._events is None:
            await self._error(conn, 404, "this daemon publishes no events here")
            return True
        headers = [NOSNIFF, _NO_STORE]
        if head_only:
            await conn.respond(200, content_type=EVENT_STREAM, headers=headers)
            return True
        async with self._events() as events:
            # Subscribed before the head goes out: a client that sees it misses no event.
            await conn.start_stream(200, content_type=EVENT_STREAM, headers=headers)
            lock = anyio.Lock()  # one writer at a time: events and keep-alives interleave
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_alive, conn, lock)
                tg.start_soon(_cancel_when_closed, conn, tg.cancel_scope)
                with conn.idle():  # a subscriber only waits: evictable when the server is full
                    async for line in events:
                        async with lock:
                            await conn.send_chunk(_sse(line))
                tg.cancel_scope.cancel()
        if not conn.peer_closed:
            await conn.end_stream()
        return False

    async def _keep_alive(self, conn: Connection, lock: anyio.Lock) -> None:
        while True:
            await anyio.sleep(self._keepalive)
            async with lock:
                await conn.send_chunk(b": keep-alive\n\n")

    async def _error(
        self,
        conn: Connection,
        status: int,
        detail: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        """An error in the ``Error`` event form, led by the status: ``Bad Request: ...``."""
        body = _error_body(f"{_phrase(status)}: {detail}")
        await conn.respond(
            status, body, content_type=JSON, headers=[NOSNIFF, *headers], close=close
        )


_NO_STORE = ("Cache-Control", "no-store")


async def _cancel_when_closed(conn: Connection, scope: anyio.CancelScope) -> None:
    await conn.wait_closed()
    scope.cancel()


def _sse(line: bytes) -> bytes:
    """One server-sent event: each line of the JSON after ``data: `` (compact JSON has one)."""
    lines = line.rstrip(b"\r\n").replace(b"\r\n", b"\n").split(b"\n")
    return b"".join(b"data: " + part + b"\n" for part in lines) + b"\n"


def _phrase(status: int) -> str:
    return http.HTTPStatus(status).phrase


def _error_body(text: str) -> bytes:
    return encode_event(ErrorEvent(text))


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _check_ids(command: Command) -> None:
    """An update id becomes a file name and a URL segment: refuse a bad one as bad input."""
    update_id = command_update_id(command)
    if update_id is not None and (problem := id_problem(update_id)) is not None:
        raise ProtocolError(f"Invalid update id {shown_id(update_id)}: {problem}")
