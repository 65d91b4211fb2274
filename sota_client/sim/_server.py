"""The HTTP/1.1 server: one thread per keep-alive connection, faults applied on the wire.

The accept loop and every connection thread stop promptly on :meth:`HttpServer.stop`, which
closes every socket it opened, so tests run under ``filterwarnings = error`` see no leak.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from ._app import SimApp
from ._errors import Rejection
from ._faults import (
    ChunkedFault,
    DelayFault,
    DropFault,
    ExpireTokensFault,
    Fault,
    LoseAnswerFault,
    RedirectFault,
    StallFault,
    StatusFault,
    TruncateFault,
)
from ._http import (
    JSON,
    BodyStream,
    Request,
    Response,
    error_response,
    json_response,
    media_type,
    read_body,
    request_body_length,
    send_response,
    text_response,
    too_big,
)
from ._routes import RouteMatch, dispatch, resolve

__all__ = ["SERVER_NAME", "HttpServer"]

SERVER_NAME = "sota-core-sim"


def _header_dict(headers: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _fault_kind(fault: Fault) -> str:
    return str(fault.__struct_config__.tag)


class _Connection(BaseHTTPRequestHandler):
    """Serves the requests of one connection until it closes, times out or the server stops."""

    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    disable_nagle_algorithm = True

    def __init__(self, conn: socket.socket, address: Any, owner: HttpServer) -> None:
        # Not BaseRequestHandler.__init__, which wants a socketserver.BaseServer; the steps
        # are the same: setup, handle, finish.
        self.owner = owner
        self.app = owner.app
        self.request = conn
        self.client_address = address
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        super().setup()
        # Bounds every read and write: an idle or stalled client cannot hold a thread forever.
        self.connection.settimeout(self.owner.idle_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log in the simulator's state is the record."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # BaseHTTPRequestHandler calls this for requests it cannot parse.
        self._write(text_response(code, message or HTTPStatus(code).phrase), close=True)

    def _upload_body(self, match: RouteMatch) -> bool:
        route = match.route
        return route is not None and route.upload and media_type(self.headers) != JSON

    def _limit(self, match: RouteMatch) -> int:
        return self.app.max_upload if self._upload_body(match) else self.app.max_body

    def handle_expect_100(self) -> bool:
        # Refuse an oversized body before the client sends it.
        match = resolve(self.command, urlsplit(self.path).path)
        try:
            length = request_body_length(self.headers)
        except Rejection:
            length = None
        if length is not None and length > (limit := self._limit(match)):
            self._write(error_response(too_big(length, limit)), close=True)
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        self._serve_one()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _serve_one(self) -> None:
        parsed = self._read_request()
        if parsed is None:
            return
        match, req, body_size = parsed
        app, route = self.app, match.route
        if route is not None and route.access == "admin":
            # The admin API is the test talking to the simulator: neither logged nor faulted.
            response = self._run(match, req)
            if response is not None:
                self._respond(req, response)
            return

        record = app.state.log_request(
            req.method,
            self.path,
            _header_dict(self.headers),
            route=route.name if route else None,
            device=(req.params.get("device") or "").lower() or None,
            body_size=body_size,
        )
        fault = app.faults.take(req.method, req.path, route.name if route else None)
        if fault is not None:
            app.state.note_fault(record, _fault_kind(fault))
        if isinstance(fault, DropFault):
            app.state.finish_request(record, None)
            self.close_connection = True
            return
        if isinstance(fault, DelayFault):
            app.stopping.wait(fault.seconds)
        if isinstance(fault, ExpireTokensFault) and app.tokens is not None:
            app.tokens.revoke_all()

        if isinstance(fault, StatusFault):
            response = Response(fault.status, fault.body.encode(), fault.content_type)
            if fault.location is not None:
                response.headers.append(("Location", fault.location))
        else:
            req.redirect = isinstance(fault, RedirectFault)
            response = self._run(match, req)
        if isinstance(fault, LoseAnswerFault):
            app.state.finish_request(record, None)
            self.close_connection = True
            return
        app.state.finish_request(record, None if response is None else response.status)
        if response is not None:
            self._respond(
                req,
                response,
                chunk_size=fault.chunk_size if isinstance(fault, ChunkedFault) else None,
                truncate_at=fault.after if isinstance(fault, TruncateFault | StallFault) else None,
            )
            if isinstance(fault, StallFault):
                self.app.stopping.wait(fault.seconds)

    def _read_request(self) -> tuple[RouteMatch, Request, int] | None:
        """Route the request and read its body; None when it was answered or the client left."""
        target = urlsplit(self.path)
        if not target.path.startswith("/"):
            self._write(text_response(400, "request target must be an absolute path"), close=True)
            return None
        match = resolve(self.command, target.path)
        try:
            length = request_body_length(self.headers)
            limit = self._limit(match)
            if length is not None and length > limit:
                raise too_big(length, limit)
            pieces = read_body(self.rfile, length, limit)
            stream, body = None, b""
            if self._upload_body(match):
                stream = BodyStream(pieces)
            else:
                body = b"".join(pieces)
        except Rejection as exc:
            self._write(error_response(exc), close=True)
            return None
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return None
        req = Request(self.command, target.path, target.query, self.headers, match.params, body)
        req.stream = stream
        return match, req, len(body) if stream is None else (length or 0)

    def _run(self, match: RouteMatch, req: Request) -> Response | None:
        """The route's response; None when the client went away mid-request."""
        try:
            return dispatch(self.app, match, req)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return None
        except Exception as exc:
            # A bug in a handler must not take the connection thread down with it.
            return json_response(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _respond(
        self,
        req: Request,
        response: Response,
        *,
        chunk_size: int | None = None,
        truncate_at: int | None = None,
    ) -> None:
        # An upload the handler did not read leaves the connection out of step: hang up.
        close = req.stream is not None and not req.stream.exhausted
        complete = self._write(
            response,
            head_only=req.method == "HEAD",
            chunk_size=chunk_size,
            truncate_at=truncate_at,
            close=close,
        )
        if truncate_at is not None or not complete or self.app.stopping.is_set():
            self.close_connection = True

    def _write(
        self,
        response: Response,
        *,
        head_only: bool = False,
        chunk_size: int | None = None,
        truncate_at: int | None = None,
        close: bool = False,
    ) -> bool:
        if close:
            self.close_connection = True
        try:
            return send_response(
                self.connection,
                response,
                server=SERVER_NAME,
                head_only=head_only,
                chunk_size=chunk_size,
                truncate_at=truncate_at,
                close=close,
            )
        except (OSError, ValueError):
            self.close_connection = True
            return False


class HttpServer:
    """A listening socket, its accept thread, and a thread per connection (at most
    ``max_connections``; further connections are closed at once)."""

    def __init__(
        self,
        app: SimApp,
        host: str,
        port: int,
        *,
        idle_timeout: float = 30.0,
        max_connections: int = 256,
    ) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        try:
            self._sock.setblocking(False)
            self.port: int = self._sock.getsockname()[1]
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self._sock.close()
            raise
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._accepting = threading.Thread(
            target=self._accept_loop, name=f"sim-accept-{self.port}", daemon=True
        )
        self._stopped = False

    def start(self) -> None:
        self._accepting.start()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        conn, address = self._sock.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    except OSError:
                        # Out of descriptors: back off briefly (or until stop) rather than spin.
                        self.app.stopping.wait(0.05)
                        continue
                    self._spawn(conn, address)

    def _spawn(self, conn: socket.socket, address: Any) -> None:
        with self._lock:
            if len(self._conns) >= self.max_connections:
                conn.close()
                return
            thread = threading.Thread(
                target=self._serve, args=(conn, address), name="sim-conn", daemon=True
            )
            self._conns[conn] = thread
        thread.start()

    def _serve(self, conn: socket.socket, address: Any) -> None:
        try:
            _Connection(conn, address, self)
        except (OSError, ValueError):
            pass  # the peer reset or timed out; the connection simply ends
        finally:
            with self._lock:
                self._conns.pop(conn, None)
                conn.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, cut every open connection, and wait for their threads."""
        if self._stopped:
            return
        self._stopped = True
        self.app.stopping.set()
        if self._accepting.is_alive():
            self._wake_w.send(b"x")
            self._accepting.join()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        with self._lock:
            threads = list(self._conns.values())
            for conn in self._conns:
                # Under the lock, so a connection thread cannot close (and free the fd) meanwhile.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout)
