"""The local HTTP server of the HTTP and websocket gateways, over real TCP sockets on 127.0.0.1.

Requests arrive whole and bounded (head, body, time); connections are capped, and a full server
closes its oldest idle one for a newcomer, so idle peers cannot lock anyone out; a failing
handler costs its connection only.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import anyio
import pytest
from anyio.abc import SocketStream

from sota_client._errors import SotaError
from sota_client.gateways._local_http import (
    Connection,
    LocalServer,
    Request,
    RequestError,
    host_allowed,
    origin_allowed,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[Connection], Awaitable[None]]


# -- a raw HTTP client -----------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased
    body: bytes
    raw: bytes  # status line, headers and body exactly as received

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name.lower()), None)


class Reader:
    """Reads responses off a connection byte by byte as sent, with no HTTP library between."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False

    async def _more(self) -> None:
        try:
            self.buffer += await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            self.eof = True
            raise AssertionError(f"end of stream; got {bytes(self.buffer)!r}") from None

    async def until(self, marker: bytes) -> bytes:
        while (at := self.buffer.find(marker)) < 0:
            await self._more()
        data = bytes(self.buffer[: at + len(marker)])
        del self.buffer[: at + len(marker)]
        return data

    async def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._more()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def head(self) -> tuple[int, list[tuple[str, str]], bytes]:
        raw = await self.until(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.lower(), value.strip()))
        return status, headers, raw

    async def response(self, *, head_only: bool = False) -> Response:
        status, headers, raw = await self.head()
        while 100 <= status < 200 and status != 101:  # 100 Continue: the real one follows
            status, headers, raw = await self.head()
        length = next((int(v) for k, v in headers if k == "content-length"), None)
        body = b""
        if length is not None and not head_only:
            body = await self.exactly(length)
        return Response(status, headers, body, raw + body)

    async def at_eof(self) -> bytes:
        """Everything until the peer closes (b"" if it closes at once)."""
        while not self.eof:
            try:
                self.buffer += await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                self.eof = True
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[Reader]:
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            yield Reader(stream)


def request(
    method: str = "GET",
    target: str = "/",
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    *,
    length: bool = True,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length and (body or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def exchange(port: int, data: bytes) -> Response:
    async with connected(port) as reader:
        await reader.stream.send(data)
        return await reader.response()


# -- servers to test -------------------------------------------------------------------------


@asynccontextmanager
async def serving(handler: Handler, *, max_connections: int = 64) -> AsyncIterator[LocalServer]:
    server = LocalServer(
        "127.0.0.1:0", handler, name="test server", max_connections=max_connections
    )
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        yield server
        tg.cancel_scope.cancel()


def echo_handler(
    *,
    max_body: int = 1024,
    timeout: float = 10.0,
    seen: list[Request | None] | None = None,
    reading: Callable[[], None] | None = None,
) -> Handler:
    """Answers each request with ``METHOD target body-length`` and the body, keep-alive;
    ``reading()`` is called as it starts to wait for a request (so, idle)."""

    async def handle(conn: Connection) -> None:
        while True:
            if reading is not None:
                reading()
            try:
                req = await conn.read_request(max_body=max_body, timeout=timeout)
            except RequestError as exc:
                await conn.respond(exc.status, exc.message.encode(), close=True)
                return
            if seen is not None:
                seen.append(req)
            if req is None:
                return
            text = f"{req.method} {req.target} {len(req.body)}\n".encode()
            await conn.respond(200, text + req.body, content_type="text/plain")

    return handle


# -- requests ----------------------------------------------------------------------------------


async def test_a_request_arrives_whole_with_its_headers_in_order() -> None:
    seen: list[Request | None] = []
    async with serving(echo_handler(seen=seen)) as server:
        response = await exchange(
            server.port,
            request(
                "POST",
                "/events?x=1&y=%C3%A9",
                b'{"a":1}',
                (("X-One", "1"), ("Content-Type", "application/json"), ("x-one", "2")),
            ),
        )
    assert response.status == 200
    assert response.body == b'POST /events?x=1&y=%C3%A9 7\n{"a":1}'
    req = seen[0]
    assert req is not None
    assert (req.method, req.target, req.path, req.body) == (
        "POST",
        "/events?x=1&y=%C3%A9",
        "/events",
        b'{"a":1}',
    )
    assert req.headers == [
        ("host", "127.0.0.1"),
        ("x-one", "1"),
        ("content-type", "application/json"),
        ("x-one", "2"),
        ("content-length", "7"),
    ]
    assert req.header("X-ONE") == "1"
    assert req.header("missing") is None
    assert req.leftover == b""


async def test_keep_alive_answers_requests_in_order_also_pipelined() -> None:
    async with serving(echo_handler()) as server, connected(server.port) as reader:
        await reader.stream.send(request("GET", "/one"))
        assert (await reader.response()).body == b"GET /one 0\n"
        # Two at once: the second waits in the buffer and is answered after the first.
        await reader.stream.send(request("PUT", "/two", b"2") + request("GET", "/three"))
        assert (await reader.response()).body == b"PUT /two 1\n2"
        assert (await reader.response()).body == b"GET /three 0\n"


async def test_a_peer_that_closes_before_a_request_reads_as_none() -> None:
    seen: list[Request | None] = []
    done = anyio.Event()

    async def handle(conn: Connection) -> None:
        seen.append(await conn.read_request())
        done.set()

    async with serving(handle) as server:
        async with connected(server.port):
            pass
        with anyio.fail_after(10):
            await done.wait()
    assert seen == [None]


async def test_a_connection_close_request_gets_its_answer_then_the_end() -> None:
    async with serving(echo_handler()) as server, connected(server.port) as reader:
        await reader.stream.send(request("GET", "/", headers=(("Connection", "close"),)))
        response = await reader.response()
        assert response.header("connection") == "close"
        assert await reader.at_eof() == b""


async def test_http_1_0_is_answered_and_closed() -> None:
    async with serving(echo_handler()) as server, connected(server.port) as reader:
        await reader.stream.send(b"GET /old HTTP/1.0\r\n\r\n")
        response = await reader.response()
        assert response.body == b"GET /old 0\n"
        assert await reader.at_eof() == b""


async def test_a_head_request_gets_the_headers_only() -> None:
    async with serving(echo_handler()) as server, connected(server.port) as reader:
        await reader.stream.send(request("HEAD", "/x") + request("GET", "/y"))
        head = await reader.response(head_only=True)
        assert head.header("content-length") == str(len(b"HEAD /x 0\n"))
        assert (await reader.response()).body == b"GET /y 0\n"  # nothing came in between


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with serving(echo_handler()) as server, connected(server.port) as reader:
        head = request("POST", "/", b"hello", (("Expect", "100-continue"),))
        head, body = head[: -len(b"hello")], b"hello"
        await reader.stream.send(head)
        assert await reader.until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        await reader.stream.send(body)
        assert (await reader.response()).body == b"POST / 5\nhello"


# -- bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "text"),
    [
        pytest.param(b"garbage\r\n\r\n", 400, "malformed HTTP request: ", id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, "Host", id="no-host"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400, "", id="bad-length"
        ),
        pytest.param(
            request(headers=(("X-Big", "a" * 20_000),)),
            431,
            "request line and headers too large",
            id="head-too-large",
        ),
        pytest.param(
            request("GET", "/" + "a" * 20_000),
            431,
            "request line and headers too large",
            id="target-too-large",
        ),
        pytest.param(
            request("POST", "/", b"x" * 1025),
            413,
            "request body of 1025 bytes: the limit is 1024 bytes",
            id="declared-body",
        ),
        pytest.param(
            request("POST", "/", headers=(("Transfer-Encoding", "chunked"),), length=False)
            + b"400\r\n"
            + b"x" * 0x400
            + b"\r\n1\r\nx\r\n0\r\n\r\n",
            413,
            "request body over the limit: the limit is 1024 bytes",
            id="chunked-body",
        ),
    ],
)
async def test_bad_requests_get_their_status_and_the_connection_ends(
    data: bytes, status: int, text: str
) -> None:
    async with serving(echo_handler()) as server, connected(server.port) as reader:
        await reader.stream.send(data)
        response = await reader.response()
        assert response.status == status
        assert text in response.body.decode()
        assert response.header("connection") == "close"
        assert await reader.at_eof() == b""


async def test_a_body_at_the_limit_is_fine() -> None:
    async with serving(echo_handler()) as server:
        response = await exchange(server.port, request("POST", "/", b"x" * 1024))
    assert response.status == 200


async def test_a_request_that_does_not_finish_in_time_gets_408() -> None:
    async with serving(echo_handler(timeout=0.05)) as server, connected(server.port) as reader:
        await reader.stream.send(b"GET / HTTP/1.1\r\nHost: a\r\n")  # never ends
        response = await reader.response()
        assert (response.status, response.body) == (408, b"no complete request within 0.05 s")
        assert await reader.at_eof() == b""


async def test_the_first_request_must_come_in_time_too() -> None:
    async with serving(echo_handler(timeout=0.05)) as server, connected(server.port) as reader:
        assert (await reader.response()).status == 408


async def test_an_idle_keep_alive_connection_is_closed_quietly() -> None:
    async with serving(echo_handler(timeout=0.05)) as server, connected(server.port) as reader:
        await reader.stream.send(request())
        assert (await reader.response()).status == 200
        assert await reader.at_eof() == b""  # no 408 for a request nobody started


# -- streaming and protocol switches ------------------------------------------------------------


async def test_a_streamed_response_is_chunked() -> None:
    async def handle(conn: Connection) -> None:
        assert await conn.read_request() is not None
        await conn.start_stream(200, content_type="text/event-stream")
        await conn.send_chunk(b"data: 1\n\n")
        await conn.send_chunk(b"")  # nothing: not the end of the body
        await conn.send_chunk(b"data: 2\n\n")
        await conn.end_stream()

    async with serving(handle) as server, connected(server.port) as reader:
        await reader.stream.send(request("GET", "/events"))
        assert await reader.until(b"\r\n\r\n") == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        assert await reader.at_eof() == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"


async def test_an_upgrade_hands_over_the_stream_with_the_bytes_after_the_request() -> None:
    async def handle(conn: Connection) -> None:
        req = await conn.read_request()
        assert req is not None
        assert req.header("upgrade") == "websocket"
        await conn.respond(101, headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        frames = bytearray(req.leftover)
        while len(frames) < len(b"FRAMES"):  # what did not come with the request
            frames += await conn.stream.receive()
        await conn.stream.send(b"echo:" + bytes(frames))

    upgrade = request(headers=(("Upgrade", "websocket"), ("Connection", "Upgrade")))
    async with serving(handle) as server, connected(server.port) as reader:
        await reader.stream.send(upgrade + b"FRAMES")
        assert await reader.until(b"\r\n\r\n") == (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        assert await reader.at_eof() == b"echo:FRAMES"


async def test_a_declined_upgrade_is_answered_and_closed() -> None:
    async def handle(conn: Connection) -> None:
        req = await conn.read_request()
        assert req is not None
        await conn.respond(400, b"no", content_type="text/plain")
        assert await conn.read_request() is None

    upgrade = request(headers=(("Upgrade", "websocket"), ("Connection", "Upgrade")))
    async with serving(handle) as server, connected(server.port) as reader:
        await reader.stream.send(upgrade + b"FRAMES")
        response = await reader.response()
        assert (response.status, response.header("connection")) == (400, "close")


# -- connections ---------------------------------------------------------------------------------


async def test_idle_connections_make_room_for_a_new_one() -> None:
    """``max_connections`` peers that send nothing: the next peer is served, and the oldest
    idle one is closed for it."""
    async with serving(echo_handler(), max_connections=3) as server:
        async with (
            connected(server.port) as first,
            connected(server.port),
            connected(server.port),
        ):
            response = await exchange(server.port, request("GET", "/new"))
            assert (response.status, response.body) == (200, b"GET /new 0\n")
            assert await first.at_eof() == b""  # the oldest was closed for it


@contextmanager
def no_free_descriptors() -> Iterator[None]:
    """Lower the soft open-file limit to the lowest free descriptor: no new one can be opened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_out_of_descriptors_the_oldest_idle_connection_makes_room() -> None:
    """The shared accept loop: no accept error ends the server, and room is made only for a
    peer that is really waiting."""
    async with serving(echo_handler()) as server, connected(server.port) as first:
        await first.stream.send(request("GET", "/first"))
        assert (await first.response()).status == 200  # accepted, and now idle
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # made while it can be
        try:
            with no_free_descriptors():
                client.connect(("127.0.0.1", server.port))
                client.sendall(request("GET", "/new"))
                with anyio.fail_after(10):
                    async with await SocketStream.from_socket(client) as stream:
                        response = await Reader(stream).response()
            assert (response.status, response.body) == (200, b"GET /new 0\n")
            assert await first.at_eof() == b""  # the oldest idle one was closed for it
        finally:
            client.close()


async def test_keep_alive_connections_waiting_for_a_request_are_idle_too() -> None:
    waits = 0
    both_wait_again = anyio.Event()

    def reading() -> None:
        nonlocal waits
        waits += 1
        if waits == 4:  # each connection: its first request, then the next one
            both_wait_again.set()

    async with serving(echo_handler(reading=reading), max_connections=2) as server:
        async with connected(server.port) as first, connected(server.port) as second:
            for reader in (first, second):
                await reader.stream.send(request())
                assert (await reader.response()).status == 200
            with anyio.fail_after(10):
                await both_wait_again.wait()
            response = await exchange(server.port, request("GET", "/third"))
            assert response.status == 200
            assert await first.at_eof() == b""


async def test_a_server_whose_connections_are_all_busy_answers_503() -> None:
    busy = 0
    all_busy = anyio.Event()
    release = anyio.Event()

    async def handle(conn: Connection) -> None:
        nonlocal busy
        assert await conn.read_request() is not None
        busy += 1
        if busy == 2:
            all_busy.set()
        await release.wait()  # working, not idle
        await conn.respond(200, b"done")

    async with serving(handle, max_connections=2) as server:
        async with connected(server.port) as one, connected(server.port) as two:
            for reader in (one, two):
                await reader.stream.send(request())
            with anyio.fail_after(10):
                await all_busy.wait()
            async with connected(server.port) as third:
                refused = await third.response()
                assert (refused.status, refused.body) == (503, b"too many connections\n")
                assert refused.header("connection") == "close"
                assert refused.header("retry-after") == "1"
                assert await third.at_eof() == b""
            release.set()
            for reader in (one, two):
                assert (await reader.response()).body == b"done"


async def test_a_failing_handler_costs_its_connection_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handle(conn: Connection) -> None:
        req = await conn.read_request()
        assert req is not None
        if req.path == "/boom":
            raise RuntimeError("handler bug")
        await conn.respond(200, b"fine")

    with caplog.at_level(logging.DEBUG, logger="sota_client"):
        async with serving(handle) as server:
            for _ in range(2):
                async with connected(server.port) as reader:
                    await reader.stream.send(request("GET", "/boom"))
                    response = await reader.response()
                    assert (response.status, response.body) == (500, b"internal error\n")
                    assert await reader.at_eof() == b""
            assert (await exchange(server.port, request())).body == b"fine"
    failures = [r for r in caplog.records if "failed on a connection" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG]
    assert failures[0].exc_info is not None


async def test_a_handler_that_fails_after_answering_just_closes() -> None:
    async def handle(conn: Connection) -> None:
        assert await conn.read_request() is not None
        await conn.respond(200, b"answered")
        raise RuntimeError("after the answer")

    async with serving(handle) as server, connected(server.port) as reader:
        await reader.stream.send(request())
        assert (await reader.response()).body == b"answered"
        assert await reader.at_eof() == b""


async def test_serve_logs_where_it_listens(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sota_client"):
        async with serving(echo_handler()) as server:
            pass
    assert f"The test server listens on http://127.0.0.1:{server.port}" in caplog.text


async def test_a_port_in_use_is_a_clear_start_up_error() -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as taken:
        port = taken.extra(anyio.abc.SocketAttribute.local_port)
        server = LocalServer(
            f"127.0.0.1:{port}", echo_handler(), name="http gateway", setting="network.x"
        )
        with pytest.raises(SotaError) as caught:
            await server.serve()
    assert str(caught.value) == (
        f"couldn't open the http gateway on 127.0.0.1:{port}: address already in use; another "
        "program (or another sota_client) listens there: stop it, or choose another port in "
        "network.x"
    )


async def test_an_address_of_another_machine_is_a_clear_start_up_error() -> None:
    server = LocalServer("192.0.2.1:8888", echo_handler(), name="http gateway")
    with pytest.raises(SotaError, match=r"address not available; 192\.0\.2\.1 is not an addr"):
        await server.serve()


def test_a_host_name_is_refused_as_in_2016() -> None:
    with pytest.raises(SotaError, match="couldn't open the http gateway on localhost:8888: inv"):
        LocalServer("localhost:8888", echo_handler(), name="http gateway")


async def test_the_url_form_and_ipv6_loopback_are_served() -> None:
    server = LocalServer("http://127.0.0.1:0", echo_handler(), name="test server")
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        assert (await exchange(server.port, request())).status == 200
        tg.cancel_scope.cancel()
    if not socket.has_ipv6:
        return
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        return  # no IPv6 loopback here
    server = LocalServer("[::1]:0", echo_handler(), name="test server")
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("::1", server.port) as stream:
                await stream.send(request())
                assert (await Reader(stream).response()).status == 200
        tg.cancel_scope.cancel()


# -- origins and hosts ---------------------------------------------------------------------------


def with_headers(*headers: tuple[str, str]) -> Request:
    return Request("GET", "/", [(name.lower(), value) for name, value in headers], b"")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("http://127.0.0.1:8888", True),
        ("HTTP://127.0.0.1:8888", True),
        ("http://LOCALHOST:8888", True),
        ("http://localhost:8888/", True),
        ("http://hmi.example", True),  # the default port
        ("http://hmi.example:80", True),
        ("http://127.0.0.1:8889", False),
        ("https://127.0.0.1:8888", False),
        ("http://evil.example", False),
        ("http://127.0.0.1.evil.example:8888", False),
        ("null", False),  # sandboxed frames and file: pages
        ("", False),
    ],
)
def test_origin_allowed(origin: str | None, allowed: bool) -> None:
    req = with_headers(("Origin", origin)) if origin is not None else with_headers()
    origins = ["http://127.0.0.1:8888", "http://localhost:8888", "http://hmi.example"]
    assert origin_allowed(req, origins) is allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (None, True),
        ("127.0.0.1:8888", True),
        ("192.168.1.5:8888", True),  # an IP address cannot be rebound
        ("[::1]:8888", True),
        ("localhost:8888", True),
        ("LOCALHOST", True),
        ("hmi.example:8080", True),  # the host of an allowed origin
        ("evil.example:8888", False),  # DNS rebinding
        ("127.0.0.1.nip.io:8888", False),
        ("[::1", False),
        ("a:b:c", False),
    ],
)
def test_host_allowed(host: str | None, allowed: bool) -> None:
    req = with_headers(("Host", host)) if host is not None else with_headers()
    assert host_allowed(req, ["http://hmi.example:8080"]) is allowed
