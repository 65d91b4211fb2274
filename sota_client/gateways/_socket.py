"""The commands half of the Unix-socket gateway (wire protocol 0.1): commands in, one reply each.

Each connection carries one text command, read to end of file (bounded in size and time), and
gets the final event's JSON or the 2016 error text. Reading costs a peer only a file descriptor:
open connections are capped per uid and in total (the oldest unfinished one makes room), and
only executing a command takes a slot. The events half is ``_events``.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import struct
from collections.abc import Awaitable, Callable
from itertools import count

import anyio
import anyio.lowlevel
import msgspec
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus

from swlm_sdk._wire import stream_failure
from swlm_sdk.protocol import (
    Command,
    CommandSyntaxError,
    Event,
    encode_event,
    parse_command,
)

from .._warn_once import WarnOnce
from ._accept import accept_forever
from ._unix import bind_error, claim_socket_path, file_identity, set_socket_group

__all__ = ["CommandServer", "Execute"]

logger = logging.getLogger(__name__)

Execute = Callable[[Command], Awaitable[Event | None]]

MAX_COMMAND_BYTES = 64 * 1024
# Open connections, reading or not. 4096 is far above what SWLMs and tools need and small
# enough for any device; the serve-time cap is also at most half the open-file limit.
MAX_CONNECTIONS = 4096
# 512 per uid: one user (or a runaway script) can hold only an eighth of the total.
MAX_CONNECTIONS_PER_UID = 512
# Commands executing at once: 256 as before the per-uid split; 128 per uid keeps half for the
# others and is still above the 100 concurrent commands the 2016 reference test runs.
MAX_RUNNING = 256
MAX_RUNNING_PER_UID = 128
# Bytes held for commands still being read: 256 commands of 64 KiB, the old worst case. Without
# it 4096 slow writers could make the daemon hold 256 MiB.
MAX_BUFFERED_BYTES = 256 * MAX_COMMAND_BYTES

_CLOSE_WAIT = 1.0  # for an evicted connection to give back its descriptor
_UNKNOWN_UID = -1


class _Peer(msgspec.Struct, eq=False):
    """The connections of one uid (SO_PEERCRED); dropped when it has none open."""

    uid: int
    running: anyio.CapacityLimiter
    open: int = 0
    buffered: int = 0
    unfinished: dict[_Connection, None] = msgspec.field(default_factory=dict)  # oldest first
    warned: set[str] = msgspec.field(default_factory=set)


class _Connection(msgspec.Struct, eq=False):
    stream: SocketStream
    raw: socket.socket  # the stream's socket (looked up once: ``extra()`` costs system calls)
    peer: _Peer
    pid: int
    seq: int
    scope: anyio.CancelScope  # the read deadline, once reading waits; cancelled to evict
    buffered: int = 0
    counted: bool = True  # in the caps; False once evicted or finished
    evicted: bool = False
    done: bool = False  # its task has closed it
    _closed: anyio.Event | None = None  # made only for someone who waits for ``done``

    def finished(self) -> None:
        self.done = True
        if self._closed is not None:
            self._closed.set()

    async def wait_closed(self) -> None:
        if not self.done:
            if self._closed is None:
                self._closed = anyio.Event()
            await self._closed.wait()


class CommandServer:
    """Serves the commands socket.

    Limits (defaults in the module constants): a command must arrive within ``read_timeout``
    and be at most 64 KiB, and unfinished commands hold at most ``max_buffered`` bytes in all.
    At most ``max_connections`` connections are open, and ``max_connections_per_uid`` per uid;
    a new one beyond a cap closes the oldest connection still being read (of that uid, or of
    the uid with the most for the total cap), never one whose command is complete. At most
    ``max_running`` commands execute at once, and ``max_running_per_uid`` per uid; the rest
    wait in order. Call :func:`raise_open_file_limit` before :meth:`serve`: the total cap is
    also at most half the soft open-file limit, so that peers can never take the descriptors
    that downloads and the journal need.
    """

    def __init__(
        self,
        path: str,
        execute: Execute,
        *,
        mode: int = 0o660,
        group: str | None = None,
        read_timeout: float = 30.0,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_uid: int = MAX_CONNECTIONS_PER_UID,
        max_running: int = MAX_RUNNING,
        max_running_per_uid: int = MAX_RUNNING_PER_UID,
        max_buffered: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self.path = path
        self._execute = execute
        self._mode = mode
        self._group = group
        self._read_timeout = read_timeout
        self.max_connections = max_connections  # lowered to the open-file limit by serve()
        self._max_per_uid = max_connections_per_uid
        self._running = anyio.CapacityLimiter(max_running)
        self._max_running_per_uid = max_running_per_uid
        self._max_buffered = max_buffered
        self._peers: dict[int, _Peer] = {}
        self._open = 0
        self._buffered = 0
        self._seq = count()
        self._warn_server = WarnOnce(logger)  # server-wide warnings since it was last idle

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind the socket, report readiness, and serve until cancelled; unlink it on the way out.

        :raises SotaError: the path is taken (see :func:`claim_socket_path`).
        """
        self._fit_to_open_file_limit()
        claim_socket_path(self.path)
        try:
            listener = await anyio.create_unix_listener(self.path, mode=self._mode)
        except OSError as exc:
            raise bind_error(self.path, exc) from None
        bound = file_identity(self.path)
        try:
            async with listener:  # closed also when the group cannot be set
                if self._group:
                    set_socket_group(self.path, self._group)
                    bound = file_identity(self.path)  # chown changed its ctime
                logger.info("Socket listening for commands at %s", self.path)
                async with anyio.create_task_group() as tg:
                    task_status.started()
                    await self._accept_loop(listener, tg)
        finally:
            # Only our own socket: the path could have been replaced while we ran.
            if bound is not None and file_identity(self.path) == bound:
                os.unlink(self.path)

    def _fit_to_open_file_limit(self) -> None:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft // 2 >= self.max_connections:
            return
        self.max_connections = max(soft // 2, 1)
        logger.info(
            "The commands socket takes at most %d connections, half the open-file limit of %d "
            "(raise LimitNOFILE= for more)",
            self.max_connections,
            soft,
        )

    # -- accepting ------------------------------------------------------------------------------

    async def _accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        async def take(stream: SocketStream) -> None:
            conn = await self._admit(stream)
            if conn is not None:
                tg.start_soon(self._serve_connection, conn)

        await accept_forever(
            listener,
            what=f"the commands socket {self.path}",
            admit=take,
            make_room=self._free_a_descriptor,
        )

    async def _free_a_descriptor(self) -> None:
        """Evict an unfinished connection so that the one waiting can be accepted."""
        victim = self._busiest_unfinished()
        if victim is None:
            return
        self._evict(
            victim,
            "IO error: the daemon is out of file descriptors; closed the oldest unfinished "
            f"connection, from uid {victim.peer.uid}",
        )
        with anyio.move_on_after(_CLOSE_WAIT):
            await victim.wait_closed()

    async def _admit(self, stream: SocketStream) -> _Connection | None:
        """Count a new connection in, making room by closing an unfinished one; or refuse it."""
        raw = stream.extra(SocketAttribute.raw_socket)
        pid, uid = _peer_credentials(raw)
        peer = self._peers.get(uid)
        if peer is not None and peer.open >= self._max_per_uid:
            victim = next(iter(peer.unfinished), None)
            if victim is None:
                self._warn(
                    peer,
                    "refused",
                    "uid %d has %d connections open on the commands socket (the limit), all "
                    "waiting for their commands; refused one more from pid %d",
                    uid,
                    peer.open,
                    pid,
                )
                await _refuse(
                    stream,
                    raw,
                    f"IO error: too many connections from uid {uid}, all waiting for their "
                    "commands; try again when one finishes",
                )
                return None
            self._warn(
                peer,
                "evicted",
                "uid %d has %d connections open on the commands socket (the limit); closed its "
                "oldest unfinished one, from pid %d. Find what connects as that user and does "
                "not finish its commands",
                uid,
                peer.open,
                victim.pid,
            )
            self._evict(
                victim,
                f"IO error: too many connections from uid {uid}; closed the oldest unfinished one",
            )
        if self._open >= self.max_connections:
            victim = self._busiest_unfinished()
            if victim is None:
                self._warn_server(
                    "refused",
                    "The commands socket has %d connections open (the limit), all waiting for "
                    "their commands; refused one more from uid %d, pid %d",
                    self._open,
                    uid,
                    pid,
                )
                await _refuse(
                    stream,
                    raw,
                    "IO error: too many connections to the commands socket, all waiting for "
                    "their commands; try again when one finishes",
                )
                return None
            self._warn_server(
                "evicted",
                "The commands socket has %d connections open (the limit); closed the oldest "
                "unfinished one of uid %d, which has the most (%d)",
                self._open,
                victim.peer.uid,
                victim.peer.open,
            )
            self._evict(
                victim,
                "IO error: too many connections to the commands socket; closed the oldest "
                f"unfinished one of uid {victim.peer.uid}, which has the most",
            )
        peer = self._peers.get(uid)  # an eviction may have dropped it
        if peer is None:
            peer = self._peers[uid] = _Peer(uid, anyio.CapacityLimiter(self._max_running_per_uid))
        conn = _Connection(stream, raw, peer, pid, next(self._seq), anyio.CancelScope())
        peer.open += 1
        peer.unfinished[conn] = None
        self._open += 1
        return conn

    def _busiest_unfinished(self) -> _Connection | None:
        """The oldest unfinished connection of the uid with the most open.

        Not simply the oldest overall: a uid with a few connections keeps them while another
        floods, so the total cap is shared fairly.
        """
        candidates = [peer for peer in self._peers.values() if peer.unfinished]
        if not candidates:
            return None
        busiest = max(candidates, key=lambda peer: (peer.open, -next(iter(peer.unfinished)).seq))
        return next(iter(busiest.unfinished))

    def _evict(self, conn: _Connection, reply: str) -> None:
        """Close an unfinished connection to make room; its peer gets ``reply`` if it can."""
        self._uncount(conn)
        conn.evicted = True
        raw = conn.raw
        try:  # without waiting: the peer is still writing, so its receive buffer is empty
            raw.send(reply.encode(), socket.MSG_DONTWAIT)
            raw.shutdown(socket.SHUT_WR)
        except OSError as exc:
            logger.debug("couldn't tell an evicted peer why: %s", exc)
        conn.scope.cancel()

    def _uncount(self, conn: _Connection) -> None:
        if not conn.counted:
            return
        conn.counted = False
        peer = conn.peer
        self._finish_reading(conn)
        peer.open -= 1
        self._open -= 1
        if peer.open == 0 and self._peers.get(peer.uid) is peer:
            del self._peers[peer.uid]
        if self._open == 0:
            self._warn_server.reset()

    def _finish_reading(self, conn: _Connection) -> None:
        """The connection is no longer evictable and holds no buffered input."""
        conn.peer.unfinished.pop(conn, None)
        self._drop_buffer(conn)

    def _drop_buffer(self, conn: _Connection) -> None:
        conn.peer.buffered -= conn.buffered
        self._buffered -= conn.buffered
        conn.buffered = 0

    def _hold(self, conn: _Connection, size: int) -> None:
        """Account ``size`` more bytes of unfinished input; over the budget, evict the largest."""
        if not conn.counted:
            return
        conn.buffered += size
        conn.peer.buffered += size
        self._buffered += size
        while self._buffered > self._max_buffered:
            heaviest = max(self._peers.values(), key=lambda peer: peer.buffered)
            victim = max(heaviest.unfinished, key=lambda c: c.buffered)
            self._warn_server(
                "buffered",
                "Unfinished commands on the commands socket hold %d bytes (the limit is %d); "
                "closed the largest, %d bytes from uid %d, pid %d",
                self._buffered,
                self._max_buffered,
                victim.buffered,
                heaviest.uid,
                victim.pid,
            )
            self._evict(
                victim,
                "IO error: too much unfinished input on the commands socket; closed the "
                f"largest unfinished command, from uid {heaviest.uid}",
            )

    # -- one connection -------------------------------------------------------------------------

    async def _serve_connection(self, conn: _Connection) -> None:
        try:
            async with conn.stream:
                reply = await self._reply_for(conn)
                if reply is not None:
                    await self._send_reply(conn, reply)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            logger.debug("commands socket peer went away: %s", stream_failure(exc))
        finally:
            self._uncount(conn)
            conn.finished()

    async def _send_reply(self, conn: _Connection, reply: bytes) -> None:
        # A peer that never reads must not hold its connection for ever.
        with anyio.move_on_after(self._read_timeout) as scope:
            await _send(conn.raw, reply)
        if scope.cancelled_caught:
            self._warn(
                conn.peer,
                "unread",
                "A commands-socket peer (uid %d, pid %d) did not read its reply within %g s; "
                "dropped it (a peer must read its reply to end of file)",
                conn.peer.uid,
                conn.pid,
                self._read_timeout,
            )

    async def _reply_for(self, conn: _Connection) -> bytes | None:
        """The reply to send, or None for a peer that is gone or was evicted."""
        data = bytearray()
        size = 0
        raw = conn.raw
        try:
            # Most peers have sent the whole command, and its end, by now: read what is there
            # without the deadline's scope, which only a peer that makes us wait needs.
            ended = False
            while not conn.evicted and size <= MAX_COMMAND_BYTES:
                try:
                    chunk = raw.recv(65536)
                except BlockingIOError:
                    break
                if not chunk:
                    ended = True
                    break
                size = self._take(conn, data, chunk, size)
            if not ended and not conn.evicted:
                conn.scope.deadline = anyio.current_time() + self._read_timeout
                with conn.scope:
                    while chunk := await _receive(raw):
                        size = self._take(conn, data, chunk, size)
        except OSError as exc:
            logger.debug("commands socket read failed: %s", exc)
            return None
        self._finish_reading(conn)
        if conn.evicted:
            _discard_input(raw)
            return None
        peer = conn.peer
        if size > MAX_COMMAND_BYTES:
            self._warn(
                peer,
                "oversized",
                "A commands-socket peer (uid %d, pid %d) sent a command of %d bytes or more; "
                "rejected it (the limit is %d bytes)",
                peer.uid,
                conn.pid,
                size,
                MAX_COMMAND_BYTES,
            )
            return f"IO error: command longer than {MAX_COMMAND_BYTES} bytes".encode()
        if conn.scope.cancelled_caught:
            self._warn(
                peer,
                "timeout",
                "A commands-socket peer (uid %d, pid %d) sent no end of file in %g s; told it "
                "to shut down its write side after the command",
                peer.uid,
                conn.pid,
                self._read_timeout,
            )
            return (
                f"IO error: no end of input within {self._read_timeout:g} s "
                "(write the command, then shut down the write side)"
            ).encode()
        try:
            command = parse_command(bytes(data))
        except CommandSyntaxError as exc:
            self._warn(
                conn.peer,
                "syntax",
                "Rejected a command from uid %d (pid %d): %s; it sent %r",
                conn.peer.uid,
                conn.pid,
                exc.reply,
                bytes(data[:100]),
            )
            return exc.reply.encode()
        try:
            event = await self._run(conn, command)
        except Exception:
            # Never reached with the daemon's interpreter; a bug here must not stop the server.
            logger.exception("Command %s failed unexpectedly", command)
            return b"Unix Domain Socket error: internal receiver error"  # the 2016 text
        return b"" if event is None else encode_event(event)

    def _take(self, conn: _Connection, data: bytearray, chunk: bytes, size: int) -> int:
        """Keep a chunk of the command (within the limits); return the size read so far."""
        size += len(chunk)
        # Past the limit, keep reading (and dropping) to the end of the input, so that the
        # peer, still writing, gets the error reply instead of a reset.
        if size <= MAX_COMMAND_BYTES:
            data += chunk
            self._hold(conn, len(chunk))
        elif data:
            del data[:]
            self._drop_buffer(conn)
        return size

    async def _run(self, conn: _Connection, command: Command) -> Event | None:
        """Execute under the per-uid limit, then the total one, each first come, first served.

        The connection borrows the tokens (not its task, which anyio would look up each time).
        """
        peer = conn.peer
        await _acquire(
            peer.running,
            conn,
            "A command from uid %d waits: %d of its commands are running (the per-uid limit)",
            peer.uid,
        )
        try:
            await _acquire(
                self._running,
                conn,
                "A command from uid %d waits: %d commands are running (the limit)",
                peer.uid,
            )
            try:
                return await self._execute(command)
            finally:
                self._running.release_on_behalf_of(conn)
        finally:
            peer.running.release_on_behalf_of(conn)

    # -- logging --------------------------------------------------------------------------------

    def _warn(self, peer: _Peer, kind: str, message: str, *args: object) -> None:
        """WARNING the first time per uid and kind while the uid stays connected, then DEBUG."""
        if kind in peer.warned:
            logger.debug(message, *args)
        else:
            peer.warned.add(kind)
            logger.warning(message + "; more like it from this uid are logged at DEBUG", *args)


async def _acquire(limiter: anyio.CapacityLimiter, conn: _Connection, why: str, uid: int) -> None:
    """A token of ``limiter`` for ``conn``: at once if one is free and nobody waits, else in
    turn, saying so at DEBUG."""
    try:
        limiter.acquire_on_behalf_of_nowait(conn)
        return
    except anyio.WouldBlock:
        logger.debug(why, uid, limiter.borrowed_tokens)
    await limiter.acquire_on_behalf_of(conn)


def _peer_credentials(raw: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the peer at connect time, from SO_PEERCRED."""
    try:
        creds = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as exc:
        logger.debug("no SO_PEERCRED for a commands-socket peer: %s", exc)
        return 0, _UNKNOWN_UID
    pid, uid, _gid = struct.unpack("iII", creds)
    return pid, uid


# The raw socket, not SocketStream.receive()/send(): on asyncio, cancelling those (a deadline,
# an eviction, the daemon stopping) as the socket turns ready makes the event loop report an
# InvalidStateError from a reader callback (anyio 4.16); anyio.wait_readable() is safe.


async def _receive(raw: socket.socket) -> bytes:
    """The next chunk of input, or b"" at its end."""
    await anyio.lowlevel.checkpoint()  # a peer that is always ready must not hog the loop
    while True:
        try:
            return raw.recv(65536)
        except BlockingIOError:
            await anyio.wait_readable(raw)


async def _send(raw: socket.socket, reply: bytes) -> None:
    """Send the whole reply, then end of file."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    view = memoryview(reply)
    while view:
        try:
            view = view[raw.send(view) :]
        except BlockingIOError:
            await anyio.wait_writable(raw)
    raw.shutdown(socket.SHUT_WR)


def _discard_input(raw: socket.socket) -> None:
    """Drop what the peer already sent: closing with unread input would reset the connection
    on Linux, and the peer would lose the reply it has not read yet."""
    for _ in range(16):  # bounded: at most a few socket buffers
        try:
            if not raw.recv(65536, socket.MSG_DONTWAIT):
                return
        except OSError:
            return


async def _refuse(stream: SocketStream, raw: socket.socket, reply: str) -> None:
    """Tell a connection there is no room, without waiting for anything, and close it."""
    try:
        _discard_input(raw)
        raw.send(reply.encode(), socket.MSG_DONTWAIT)
        raw.shutdown(socket.SHUT_WR)
    except OSError as exc:
        logger.debug("couldn't tell a refused peer why: %s", exc)
    await stream.aclose()
