"""One async D-Bus client connection on anyio (asyncio and trio alike): jeepney's sans-IO
protocol parts over a Unix socket, with method calls, replies, signals and incoming calls."""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from jeepney import (
    HeaderFields,
    MatchRule,
    MessageFlag,
    MessageType,
    Parser,
    message_bus,
    new_error,
    new_method_return,
)
from jeepney.auth import BEGIN, AuthenticationError, Authenticator
from jeepney.low_level import Message, calc_msg_size

from swlm_sdk._wire import stream_failure

from .._errors import SotaError, one_line

__all__ = [
    "ERROR_DISCONNECTED",
    "ERROR_FAILED",
    "ERROR_LIMITS_EXCEEDED",
    "ERROR_NO_REPLY",
    "ERROR_UNKNOWN_METHOD",
    "MAX_MESSAGE_BYTES",
    "DBusConnection",
    "DBusError",
    "MethodHandler",
    "SignalHandler",
    "bus_address",
]

logger = logging.getLogger(__name__)

ERROR_DISCONNECTED = "org.freedesktop.DBus.Error.Disconnected"
ERROR_NO_REPLY = "org.freedesktop.DBus.Error.NoReply"
ERROR_FAILED = "org.freedesktop.DBus.Error.Failed"
ERROR_LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"
ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
_NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"
_BUS_NAME = "org.freedesktop.DBus"

MAX_MESSAGE_BYTES = 1 << 27
"""The protocol's own ceiling (128 MiB): a bigger announced size means a broken stream, and
refusing it before buffering keeps a bad peer from growing our memory without bound."""

CONNECT_TIMEOUT = 10.0
"""Connect, authenticate and Hello: a bus that takes longer is as good as unreachable."""

SEND_TIMEOUT = 10.0
"""A write the bus does not take within this long leaves the stream in an unknown state."""

SYSTEM_BUS_DEFAULT = "unix:path=/var/run/dbus/system_bus_socket"

_RECEIVE_CHUNK = 65536
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_TRANSIENT = frozenset({ERROR_DISCONNECTED, ERROR_NO_REPLY})

MethodHandler = Callable[[Message], Awaitable[Message | None]]
"""Answers one incoming method call: the reply (``new_method_return``/``new_error``) or None."""

SignalHandler = Callable[[Message], None]
"""Sees one matching signal, synchronously from the reader task, so it must not block."""


class DBusError(SotaError):
    """A D-Bus call failed: an error reply (name + text), or the bus is unreachable.

    ``name`` is the D-Bus error name; failures found locally use ``...Error.Disconnected``
    (no connection), ``...Error.NoReply`` (no answer in time) or ``...Error.Failed``.
    ``text`` is the error's message text ('' if none).
    """

    def __init__(self, name: str, text: str = "", *, message: str | None = None) -> None:
        if message is None:
            message = f"D-Bus error {name}: {text}" if text else f"D-Bus error {name}"
        super().__init__(one_line(message), transient=name in _TRANSIENT)
        self.name = name
        self.text = text


def bus_address(bus: str) -> str:
    """The address of ``"session"`` or ``"system"``, or ``bus`` itself if it is an address.

    The session bus is only ever where ``$DBUS_SESSION_BUS_ADDRESS`` says (a daemon must not
    guess another user's bus); the system bus has a well-known default.

    :raises DBusError: ``"session"`` with the variable unset or empty.
    """
    if bus == "session":
        address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
        if not address:
            raise DBusError(
                ERROR_FAILED,
                "DBUS_SESSION_BUS_ADDRESS is not set",
                message="no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set",
            )
        return address
    if bus == "system":
        return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "") or SYSTEM_BUS_DEFAULT
    return bus


def _unescape(value: str) -> str:
    """D-Bus address values escape bytes as %XX (of UTF-8, for a path: of the file name)."""
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode())
    return raw.decode(errors="surrogateescape")


def _socket_paths(address: str) -> list[str]:
    """The Unix socket paths (abstract ones with a leading NUL) of an address list, in order.

    Entries of other transports, and listen-only forms such as ``unix:tmpdir=``, are skipped:
    the spec lets a client use the first entry it can.
    """
    paths: list[str] = []
    for entry in address.split(";"):
        transport, _, info = entry.strip().partition(":")
        if transport != "unix":
            continue
        keys: dict[str, str] = {}
        for pair in info.split(","):
            key, sep, value = pair.partition("=")
            if sep:
                keys[key] = _unescape(value)
        if keys.get("path"):
            paths.append(keys["path"])
        elif keys.get("abstract"):
            paths.append("\0" + keys["abstract"])
    return paths


def _describe(message: Message) -> str:
    """``interface.member`` of a call, for error and log texts."""
    fields = message.header.fields
    member = str(fields.get(HeaderFields.member, "?"))
    interface = fields.get(HeaderFields.interface)
    return f"{interface}.{member}" if interface else member


def _error_text(message: Message) -> str:
    body = message.body
    if body and isinstance(body[0], str):
        return body[0]
    return ""


def _no_reply_expected(message: Message) -> bool:
    return bool(message.header.flags & MessageFlag.no_reply_expected)


def _no_answer(address: str, timeout: float) -> DBusError:
    return DBusError(
        ERROR_DISCONNECTED,
        f"no answer within {timeout:g} s",
        message=f"the D-Bus bus at {address} did not answer within {timeout:g} s",
    )


def _closed_error(message: Message) -> DBusError:
    text = "the connection to the bus is closed"
    if message.header.message_type is MessageType.method_call:
        shown = f"D-Bus call {_describe(message)} failed: {text}"
    else:
        shown = f"D-Bus {message.header.message_type.name} {_describe(message)} not sent: {text}"
    return DBusError(ERROR_DISCONNECTED, text, message=shown)


class _BadStream(ValueError):
    """What the bus sends is not a D-Bus message stream we accept."""


class _Reply:
    """Where the reader puts the reply to one pending call."""

    __slots__ = ("event", "message")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.message: Message | None = None


async def _connect(address: str) -> anyio.abc.SocketStream:
    """The first entry of ``address`` that accepts a connection."""
    paths = _socket_paths(address)
    if not paths:
        raise DBusError(
            ERROR_FAILED,
            f"no unix:path= or unix:abstract= entry in {address!r}",
            message=f"unusable D-Bus address {address!r}: no unix:path= or unix:abstract= entry",
        )
    failures: list[str] = []
    for path in paths:
        try:
            return await anyio.connect_unix(path)
        except OSError as exc:
            shown = path.replace("\0", "@")
            failures.append(f"{shown}: {exc.strerror or exc}")
    text = "; ".join(failures)
    raise DBusError(
        ERROR_DISCONNECTED, text, message=f"couldn't connect to the D-Bus bus at {text}"
    )


async def _authenticate(stream: anyio.abc.SocketStream, address: str) -> None:
    """The SASL EXTERNAL exchange; BEGIN is sent but nothing after it is read here."""
    auth = Authenticator()
    try:
        for line in auth:
            if line:
                await stream.send(line)
            auth.feed(await stream.receive(4096))
        await stream.send(BEGIN)
    except AuthenticationError as exc:
        raise DBusError(
            ERROR_FAILED,
            str(exc),
            message=f"the D-Bus bus at {address} refused authentication (EXTERNAL): {exc}",
        ) from None
    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
        reason = stream_failure(exc)
        raise DBusError(
            ERROR_DISCONNECTED,
            reason,
            message=f"D-Bus authentication with {address} failed: {reason}",
        ) from None


class DBusConnection:
    """A client connection to a message bus; open it with :meth:`open`.

    A reader task dispatches everything the bus sends: replies to the waiting :meth:`call`,
    signals to the :meth:`add_match` handlers, and incoming method calls to ``method_handler``,
    each in its own task so that a slow handler never stops replies and signals.
    """

    unique_name: str

    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        task_group: anyio.abc.TaskGroup,
        method_handler: MethodHandler | None,
        max_handlers: int,
    ) -> None:
        self.unique_name = ""
        #: Why the connection ended, once it has (the bus closed it, a broken message...).
        self.close_reason = ""
        self._stream = stream
        self._task_group = task_group
        self._method_handler = method_handler
        self._max_handlers = max_handlers
        self._handlers_running = 0
        self._send_lock = anyio.Lock()
        self._serial = 0
        self._pending: dict[int, _Reply] = {}
        self._matches: list[tuple[Any, SignalHandler]] = []
        self._parser = Parser()
        self._reader_scope = anyio.CancelScope()
        self._closed = anyio.Event()
        self._is_closed = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        address: str,
        *,
        method_handler: MethodHandler | None = None,
        max_handlers: int = 16,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> AsyncIterator[DBusConnection]:
        """Connect, authenticate (EXTERNAL) and say Hello, then serve until the block exits.

        :raises DBusError: the bus cannot be reached, refuses us, or does not finish all that
            within ``connect_timeout`` seconds.
        """
        deadline = anyio.current_time() + connect_timeout
        stream: anyio.abc.SocketStream | None = None
        try:
            with anyio.fail_after(connect_timeout):
                stream = await _connect(address)
                await _authenticate(stream, address)
        except BaseException as exc:
            if stream is not None:
                await anyio.aclose_forcefully(stream)
            if isinstance(exc, TimeoutError):
                raise _no_answer(address, connect_timeout) from None
            raise
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as task_group:
                connection = cls(stream, task_group, method_handler, max_handlers)
                task_group.start_soon(connection._read_loop)
                try:
                    await connection._hello(address, deadline, connect_timeout)
                    yield connection
                except Exception as exc:
                    # Raised again outside the task group, so that the caller gets its own
                    # exception rather than an ExceptionGroup around it.
                    error = exc
                finally:
                    task_group.cancel_scope.cancel()
        finally:
            await anyio.aclose_forcefully(stream)
        if error is not None:
            raise error

    async def _hello(self, address: str, deadline: float, connect_timeout: float) -> None:
        timeout = max(0.0, deadline - anyio.current_time())
        try:
            reply = await self.call(message_bus.Hello(), timeout=timeout)
        except DBusError as exc:
            if exc.name == ERROR_NO_REPLY:
                raise _no_answer(address, connect_timeout) from None
            shown = f"{exc.name}: {exc.text}" if exc.text else exc.name
            raise DBusError(
                exc.name, exc.text, message=f"the D-Bus bus at {address} refused Hello: {shown}"
            ) from None
        self.unique_name = str(reply.body[0])

    # -- sending -------------------------------------------------------------------------------

    async def call(
        self,
        message: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - ends in NoReply, not in a cancellation
    ) -> Message:
        """Send a method call and return its METHOD_RETURN reply.

        :raises DBusError: an ERROR reply (its name, and body[0] as text); ``...NoReply`` if
            nothing came within ``timeout`` seconds; ``...Disconnected`` if the connection is
            or goes away.
        :raises ValueError: ``message`` is not a method call expecting a reply (use :meth:`send`).
        """
        if message.header.message_type is not MessageType.method_call:
            raise ValueError("DBusConnection.call needs a method call; use send for others")
        if _no_reply_expected(message):
            raise ValueError("the message has NO_REPLY_EXPECTED set; use send")
        what = _describe(message)
        waiter = _Reply()
        serial: int | None = None
        try:
            with anyio.move_on_after(timeout):
                serial = await self._write(message, waiter)
                await waiter.event.wait()
        finally:
            if serial is not None:
                self._pending.pop(serial, None)
        reply = waiter.message
        if reply is None:
            if self._is_closed:
                raise _closed_error(message)
            raise DBusError(
                ERROR_NO_REPLY,
                f"no reply within {timeout:g} s",
                message=f"D-Bus call {what} failed: no reply within {timeout:g} s",
            )
        if reply.header.message_type is MessageType.error:
            name = str(reply.header.fields.get(HeaderFields.error_name, ERROR_FAILED))
            text = _error_text(reply)
            shown = f"{name}: {text}" if text else name
            raise DBusError(name, text, message=f"D-Bus call {what} failed: {shown}")
        return reply

    async def send(self, message: Message) -> None:
        """Send without waiting for any reply: signals, replies, fire-and-forget calls.

        :raises DBusError: ``...Disconnected`` if the connection is or goes away.
        """
        await self._write(message, None)

    async def _write(self, message: Message, waiter: _Reply | None) -> int:
        """Send one message with the next serial; return the serial.

        The waiter is registered before the bytes leave, so the reply cannot outrun it.
        """
        async with self._send_lock:
            if self._is_closed:
                raise _closed_error(message)
            self._serial = self._serial % 0xFFFFFFFF + 1
            serial = self._serial
            try:
                data = message.serialise(serial=serial)
            except Exception as exc:
                raise DBusError(
                    ERROR_FAILED,
                    f"cannot encode {_describe(message)}: {exc}",
                    message=f"D-Bus message {_describe(message)} cannot be encoded: {exc}",
                ) from exc
            if waiter is not None:
                self._pending[serial] = waiter
            # A write cut short by a cancellation would leave half a message on the stream,
            # so writes are shielded and bounded by their own deadline instead.
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + SEND_TIMEOUT
                try:
                    await self._stream.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    self._abort(f"writing failed: {stream_failure(exc)}")
            if scope.cancelled_caught:
                self._abort(f"the bus took no data for {SEND_TIMEOUT:g} s")
            if self._is_closed:
                raise _closed_error(message)
            return serial

    # -- bus methods -----------------------------------------------------------------------------

    async def request_name(
        self,
        name: str,
        flags: int,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - ends in NoReply, not in a cancellation
    ) -> int:
        """RequestName; the bus's answer: 1 primary owner, 2 in queue, 3 exists, 4 already owner."""
        reply = await self.call(message_bus.RequestName(name, flags), timeout=timeout)
        return int(reply.body[0])

    async def name_has_owner(
        self,
        name: str,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - ends in NoReply, not in a cancellation
    ) -> str | None:
        """The unique name that owns ``name``, or None if nobody does (GetNameOwner)."""
        try:
            reply = await self.call(message_bus.GetNameOwner(name), timeout=timeout)
        except DBusError as exc:
            if exc.name == _NAME_HAS_NO_OWNER:
                return None
            raise
        return str(reply.body[0])

    async def add_match(
        self,
        rule: MatchRule,
        handler: SignalHandler,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - ends in NoReply, not in a cancellation
    ) -> None:
        """AddMatch on the bus, and call ``handler`` for every incoming signal matching ``rule``.

        :raises ValueError: the rule's sender is a well-known name other than the bus's: signals
            carry their sender's unique name, so such a rule could never match here (use
            :meth:`name_has_owner` for the unique name).
        """
        sender = rule.header_fields.get("sender")
        if sender is not None and not (sender.startswith(":") or sender == _BUS_NAME):
            raise ValueError(f"match rule sender {sender!r} must be a unique name")
        entry = (rule, handler)
        # Registered first: a matching signal may arrive as soon as the bus has the rule,
        # before its reply has been read.
        self._matches.append(entry)
        try:
            await self.call(message_bus.AddMatch(rule), timeout=timeout)
        except BaseException:
            self._matches.remove(entry)
            raise

    # -- life ------------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once the connection is gone: nothing can be sent or received any more."""
        return self._is_closed

    async def closed(self) -> None:
        """Return when the connection is gone (the bus died or broke the protocol)."""
        await self._closed.wait()

    def _abort(self, reason: str) -> None:
        """Give up on the connection: wake every pending call and stop the reader."""
        if not self._is_closed:
            who = f" {self.unique_name}" if self.unique_name else ""
            # The owner says it once, with what it means for the daemon (see close_reason).
            logger.debug("D-Bus connection%s closed: %s", who, reason)
            self.close_reason = reason
        self._shut()
        self._reader_scope.cancel()

    def _shut(self) -> None:
        self._is_closed = True
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.event.set()
        self._closed.set()

    # -- receiving -------------------------------------------------------------------------------

    async def _receive(self) -> bytes:
        """The next bytes from the bus.

        Read from the raw socket after ``anyio.wait_readable``: anyio's asyncio UNIX stream
        sets the result of a read future that a cancellation (the connection closing) may have
        cancelled already, and asyncio then logs ``InvalidStateError`` (anyio issue 1267's
        kind); ``wait_readable`` guards against it.
        """
        raw = self._stream.extra(SocketAttribute.raw_socket)
        while True:
            await anyio.wait_readable(raw)
            try:
                data = raw.recv(_RECEIVE_CHUNK)
            except BlockingIOError:
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def _read_loop(self) -> None:
        """Read and dispatch until the stream ends; whatever happens ends only the connection."""
        try:
            with self._reader_scope:
                while True:
                    try:
                        data = await self._receive()
                    except anyio.EndOfStream:
                        self._abort("the bus closed the connection")
                        return
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                        self._abort(f"reading failed: {stream_failure(exc)}")
                        return
                    try:
                        messages = self._parse(data)
                    except Exception as exc:
                        why = str(exc) if isinstance(exc, _BadStream) else repr(exc)
                        self._abort(f"the bus sent a message that cannot be parsed: {why}")
                        return
                    for message in messages:
                        await self._dispatch(message)
        except Exception:
            logger.exception("D-Bus reader failed; closing the connection")
            self._abort("internal error in the reader")
        finally:
            self._shut()
            await anyio.aclose_forcefully(self._stream)

    def _parse(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes; raises on a stream that is not D-Bus."""
        parser = self._parser
        parser.add_data(data)
        messages: list[Message] = []
        while True:
            if parser.next_msg_size is None and parser.buf.bytes_buffered >= 16:
                try:
                    size = int(calc_msg_size(parser.buf.peek(16)))
                except (KeyError, struct.error):
                    raise _BadStream("not a D-Bus message header") from None
                if size > MAX_MESSAGE_BYTES:
                    raise _BadStream(f"a message of {size} bytes announced")
            message = parser.get_next_message()
            if message is None:
                return messages
            messages.append(message)

    async def _dispatch(self, message: Message) -> None:
        kind = message.header.message_type
        fields = message.header.fields
        if kind in (MessageType.method_return, MessageType.error):
            waiter = self._pending.pop(fields.get(HeaderFields.reply_serial, -1), None)
            if waiter is not None:
                waiter.message = message
                waiter.event.set()
        elif kind is MessageType.signal:
            for rule, handler in list(self._matches):
                if rule.matches(message):
                    try:
                        handler(message)
                    except Exception:
                        logger.exception("D-Bus signal handler for %s failed", _describe(message))
        elif kind is MessageType.method_call:
            await self._incoming_call(message)

    async def _incoming_call(self, message: Message) -> None:
        fields = message.header.fields
        if (
            fields.get(HeaderFields.interface) == "org.freedesktop.DBus.Peer"
            and fields.get(HeaderFields.member) == "Ping"
        ):
            await self._reply_now(message, new_method_return(message))
        elif self._method_handler is None:
            await self._reply_now(
                message,
                new_error(
                    message,
                    ERROR_UNKNOWN_METHOD,
                    "s",
                    (f"No method {_describe(message)} on {fields.get(HeaderFields.path)}",),
                ),
            )
        elif self._handlers_running >= self._max_handlers:
            await self._reply_now(
                message,
                new_error(
                    message,
                    ERROR_LIMITS_EXCEEDED,
                    "s",
                    (f"too many calls in progress (at most {self._max_handlers})",),
                ),
            )
        else:
            self._handlers_running += 1
            self._task_group.start_soon(self._serve_call, self._method_handler, message)

    async def _reply_now(self, call: Message, reply: Message) -> None:
        """Answer from the reader itself: waiting for this write is the back-pressure."""
        if _no_reply_expected(call):
            return
        try:
            await self.send(reply)
        except DBusError:
            pass  # only Disconnected can happen here, and _abort has logged it

    async def _serve_call(self, handler: MethodHandler, message: Message) -> None:
        try:
            try:
                reply = await handler(message)
            except Exception:
                logger.exception("D-Bus method handler for %s failed", _describe(message))
                reply = new_error(
                    message, ERROR_FAILED, "s", (f"{_describe(message)} failed unexpectedly",)
                )
            if reply is not None and not _no_reply_expected(message):
                try:
                    await self.send(reply)
                except DBusError as exc:
                    if exc.name != ERROR_DISCONNECTED:
                        logger.exception("D-Bus reply to %s failed", _describe(message))
                        await self._reply_now(
                            message,
                            new_error(message, ERROR_FAILED, "s", ("the reply cannot be sent",)),
                        )
        finally:
            self._handlers_running -= 1
