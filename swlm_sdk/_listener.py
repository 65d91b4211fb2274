"""The SWLM's events socket: create it safely, take one connection per event, yield typed events."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import SocketListener, SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import ProtocolError
from ._paths import StrPath, check_socket_path, resolve_socket_paths
from ._socket_file import bind_own_socket, unlink_own_socket
from ._wire import receive_to_eof, stream_failure
from .protocol import Event, UnknownEvent, decode_envelope

__all__ = [
    "DEFAULT_EVENT_TIMEOUT",
    "DEFAULT_MAX_EVENT",
    "EventKinds",
    "EventListener",
    "compile_kinds",
    "event_name",
    "kinds_match",
]

log = logging.getLogger("swlm_sdk.listener")

DEFAULT_MAX_EVENT = 1 << 20
"""Largest event accepted, in bytes (a real envelope is a few hundred)."""

DEFAULT_EVENT_TIMEOUT = 10.0
"""Seconds a peer has to send a whole event and half-close."""

EventKinds = Iterable[type[Event] | str]


def event_name(event: Event) -> str:
    """The wire name of an event, including an unknown one (``UnknownEvent.event``)."""
    return event.event if isinstance(event, UnknownEvent) else event.name


def compile_kinds(kinds: EventKinds | None) -> tuple[frozenset[str] | None, bool]:
    """A kinds filter as (wanted names or None for all, whether unknown events pass)."""
    if kinds is None:
        return None, True
    names: set[str] = set()
    unknown = False
    for kind in kinds:
        if isinstance(kind, str):
            names.add(kind)
        elif isinstance(kind, type) and issubclass(kind, UnknownEvent):
            unknown = True
        elif isinstance(kind, type) and issubclass(kind, Event) and kind.name:
            names.add(kind.name)
        else:
            raise TypeError(f"kinds must be Event classes or event names, not {kind!r}")
    return frozenset(names), unknown


def kinds_match(kinds: tuple[frozenset[str] | None, bool], event: Event) -> bool:
    """Whether ``event`` passes a filter made by :func:`compile_kinds`."""
    names, unknown = kinds
    if isinstance(event, UnknownEvent) and unknown:
        return True
    return names is None or event_name(event) in names


def _preview(data: bytes) -> str:
    return repr(data[:120]) + ("..." if len(data) > 120 else "")


class EventListener:
    """Listen on the events socket and iterate over the events the daemon delivers.

    ::

        async with EventListener(kinds=[DownloadComplete]) as events:
            async for event in events:
                ...

    The socket path comes from ``events_socket``, else ``config``, else ``$SOTA_CONFIG``,
    else ``/tmp/sota-events.socket``. On entry the socket is created with permissions
    ``mode``; a stale socket left by a dead process is replaced, but any other file, or a
    socket that still accepts connections, is left alone and :class:`ListenerError` is raised.
    On exit the socket is closed and unlinked.

    Each connection carries one envelope, read to end of file within ``read_timeout``
    seconds and ``max_size`` bytes. Malformed, oversized or late input is logged and skipped;
    it never stops the listener. ``kinds`` filters what is yielded: event classes or wire
    names (``"DownloadComplete"``); include :class:`~swlm_sdk.UnknownEvent` (or a name) to
    get events this SDK does not know. ``None`` yields everything.

    Events wait in a buffer of ``buffer`` items; when it is full, at most
    ``max_connections`` deliveries are held open and further ones wait in the kernel's
    backlog, so a burst is slowed down, never dropped.

    Enter and exit the listener in the same task.
    """

    def __init__(
        self,
        events_socket: StrPath | None = None,
        *,
        config: StrPath | None = None,
        kinds: EventKinds | None = None,
        mode: int = 0o660,
        max_size: int = DEFAULT_MAX_EVENT,
        read_timeout: float = DEFAULT_EVENT_TIMEOUT,
        buffer: int = 64,
        max_connections: int = 64,
    ) -> None:
        if events_socket is None:
            self.path = resolve_socket_paths(config=config).events
        else:
            self.path = check_socket_path(events_socket, "events socket")
        self._names, self._unknown = compile_kinds(kinds)
        if buffer < 1 or max_connections < 1 or max_size < 1:
            raise ValueError("buffer, max_connections and max_size must be at least 1")
        self.mode = mode
        self.max_size = max_size
        self.read_timeout = read_timeout
        self._buffer = buffer
        self._max_connections = max_connections
        self._slots: anyio.Semaphore | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._identity: tuple[int, int] | None = None
        self._send: MemoryObjectSendStream[Event] | None = None
        self._recv: MemoryObjectReceiveStream[Event] | None = None

    def __repr__(self) -> str:
        return f"EventListener({self.path!r})"

    def wants(self, event: Event) -> bool:
        """Whether ``event`` passes the ``kinds`` filter."""
        return kinds_match((self._names, self._unknown), event)

    async def _bind(self) -> SocketListener:
        listener, self._identity = await bind_own_socket(self.path, self.mode, "events socket")
        return listener

    def _unlink(self) -> None:
        unlink_own_socket(self.path, self._identity)

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this EventListener is already open")
        self._slots = anyio.Semaphore(self._max_connections)
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            listener = await self._bind()
            stack.callback(self._unlink)
            send, recv = anyio.create_memory_object_stream[Event](self._buffer)
            self._send, self._recv = send, recv
            stack.callback(recv.close)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            task_group.start_soon(self._serve, listener, send)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack = stack
        log.info("listening for events on %s", self.path)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop accepting, drop events not yet received, close and unlink the socket."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._recv is None:
            raise RuntimeError("use 'async with EventListener(...)' before iterating")
        try:
            return await self._recv.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def _serve(self, listener: SocketListener, send: MemoryObjectSendStream[Event]) -> None:
        assert self._slots is not None
        async with listener, send, anyio.create_task_group() as handlers:
            while True:
                await self._slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    self._slots.release()
                    # e.g. EMFILE: pause instead of spinning, the backlog keeps the peers.
                    log.error("events socket %s: accept failed: %s", self.path, exc)
                    await anyio.sleep(0.1)
                    continue
                handlers.start_soon(self._handle, stream, send, self._slots)

    async def _handle(
        self, stream: SocketStream, send: MemoryObjectSendStream[Event], slots: anyio.Semaphore
    ) -> None:
        try:
            event = await self._read(stream)
            if event is not None:
                await send.send(event)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the consumer has gone away: the listener is closing
        finally:
            slots.release()

    async def _read(self, stream: SocketStream) -> Event | None:
        async with stream:
            data = b""
            try:
                with anyio.move_on_after(self.read_timeout) as scope:
                    data = await receive_to_eof(stream, self.max_size, "event")
            except ProtocolError as exc:
                log.warning("events socket %s: %s; dropped", self.path, exc)
                return None
            except (OSError, anyio.BrokenResourceError) as exc:
                log.warning(
                    "events socket %s: connection failed: %s", self.path, stream_failure(exc)
                )
                return None
            if scope.cancelled_caught:
                log.warning(
                    "events socket %s: a peer sent no complete event within %g s; dropped",
                    self.path,
                    self.read_timeout,
                )
                return None
        try:
            event = decode_envelope(data)
        except ProtocolError as exc:
            log.warning("events socket %s: bad event %s: %s", self.path, _preview(data), exc)
            return None
        if not self.wants(event):
            log.debug("events socket %s: skipping %s", self.path, event_name(event))
            return None
        log.debug("events socket %s: %r", self.path, event)
        return event
