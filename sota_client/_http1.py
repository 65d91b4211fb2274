"""The daemon's HTTP/1.1 client: h11 for the framing, non-blocking sockets for the bytes.

Why not httpx (measured in docs/performance.md): httpx and one client cost about 9 MiB of an
idle daemon's memory and 120 ms of its start, and its body path copies every 64 KiB through
three layers of generators, which held downloads to a fifth of curl's speed. Here a response
body with a ``Content-Length`` is read with ``recv_into`` straight into the caller's buffer;
h11 parses the heads and the rare chunked or close-delimited body.

One idle keep-alive connection per origin is kept for ``keepalive`` seconds (longer than the
poll interval, so polls reuse it); one that the server closed meanwhile is noticed before
reuse. Every connect, read and write wait is bounded by ``timeout``.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import anyio
import h11

from ._errors import BackendError, TransportError, reason_phrase
from ._url import Url

__all__ = ["Connection", "HttpClient", "Response", "Url"]

HEAD_LIMIT = 64 << 10
"""Largest response head (status line and headers) accepted."""

_RECEIVE = 64 << 10
FILL_MIN = 256 << 10
"""A body read into a view at least this large is received in a worker thread, until the view
is full: one thread hop per view instead of an event-loop wake-up per socket read (docs/
performance.md, "Download")."""
_SLICE = 0.1
"""Seconds a worker thread waits on the socket before it looks whether its task was cancelled."""


class Connection:
    """One TCP (or TLS) connection; blocking calls never, every wait bounded by ``timeout``."""

    def __init__(self, sock: socket.socket, origin: tuple[str, str, int], timeout: float) -> None:
        self.sock = sock
        self.origin = origin
        self.timeout = timeout
        self.idle_since = 0.0
        self.requests = 0
        self._failure: OSError | None = None  # what ended the last fill early, raised next

    @classmethod
    async def open(cls, url: Url, limit: float, tls: Callable[[], ssl.SSLContext]) -> Connection:
        """Resolve, connect and (for https) shake hands, all within ``limit`` seconds; every
        later wait on the connection is bounded by ``limit`` too.

        :raises OSError: a name, connect or TLS failure. :raises TimeoutError: too slow.
        """
        with anyio.fail_after(limit):
            addresses = await anyio.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
            last: OSError | None = None
            for family, kind, proto, _name, address in addresses:
                sock = socket.socket(family, kind, proto)
                try:
                    await _connect(sock, address)
                except OSError as exc:
                    sock.close()
                    last = exc
                    continue
                break
            else:
                raise last or OSError(errno.EHOSTUNREACH, f"no address for {url.host}")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if url.scheme == "https":
                try:
                    sock = await _handshake(tls(), sock, url.host)
                except BaseException:
                    sock.close()
                    raise
        return cls(sock, url.origin, limit)

    async def send_all(self, data: bytes) -> None:
        """:raises OSError: the send failed. :raises TimeoutError: the peer took nothing."""
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                with anyio.fail_after(self.timeout):
                    await anyio.wait_writable(self.sock)
                continue
            except ssl.SSLWantReadError:
                with anyio.fail_after(self.timeout):
                    await anyio.wait_readable(self.sock)
                continue
            view = view[sent:]

    async def receive_into(self, view: memoryview) -> int:
        """Some bytes into ``view``, waiting for them; 0 at the end of the stream.

        :raises OSError: the receive failed. :raises TimeoutError: nothing came in time.
        """
        while True:
            try:
                return self.sock.recv_into(view)
            except (BlockingIOError, ssl.SSLWantReadError):
                with anyio.fail_after(self.timeout):
                    await anyio.wait_readable(self.sock)
            except ssl.SSLWantWriteError:
                with anyio.fail_after(self.timeout):
                    await anyio.wait_writable(self.sock)

    async def fill(self, view: memoryview) -> int:
        """Receive until ``view`` is full or the stream ends, in a worker thread; 0 at the end.

        Bytes that came before a failure are returned, and the failure is raised by the next
        call, so that the caller keeps them (a resumed download starts after them).

        :raises OSError: the receive failed. :raises TimeoutError: nothing came in time.
        """
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        count, self._failure = await anyio.to_thread.run_sync(self._fill_blocking, view)
        if not count and self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        return count

    def _fill_blocking(self, view: memoryview) -> tuple[int, OSError | None]:
        """:meth:`fill`'s worker: waits in slices of ``_SLICE`` s, leaving between them when
        the task that started it is cancelled (the bytes of an abandoned fill are not needed)."""
        count, waited = 0, 0.0
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        while count < len(view):
            try:
                received = self.sock.recv_into(view[count:])
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
                if waited >= self.timeout:
                    return count, TimeoutError(f"no data within {self.timeout:g} s")
                # TLS may need to write (a renegotiation) before it can read on.
                writing = isinstance(exc, ssl.SSLWantWriteError)
                poll.modify(self.sock, select.POLLOUT if writing else select.POLLIN)
                if not poll.poll(_SLICE * 1000):
                    waited += _SLICE
                    anyio.from_thread.check_cancelled()
                continue
            except OSError as exc:
                return count, exc
            if not received:
                break
            count += received
            waited = 0.0
        return count, None

    def looks_alive(self) -> bool:
        """False when the idle connection has something to read: the server's close (or
        bytes nobody asked for), so it cannot carry another request."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        self.sock.close()


async def _connect(sock: socket.socket, address: tuple[object, ...]) -> None:
    sock.setblocking(False)
    try:
        sock.connect(address)
    except BlockingIOError:
        await anyio.wait_writable(sock)
        failure = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if failure:
            raise OSError(failure, errno.errorcode.get(failure, "connect failed")) from None


async def _handshake(context: ssl.SSLContext, sock: socket.socket, host: str) -> ssl.SSLSocket:
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                await anyio.wait_readable(tls)
            except ssl.SSLWantWriteError:
                await anyio.wait_writable(tls)
    except BaseException:
        tls.close()  # the wrapped socket now owns the descriptor
        raise


class Response:
    """A response whose body is still to be read; :meth:`aclose` returns the connection to
    the pool when the body was read to its end and the server keeps the connection open."""

    def __init__(
        self,
        client: HttpClient,
        connection: Connection,
        parser: h11.Connection,
        head: h11.Response,
        request: tuple[str, Url],
    ) -> None:
        self.status = head.status_code
        self.reason = reason_phrase(head.status_code, head.reason.decode("latin-1"))
        self.headers: list[tuple[bytes, bytes]] = list(head.headers)
        self._client = client
        self._connection: Connection | None = connection
        self._parser = parser
        self._request = request
        self._reusable = head.http_version == b"1.1" and not _has_token(
            self.header("Connection"), "close"
        )
        self._buffered = b""  # body bytes received but not yet handed out
        self._remaining: int | None = None  # bytes left of a Content-Length body
        self._done = False
        length = self.header("Content-Length")
        chunked = _has_token(self.header("Transfer-Encoding"), "chunked")
        if request[0] == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            self._remaining = 0
        elif length is not None and not chunked:
            self._remaining = int(length)  # h11 checked that it is a number
        if self._remaining is not None:
            # Read past h11 from here on: what came with the head is the body's start.
            self._buffered = parser.trailing_data[0]

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        key = name.lower().encode("ascii")
        for header, value in self.headers:
            if header == key:
                return value.decode("latin-1")
        return None

    async def receive_into(self, view: memoryview) -> int:
        """Body bytes into ``view``; 0 once the body is complete.

        :raises TransportError: the connection failed or the server broke the framing.
        """
        if self._done or not len(view):
            return 0
        with self._client.errors(*self._request, sent=True, reading=True):
            if self._remaining is None:
                return await self._receive_framed(view)
            if not self._remaining:
                self._finished()
                return 0
            view = view[: self._remaining]
            if self._buffered:
                count = self._take_buffered(view)
            else:
                assert self._connection is not None
                if len(view) >= FILL_MIN:
                    count = await self._connection.fill(view)
                else:
                    count = await self._connection.receive_into(view)
                if not count:
                    raise h11.RemoteProtocolError(
                        f"the server closed the connection with {self._remaining} bytes "
                        "of the body still to come"
                    )
            self._remaining -= count
            if not self._remaining:
                self._finished()
            return count

    async def _receive_framed(self, view: memoryview) -> int:
        """The chunked or close-delimited body, through h11 (which hands out whole chunks, so
        what does not fit into ``view`` waits in ``_buffered`` for the next call)."""
        assert self._connection is not None
        if self._buffered:
            return self._take_buffered(view)
        while True:
            event = self._parser.next_event()
            if event is h11.NEED_DATA:
                data = bytearray(_RECEIVE)
                count = await self._connection.receive_into(memoryview(data))
                self._parser.receive_data(bytes(data[:count]))
                continue
            if isinstance(event, h11.Data):
                count = min(len(view), len(event.data))
                view[:count] = event.data[:count]
                self._buffered = bytes(event.data[count:])
                return count
            if isinstance(event, h11.EndOfMessage):
                self._finished(reusable=not self._parser.trailing_data[0])
                return 0
            if isinstance(event, h11.ConnectionClosed):
                self._finished(reusable=False)
                return 0
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a body")

    def _take_buffered(self, view: memoryview) -> int:
        count = min(len(view), len(self._buffered))
        view[:count] = self._buffered[:count]
        self._buffered = self._buffered[count:]
        return count

    async def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (the rest is left unread).

        :raises TransportError: as :meth:`receive_into`.
        """
        body = bytearray()
        chunk = memoryview(bytearray(min(_RECEIVE, max(limit, 1))))
        while len(body) < limit:
            count = await self.receive_into(chunk[: limit - len(body)])
            if not count:
                break
            body += chunk[:count]
        return bytes(body)

    def _finished(self, reusable: bool = True) -> None:
        self._done = True
        self._reusable = self._reusable and reusable and not self._buffered

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._done and self._reusable:
            self._client.release(connection)
        else:
            connection.close()


def _has_token(value: str | None, token: str) -> bool:
    return value is not None and token in (part.strip().lower() for part in value.split(","))


class HttpClient:
    """HTTP/1.1 requests over a small pool of keep-alive connections.

    :param tls: builds the TLS context; called once, at the first https connection.
    :param timeout: seconds for each connect, read and write wait.
    :param keepalive: seconds an idle connection is kept for the next request.
    :param headers: sent first in every request, after ``Host`` (in this order).
    """

    MAX_IDLE = 4

    def __init__(
        self,
        *,
        tls: Callable[[], ssl.SSLContext],
        timeout: float,
        keepalive: float,
        headers: Iterable[tuple[str, str]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_tls = tls
        self._tls: ssl.SSLContext | None = None
        self.timeout = timeout
        self.keepalive = keepalive
        self.headers = list(headers)
        self._clock = clock
        self._idle: list[Connection] = []

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = self._make_tls()
        return self._tls

    async def request(
        self,
        method: str,
        url: Url,
        headers: Iterable[tuple[str, str]] = (),
        content: bytes | None = None,
    ) -> Response:
        """Send the request and read the response head; the caller reads the body and closes.

        :raises BackendError: a header that cannot be sent.
        :raises TransportError: no connection, or the exchange failed.
        """
        all_headers = [("Host", url.netloc), *self.headers, *headers]
        if content is not None:
            all_headers.append(("Content-Length", str(len(content))))
        parser, data = _serialized(method, url, all_headers, content)
        connection = self._reused(url)
        if connection is not None:
            try:
                return await self._exchange(connection, parser, data, method, url)
            except _KeptConnectionLost as lost:
                if method not in _IDEMPOTENT:
                    raise lost.error from None  # a report in doubt: its owner checks with Core
                # The server closed the kept connection as the request went out, before it
                # answered a byte: sending it again on a new connection cannot do it twice.
                parser, data = _serialized(method, url, all_headers, content)
        with self.errors(method, url, sent=False, reading=False):
            connection = await Connection.open(url, self.timeout, self._context)
        try:
            return await self._exchange(connection, parser, data, method, url)
        except _KeptConnectionLost as lost:
            raise lost.error from None

    async def _exchange(
        self, connection: Connection, parser: h11.Connection, data: bytes, method: str, url: Url
    ) -> Response:
        """Send the request on ``connection`` and read the response head."""
        received = bytearray()
        try:
            try:
                with self.errors(method, url, sent=True, reading=False):
                    await connection.send_all(data)
                with self.errors(method, url, sent=True, reading=True):
                    head = await _receive_head(connection, parser, received)
            except TransportError as exc:
                if connection.requests and not received:
                    raise _KeptConnectionLost(exc) from exc
                raise
        except BaseException:
            connection.close()
            raise
        connection.requests += 1
        return Response(self, connection, parser, head, (method, url))

    def _reused(self, url: Url) -> Connection | None:
        now = self._clock()
        for connection in reversed(self._idle):
            if connection.origin != url.origin:
                continue
            self._idle.remove(connection)
            if now - connection.idle_since <= self.keepalive and connection.looks_alive():
                return connection
            connection.close()
        return None

    def release(self, connection: Connection) -> None:
        """Keep a connection whose exchange ended cleanly, for the next request."""
        now = self._clock()
        for stale in [c for c in self._idle if now - c.idle_since > self.keepalive]:
            self._idle.remove(stale)
            stale.close()
        connection.idle_since = now
        self._idle.append(connection)
        while len(self._idle) > self.MAX_IDLE:
            self._idle.pop(0).close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    @contextmanager
    def errors(self, method: str, url: Url, *, sent: bool, reading: bool) -> Iterator[None]:
        """Socket, TLS, timeout and framing failures as one TransportError naming the request.

        ``sent`` says whether the server may have seen the request (``maybe_delivered``).
        """
        try:
            yield
        except TimeoutError:
            what = "timed out waiting for data" if reading else "timed out sending"
            if not sent:
                what = "timed out connecting"
            detail = f"no answer within {self.timeout:g} s"
            raise _failure(method, url, what, detail, sent) from None
        except h11.RemoteProtocolError as exc:
            what = "the server closed the connection or broke HTTP"
            raise _failure(method, url, what, str(exc), sent) from exc
        except OSError as exc:
            if not sent:
                what = "could not connect"
            else:
                what = "receiving failed" if reading else "sending failed"
            raise _failure(method, url, what, str(exc) or type(exc).__name__, sent) from exc


def _failure(method: str, url: Url, what: str, detail: str, sent: bool) -> TransportError:
    return TransportError(
        f"HTTP transport error: {method} {url.shown()}: {what}: {detail}", maybe_delivered=sent
    )


def _serialized(
    method: str, url: Url, headers: list[tuple[str, str]], content: bytes | None
) -> tuple[h11.Connection, bytes]:
    """The request's bytes, and the h11 state that then reads its response."""
    parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
    try:
        data = parser.send(h11.Request(method=method, target=url.target, headers=headers))
        if content:
            data += parser.send(h11.Data(data=content))
        data += parser.send(h11.EndOfMessage())
    except (h11.LocalProtocolError, UnicodeError, ValueError, TypeError) as exc:
        raise BackendError(
            f"Http client error: cannot make the request {method} {url.shown()}: {exc}"
        ) from exc
    return parser, data


_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class _KeptConnectionLost(Exception):
    """A kept connection failed before any byte of the answer: the server closed it."""

    def __init__(self, error: TransportError) -> None:
        super().__init__(str(error))
        self.error = error


async def _receive_head(
    connection: Connection, parser: h11.Connection, received: bytearray
) -> h11.Response:
    """Read until h11 has the final response head (1xx interim answers are skipped); what
    arrives is also added to ``received``."""
    buffer = bytearray(_RECEIVE)
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            count = await connection.receive_into(memoryview(buffer))
            received += buffer[:count]
            parser.receive_data(bytes(buffer[:count]))
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("the server closed the connection without an answer")
        raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} before the answer")
