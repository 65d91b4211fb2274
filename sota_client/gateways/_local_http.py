"""The small HTTP/1.1 server that the local-API gateways (HTTP, websocket) share: h11 over anyio.

Everything a peer can hold is bounded: the request head (h11's incomplete-event limit), the body,
the time to send a request and to take a response, and the connections. A full server closes
its oldest idle connection to make room, so peers that only wait cannot lock others out.
"""

from __future__ import annotations

import errno
import http
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

import anyio
import anyio.abc
import h11
import msgspec
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus

from .._config_kinds import parse_socket_addr
from .._errors import SotaError, one_line
from .._warn_once import WarnOnce
from ._accept import accept_forever

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "Connection",
    "LocalServer",
    "Request",
    "RequestError",
    "host_allowed",
    "is_peer_gone",
    "origin_allowed",
    "url_host",
]

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and headers; h11's default, enough for any browser
MAX_BODY_BYTES = 64 * 1024
MAX_CONNECTIONS = 64
READ_TIMEOUT = 10.0  # to send a whole request
SEND_TIMEOUT = 30.0  # for a peer to take a response (or one chunk of a stream)
# After the last response, how long and how much a peer may keep sending before we close:
# closing with its input unread would reset the connection and lose the response it is reading.
LINGER_TIMEOUT = 2.0
LINGER_BYTES = 256 * 1024
_RECEIVE_SIZE = 64 * 1024


Handler = Callable[["Connection"], Awaitable[None]]


class Request(msgspec.Struct, frozen=True):
    """One complete request, as it arrived."""

    method: str  # "GET", as sent
    target: str  # "/events?x=1", as sent (latin-1 decoded)
    headers: list[tuple[str, str]]  # names lower-cased, values latin-1 decoded, in order
    body: bytes
    # Bytes already read after this request: after an Upgrade, the websocket client's first
    # frames; otherwise the start of pipelined requests, which read_request also reads next.
    leftover: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.split("?", 1)[0]


class RequestError(Exception):
    """A request that cannot be served; answer it with ``respond(status, ...)`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Connection:
    """One accepted TCP connection: read requests and answer them, in order (keep-alive)."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        peer: tuple[str, int],
        *,
        send_timeout: float = SEND_TIMEOUT,
        max_head: int = MAX_HEAD_BYTES,
    ) -> None:
        self.stream = stream
        self.peer = peer
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._max_head = max_head
        self._send_timeout = send_timeout
        self._idle = 0  # > 0 while the connection only waits: the server may evict it
        self._head_only = False  # the request being answered is a HEAD
        self._requests = 0
        self._partial = False  # some bytes of the request being read have arrived
        self.peer_closed = False  # the peer's end of file was seen
        self.evicted = False
        self.handled = False  # its handler has started
        self.scope = anyio.CancelScope()  # cancelled to evict

    # -- reading ---------------------------------------------------------------------------

    async def read_request(
        self,
        *,
        max_body: int = MAX_BODY_BYTES,
        timeout: float = READ_TIMEOUT,  # noqa: ASYNC109 - a deadline for the peer, not for us
    ) -> Request | None:
        """The next request, complete with its body.

        None when there is none to come: the peer closed cleanly before a new request, the
        previous exchange ended the connection (``Connection: close``, HTTP/1.0, an error), or
        a keep-alive connection sent nothing of a new request within ``timeout``.

        :raises RequestError: 400 for a malformed request, 413 for a body over ``max_body``,
            431 for a request head over the limit, 408 when the request took over ``timeout``.
        """
        h = self._h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
        elif h.our_state is not h11.IDLE or h.their_state is not h11.IDLE:
            return None
        self._partial = bool(h.trailing_data[0])
        with self.idle(), anyio.move_on_after(timeout):
            return await self._read(max_body)
        if self._requests and not self._partial:
            return None  # an idle keep-alive connection: close it quietly, as servers do
        raise RequestError(408, f"no complete request within {timeout:g} s")

    async def _read(self, max_body: int) -> Request | None:
        h = self._h11
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise RequestError(exc.error_status_hint, _protocol_message(exc)) from None
            if event is h11.NEED_DATA:
                if head is not None and h.they_are_waiting_for_100_continue:
                    reply = h11.InformationalResponse(
                        status_code=100, headers=[], reason=_reason(100)
                    )
                    await self._send(h.send(reply) or b"")
                h.receive_data(await self._receive())
            elif isinstance(event, h11.Request):
                head = event
                self._head_only = event.method == b"HEAD"
                # h11 bounds a head still arriving; one that came whole in a chunk, here.
                if _head_size(event) > self._max_head:
                    raise RequestError(431, _protocol_message(None))
                length = _header(event.headers, b"content-length")
                if length is not None and int(length) > max_body:  # h11 checked it is a number
                    raise RequestError(413, _too_large(int(length), max_body))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_body:
                    raise RequestError(413, _too_large(None, max_body))
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                self._requests += 1
                return Request(
                    method=head.method.decode("latin-1"),
                    target=head.target.decode("latin-1"),
                    headers=[
                        (name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in head.headers
                    ],
                    body=bytes(body),
                    leftover=bytes(h.trailing_data[0]),
                )
            else:  # ConnectionClosed (PAUSED cannot come before the request ends)
                return None

    async def _receive(self) -> bytes:
        try:
            data = await self.stream.receive(_RECEIVE_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            self.peer_closed = True
            return b""
        self._partial = True
        return data

    async def wait_closed(self) -> None:
        """Return when the peer closes or resets the connection; what it sends is dropped.

        For a response that streams while nothing is read (server-sent events).
        """
        if self.peer_closed:
            return
        while await self._receive():
            pass

    # -- answering --------------------------------------------------------------------------

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        """Send a whole response with its Content-Length; ``close`` ends the connection after.

        A status below 200 is informational and carries no body: ``101`` with the websocket
        handshake headers switches the connection over, and ``stream`` is then the caller's.
        """
        h = self._h11
        if status < 200:
            event = h11.InformationalResponse(
                status_code=status, headers=list(headers), reason=_reason(status)
            )
            await self._send(h.send(event) or b"")
            return
        # Input we did not read (a rejected request) leaves nothing to read the next one from.
        close = close or h.their_state not in (h11.DONE, h11.MUST_CLOSE)
        fields = [("Content-Type", content_type)] if content_type else []
        fields.append(("Content-Length", str(len(body))))
        fields.extend(headers)
        if close:
            fields.append(("Connection", "close"))
        data = h.send(h11.Response(status_code=status, headers=fields, reason=_reason(status)))
        if body and not self._head_only:
            data = (data or b"") + (h.send(h11.Data(data=body)) or b"")
        data = (data or b"") + (h.send(h11.EndOfMessage()) or b"")
        await self._send(data)

    async def start_stream(
        self, status: int, *, content_type: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Send the head of a response whose body follows in :meth:`send_chunk` calls
        (chunked to HTTP/1.1 peers, ended by closing for HTTP/1.0 ones)."""
        fields = [("Content-Type", content_type), *headers]
        event = h11.Response(status_code=status, headers=fields, reason=_reason(status))
        await self._send(self._h11.send(event) or b"")

    async def send_chunk(self, data: bytes) -> None:
        """Send part of a streamed body (nothing for a HEAD request)."""
        if data and not self._head_only:
            await self._send(self._h11.send(h11.Data(data=data)) or b"")

    async def end_stream(self) -> None:
        """End a streamed body."""
        await self._send(self._h11.send(h11.EndOfMessage()) or b"")

    async def _send(self, data: bytes) -> None:
        if not data:
            return
        with anyio.move_on_after(self._send_timeout) as scope:
            await self.stream.send(data)
        if scope.cancelled_caught:
            raise anyio.BrokenResourceError(
                f"the peer did not take {len(data)} bytes within {self._send_timeout:g} s"
            )

    @contextmanager
    def idle(self) -> Iterator[None]:
        """Mark the connection evictable while it only waits (for a request, say)."""
        self._idle += 1
        try:
            yield
        finally:
            self._idle -= 1

    @property
    def is_idle(self) -> bool:
        """Evictable: inside :meth:`idle`, or not yet handled at all."""
        return self._idle > 0 or not self.handled

    @property
    def can_answer(self) -> bool:
        """A response can still be sent: a request came and none was started for it (nor a
        protocol switch, which h11 never sees: a websocket handler sends its own 101)."""
        h = self._h11
        return h.our_state in (h11.IDLE, h11.SEND_RESPONSE) and h.their_state in (
            h11.SEND_BODY,
            h11.DONE,
            h11.ERROR,
        )

    async def linger(self) -> None:
        """Before closing: end our side, then drop what the peer still sends, briefly."""
        if self.peer_closed:
            return
        with self.idle(), anyio.move_on_after(LINGER_TIMEOUT):
            try:
                await self.stream.send_eof()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            dropped = 0
            while dropped < LINGER_BYTES and (data := await self._receive()):
                dropped += len(data)


class LocalServer:
    """Serves HTTP/1.1 on one local TCP address; ``handle`` runs once per connection."""

    def __init__(
        self,
        address: str,
        handle: Handler,
        *,
        name: str,
        max_connections: int = MAX_CONNECTIONS,
        setting: str | None = None,
        busy_body: tuple[str, bytes] = ("text/plain; charset=utf-8", b"too many connections\n"),
        send_timeout: float = SEND_TIMEOUT,
        max_head: int = MAX_HEAD_BYTES,
        scheme: str = "http",
    ) -> None:
        """``address``: ``127.0.0.1:8888``, ``[::1]:8888`` or ``http://127.0.0.1:8888``;
        ``name`` (``http gateway``), ``setting`` (``network.http_server``) and ``scheme`` (of the
        URL clients use: ``http``, ``ws``) go into messages;
        ``busy_body`` is the content type and body of the 503 for a full server.

        :raises SotaError: the address is not an IP address and port.
        """
        self.name = name
        self.scheme = scheme
        self.address = address
        self._setting = setting or "its address setting"
        try:
            self._host, self._port = parse_socket_addr(address)
        except ValueError as exc:
            raise SotaError(f"couldn't open the {name} on {address}: {exc}") from None
        self._handle = handle
        self.max_connections = max_connections
        self._busy = _busy_response(*busy_body)
        self._send_timeout = send_timeout
        self._max_head = max_head
        self._open: dict[Connection, None] = {}  # oldest first
        self._warn = WarnOnce(logger)  # server-wide warnings given since it was last idle
        self._failed: set[str] = set()  # kinds of handler failure already warned about

    @property
    def port(self) -> int:
        """The bound port once serving (tests bind port 0), else the configured one."""
        return self._port

    @property
    def host(self) -> str:
        """The IP address served."""
        return self._host

    @property
    def url(self) -> str:
        """``scheme://host:port`` of the server (the bound port once serving)."""
        return f"{self.scheme}://{url_host(self._host)}:{self._port}"

    @property
    def open_connections(self) -> int:
        """Connections counted against ``max_connections``."""
        return len(self._open)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind, report readiness, and serve until cancelled.

        :raises SotaError: the address cannot be bound, saying what to do about it.
        """
        try:
            sock = _bound_socket(self._host, self._port)
        except OSError as exc:
            raise self._bind_error(exc) from None
        listener = await SocketListener.from_socket(sock)
        async with listener:
            self._port = listener.extra(SocketAttribute.local_port)
            logger.info("The %s listens on %s", self.name, self.url)
            async with anyio.create_task_group() as tg:
                task_status.started()
                await self._accept_loop(listener, tg)

    def _bind_error(self, exc: OSError) -> SotaError:
        where = f"couldn't open the {self.name} on {self.address}"
        if exc.errno == errno.EADDRINUSE:
            advice = (
                "address already in use; another program (or another sota_client) listens "
                f"there: stop it, or choose another port in {self._setting}"
            )
        elif exc.errno == errno.EADDRNOTAVAIL:
            advice = (
                f"address not available; {self._host} is not an address of this device: use "
                f"127.0.0.1 or one of its own addresses in {self._setting}"
            )
        elif exc.errno in (errno.EACCES, errno.EPERM):
            advice = (
                "permission denied; ports below 1024 need privileges: choose a port from 1024 "
                f"up in {self._setting}"
            )
        else:
            advice = f"{(exc.strerror or str(exc)).lower()}; check {self._setting}"
        return SotaError(f"{where}: {advice}")

    # -- accepting ------------------------------------------------------------------------------

    async def _accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        async def take(stream: SocketStream) -> None:
            conn = await self._admit(stream)
            if conn is not None:
                tg.start_soon(self._run, conn)

        await accept_forever(listener, what=f"the {self.name}", admit=take, make_room=self._free)

    async def _free(self) -> None:
        """Out of descriptors: close the oldest idle connection for the one waiting."""
        victim = self._oldest_idle()
        if victim is not None:
            self._evict(victim)

    async def _admit(self, stream: SocketStream) -> Connection | None:
        """Count a new connection in, closing the oldest idle one if full; or refuse it."""
        peer = _peer_of(stream)
        if len(self._open) >= self.max_connections:
            victim = self._oldest_idle()
            if victim is None:
                self._warn(
                    "full",
                    "The %s has %d connections open (its limit), none of them idle; answered "
                    "one more, from %s, with 503",
                    self.name,
                    len(self._open),
                    _shown(peer),
                )
                _refuse(stream, self._busy)
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                return None
            self._warn(
                "evicted",
                "The %s has %d connections open (its limit); closed the oldest idle one, from %s",
                self.name,
                len(self._open),
                _shown(victim.peer),
            )
            self._evict(victim)
        conn = Connection(stream, peer, send_timeout=self._send_timeout, max_head=self._max_head)
        self._open[conn] = None
        return conn

    def _oldest_idle(self) -> Connection | None:
        return next((conn for conn in self._open if conn.is_idle), None)

    def _evict(self, conn: Connection) -> None:
        self._open.pop(conn, None)
        conn.evicted = True
        conn.scope.cancel()

    # -- one connection -------------------------------------------------------------------------

    async def _run(self, conn: Connection) -> None:
        conn.handled = True
        try:
            with conn.scope:
                try:
                    await self._handle(conn)
                except Exception as exc:
                    if is_peer_gone(exc):
                        logger.debug("A %s peer went away: %s", self.name, exc)
                        return
                    self._handler_failed(conn, exc)
                    if conn.can_answer:
                        await _answer_500(conn)
                await conn.linger()
        except Exception as exc:  # answering or lingering: the peer is gone
            logger.debug("A %s peer went away: %s", self.name, exc)
        finally:
            self._open.pop(conn, None)
            with anyio.CancelScope(shield=True):
                await conn.stream.aclose()
            if not self._open:
                self._warn.reset()

    def _handler_failed(self, conn: Connection, exc: Exception) -> None:
        """WARNING the first time per kind of exception, then DEBUG (a bug, not the peer's)."""
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        args = (self.name, _shown(conn.peer))
        if kind in self._failed:
            logger.debug("The %s failed on a connection from %s; closed it", *args, exc_info=exc)
        else:
            self._failed.add(kind)
            logger.warning(
                "The %s failed on a connection from %s; closed it (more failures like it are "
                "logged at DEBUG)",
                *args,
                exc_info=exc,
            )


def is_peer_gone(exc: BaseException) -> bool:
    """True for the errors of a peer that closed, reset or stopped reading (also in groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_peer_gone(inner) for inner in exc.exceptions)
    return isinstance(
        exc, anyio.BrokenResourceError | anyio.ClosedResourceError | anyio.EndOfStream
    ) or isinstance(exc, ConnectionError)


async def _answer_500(conn: Connection) -> None:
    with anyio.move_on_after(1.0):
        await conn.respond(500, b"internal error\n", content_type="text/plain", close=True)


def own_origins(host: str, port: int) -> tuple[str, ...]:
    """The origins of the pages a gateway at ``host:port`` serves, by the names a browser may
    use for it: the daemon's own pages, which the local API always lets in."""
    address = ipaddress.ip_address(host)
    shown = url_host(host)
    names = [shown]
    if address.is_loopback or address.is_unspecified:
        names += [name for name in ("127.0.0.1", "localhost", "[::1]") if name != shown]
    return tuple(f"http://{name}:{port}" for name in names)


def url_host(host: str) -> str:
    """An IP address as it goes into a URL: an IPv6 one in brackets."""
    return f"[{host}]" if ":" in host else host


def origin_allowed(request: Request, allowed: Sequence[str]) -> bool:
    """Whether a browser page may use this request: no ``Origin`` (not a browser) or an exact
    match with one of ``allowed`` (``scheme://host[:port]``; scheme and host in any case)."""
    origin = request.header("origin")
    if origin is None:
        return True
    wanted = _normal_origin(origin)
    return wanted is not None and any(_normal_origin(one) == wanted for one in allowed)


def host_allowed(request: Request, allowed: Sequence[str]) -> bool:
    """Whether the ``Host`` names this device: an IP address, ``localhost``, or the host of one
    of ``allowed``. A web page that rebinds its own name to 127.0.0.1 (DNS rebinding) sends its
    name, and so cannot read the local API; no ``Host`` (HTTP/1.0) is allowed."""
    host = request.header("host")
    if host is None:
        return True
    name = _host_of(host.strip())
    if name is None:
        return False
    if name == "localhost" or _is_ip(name):
        return True
    return any(_host_of(origin.partition("://")[2].rstrip("/")) == name for origin in allowed)


_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def _normal_origin(origin: str) -> tuple[str, str, str] | None:
    scheme, sep, rest = origin.strip().rstrip("/").partition("://")
    if not sep or not scheme or "/" in rest:
        return None
    host = _host_of(rest)
    if host is None:
        return None
    port = rest[len(rest) - len(rest.rpartition("]")[2]) :] if rest.startswith("[") else rest
    port = port.rpartition(":")[2] if ":" in port else ""
    scheme = scheme.lower()
    return scheme, host, port or _DEFAULT_PORTS.get(scheme, "")


def _host_of(authority: str) -> str | None:
    """The lower-cased host of ``host[:port]`` or ``[v6]:port``, or None if malformed."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return host.lower()
    host, _, port = authority.partition(":")
    if not host or (port and not port.isdigit()) or ":" in port:
        return None
    return host.lower()


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _too_large(length: int | None, limit: int) -> str:
    size = f"of {length} bytes" if length is not None else "over the limit"
    return f"request body {size}: the limit is {limit} bytes"


def _head_size(request: h11.Request) -> int:
    """About the bytes of the request line and headers as sent."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers) + 2


def _protocol_message(exc: h11.RemoteProtocolError | None) -> str:
    if exc is None or exc.error_status_hint == 431:
        return "request line and headers too large"
    return f"malformed HTTP request: {one_line(str(exc), 200)}"


def _busy_response(content_type: str, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
        + content_type.encode("latin-1")
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        + body
    )


def _refuse(stream: SocketStream, response: bytes) -> None:
    """Answer 503 without waiting for anything (the accept loop must not block on a peer)."""
    try:
        # A duplicate of the descriptor: asyncio hands out only a restricted socket object.
        fd = stream.extra(SocketAttribute.raw_socket).fileno()
        with socket.socket(fileno=os.dup(fd)) as raw:
            _discard_input(raw)
            raw.send(response, socket.MSG_DONTWAIT)
            raw.shutdown(socket.SHUT_WR)
            _discard_input(raw)
    except OSError as exc:
        logger.debug("couldn't tell a refused peer why: %s", exc)


def _discard_input(raw: socket.socket) -> None:
    """Drop what the peer already sent: closing with unread input would reset the connection."""
    for _ in range(16):  # bounded: at most a few socket buffers
        try:
            if not raw.recv(65536, socket.MSG_DONTWAIT):
                return
        except OSError:
            return


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart over TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _peer_of(stream: SocketStream) -> tuple[str, int]:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return ("?", 0)
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return (str(address), 0)


def _shown(peer: tuple[str, int]) -> str:
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
