"""The websocket gateway (reference 8.3): every event to every client, commands as JSON text.

Over the local HTTP server: a request that is a websocket upgrade from an allowed origin becomes
a session (wsproto, sans-IO). Broadcasts and command replies are each one text frame with the
event JSON, in the same form (the 2016 reply was the event JSON too). Unlike 2016, a command
runs in its own task while broadcasts flow on, a bad command gets an ``Error`` event instead of
killing the server, and a client that does not read is dropped instead of stalling the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
import h11
import msgspec
import wsproto.utilities
from anyio.abc import ByteStream, TaskGroup, TaskStatus
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Event as WsEvent
from wsproto.frame_protocol import CloseReason

from swlm_sdk._wire import stream_failure
from swlm_sdk.protocol import (
    Command,
    ErrorEvent,
    Event,
    ProtocolError,
    decode_json_command,
    encode_event,
)

from .._errors import one_line
from .._warn_once import WarnOnce
from ._broadcast import Broadcaster, Subscription
from ._local_http import (
    SEND_TIMEOUT,
    Connection,
    LocalServer,
    Request,
    RequestError,
    _shown,
    origin_allowed,
)
from ._socket import Execute

__all__ = ["WebsocketGateway"]

logger = logging.getLogger(__name__)

MAX_COMMANDS_PER_CONNECTION = 4  # in flight; the next one waits (and the client's input with it)
MAX_COMMANDS = 64  # in flight over all connections, also those of clients that left
CLOSE_TIMEOUT = 5.0  # for the client to answer our close frame
MAX_HANDSHAKE_BODY = 4096  # a handshake has none; a small one still gets its 426
_MAX_WARNED_ORIGINS = 64
_CHUNK = 65536
_TEXT = "text/plain; charset=utf-8"


# -- the handshake (sans-IO) ------------------------------------------------------------------


class _Refusal(msgspec.Struct, frozen=True):
    """An HTTP answer instead of an upgrade; ``kind`` picks the log line."""

    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()
    kind: str = "handshake"


def _upgrade(
    request: Request, allowed_origins: Sequence[str]
) -> tuple[WSConnection, bytes] | _Refusal:
    """The server's websocket for ``request`` and the 101 reply to send, or a refusal."""
    upgrade = request.header("upgrade") or ""
    if request.method != "GET" or "websocket" not in upgrade.lower():
        return _Refusal(
            426,
            "This is the SOTA client's websocket gateway: connect with a websocket client "
            "(a GET with Upgrade: websocket).\n",
            (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")),
        )
    if not origin_allowed(request, allowed_origins):
        origin = request.header("origin") or ""
        return _Refusal(
            403,
            f"Origin {origin} may not use the SOTA client's websocket gateway; add it to "
            "network.local_api_origins if it is yours.\n",
            kind="origin",
        )
    ws = WSConnection(ConnectionType.SERVER)
    try:
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in request.headers
        ]
        ws.initiate_upgrade_connection(headers, request.target.encode("latin-1"))
        if not any(isinstance(event, wsproto.events.Request) for event in ws.events()):
            return _Refusal(400, "Not a websocket handshake.\n")
        return ws, ws.send(AcceptConnection())
    except wsproto.utilities.RemoteProtocolError as exc:
        hint = exc.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        extra = (
            tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in hint.headers)
            if isinstance(hint, RejectConnection)
            else ()
        )
        return _Refusal(status, f"Bad websocket handshake: {exc}.\n", extra)
    except (wsproto.utilities.ProtocolError, h11.ProtocolError, UnicodeError) as exc:
        return _Refusal(400, f"Bad websocket handshake: {exc}.\n")


# -- one client -------------------------------------------------------------------------------


class _Session:
    """One upgraded connection: broadcasts out, commands in, until either side closes."""

    def __init__(
        self,
        gateway: WebsocketGateway,
        stream: ByteStream,
        ws: WSConnection,
        peer: str,
        commands: TaskGroup,
    ) -> None:
        self._gateway = gateway
        self._stream = stream
        self._ws = ws
        self._peer = peer
        self._commands = commands
        self._in_flight = anyio.Semaphore(gateway._max_commands_per_connection)
        self._lock = anyio.Lock()  # one frame at a time on the wire, in the order made
        self._reading = anyio.CancelScope()
        self._scope = anyio.CancelScope()
        self._message: list[str] = []
        self._message_size = 0
        self._over = False

    async def run(self, subscription: Subscription, received: bytes = b"") -> None:
        """Serve until the client or the server closes, or the client is dropped.

        ``received``: what the client sent after its handshake, read along with it.
        """
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._forward, subscription)
                    tg.start_soon(self._abandon_when_dropped, subscription)
                    await self._read(received)
                    tg.cancel_scope.cancel()
        finally:
            self._over = True  # replies still to come go nowhere; the server closes the stream

    async def _forward(self, subscription: Subscription) -> None:
        async for data in subscription:
            await self._send(TextMessage(data.decode()))

    async def _abandon_when_dropped(self, subscription: Subscription) -> None:
        # The broadcaster has warned; a send to this client may be stuck, so no close frame.
        await subscription.dropped.wait()
        logger.debug("Closed websocket client %s: it did not read its events", self._peer)
        self._scope.cancel()

    # -- input ----------------------------------------------------------------------------------

    async def _read(self, data: bytes) -> None:
        with self._reading:
            while True:
                self._ws.receive_data(data)
                for event in self._ws.events():
                    if not await self._on_event(event):
                        return
                try:
                    data = await self._stream.receive(_CHUNK)
                except anyio.EndOfStream:
                    logger.debug("Websocket client %s closed its connection", self._peer)
                    return
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    why = stream_failure(exc)
                    logger.debug("Websocket client %s went away: %s", self._peer, why)
                    return

    async def _on_event(self, event: WsEvent) -> bool:
        """Handle one event from the client; False once the connection is to end now."""
        if isinstance(event, CloseConnection):
            if self._ws.state is ConnectionState.OPEN:  # not the peer's close: a bad frame
                self._gateway._log(
                    "frame",
                    "Closed websocket client %s: it broke the protocol (%s)",
                    self._peer,
                    event.reason,
                )
            await self._send(event.response())  # answers the peer's close, or sends ours
            return False
        if self._ws.state is not ConnectionState.OPEN:
            return True  # we are closing: only the client's close matters now
        if isinstance(event, Ping):
            await self._send(event.response())
        elif isinstance(event, BytesMessage):
            self._gateway._log(
                "binary", "Closed websocket client %s: it sent a binary frame", self._peer
            )
            await self._close(
                CloseReason.UNSUPPORTED_DATA,
                "binary frames are not accepted: send each command as JSON in a text frame",
            )
        elif isinstance(event, TextMessage):
            self._message.append(event.data)
            self._message_size += len(event.data.encode())
            limit = self._gateway._max_message
            if self._message_size > limit:
                self._gateway._log(
                    "oversize",
                    "Closed websocket client %s: it sent a message over %d bytes",
                    self._peer,
                    limit,
                )
                self._message, self._message_size = [], 0
                await self._close(
                    CloseReason.MESSAGE_TOO_BIG, f"a message is at most {limit} bytes"
                )
            elif event.message_finished:
                text = "".join(self._message)
                self._message, self._message_size = [], 0
                await self._command(text)
        return True

    async def _close(self, code: int, reason: str) -> None:
        """Send our close frame, then give the client a while to answer it."""
        await self._send(CloseConnection(code, reason))
        self._reading.deadline = min(self._reading.deadline, anyio.current_time() + CLOSE_TIMEOUT)

    # -- commands -------------------------------------------------------------------------------

    async def _command(self, text: str) -> None:
        try:
            command = decode_json_command(text)
        except ProtocolError as exc:
            self._gateway._log(
                "command",
                "Websocket client %s sent a command that is not one: %s",
                self._peer,
                exc,
            )
            await self._reply(ErrorEvent(f"Failed to decode JSON: {exc}"))
            return
        # Waiting here stops the input too: a client cannot queue work without bound.
        gateway = self._gateway
        if self._in_flight.value == 0:
            logger.debug(
                "A command from websocket client %s waits: %d of its commands are running "
                "(the limit)",
                self._peer,
                gateway._max_commands_per_connection,
            )
        await self._in_flight.acquire()
        try:
            if gateway._running.value == 0:
                logger.debug(
                    "A command from websocket client %s waits: %d commands are running on "
                    "the websocket gateway (the limit)",
                    self._peer,
                    gateway._max_commands,
                )
            await gateway._running.acquire()
        except BaseException:
            self._in_flight.release()
            raise
        self._commands.start_soon(self._run_command, command)

    async def _run_command(self, command: Command) -> None:
        """Run in the gateway's task group: a command goes on when its client leaves."""
        try:
            try:
                event = await self._gateway._execute(command)
            except Exception as exc:  # never with the daemon's interpreter
                logger.exception("Command %s from websocket client %s failed", command, self._peer)
                event = ErrorEvent(f"Internal error: {exc}")
            if event is not None:
                await self._reply(event)  # unless the client has left
        finally:
            self._gateway._running.release()
            self._in_flight.release()

    async def _reply(self, event: Event) -> None:
        await self._send(TextMessage(encode_event(event).decode()))

    # -- output ---------------------------------------------------------------------------------

    async def _send(self, event: WsEvent) -> None:
        """Send one frame if the connection still takes it; a client that does not take it
        within ``SEND_TIMEOUT`` is dropped (a half-sent frame leaves nothing to save)."""
        with anyio.move_on_after(self._gateway._send_timeout) as scope:
            async with self._lock:
                if self._over or not _may_send(self._ws.state, event):
                    return
                data = self._ws.send(event)
                try:
                    await self._stream.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    why = stream_failure(exc)
                    logger.debug("Websocket client %s went away: %s", self._peer, why)
                    self._over = True
                    self._scope.cancel()
        if scope.cancelled_caught and not self._over:
            self._gateway._log(
                "unread",
                "Closed websocket client %s: it read nothing for %g s",
                self._peer,
                self._gateway._send_timeout,
            )
            self._over = True
            self._scope.cancel()


def _may_send(state: ConnectionState, event: WsEvent) -> bool:
    if isinstance(event, CloseConnection):
        return state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)
    return state is ConnectionState.OPEN


# -- the gateway ------------------------------------------------------------------------------


class WebsocketGateway:
    """Serves ``network.websocket_server`` (``gateway.websocket``) for local UIs.

    Any path is a websocket (as in 2016). A request that is not an upgrade gets 426, one from
    a web page whose origin is not in ``allowed_origins`` gets 403 (a request without
    ``Origin``, from a program that is not a browser, is allowed). A message is at most
    ``max_message`` bytes; each client has at most ``max_commands_per_connection`` commands
    in flight, and all clients ``max_commands``; a client that takes no frame within
    ``send_timeout`` is dropped.
    """

    def __init__(
        self,
        address: str,
        execute: Execute,
        broadcaster: Broadcaster,
        *,
        allowed_origins: Sequence[str],
        max_message: int = 64 * 1024,
        max_connections: int = 64,
        max_commands_per_connection: int = MAX_COMMANDS_PER_CONNECTION,
        max_commands: int = MAX_COMMANDS,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        """:raises SotaError: ``address`` is not an IP address and port."""
        self._execute = execute
        self._broadcaster = broadcaster
        self._allowed_origins = tuple(allowed_origins)
        self._max_message = max_message
        self._max_commands_per_connection = max_commands_per_connection
        self._max_commands = max_commands
        self._running = anyio.Semaphore(max_commands)
        self._send_timeout = send_timeout
        self._server = LocalServer(
            address,
            self._handle,
            name="websocket gateway",
            scheme="ws",
            max_connections=max_connections,
            setting="network.websocket_server",
        )
        self._commands: TaskGroup | None = None  # where commands run: they outlive their client
        self._log = WarnOnce(logger)  # a client's failure, by kind
        self._warned_origins: set[str] = set()

    @property
    def port(self) -> int:
        """The bound port once serving (tests bind port 0)."""
        return self._server.port

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind, report readiness, and serve until cancelled.

        :raises SotaError: the address cannot be bound, saying what to do about it.
        """
        async with anyio.create_task_group() as tg:
            self._commands = tg
            await tg.start(self._server.serve)
            task_status.started()

    async def _handle(self, conn: Connection) -> None:
        """One connection: the handshake, then the session (the server closes the stream)."""
        peer = _shown(conn.peer)
        try:
            request = await conn.read_request(max_body=MAX_HANDSHAKE_BODY)
        except RequestError as exc:
            self._log("request", "Refused a request from %s: %s", peer, exc.message)
            await conn.respond(exc.status, f"{exc.message}\n".encode(), content_type=_TEXT)
            return
        if request is None:
            return
        result = _upgrade(request, self._allowed_origins)
        if isinstance(result, _Refusal):
            self._refused(result, request, peer)
            await conn.respond(
                result.status,
                result.text.encode(),
                content_type=_TEXT,
                headers=result.headers,
                close=True,
            )
            return
        ws, accept = result
        assert self._commands is not None  # serve() set it before the server started
        # Subscribed before the 101 goes out: the client sees every event published after it.
        async with self._broadcaster.subscribe(peer=f"websocket {peer}") as subscription:
            with anyio.move_on_after(self._send_timeout) as sending:
                await conn.stream.send(accept)
            if sending.cancelled_caught:
                self._log("unread", "Closed websocket client %s: it read nothing", peer)
                return
            logger.debug("Websocket client %s connected to %s", peer, one_line(request.target))
            session = _Session(self, conn.stream, ws, peer, self._commands)
            await session.run(subscription, request.leftover)

    def _refused(self, refusal: _Refusal, request: Request, peer: str) -> None:
        if refusal.kind != "origin":
            target = one_line(request.target, 100)
            self._log(
                "handshake",
                "Refused %s %s from %s: %s",
                request.method,
                target,
                peer,
                one_line(refusal.text),
            )
            return
        origin = one_line(request.header("origin") or "", 200)
        if origin in self._warned_origins or len(self._warned_origins) >= _MAX_WARNED_ORIGINS:
            level = logging.DEBUG
        else:
            self._warned_origins.add(origin)
            level = logging.WARNING
        logger.log(
            level,
            "Refused a websocket from origin %s; add it to network.local_api_origins if it "
            "is yours",
            origin,
        )
