"""A scriptable HTTP/1.1 server on 127.0.0.1, in a thread, that records every request exactly.

Each test routes ``(method, path)`` to handlers; a route given several handlers uses them in
turn and then keeps using the last. Handlers answer through :class:`Exchange`: plain responses,
chunked bodies, Range-aware byte serving, a body cut off midway, or no answer at all.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["Exchange", "Handler", "Recorded", "ScriptedServer", "answer", "serve_bytes"]

Handler = Callable[["Exchange"], None]


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived: header names keep their case and order."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def raw(self) -> bytes:
        """The request bytes: request line, headers, blank line, body."""
        head = f"{self.method} {self.target} {self.version}\r\n"
        head += "".join(f"{key}: {value}\r\n" for key, value in self.headers)
        return (head + "\r\n").encode("latin-1") + self.body


class Exchange:
    """The request being handled and the ways to answer it."""

    def __init__(self, handler: _RequestHandler, request: Recorded) -> None:
        self._handler = handler
        self.request = request

    def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        chunked: bool = False,
    ) -> None:
        """A complete response, with Content-Length (or chunked encoding)."""
        head = list(headers)
        if chunked:
            head.append(("Transfer-Encoding", "chunked"))
        else:
            head.append(("Content-Length", str(len(body))))
        self.head(status, head)
        if not chunked:
            self.write(body)
            return
        for start in range(0, len(body), 1000):
            piece = body[start : start + 1000]
            self.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.write(b"0\r\n\r\n")

    def json(self, status: int, body: bytes) -> None:
        self.respond(status, body, [("Content-Type", "application/json")])

    def truncated(
        self, status: int, body: bytes, send: int, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Announce all of ``body`` but send only ``send`` bytes, then close the connection."""
        self.head(status, [*headers, ("Content-Length", str(len(body)))])
        self.write(body[:send])
        self.drop()

    def drop(self) -> None:
        """Close the connection (after whatever was already sent)."""
        self._handler.close_connection = True
        self._handler.wfile.flush()
        self._handler.connection.shutdown(socket.SHUT_RDWR)

    def head(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Whatever"
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        lines += [f"{key}: {value}\r\n" for key, value in headers]
        self.write(("".join(lines) + "\r\n").encode("latin-1"))

    def write(self, data: bytes) -> None:
        self._handler.wfile.write(data)


def answer(status: int, body: bytes = b"", content_type: str | None = None) -> Handler:
    """A handler that always gives this response."""
    headers = [("Content-Type", content_type)] if content_type else []
    return lambda exchange: exchange.respond(status, body, headers)


def serve_bytes(
    exchange: Exchange,
    data: bytes,
    *,
    honor_range: bool = True,
    cut_after: int | None = None,
    chunked: bool = False,
) -> None:
    """Serve ``data`` like a file server: 206/416 for ``Range: bytes=N-`` unless told not to.

    ``cut_after`` sends only that many body bytes and then closes the connection.
    """
    headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
    status, start = 200, 0
    wanted = exchange.request.header("Range")
    if wanted and honor_range:
        match = re.fullmatch(r"bytes=(\d+)-", wanted)
        assert match, wanted
        start = int(match[1])
        if start >= len(data):
            exchange.respond(416, b"", [("Content-Range", f"bytes */{len(data)}")])
            return
        status = 206
        headers.append(("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"))
    body = data[start:]
    if cut_after is not None:
        exchange.truncated(status, body, cut_after, headers)
    else:
        exchange.respond(status, body, headers, chunked=chunked)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection cannot hold the server open for ever
    disable_nagle_algorithm = True  # head and body go out in separate writes
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._connected(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._disconnected(self.connection)

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline or not self.parse_request():
                self.close_connection = True
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded = Recorded(
                self.command,
                self.path,
                self.request_version,
                tuple((key, value) for key, value in self.headers.items()),
                body,
            )
            self.server.owner._handle(Exchange(self, recorded))
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    owner: ScriptedServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failures inside handlers are recorded by ScriptedServer._handle


class ScriptedServer:
    """``with ScriptedServer() as server:`` serves on ``server.url`` until the block ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], list[Handler]] = {}
        self._requests: list[Recorded] = []
        self._connections: set[socket.socket] = set()
        self.accepted = 0  # connections accepted so far
        self.errors: list[BaseException] = []
        self._server = _Server(("127.0.0.1", 0), _RequestHandler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[Recorded]:
        return [request for request in self.requests if request.path == path]

    def route(self, method: str, path: str, *handlers: Handler) -> None:
        with self._lock:
            self._routes[(method, path)] = list(handlers)

    def _handle(self, exchange: Exchange) -> None:
        request = exchange.request
        with self._lock:
            self._requests.append(request)
            handlers = self._routes.get((request.method, request.path))
            handler = None
            if handlers:
                handler = handlers.pop(0) if len(handlers) > 1 else handlers[0]
        if handler is None:
            exchange.respond(404, b"no route")
            return
        try:
            handler(exchange)
        except OSError:
            raise
        except BaseException as exc:
            self.errors.append(exc)
            exchange.respond(599, repr(exc).encode())

    def _connected(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
            self.accepted += 1

    def close_connections(self) -> None:
        """Close every open connection from the server's side (an idle timeout, say)."""
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _disconnected(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()  # joins the connection threads
        self._thread.join()
        if self.errors and exc is None:
            raise AssertionError(f"handler failures: {self.errors!r}")
