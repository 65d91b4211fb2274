"""The daemon's HTTP/1.1 client against a real server: kept connections, framing, URLs."""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections.abc import Iterator

import anyio
import pytest

from sota_client._errors import BackendError, TransportError
from sota_client._http1 import FILL_MIN, Connection, HttpClient, Response, Url

from ._http_server import Exchange, ScriptedServer, answer

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 40  # 10,240 bytes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


def client(clock: Clock | None = None, keepalive: float = 60.0, timeout: float = 5.0) -> HttpClient:
    def no_tls() -> None:
        raise AssertionError("no TLS context is needed for http")

    return HttpClient(
        tls=no_tls,  # type: ignore[arg-type]
        timeout=timeout,
        keepalive=keepalive,
        headers=[("User-Agent", "test")],
        clock=clock or Clock(),
    )


async def get(http: HttpClient, server: ScriptedServer, path: str = "/body") -> bytes:
    response = await http.request("GET", Url.parse(server.url + path))
    try:
        return await response.read(1 << 20)
    finally:
        await response.aclose()


async def read_in_pieces(response: Response, size: int) -> bytes:
    """The body through ``receive_into`` with a buffer of ``size`` bytes."""
    got = bytearray()
    view = memoryview(bytearray(size))
    while count := await response.receive_into(view):
        got += view[:count]
    return bytes(got)


# -- the kept connection ------------------------------------------------------------------


async def test_requests_reuse_one_kept_connection(server: ScriptedServer) -> None:
    server.route("GET", "/body", answer(200, BODY))
    http = client()
    for _ in range(3):
        assert await get(http, server) == BODY
    await http.aclose()
    assert server.accepted == 1


async def test_a_connection_idle_longer_than_keepalive_is_not_reused(
    server: ScriptedServer,
) -> None:
    server.route("GET", "/body", answer(200, BODY))
    clock = Clock()
    http = client(clock, keepalive=10.0)
    await get(http, server)
    clock.now += 10.0
    await get(http, server)  # just in time
    clock.now += 10.5
    await get(http, server)
    await http.aclose()
    assert server.accepted == 2


async def test_a_kept_connection_the_server_closed_is_replaced(server: ScriptedServer) -> None:
    """Noticed before the request goes out: even a POST, never sent twice, gets through."""
    server.route("POST", "/body", answer(200, BODY))
    http = client()
    for _ in range(2):
        response = await http.request("POST", Url.parse(server.url + "/body"), content=b"{}")
        assert await response.read(1 << 20) == BODY  # no error: the closed one was noticed
        await response.aclose()
        server.close_connections()
    await http.aclose()
    assert server.accepted == 2


async def test_a_get_on_a_kept_connection_lost_unnoticed_goes_out_again(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closes the kept connection just as the request goes out: a GET is sent
    again on a new connection, a POST is not (it may have been acted on)."""
    server.route("GET", "/body", answer(200, BODY))
    server.route("POST", "/body", answer(200, BODY))
    monkeypatch.setattr(Connection, "looks_alive", lambda self: True)
    http = client()
    await get(http, server)
    server.close_connections()
    assert await get(http, server) == BODY
    assert server.accepted == 2
    server.close_connections()
    with pytest.raises(TransportError) as caught:
        await http.request("POST", Url.parse(server.url + "/body"), content=b"{}")
    assert caught.value.maybe_delivered
    await http.aclose()
    assert [request.method for request in server.requests] == ["GET", "GET"]


async def test_connection_close_is_honoured(server: ScriptedServer) -> None:
    server.route("GET", "/body", lambda ex: ex.respond(200, BODY, [("Connection", "close")]))
    http = client()
    await get(http, server)
    await get(http, server)
    await http.aclose()
    assert server.accepted == 2


async def test_a_body_left_unread_closes_its_connection(server: ScriptedServer) -> None:
    server.route("GET", "/body", answer(200, BODY))
    http = client()
    response = await http.request("GET", Url.parse(server.url + "/body"))
    assert len(await response.read(100)) == 100
    await response.aclose()
    assert await get(http, server) == BODY  # not the rest of the first body
    await http.aclose()
    assert server.accepted == 2


async def test_idle_connections_are_bounded(server: ScriptedServer) -> None:
    server.route("GET", "/body", answer(200, BODY))
    http = client()
    responses = [
        await http.request("GET", Url.parse(server.url + "/body"))
        for _ in range(HttpClient.MAX_IDLE + 2)
    ]
    for response in responses:
        await response.read(1 << 20)
        await response.aclose()
    assert len(http._idle) == HttpClient.MAX_IDLE
    await http.aclose()


# -- framing ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [1, 7, 4096])
async def test_a_body_read_in_small_pieces_is_whole(
    server: ScriptedServer, chunked: bool, size: int
) -> None:
    server.route("GET", "/body", lambda ex: ex.respond(200, BODY, chunked=chunked))
    http = client()
    for _ in range(2):  # the second on the kept connection: nothing of the first is left over
        response = await http.request("GET", Url.parse(server.url + "/body"))
        assert await read_in_pieces(response, size) == BODY
        await response.aclose()
    await http.aclose()
    assert server.accepted == 1


async def test_a_close_delimited_body_is_read_to_the_end(server: ScriptedServer) -> None:
    def close_delimited(exchange: Exchange) -> None:
        exchange.head(200, [("Connection", "close")])
        exchange.write(BODY)
        exchange.drop()

    server.route("GET", "/body", close_delimited)
    http = client()
    assert await get(http, server) == BODY
    await http.aclose()


async def test_a_body_cut_short_is_a_transport_error(server: ScriptedServer) -> None:
    server.route("GET", "/body", lambda ex: ex.truncated(200, BODY, 5000))
    http = client()
    response = await http.request("GET", Url.parse(server.url + "/body"))
    with pytest.raises(TransportError) as caught:
        await read_in_pieces(response, 4096)
    await response.aclose()
    await http.aclose()
    assert "the server closed the connection or broke HTTP" in str(caught.value)
    assert caught.value.maybe_delivered


class Stalled:
    """A handler that sends ``sent`` bytes of a larger announced body, then sends nothing
    more until :meth:`release` (or the test's end)."""

    def __init__(self, sent: int) -> None:
        self.body = bytes(range(256)) * (2 * FILL_MIN // 256)
        self.sent = sent
        self._released = threading.Event()

    def __call__(self, exchange: Exchange) -> None:
        exchange.head(200, [("Content-Length", str(len(self.body)))])
        exchange.write(self.body[: self.sent])
        self._released.wait(60)
        exchange.drop()

    def release(self) -> None:
        self._released.set()


async def test_bytes_that_came_before_a_stall_are_kept_and_the_timeout_comes_next(
    server: ScriptedServer,
) -> None:
    """A large view is filled in a worker thread: what it got before the failure is handed
    out first, so a resumed download starts after it (it is not lost with the failure)."""
    stalled = Stalled(sent=FILL_MIN // 3)
    server.route("GET", "/body", stalled)
    http = client(timeout=0.5)
    response = await http.request("GET", Url.parse(server.url + "/body"))
    view = memoryview(bytearray(FILL_MIN))
    got = bytearray()
    try:
        while len(got) < stalled.sent:
            count = await response.receive_into(view)
            assert count
            got += view[:count]
        with pytest.raises(TransportError) as caught:
            await response.receive_into(view)
    finally:
        stalled.release()
        await response.aclose()
        await http.aclose()
    assert got == stalled.body[: stalled.sent]
    assert "timed out waiting for data: no answer within 0.5 s" in str(caught.value)


async def test_a_worker_thread_waiting_for_body_bytes_leaves_when_its_task_is_cancelled(
    server: ScriptedServer,
) -> None:
    """Without the check, the cancel would wait for the hour-long receive timeout (and the
    test would time out)."""
    stalled = Stalled(sent=0)
    server.route("GET", "/body", stalled)
    http = client(timeout=3600.0)
    response = await http.request("GET", Url.parse(server.url + "/body"))
    try:
        with anyio.move_on_after(0.3) as scope:
            await response.receive_into(memoryview(bytearray(FILL_MIN)))
    finally:
        stalled.release()
        await response.aclose()
        await http.aclose()
    assert scope.cancelled_caught


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(server: ScriptedServer, status: int) -> None:
    server.route("GET", "/body", lambda ex: ex.head(status, []))
    http = client()
    assert await get(http, server) == b""
    assert await get(http, server) == b""
    await http.aclose()
    assert server.accepted == 1


async def test_a_header_with_a_line_break_is_never_sent(server: ScriptedServer) -> None:
    http = client()
    with pytest.raises(BackendError, match="cannot make the request GET"):
        await http.request("GET", Url.parse(server.url + "/"), [("X-Bad", "a\r\nInjected: 1")])
    await http.aclose()
    assert server.requests == []


async def test_refused_connection_was_never_delivered() -> None:
    with ScriptedServer() as gone:
        url = Url.parse(gone.url + "/x")
    http = client()
    with pytest.raises(TransportError) as caught:
        await http.request("POST", url, content=b"{}")
    assert "could not connect" in str(caught.value)
    assert not caught.value.maybe_delivered


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "netloc", "target"),
    [
        ("http://Example.COM", "example.com", "/"),
        ("https://example.com:443/a?b=c", "example.com", "/a?b=c"),
        ("http://example.com:8080/a b/é", "example.com:8080", "/a%20b/%C3%A9"),
        ("http://[::1]:9000/x", "[::1]:9000", "/x"),
        ("http://bücher.example/", "xn--bcher-kva.example", "/"),
        ("http://user:secret@example.com/p", "example.com", "/p"),
        ("http://h/%2E%2E/x", "h", "/%2E%2E/x"),
    ],
)
def test_url_parts(text: str, netloc: str, target: str) -> None:
    url = Url.parse(text)
    assert (url.netloc, url.target) == (netloc, target)
    assert "secret" not in str(url)


@pytest.mark.parametrize(
    "text", ["", "ftp://h/", "http://", "http://h:99999/", "http://h:x/", "/path", "http://a b/"]
)
def test_urls_that_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)scheme|host|port"):
        Url.parse(text)


@pytest.mark.parametrize(
    ("reference", "joined"),
    [
        ("/token", "http://h:1/token"),
        ("other", "http://h:1/base/other"),
        ("../up", "http://h:1/up"),
        ("//elsewhere/x", "http://elsewhere/x"),
        ("https://s.example/blob?sig=1", "https://s.example/blob?sig=1"),
    ],
)
def test_join(reference: str, joined: str) -> None:
    assert str(Url.parse("http://h:1/base/path?q=1").join(reference)) == joined


def test_shown_leaves_out_the_query() -> None:
    assert Url.parse("https://s.example/blob?X-Signature=secret").shown() == (
        "https://s.example/blob"
    )


class _WantsToWriteFirst:
    """A TLS socket in a renegotiation: its first read raises SSLWantWriteError, as
    ``SSLSocket.recv_into`` does when TLS must write before it can read on."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.wanted = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_into(self, view: memoryview) -> int:
        if not self.wanted:
            self.wanted += 1
            raise ssl.SSLWantWriteError("the read needs a write first")
        return self._sock.recv_into(view)


async def test_a_tls_read_that_must_write_first_waits_until_the_socket_is_writable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting to read instead would hang a renegotiating TLS connection until its timeout."""
    ours, theirs = socket.socketpair()
    polled: list[int] = []
    real_poll = select.poll

    class Poll:
        def __init__(self) -> None:
            self._poll = real_poll()

        def register(self, fd: object, events: int) -> None:
            self._poll.register(fd, events)  # type: ignore[arg-type]

        def modify(self, fd: object, events: int) -> None:
            polled.append(events)
            self._poll.modify(fd, events)  # type: ignore[arg-type]

        def poll(self, timeout: float) -> list[tuple[int, int]]:
            return self._poll.poll(timeout)

    monkeypatch.setattr(select, "poll", Poll)  # the module _http1 polls with
    ours.setblocking(False)
    wrapped = _WantsToWriteFirst(ours)
    connection = Connection(wrapped, ("https", "core", 443), timeout=5.0)  # type: ignore[arg-type]
    body = bytes(range(256)) * 16
    theirs.sendall(body)
    theirs.close()
    view = memoryview(bytearray(len(body)))
    try:
        assert await connection.fill(view) == len(body)
    finally:
        ours.close()
    assert bytes(view) == body
    assert wrapped.wanted == 1
    assert polled[0] == select.POLLOUT
