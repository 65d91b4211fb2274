"""The Unix-socket gateway (wire protocol 0.1): commands in, one reply each; events out.

Commands: each connection carries one text command, read to end of file (bounded in size and
time), and gets the final event's JSON or the 2016 error text. Events: ``DownloadComplete`` and
``DownloadFailed`` go through the journal's outbox and are delivered to the SWLM's socket, one
connection per event, until one is accepted, in order and across restarts.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
from anyio.abc import SocketStream, TaskStatus

from swlm_sdk.protocol import (
    Command,
    CommandSyntaxError,
    DownloadComplete,
    DownloadFailed,
    Event,
    encode_envelope,
    encode_event,
    parse_command,
)

from .._backoff import Backoff
from .._errors import SotaError
from ._unix import claim_socket_path, set_socket_group

__all__ = ["CommandServer", "EventOutbox"]

logger = logging.getLogger(__name__)

Execute = Callable[[Command], Awaitable[Event | None]]

MAX_COMMAND_BYTES = 64 * 1024


class CommandServer:
    """Serves the commands socket."""

    def __init__(
        self,
        path: str,
        execute: Execute,
        *,
        mode: int = 0o660,
        group: str | None = None,
        read_timeout: float = 30.0,
        max_connections: int = 256,
    ) -> None:
        self.path = path
        self._execute = execute
        self._mode = mode
        self._group = group
        self._read_timeout = read_timeout
        self._limiter = anyio.CapacityLimiter(max_connections)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind the socket, report readiness, and serve until cancelled; unlink it on the way out.

        :raises SotaError: the path is taken (see :func:`claim_socket_path`).
        """
        claim_socket_path(self.path)
        try:
            listener = await anyio.create_unix_listener(self.path, mode=self._mode)
        except OSError as exc:
            raise SotaError(
                f"couldn't open commands socket: {self.path}: {exc.strerror or exc}"
            ) from None
        bound = _identity(self.path)
        try:
            async with listener:  # closed also when the group cannot be set
                if self._group:
                    set_socket_group(self.path, self._group)
                    bound = _identity(self.path)  # chown changed its ctime
                logger.info("Socket listening for commands at %s", self.path)
                task_status.started()
                await listener.serve(self._handle)
        finally:
            # Only our own socket: the path could have been replaced while we ran.
            if bound is not None and _identity(self.path) == bound:
                os.unlink(self.path)

    async def _handle(self, stream: SocketStream) -> None:
        async with self._limiter, stream:
            try:
                reply = await self._reply_for(stream)
                # A peer that never reads must not hold a connection slot for ever.
                with anyio.move_on_after(self._read_timeout) as scope:
                    if reply:
                        await stream.send(reply)
                    await stream.send_eof()
                if scope.cancelled_caught:
                    logger.warning("A commands-socket peer did not read its reply; dropped it")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                logger.debug("commands socket peer went away: %s", exc)

    async def _reply_for(self, stream: SocketStream) -> bytes:
        data = bytearray()
        size = 0
        with anyio.move_on_after(self._read_timeout) as scope:
            try:
                async for chunk in stream:
                    size += len(chunk)
                    # Past the limit, keep reading (and dropping) to the end of the input, so
                    # that the peer, still writing, gets the error reply instead of a reset.
                    if size <= MAX_COMMAND_BYTES:
                        data += chunk
            except (anyio.BrokenResourceError, OSError) as exc:
                logger.debug("commands socket read failed: %s", exc)
                return b""
        if size > MAX_COMMAND_BYTES:
            logger.warning("Rejected a command of %d bytes or more", size)
            return f"IO error: command longer than {MAX_COMMAND_BYTES} bytes".encode()
        if scope.cancelled_caught:
            logger.warning("A commands-socket peer sent no end of file in %g s", self._read_timeout)
            return (
                f"IO error: no end of input within {self._read_timeout:g} s "
                "(write the command, then shut down the write side)"
            ).encode()
        try:
            command = parse_command(bytes(data))
        except CommandSyntaxError as exc:
            logger.info("Rejected command %r: %s", bytes(data[:200]), exc.reply)
            return exc.reply.encode()
        try:
            event = await self._execute(command)
        except Exception:
            # Never reached with the daemon's interpreter; a bug here must not stop the server.
            logger.exception("Command %s failed unexpectedly", command)
            return b"Unix Domain Socket error: internal receiver error"  # the 2016 text
        return b"" if event is None else encode_event(event)


class _OutboxEvent(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def attempts(self) -> int: ...


class _Journal(Protocol):
    def add_event(self, name: str, payload: bytes) -> int: ...
    def due_events(self, now: float, limit: int) -> Sequence[_OutboxEvent]: ...
    def pending_events(self) -> int: ...
    def event_delivered(self, event_id: int) -> None: ...
    def event_failed(self, event_id: int, next_attempt_at: float, error: str) -> None: ...


class EventOutbox:
    """Delivers ``DownloadComplete``/``DownloadFailed`` envelopes to the SWLM's events socket.

    If nobody listens, the envelope stays in the journal and is tried again with backoff, and
    at once when the socket file appears or changes (an SWLM starting up).
    """

    def __init__(
        self,
        path: str,
        journal: _Journal,
        *,
        timeout: float = 10.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        watch_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._journal = journal
        self._timeout = timeout
        self._backoff = Backoff(backoff, max_backoff)
        self._watch_interval = watch_interval
        self._clock = clock
        self._wake = anyio.Event()

    async def publish(self, event: Event) -> None:
        """Keep the two socket events in the journal and wake the deliverer."""
        if isinstance(event, DownloadComplete | DownloadFailed):
            self._journal.add_event(event.name, encode_envelope(event))
            self._wake.set()

    async def run(self) -> None:
        """Deliver kept envelopes in order, for ever."""
        while True:
            self._wake = anyio.Event()
            failed = await self._deliver_due()
            if failed is not None:
                await self._wait_for_listener(failed)
            elif not self._journal.pending_events():
                await self._wake.wait()

    async def _deliver_due(self) -> float | None:
        """Deliver kept envelopes in order; return the retry time of the first failure, if any.

        Every kept envelope is tried, whatever retry time the journal holds: the head of the
        queue sets the pace, so a new event never overtakes an older one.
        """
        for item in self._journal.due_events(math.inf, 64):
            try:
                await self._deliver(item.payload)
            except (OSError, TimeoutError, anyio.BrokenResourceError) as exc:
                delay = self._backoff.delay(item.attempts + 1)
                next_at = self._clock() + delay
                self._journal.event_failed(item.id, next_at, str(exc))
                logger.log(
                    logging.INFO if item.attempts == 0 else logging.DEBUG,
                    "couldn't deliver an event to %s (%s); kept, next try in %.0f s",
                    self.path,
                    exc,
                    delay,
                )
                return next_at
            self._journal.event_delivered(item.id)
            logger.info("Delivered an event to %s", self.path)
        return None

    async def _deliver(self, payload: bytes) -> None:
        with anyio.fail_after(self._timeout):
            stream = await anyio.connect_unix(self.path)
            async with stream:
                await stream.send(payload)
                await stream.send_eof()

    async def _wait_for_listener(self, retry_at: float) -> None:
        """Sleep until the retry time, a new event, or a change of the socket file."""
        seen = _identity(self.path)
        while self._clock() < retry_at and not self._wake.is_set():
            with anyio.move_on_after(min(self._watch_interval, retry_at - self._clock())):
                await self._wake.wait()
            if _identity(self.path) != seen:
                return


def _identity(path: str) -> tuple[int, int, int] | None:
    """Which file is at ``path`` now (device, inode, change time), or None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_ctime_ns
