"""The commands half of the Unix-socket gateway (wire protocol 0.1): commands in, one reply each.

Each connection carries one text command, read to end of file (bounded in size and time), and
gets the final event's JSON or the 2016 error text. The events half is ``_events``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import SocketStream, TaskStatus

from swlm_sdk.protocol import (
    Command,
    CommandSyntaxError,
    Event,
    encode_event,
    parse_command,
)

from .._errors import SotaError
from ._unix import claim_socket_path, file_identity, set_socket_group

__all__ = ["CommandServer", "Execute"]

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
        bound = file_identity(self.path)
        try:
            async with listener:  # closed also when the group cannot be set
                if self._group:
                    set_socket_group(self.path, self._group)
                    bound = file_identity(self.path)  # chown changed its ctime
                logger.info("Socket listening for commands at %s", self.path)
                task_status.started()
                await listener.serve(self._handle)
        finally:
            # Only our own socket: the path could have been replaced while we ran.
            if bound is not None and file_identity(self.path) == bound:
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
