"""The websocket gateway over real sockets (reference 8.3, 10.11, 11.6 item 50).

Every event reaches every client as a text frame of its JSON; a command's reply comes in the
same form while broadcasts go on (2016 paused all websocket I/O while a command ran); a bad
command gets an ``Error`` event (the 2016 server thread died); a client that does not read is
dropped without holding up the others.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import h11
import pytest
from anyio.abc import SocketStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.events import Event as WsEvent

from sota_client.gateways import _websocket
from sota_client.gateways._broadcast import Broadcaster
from sota_client.gateways._websocket import WebsocketGateway
from swlm_sdk.protocol import (
    Authenticate,
    Authenticated,
    ClientCredentials,
    Command,
    DownloadingUpdate,
    DownloadProgress,
    ErrorEvent,
    Event,
    FoundSystemInfo,
    GetUpdateRequests,
    Package,
    ResultCode,
    SendInstalledPackages,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    UpdateReport,
    decode_event,
    encode_event,
)
from tests.conftest import LogWaiter

pytestmark = pytest.mark.anyio

ALLOWED = "http://127.0.0.1:8888"
WITHIN = 10.0  # a deadline against hanging, never a measurement


# -- a fake interpreter -----------------------------------------------------------------------


class Interpreter:
    """The 2016 test's fake: ``StartDownload(id)`` -> ``FoundSystemInfo(id)``.

    The ids ``slow*`` wait until :meth:`release` lets them go; ``boom`` raises.
    """

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.finished: list[str] = []
        self._gates: dict[str, anyio.Event] = {}
        self._changed = anyio.Event()

    def release(self, update_id: str) -> None:
        self._gate(update_id).set()

    async def wait_in_flight(self, count: int) -> None:
        with anyio.fail_after(WITHIN):
            while self.in_flight != count:
                await self._changed.wait()
                self._changed = anyio.Event()

    def _gate(self, update_id: str) -> anyio.Event:
        return self._gates.setdefault(update_id, anyio.Event())

    async def execute(self, command: Command) -> Event | None:
        self.commands.append(command)
        if not isinstance(command, StartDownload):
            return None if isinstance(command, Shutdown) else Authenticated()
        update_id = command.update_id
        if update_id == "boom":
            raise RuntimeError("boom")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self._changed.set()
        try:
            if update_id.startswith("slow"):
                await self._gate(update_id).wait()
        finally:
            self.in_flight -= 1
            self._changed.set()
        self.finished.append(update_id)
        return FoundSystemInfo(update_id)


@asynccontextmanager
async def serving(
    interpreter: Interpreter | None = None,
    broadcaster: Broadcaster | None = None,
    *,
    allowed_origins: Sequence[str] = (ALLOWED,),
    **options: float,
) -> AsyncIterator[WebsocketGateway]:
    interpreter = interpreter or Interpreter()
    gateway = WebsocketGateway(
        "127.0.0.1:0",
        interpreter.execute,
        broadcaster or Broadcaster(),
        allowed_origins=allowed_origins,
        max_message=int(options.pop("max_message", 1024)),
        **options,  # type: ignore[arg-type]
    )
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.serve)
        yield gateway
        tg.cancel_scope.cancel()


# -- a small websocket client -----------------------------------------------------------------


class Refused(Exception):
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(status)
        self.status, self.headers, self.body = status, headers, body


class Client:
    """A websocket client on wsproto; every wait is bounded."""

    def __init__(self, stream: SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self._pending: deque[WsEvent] = deque()

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        port: int,
        *,
        origin: str | None = None,
        path: str = "/",
        first: bytes = b"",
        receive_buffer: int | None = None,
    ) -> AsyncIterator[Client]:
        """Open a websocket; ``first`` is sent in the same write as the handshake.

        ``receive_buffer`` shrinks the socket's buffer, so that a client that does not read
        fills it sooner.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connecting: the window is agreed then
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", port))  # loopback, to a listening socket: at once
        async with await SocketStream.from_socket(sock) as stream:
            client = cls(stream, WSConnection(ConnectionType.CLIENT))
            headers = [(b"Origin", origin.encode())] if origin else []
            request = Request(host=f"127.0.0.1:{port}", target=path, extra_headers=headers)
            await stream.send(client.ws.send(request) + first)
            answer = await client.next()
            if isinstance(answer, RejectConnection):
                body = b""
                while answer.has_body:
                    data = await client.next()
                    assert isinstance(data, RejectData)
                    body += data.data
                    if data.body_finished:
                        break
                names = {k.decode().lower(): v.decode() for k, v in answer.headers}
                raise Refused(answer.status_code, names, body)
            assert isinstance(answer, AcceptConnection)
            yield client

    async def next(self) -> WsEvent:
        with anyio.fail_after(WITHIN):
            while not self._pending:
                try:
                    data: bytes | None = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    data = None
                self.ws.receive_data(data)
                self._pending.extend(self.ws.events())
            return self._pending.popleft()

    async def send(self, event: WsEvent) -> None:
        await self.stream.send(self.ws.send(event))

    async def send_text(self, text: str) -> None:
        await self.send(TextMessage(text))

    async def text(self) -> str:
        """The next message, which must be text (in one or more frames)."""
        parts = []
        while True:
            event = await self.next()
            assert isinstance(event, TextMessage), event
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts)

    async def event(self) -> Event:
        return decode_event(await self.text())

    async def closed(self) -> int:
        """The server's close frame: answered, then the server ends the connection."""
        event = await self.next()
        assert isinstance(event, CloseConnection), event
        await self.send(event.response())
        assert await self.eof()
        return event.code

    async def eof(self) -> bool:
        with anyio.fail_after(WITHIN):
            try:
                while True:
                    await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return True


async def command(client: Client, text: str) -> Event:
    await client.send_text(text)
    return await client.event()


def start_download(update_id: str) -> str:
    return '{"variant":"StartDownload","fields":[' + json.dumps(update_id) + "]}"


# -- every event to every client --------------------------------------------------------------


async def test_every_event_reaches_every_client() -> None:
    broadcaster = Broadcaster()
    events = [DownloadingUpdate("u1"), DownloadProgress("u1", 512, 1024), Authenticated()]
    async with (
        serving(broadcaster=broadcaster) as gateway,
        Client.connect(gateway.port) as one,
        Client.connect(gateway.port, origin=ALLOWED) as two,
        Client.connect(gateway.port, path="/any/path?x=1") as three,
    ):
        for event in events:
            await broadcaster.publish(event)
        for client in (one, two, three):
            assert [await client.text() for _ in events] == [
                encode_event(event).decode() for event in events
            ]


async def test_ten_clients_each_get_their_reply() -> None:
    """Reference 10.11, with the corrected body."""
    async with serving() as gateway:

        async def one(n: int) -> None:
            async with Client.connect(gateway.port) as client:
                reply = await command(client, start_download(str(n)))
                assert reply == FoundSystemInfo(str(n))
                await client.send(CloseConnection(1000))
                assert isinstance(await client.next(), CloseConnection)

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(one, n)


async def test_a_reply_comes_while_broadcasts_flow() -> None:
    interpreter = Interpreter()
    broadcaster = Broadcaster()
    async with (
        serving(interpreter, broadcaster) as gateway,
        Client.connect(gateway.port) as waiting,
        Client.connect(gateway.port) as other,
    ):
        await waiting.send_text(start_download("slow"))
        await interpreter.wait_in_flight(1)
        await broadcaster.publish(DownloadingUpdate("slow"))
        for client in (waiting, other):  # 2016 paused every websocket until the reply
            assert await client.event() == DownloadingUpdate("slow")
        assert await command(waiting, start_download("quick")) == FoundSystemInfo("quick")
        assert await command(other, start_download("other")) == FoundSystemInfo("other")
        interpreter.release("slow")
        # The reply is the event's JSON, like a broadcast (reference 8.3).
        assert await waiting.text() == '{"variant":"FoundSystemInfo","fields":["slow"]}'


async def test_commands_in_flight_per_connection_are_bounded() -> None:
    interpreter = Interpreter()
    async with (
        serving(interpreter, max_commands_per_connection=2) as gateway,
        Client.connect(gateway.port) as client,
    ):
        for update_id in ("slow1", "slow2", "slow3"):
            await client.send_text(start_download(update_id))
        await client.send(Ping(b"after"))
        await interpreter.wait_in_flight(2)
        interpreter.release("slow1")
        # The third command waited for a free slot, and the input behind it with it: the ping
        # is read only once the first command has replied.
        assert await client.event() == FoundSystemInfo("slow1")
        assert await client.next() == Pong(b"after")
        await interpreter.wait_in_flight(2)
        interpreter.release("slow2")
        interpreter.release("slow3")
        assert {await client.event(), await client.event()} == {
            FoundSystemInfo("slow2"),
            FoundSystemInfo("slow3"),
        }
    assert interpreter.most_in_flight == 2


async def test_commands_in_flight_over_all_connections_are_bounded(
    log_waiter: Callable[[str], LogWaiter],
) -> None:
    interpreter = Interpreter()
    async with (
        serving(interpreter, max_commands=2) as gateway,
        Client.connect(gateway.port) as one,
        Client.connect(gateway.port) as two,
        Client.connect(gateway.port) as three,
    ):
        await one.send_text(start_download("slow1"))
        await two.send_text(start_download("slow2"))
        await interpreter.wait_in_flight(2)
        waits = log_waiter("commands are running on the websocket gateway (the limit)")
        await three.send_text(start_download("slow3"))
        await waits.wait()
        assert interpreter.in_flight == 2
        interpreter.release("slow1")
        assert await one.event() == FoundSystemInfo("slow1")
        await interpreter.wait_in_flight(2)  # the waiting one took the free slot
        interpreter.release("slow2")
        interpreter.release("slow3")
        assert await two.event() == FoundSystemInfo("slow2")
        assert await three.event() == FoundSystemInfo("slow3")
    assert interpreter.most_in_flight == 2


async def test_a_command_goes_on_when_its_client_leaves(
    log_waiter: Callable[[str], LogWaiter],
) -> None:
    interpreter = Interpreter()
    left = log_waiter("closed its connection")
    async with serving(interpreter) as gateway:
        async with Client.connect(gateway.port) as client:
            await client.send_text(start_download("slow"))
            await interpreter.wait_in_flight(1)
        await left.wait()
        interpreter.release("slow")
        await interpreter.wait_in_flight(0)
        assert interpreter.finished == ["slow"]  # not cancelled with the connection
        async with Client.connect(gateway.port) as client:
            assert await command(client, start_download("next")) == FoundSystemInfo("next")


# -- the JSON form of commands (reference 2.5) -------------------------------------------------

REPORT = (
    '{"variant":"SendUpdateReport","fields":[{"update_id":"u1","operation_results":'
    '[{"id":"u1","result_code":"OK","result_text":""}]}]}'
)


async def test_the_2016_json_commands_are_understood() -> None:
    """Reference 2.5's examples (the decoder is the HTTP gateway's; here, its use)."""
    interpreter = Interpreter()
    texts = [
        '"GetUpdateRequests"',
        '{"variant":"GetUpdateRequests","fields":[]}',
        '{"variant":"Authenticate","fields":[null]}',
        '{"variant":"Authenticate","fields":[{"client_id":"u","client_secret":"p"}]}',
        '{"variant":"SendInstalledPackages","fields":[[{"name":"gcc","version":"7.63"}]]}',
        REPORT,
    ]
    async with serving(interpreter) as gateway, Client.connect(gateway.port) as client:
        for text in texts:
            assert await command(client, text) == Authenticated()
    assert interpreter.commands == [
        GetUpdateRequests(),
        GetUpdateRequests(),
        Authenticate(),
        Authenticate(ClientCredentials("u", "p")),
        SendInstalledPackages((Package("gcc", "7.63"),)),
        SendUpdateReport(UpdateReport.single("u1", ResultCode.OK)),
    ]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("dl 1", "command is not valid JSON"),
        ("42", "a command must be a JSON string"),
        ('{"variant":"Nope","fields":[]}', "unknown command 'Nope'; the commands are "),
        ('{"variant":"StartDownload"}', 'command StartDownload needs "fields"'),
        # The 2016 unit test's stale form: an array inside the fields.
        ('{"variant":"StartDownload","fields":[["1"]]}', "Expected `str`, got `array`"),
        ("[" * 1000, "command is"),
    ],
)
async def test_a_bad_command_gets_an_error_that_says_why(text: str, why: str) -> None:
    async with serving() as gateway, Client.connect(gateway.port) as client:
        reply = await command(client, text)
    assert isinstance(reply, ErrorEvent)
    assert reply.text.startswith("Failed to decode JSON: ")
    assert why in reply.text


async def test_a_bad_command_gets_an_error_and_the_connection_stays() -> None:
    async with serving() as gateway, Client.connect(gateway.port) as client:
        for text in ("not json", '{"variant":"Nope","fields":[]}', '{"variant":"StartDownload"}'):
            reply = await command(client, text)
            assert isinstance(reply, ErrorEvent)
            assert reply.text.startswith("Failed to decode JSON: "), reply
        assert await command(client, start_download("1")) == FoundSystemInfo("1")


async def test_an_error_reply_is_the_2016_error_form() -> None:
    async with serving() as gateway, Client.connect(gateway.port) as client:
        await client.send_text('"Reboot"')
        text = await client.text()
    assert text.startswith('{"variant":"Error","fields":["Failed to decode JSON: unknown command')


async def test_a_failing_command_is_an_error_event(caplog: pytest.LogCaptureFixture) -> None:
    async with serving() as gateway, Client.connect(gateway.port) as client:
        assert await command(client, start_download("boom")) == ErrorEvent("Internal error: boom")
        assert await command(client, start_download("1")) == FoundSystemInfo("1")
    assert "RuntimeError: boom" in caplog.text


async def test_a_command_without_a_final_event_gets_no_reply() -> None:
    interpreter = Interpreter()
    async with serving(interpreter) as gateway, Client.connect(gateway.port) as client:
        await client.send_text('"Shutdown"')
        await client.send(Ping(b"p"))
        assert await client.next() == Pong(b"p")
        assert await command(client, start_download("1")) == FoundSystemInfo("1")
    assert interpreter.commands[0] == Shutdown()


async def test_a_command_in_several_frames_is_one_message() -> None:
    async with serving() as gateway, Client.connect(gateway.port) as client:
        text = start_download("split")
        await client.send(TextMessage(text[:5], message_finished=False))
        await client.send(Ping(b"between"))  # control frames may come between the parts
        await client.send(TextMessage(text[5:20], message_finished=False))
        await client.send(TextMessage(text[20:], message_finished=True))
        assert await client.next() == Pong(b"between")
        assert await client.event() == FoundSystemInfo("split")


async def test_frames_sent_with_the_handshake_are_read() -> None:
    async with serving() as gateway:
        frame = _client_frame(start_download("early").encode())
        async with Client.connect(gateway.port, first=frame) as client:
            assert await client.event() == FoundSystemInfo("early")


def _client_frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True) -> bytes:
    """A masked client frame, made by hand (the mask is fixed: the bytes are known)."""
    mask = b"\x01\x02\x03\x04"
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# -- frames -----------------------------------------------------------------------------------


async def test_ping_gets_pong() -> None:
    async with serving() as gateway, Client.connect(gateway.port) as client:
        await client.send(Ping(b"hello"))
        assert await client.next() == Pong(b"hello")


async def test_a_binary_frame_closes_with_1003(log_waiter: Callable[[str], LogWaiter]) -> None:
    async with serving() as gateway:
        warned = log_waiter("it sent a binary frame")
        for _ in range(2):
            async with Client.connect(gateway.port) as client:
                await client.send(BytesMessage(b'"GetUpdateRequests"'))
                assert await client.closed() == 1003
        async with Client.connect(gateway.port) as client:  # the server goes on
            assert await command(client, start_download("1")) == FoundSystemInfo("1")
    assert warned.count == 2
    assert warned.levels == {logging.WARNING, logging.DEBUG}  # the second time at DEBUG


@pytest.mark.parametrize("parts", [1, 3])
async def test_a_message_over_the_limit_closes_with_1009(parts: int) -> None:
    async with serving(max_message=1024) as gateway, Client.connect(gateway.port) as client:
        text = " " * 1025
        step = -(-len(text) // parts)
        for start in range(0, len(text), step):
            last = start + step >= len(text)
            await client.send(TextMessage(text[start : start + step], message_finished=last))
        assert await client.closed() == 1009


async def test_a_message_at_the_limit_is_read() -> None:
    async with serving(max_message=1024) as gateway, Client.connect(gateway.port) as client:
        text = start_download("ü")  # two bytes in UTF-8: the limit is in bytes
        text += " " * (1024 - len(text.encode()))
        assert await command(client, text) == FoundSystemInfo("ü")


async def test_a_close_is_answered() -> None:
    async with serving() as gateway, Client.connect(gateway.port) as client:
        await client.send(CloseConnection(1000, "bye"))
        answer = await client.next()
        assert answer == CloseConnection(1000, "bye")
        assert client.ws.state is ConnectionState.CLOSED
        assert await client.eof()


async def test_after_our_close_nothing_is_sent_or_run(caplog: pytest.LogCaptureFixture) -> None:
    interpreter = Interpreter()
    broadcaster = Broadcaster()
    async with (
        serving(interpreter, broadcaster) as gateway,
        Client.connect(gateway.port) as client,
        Client.connect(gateway.port) as other,
    ):
        await client.send(BytesMessage(b"x"))
        event = await client.next()
        assert isinstance(event, CloseConnection)
        await broadcaster.publish(Authenticated())  # reaches the other, not the closing one
        assert await other.event() == Authenticated()
        # A command sent before the client saw our close is dropped, not run.
        await client.stream.send(_client_frame(start_download("late").encode()))
        await client.send(event.response())
        assert await client.eof()
        assert await command(other, start_download("1")) == FoundSystemInfo("1")
    assert interpreter.commands == [StartDownload("1")]
    assert "failed on a connection" not in caplog.text


async def test_a_client_that_does_not_answer_our_close_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_websocket, "CLOSE_TIMEOUT", 0.1)
    async with serving() as gateway, Client.connect(gateway.port) as client:
        await client.send(BytesMessage(b"x"))
        event = await client.next()
        assert isinstance(event, CloseConnection)
        assert await client.eof()  # without our answering


async def test_a_protocol_error_closes_with_its_code() -> None:
    async with serving() as gateway, Client.connect(gateway.port) as client:
        await client.stream.send(b"\x81\x05hello")  # unmasked: a client must mask its frames
        event = await client.next()
        assert isinstance(event, CloseConnection)
        assert event.code == 1002
        assert await client.eof()


# -- clients that do not read -----------------------------------------------------------------

BIG = FoundSystemInfo("x" * 65536)


async def test_a_client_that_never_reads_is_dropped_and_the_others_get_everything(
    log_waiter: Callable[[str], LogWaiter],
) -> None:
    broadcaster = Broadcaster(queue_size=8)
    async with (
        serving(broadcaster=broadcaster) as gateway,
        Client.connect(gateway.port, receive_buffer=4096) as stuck,
        Client.connect(gateway.port) as one,
        Client.connect(gateway.port) as two,
    ):
        dropped = log_waiter("Dropped the local API client websocket 127.0.0.1:")
        sent = 0
        # Until the socket buffers and then its queue are full (a few MB in all).
        while not dropped.seen.is_set():
            assert sent < 2000, "the client that does not read was never dropped"
            await broadcaster.publish(BIG)
            sent += 1
            for client in (one, two):  # in step: these two never lag behind
                assert await client.event() == BIG
        assert broadcaster.subscribers == 2
        assert await stuck.eof()  # its connection is closed
        await broadcaster.publish(Authenticated())
        for client in (one, two):
            assert await client.event() == Authenticated()
            assert await command(client, start_download("1")) == FoundSystemInfo("1")
    assert dropped.count == 1


async def test_a_client_that_reads_nothing_for_the_send_timeout_is_dropped(
    log_waiter: Callable[[str], LogWaiter],
) -> None:
    broadcaster = Broadcaster(queue_size=256)  # never full here: the send timeout drops it
    async with (
        serving(broadcaster=broadcaster, send_timeout=0.2) as gateway,
        Client.connect(gateway.port, receive_buffer=4096) as stuck,
    ):
        timed_out = log_waiter("it read nothing for 0.2 s")
        for _ in range(128):  # 8 MiB: more than the socket buffers hold
            await broadcaster.publish(BIG)
        await timed_out.wait()
        assert await stuck.eof()
        async with Client.connect(gateway.port) as client:
            assert await command(client, start_download("1")) == FoundSystemInfo("1")


# -- the handshake ----------------------------------------------------------------------------


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the HTTP answer to the end: (status, headers, body)."""
    with anyio.fail_after(WITHIN):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            status, headers, body = 0, {}, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        conn.receive_data(await stream.receive())
                    except anyio.EndOfStream:
                        conn.receive_data(b"")
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, headers, body


async def test_a_request_that_is_not_a_websocket_gets_426() -> None:
    async with serving() as gateway:
        for request in (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
        ):
            status, headers, body = await http(gateway.port, request)
            assert status == 426
            assert headers["upgrade"] == "websocket"
            assert b"websocket gateway" in body


async def test_a_malformed_request_gets_400() -> None:
    async with serving() as gateway:
        status, _, body = await http(gateway.port, b"HELLO\r\n\r\n")
    assert status == 400
    assert b"malformed HTTP request" in body


@pytest.mark.parametrize(
    ("headers", "status", "why"),
    [
        (b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", 400, b"Sec-WebSocket-Key"),
        (b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n", 400, b"Connection: Upgrade"),
        (b"Connection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 8\r\n", 426, b""),
    ],
)
async def test_a_bad_websocket_handshake_says_why(headers: bytes, status: int, why: bytes) -> None:
    async with serving() as gateway:
        request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" + headers + b"\r\n"
        got, answer_headers, body = await http(gateway.port, request)
        assert got == status
        assert why in body
        if status == 426:
            assert answer_headers["sec-websocket-version"] == "13"


async def test_a_page_of_another_origin_is_refused(log_waiter: Callable[[str], LogWaiter]) -> None:
    async with serving(allowed_origins=[ALLOWED]) as gateway:
        warned = log_waiter("Refused a websocket from origin http://evil.example")
        for _ in range(2):
            with pytest.raises(Refused) as caught:
                async with Client.connect(gateway.port, origin="http://evil.example"):
                    pass
            assert caught.value.status == 403
            assert b"network.local_api_origins" in caught.value.body
        assert warned.count == 2
        assert warned.levels == {logging.WARNING, logging.DEBUG}  # once per origin at WARN
        for origin in (ALLOWED, None):  # no Origin: not a browser page
            async with Client.connect(gateway.port, origin=origin) as client:
                assert await command(client, start_download("1")) == FoundSystemInfo("1")


async def test_refused_origins_are_warned_about_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch, log_waiter: Callable[[str], LogWaiter]
) -> None:
    monkeypatch.setattr(_websocket, "_MAX_WARNED_ORIGINS", 1)
    async with serving() as gateway:
        refused = log_waiter("Refused a websocket from origin")
        for origin in ("http://a.example", "http://b.example"):
            with pytest.raises(Refused):
                async with Client.connect(gateway.port, origin=origin):
                    pass
    assert refused.count == 2
    assert refused.levels == {logging.WARNING, logging.DEBUG}


# -- golden bytes -----------------------------------------------------------------------------

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:3012\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
# RFC 6455 section 1.3's key and accept token.
ACCEPT = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


async def read_exactly(stream: SocketStream, size: int) -> bytes:
    data = b""
    with anyio.fail_after(WITHIN):
        while len(data) < size:
            data += await stream.receive(size - len(data))
    return data


async def test_golden_bytes_of_the_handshake_and_of_event_frames() -> None:
    broadcaster = Broadcaster()
    async with (
        serving(broadcaster=broadcaster) as gateway,
        await anyio.connect_tcp("127.0.0.1", gateway.port) as stream,
    ):
        await stream.send(HANDSHAKE)
        assert await read_exactly(stream, len(ACCEPT)) == ACCEPT
        await broadcaster.publish(Authenticated())
        # FIN + text, unmasked, 15 bytes.
        assert await read_exactly(stream, 17) == b'\x81\x0f"Authenticated"'
        await broadcaster.publish(DownloadProgress("u1", 5, None))
        payload = b'{"variant":"DownloadProgress","fields":["u1",5,null]}'
        assert await read_exactly(stream, 2 + len(payload)) == b"\x81\x35" + payload
        await broadcaster.publish(FoundSystemInfo("i" * 200))
        payload = b'{"variant":"FoundSystemInfo","fields":["' + b"i" * 200 + b'"]}'
        assert len(payload) == 243
        assert await read_exactly(stream, 4 + 243) == b"\x81\x7e\x00\xf3" + payload
        # The reply to a command: the same form.
        await stream.send(_client_frame(start_download("7").encode()))
        payload = b'{"variant":"FoundSystemInfo","fields":["7"]}'
        assert await read_exactly(stream, 2 + len(payload)) == b"\x81\x2c" + payload


# -- fuzzing ----------------------------------------------------------------------------------

_frames = st.lists(
    st.builds(
        _client_frame,
        st.binary(max_size=200) | st.text(max_size=60).map(str.encode),
        st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB, 0xF]),
        fin=st.booleans(),
    ),
    max_size=5,
).map(b"".join)
_handshakes = st.sampled_from(
    [
        b"",
        HANDSHAKE,
        HANDSHAKE.replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        HANDSHAKE.replace(b"13", b"12"),
        HANDSHAKE.replace(b"Host: 127.0.0.1:3012\r\n", b""),
        HANDSHAKE.replace(b"\r\n\r\n", b"\r\nOrigin: http://evil.example\r\n\r\n"),
        HANDSHAKE.replace(b"GET / ", b"GET /\xff "),
        HANDSHAKE[:40],
    ]
)
_hostile = st.builds(lambda h, f, tail: h + f + tail, _handshakes, _frames, st.binary(max_size=64))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile, st.booleans())
async def test_after_any_input_the_server_still_serves_a_client(
    data: bytes, hang_up_first: bool
) -> None:
    """Whatever a peer sends, the server answers or closes it, and serves the next client.

    The hostile peer then hangs up and is read to its end: so its input was all handled.
    """
    errors = _ErrorRecords()
    logging.getLogger("sota_client").addHandler(errors)
    try:
        async with (
            serving() as gateway,
            await anyio.connect_tcp("127.0.0.1", gateway.port) as hostile,
        ):
            await hostile.send(data)
            if hang_up_first:
                await hang_up(hostile)
            async with Client.connect(gateway.port) as client:
                assert await command(client, start_download("ok")) == FoundSystemInfo("ok")
            if not hang_up_first:  # the server still holds it while serving the other
                await hang_up(hostile)
    finally:
        logging.getLogger("sota_client").removeHandler(errors)
    assert errors.messages == []


async def hang_up(stream: SocketStream) -> None:
    """End our side, then read what the server still sends until it closes too."""
    with anyio.fail_after(WITHIN):
        try:
            await stream.send_eof()
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


class _ErrorRecords(logging.Handler):
    """Errors, and the server's warning that a handler failed (a bug, not the peer's)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR or "failed on a connection" in message:
            self.messages.append(message)
