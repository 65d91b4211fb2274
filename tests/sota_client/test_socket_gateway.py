"""The Unix-socket gateway over real sockets: commands in (reference 4.2-4.6, 10.10), events out.

The commands socket keeps the 2016 framing and texts byte for byte; the events outbox keeps
every envelope until an SWLM takes it (2016 dropped them, bug 46) and never stalls (bug 47).
Hostile peers (idle, slow, flooding, another uid, out of descriptors) cost a descriptor, not a slot.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import resource
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute, SocketListener, SocketStream, UNIXSocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from sota_client._errors import SotaError
from sota_client.gateways import CommandServer
from sota_client.gateways._socket import MAX_COMMAND_BYTES, Execute
from sota_client.gateways._unix import bind_error, raise_open_file_limit
from swlm_sdk.protocol import (
    Command,
    ErrorEvent,
    Event,
    FoundInstalledPackages,
    FoundSystemInfo,
    ListInstalledPackages,
    Package,
    Shutdown,
    StartDownload,
)
from tests.conftest import LogWaiter

pytestmark = pytest.mark.anyio


# -- helpers ---------------------------------------------------------------------------------


async def exchange(path: Path, data: bytes, *, half_close: bool = True) -> bytes:
    """One 2016-style command: connect, write, half-close, read the reply to end of file."""
    with anyio.fail_after(10):
        async with await anyio.connect_unix(path) as stream:
            await stream.send(data)
            if half_close:
                await stream.send_eof()
            return await read_all(stream)


async def read_all(stream: SocketStream) -> bytes:
    reply = bytearray()
    async for chunk in stream:
        reply += chunk
    return bytes(reply)


class Barrier:
    """Holds every command until ``parties`` of them run at once: proves they are concurrent."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.all_here = anyio.Event()

    async def execute(self, command: Command) -> Event | None:
        # The 2016 test's fake interpreter: StartDownload(id) -> FoundSystemInfo(id).
        assert isinstance(command, StartDownload)
        self.arrived += 1
        if self.arrived == self.parties:
            self.all_here.set()
        await self.all_here.wait()
        return FoundSystemInfo(command.update_id)


async def echo(command: Command) -> Event | None:
    if isinstance(command, Shutdown):
        return None
    if isinstance(command, StartDownload):
        return FoundSystemInfo(command.update_id)
    return ErrorEvent(f"unexpected {command.name}")


@asynccontextmanager
async def serving(
    path: Path,
    execute: Execute = echo,
    *,
    mode: int = 0o660,
    group: str | None = None,
    read_timeout: float = 30.0,
    **limits: int,
) -> AsyncIterator[CommandServer]:
    server = CommandServer(
        str(path), execute, mode=mode, group=group, read_timeout=read_timeout, **limits
    )
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        yield server
        tg.cancel_scope.cancel()


def stale_socket(path: Path) -> None:
    """A socket file whose process is gone (what a crash leaves behind)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


# -- commands: the 2016 reference test and its derived cases ---------------------------------


async def test_reference_ten_concurrent_clients(sock_dir: Path) -> None:
    """Reference 4.6/10.10: ``dl <i>`` without newline, half-close, each gets its own reply."""
    path = sock_dir / "cmd.sock"
    barrier = Barrier(10)
    replies: dict[int, bytes] = {}

    async def client(i: int) -> None:
        replies[i] = await exchange(path, f"dl {i}".encode())

    async with serving(path, barrier.execute):
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(client, i)
    assert replies == {i: b'{"variant":"FoundSystemInfo","fields":["%d"]}' % i for i in range(10)}


async def test_a_hundred_concurrent_clients(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    barrier = Barrier(100)
    replies: dict[int, bytes] = {}

    async def client(i: int) -> None:
        replies[i] = await exchange(path, f"StartDownload u{i}\n".encode())

    async with serving(path, barrier.execute):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(client, i)
    assert replies == {i: b'{"variant":"FoundSystemInfo","fields":["u%d"]}' % i for i in range(100)}


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (b"foo", b"Unknown Command: bad command: foo"),
        (b"dl", b"Unknown Command: usage: dl <id>"),
        (b"\xff\xfedl 1", b"IO error: stream did not contain valid UTF-8"),
        (b"dl 1\nignored after the newline", b'{"variant":"FoundSystemInfo","fields":["1"]}'),
        (b"shutdown", b""),
    ],
)
async def test_replies_are_the_2016_texts(
    sock_dir: Path, request_bytes: bytes, reply: bytes
) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path):
        assert await exchange(path, request_bytes) == reply


async def test_a_peer_that_never_half_closes_gets_the_timeout_text(sock_dir: Path) -> None:
    """2016 waited for ever (bug 48)."""
    path = sock_dir / "cmd.sock"
    async with serving(path, read_timeout=0.2):
        assert await exchange(path, b"dl 1", half_close=False) == (
            b"IO error: no end of input within 0.2 s "
            b"(write the command, then shut down the write side)"
        )
        assert await exchange(path, b"dl 2") == b'{"variant":"FoundSystemInfo","fields":["2"]}'


async def test_other_clients_are_served_while_one_stalls(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path):
        with anyio.fail_after(10):
            async with await anyio.connect_unix(path) as stalled:
                await stalled.send(b"dl 99")
                for i in range(10):
                    reply = await exchange(path, f"dl {i}".encode())
                    assert reply == b'{"variant":"FoundSystemInfo","fields":["%d"]}' % i
                await stalled.send_eof()
                assert await read_all(stalled) == b'{"variant":"FoundSystemInfo","fields":["99"]}'


async def test_an_oversized_command_gets_the_size_error(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    longest = b"dl " + b"x" * (MAX_COMMAND_BYTES - 3)
    assert len(longest) == MAX_COMMAND_BYTES
    async with serving(path):
        assert await exchange(path, longest + b"x") == b"IO error: command longer than 65536 bytes"
        assert await exchange(path, longest) == (
            b'{"variant":"FoundSystemInfo","fields":["%s"]}' % longest[3:]
        )


async def test_a_flood_gets_the_size_error_and_the_server_goes_on(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path):
        assert await exchange(path, b"dl " + b"x" * (4 << 20)) == (
            b"IO error: command longer than 65536 bytes"
        )
        assert await exchange(path, b"dl 1") == b'{"variant":"FoundSystemInfo","fields":["1"]}'


async def test_a_failing_execute_gets_the_2016_internal_error_text(sock_dir: Path) -> None:
    async def broken(command: Command) -> Event | None:
        raise RuntimeError("a bug")

    path = sock_dir / "cmd.sock"
    async with serving(path, broken):
        assert await exchange(path, b"dl 1") == b"Unix Domain Socket error: internal receiver error"
        assert await exchange(path, b"dl 2") == b"Unix Domain Socket error: internal receiver error"


async def test_a_peer_that_never_reads_its_reply_is_dropped(
    sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    big = FoundInstalledPackages(tuple(Package(f"package-{i}", "1.0") for i in range(100_000)))

    async def execute(command: Command) -> Event | None:
        return big if isinstance(command, ListInstalledPackages) else await echo(command)

    waiter = log_waiter("did not read its reply")
    path = sock_dir / "cmd.sock"
    async with serving(path, execute, read_timeout=0.2):
        with anyio.fail_after(10):
            async with await anyio.connect_unix(path) as lazy:
                await lazy.send(b"ls")
                await lazy.send_eof()
                await waiter.wait()
                assert await exchange(path, b"dl 1") == (
                    b'{"variant":"FoundSystemInfo","fields":["1"]}'
                )


# -- the socket file -------------------------------------------------------------------------


async def test_socket_mode_is_0660_by_default_and_unlinked_on_stop(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path):
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
    assert not path.exists()


async def test_socket_mode_is_configurable(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path, mode=0o600):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert not path.exists()


async def test_socket_group(sock_dir: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    path = sock_dir / "cmd.sock"
    async with serving(path, group=group):
        assert os.lstat(path).st_gid == os.getgid()
        assert await exchange(path, b"dl 1") == b'{"variant":"FoundSystemInfo","fields":["1"]}'
    assert not path.exists()  # the chown changed the file's ctime; it is still ours


async def test_an_unknown_group_is_a_start_up_error(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    server = CommandServer(str(path), echo, group="no-such-group-sota")
    with pytest.raises(
        SotaError, match=r"network\.socket_group: no group named 'no-such-group-sota'"
    ):
        await server.serve()
    assert not path.exists()  # and the listener was closed (filterwarnings=error)


async def test_a_stale_socket_is_replaced(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sock_dir / "cmd.sock"
    stale_socket(path)
    with caplog.at_level(logging.INFO):
        async with serving(path):
            assert await exchange(path, b"dl 1") == (
                b'{"variant":"FoundSystemInfo","fields":["1"]}'
            )
    assert not path.exists()
    assert f"Removed a stale commands socket at {path}" in caplog.text


async def test_a_symbolic_link_is_left_alone(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    path.symlink_to(sock_dir / "elsewhere")
    with pytest.raises(SotaError, match="exists and is a symbolic link; refusing to replace it"):
        await CommandServer(str(path), echo).serve()
    assert path.is_symlink()


async def test_a_regular_file_is_left_alone(sock_dir: Path) -> None:
    """2016 deleted whatever was at the path (bug 48)."""
    path = sock_dir / "cmd.sock"
    path.write_text("precious")
    server = CommandServer(str(path), echo)
    with pytest.raises(SotaError, match="exists and is not a socket; refusing to replace it"):
        await server.serve()
    assert path.read_text() == "precious"


async def test_a_missing_directory_is_a_clear_start_up_error(sock_dir: Path) -> None:
    path = sock_dir / "missing" / "cmd.sock"
    server = CommandServer(str(path), echo)
    with pytest.raises(SotaError) as caught:
        await server.serve()
    assert str(caught.value) == (
        f"couldn't open commands socket: {path}: the directory {path.parent} does not exist. "
        f"Create it (e.g. install -d -m 0750 {path.parent}), or under systemd set "
        f"RuntimeDirectory=missing in the unit, or change network.socket_commands_path"
    )


def test_a_directory_the_daemon_cannot_write_is_named(sock_dir: Path) -> None:
    # Root writes anywhere, so the error is made, not provoked.
    denied = PermissionError(errno.EACCES, "Permission denied")
    error = bind_error(str(sock_dir / "cmd.sock"), denied)
    assert str(error) == (
        f"couldn't open commands socket: {sock_dir / 'cmd.sock'}: Permission denied. "
        f"The daemon's user must be able to write to {sock_dir}"
    )


async def test_a_live_listener_is_left_alone(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path):
        with pytest.raises(SotaError, match="another process is listening on"):
            await CommandServer(str(path), echo).serve()
        assert await exchange(path, b"dl 1") == b'{"variant":"FoundSystemInfo","fields":["1"]}'
    assert not path.exists()


async def test_a_replaced_socket_file_is_not_unlinked(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path):
        path.unlink()
        path.write_text("someone else's")
    assert path.read_text() == "someone else's"


# -- hostile peers: an idle or slow peer costs a file descriptor, not a slot -------------------

ROOT = os.getuid()
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a second uid needs root (setuid)")


def ok(update_id: str) -> bytes:
    return b'{"variant":"FoundSystemInfo","fields":["%s"]}' % update_id.encode()


def evicted_for_uid(uid: int) -> str:
    return f"IO error: too many connections from uid {uid}; closed the oldest unfinished one"


def evicted_for_total(uid: int) -> str:
    return (
        "IO error: too many connections to the commands socket; closed the oldest unfinished "
        f"one of uid {uid}, which has the most"
    )


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(
        record.levelno == logging.WARNING and text in record.getMessage()
        for record in caplog.records
    )


def arrived(stream: SocketStream) -> tuple[bytes, bool]:
    """What the server has sent so far and whether it closed its side, without waiting."""
    raw = stream.extra(SocketAttribute.raw_socket)
    data = bytearray()
    while True:
        try:
            chunk = raw.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return bytes(data), False
        if not chunk:
            return bytes(data), True
        data += chunk


async def hold(stack: AsyncExitStack, path: Path, data: bytes = b"") -> SocketStream:
    """A connection the test keeps open without ending its command."""
    stream = await stack.enter_async_context(await anyio.connect_unix(path))
    if data:
        await stream.send(data)
    return stream


async def send_command(stack: AsyncExitStack, path: Path, data: bytes) -> SocketStream:
    """A complete command whose reply the test reads later."""
    stream = await hold(stack, path, data)
    await stream.send_eof()
    return stream


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """The test holds both ends of every connection: raise the soft limit, as the daemon does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if raise_open_file_limit() < 3000:
        pytest.skip(f"needs an open-file hard limit of 3000 or more, not {hard}")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


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


class Countdown(logging.Handler):
    """Set when ``text`` has been logged ``times`` times (the server's logger at DEBUG)."""

    def __init__(self, text: str, times: int) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.times = times
        self.done = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.times -= 1
            if self.times <= 0:
                self.done.set()


# A peer of another uid: tests run as root, so a child process can become nobody.
OTHER_UID_PEER = r"""
import json, os, socket, sys
mode, path, count, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
os.setgid(65534)
os.setuid(65534)
socks = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(payload)
    if mode == "exchange":
        s.shutdown(socket.SHUT_WR)
    socks.append(s)
if mode == "exchange":
    for s in socks:
        s.settimeout(60)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        print(json.dumps(reply.decode()), flush=True)
    sys.exit()
print(json.dumps("connected"), flush=True)
sys.stdin.readline()
for s in socks:
    s.setblocking(False)
    data, closed = b"", False
    try:
        while chunk := s.recv(65536):
            data += chunk
        closed = True
    except BlockingIOError:
        pass
    print(json.dumps([data.decode(), closed]), flush=True)
"""


class OtherUidPeer:
    """``hold`` mode: ``count`` connections that send ``payload`` and no end of file, then on
    :meth:`report` what each received and whether it was closed. ``exchange`` mode: ``count``
    complete commands, then their replies."""

    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def line(self) -> Any:
        return json.loads(await self._stdout.receive_until(b"\n", 1 << 20))

    async def report(self, count: int) -> list[Any]:
        await self._stdin.send(b"report\n")
        return [await self.line() for _ in range(count)]


@asynccontextmanager
async def other_uid_peer(
    mode: str, path: Path, count: int, payload: bytes = b""
) -> AsyncIterator[OtherUidPeer]:
    command = [sys.executable, "-c", OTHER_UID_PEER, mode, str(path), str(count), payload.decode()]
    async with await anyio.open_process(command) as process:
        yield OtherUidPeer(process)


def open_to_other_uids(sock_dir: Path) -> None:
    sock_dir.chmod(0o755)  # mkdtemp made it 0700; the socket itself is served with 0666


async def test_idle_and_slow_peers_do_not_delay_a_command(
    sock_dir: Path, many_descriptors: None
) -> None:
    """The issue's numbers: 1,000 peers that never send, 300 that sent a little and stalled.

    Before, they held all 256 slots and ``dl 1`` waited for their read deadline (600 s here).
    """
    path = sock_dir / "cmd.sock"
    async with (
        serving(path, read_timeout=600, max_connections_per_uid=2000),
        AsyncExitStack() as stack,
    ):
        with anyio.fail_after(60):
            idle = [await hold(stack, path) for _ in range(1000)]
            slow = [await hold(stack, path, b"dl ") for _ in range(300)]
            assert await exchange(path, b"dl 1") == ok("1")
            # Accepts are in connect order, so all 1,300 were accepted before ``dl 1``...
            assert {arrived(stream) for stream in idle + slow} == {(b"", False)}
            # ... and the slow writers were being read all along.
            await slow[0].send(b"7")
            await slow[0].send_eof()
            assert await read_all(slow[0]) == ok("7")


async def test_a_uid_at_its_cap_loses_its_oldest_unfinished_connection(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path, max_connections_per_uid=3), AsyncExitStack() as stack:
        with anyio.fail_after(30):
            first, second, third = [await hold(stack, path, b"dl ") for _ in range(3)]
            fourth = await hold(stack, path)
            # Even the same uid's new, quick command is served: it closes the oldest but one.
            assert await exchange(path, b"dl 1") == ok("1")
            assert arrived(first) == (evicted_for_uid(ROOT).encode(), True)
            assert arrived(second) == (evicted_for_uid(ROOT).encode(), True)
            assert arrived(third) == (b"", False)
            assert arrived(fourth) == (b"", False)
            await third.send(b"3")
            await third.send_eof()
            assert await read_all(third) == ok("3")
    assert warnings(caplog, "closed its oldest unfinished one") == 1  # for two evictions


async def test_connections_whose_command_is_complete_are_never_evicted(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    gate = anyio.Event()
    running: list[str] = []
    changed = anyio.Event()

    async def execute(command: Command) -> Event | None:
        nonlocal changed
        assert isinstance(command, StartDownload)
        running.append(command.update_id)
        changed.set()
        changed = anyio.Event()
        await gate.wait()
        return FoundSystemInfo(command.update_id)

    async def until_running(count: int) -> None:
        while len(running) < count:
            await changed.wait()

    refused = (
        f"IO error: too many connections from uid {ROOT}, all waiting for their commands; "
        "try again when one finishes"
    ).encode()
    async with serving(path, execute, max_connections_per_uid=3), AsyncExitStack() as stack:
        with anyio.fail_after(30):
            older = [await send_command(stack, path, b"dl e%d" % i) for i in range(2)]
            await until_running(2)
            unfinished = await hold(stack, path, b"dl ")  # maybe still unread when evicted
            newer = await send_command(stack, path, b"dl n")
            await until_running(3)  # it took the place of the unfinished one, not of the older
            assert arrived(unfinished) == (evicted_for_uid(ROOT).encode(), True)
            # Full of running commands: a new connection is refused, whatever it does.
            async with await anyio.connect_unix(path) as silent:
                assert await read_all(silent) == refused
            eager = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stack.callback(eager.close)
            eager.connect(str(path))  # no await until its command is complete: it is
            eager.sendall(b"dl x")  # all unread when the server refuses it, and closing
            eager.shutdown(socket.SHUT_WR)  # must not reset it before it reads the reply
            eager_stream = await stack.enter_async_context(
                await UNIXSocketStream.from_socket(eager)
            )
            assert await read_all(eager_stream) == refused
            gate.set()
            assert [await read_all(stream) for stream in [*older, newer]] == [
                ok("e0"),
                ok("e1"),
                ok("n"),
            ]
            assert await exchange(path, b"dl 1") == ok("1")


async def test_unfinished_input_beyond_the_budget_closes_the_largest(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    async with serving(path, max_buffered=1000), AsyncExitStack() as stack:
        with anyio.fail_after(30):
            small = await hold(stack, path, b"dl " + b"c" * 197)
            large = await hold(stack, path, b"dl " + b"a" * 597)
            medium = await hold(stack, path, b"dl " + b"b" * 297)  # 1,100 bytes held in all
            assert (
                await read_all(large)
                == (
                    f"IO error: too much unfinished input on the commands socket; closed the "
                    f"largest unfinished command, from uid {ROOT}"
                ).encode()
            )
            assert arrived(medium) == (b"", False)
            assert arrived(small) == (b"", False)
            await medium.send_eof()
            assert await read_all(medium) == ok("b" * 297)
            await small.send_eof()
            assert await read_all(small) == ok("c" * 197)


async def test_at_most_max_running_commands_execute_at_once(
    sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    gate = anyio.Event()
    running = peak = 0

    async def execute(command: Command) -> Event | None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return await echo(command)

    waits = log_waiter("commands are running (the limit)")
    path = sock_dir / "cmd.sock"
    async with serving(path, execute, max_running=2), AsyncExitStack() as stack:
        with anyio.fail_after(30):
            streams = [await send_command(stack, path, b"dl %d" % i) for i in range(3)]
            await waits.wait()
            assert running == 2
            gate.set()
            assert [await read_all(stream) for stream in streams] == [ok("0"), ok("1"), ok("2")]
    assert peak == 2


@needs_root
async def test_another_uids_flood_at_its_cap_leaves_roots_connections_alone(
    sock_dir: Path,
) -> None:
    open_to_other_uids(sock_dir)
    path = sock_dir / "cmd.sock"
    async with (
        serving(path, mode=0o666, max_connections_per_uid=4),
        AsyncExitStack() as stack,
    ):
        with anyio.fail_after(60):
            mine = await hold(stack, path, b"dl ")  # root's, and the oldest of all
            async with other_uid_peer("hold", path, 10) as nobody:
                assert await nobody.line() == "connected"
                assert await exchange(path, b"dl 1") == ok("1")
                assert arrived(mine) == (b"", False)
                states = await nobody.report(10)
            assert states == [[evicted_for_uid(NOBODY), True]] * 6 + [["", False]] * 4
            await mine.send(b"2")
            await mine.send_eof()
            assert await read_all(mine) == ok("2")


@needs_root
async def test_at_the_total_cap_the_uid_with_the_most_connections_makes_room(
    sock_dir: Path,
) -> None:
    """Not the oldest connection overall: that would be root's, who has only one."""
    open_to_other_uids(sock_dir)
    path = sock_dir / "cmd.sock"
    async with (
        serving(path, mode=0o666, max_connections=6, max_connections_per_uid=5),
        AsyncExitStack() as stack,
    ):
        with anyio.fail_after(60):
            mine = await hold(stack, path, b"dl ")
            async with other_uid_peer("hold", path, 5) as nobody:
                assert await nobody.line() == "connected"
                assert await exchange(path, b"dl 1") == ok("1")
                assert arrived(mine) == (b"", False)
                states = await nobody.report(5)
            assert states == [[evicted_for_total(NOBODY), True]] + [["", False]] * 4
            await mine.send(b"2")
            await mine.send_eof()
            assert await read_all(mine) == ok("2")


@needs_root
async def test_one_uids_flood_of_commands_does_not_hold_up_another_uids(
    sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    gate = anyio.Event()

    async def execute(command: Command) -> Event | None:
        assert isinstance(command, StartDownload)
        if command.update_id.startswith("root"):
            await gate.wait()
        return FoundSystemInfo(command.update_id)

    queued = log_waiter("of its commands are running (the per-uid limit)")
    open_to_other_uids(sock_dir)
    path = sock_dir / "cmd.sock"
    async with (
        serving(path, execute, mode=0o666, max_running=3, max_running_per_uid=2),
        AsyncExitStack() as stack,
    ):
        with anyio.fail_after(60):
            floods = [await send_command(stack, path, b"dl root%d" % i) for i in range(5)]
            await queued.wait()  # root's third command waits though one slot is free...
            async with other_uid_peer("exchange", path, 1, b"dl nobody") as nobody:
                assert await nobody.line() == ok("nobody").decode()  # ... for other uids
            gate.set()
            assert [await read_all(stream) for stream in floods] == [
                ok(f"root{i}") for i in range(5)
            ]


async def test_the_connection_cap_is_at_most_half_the_open_file_limit(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """So that peers can never take the descriptors that downloads and the journal need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    path = sock_dir / "cmd.sock"
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
    try:
        async with serving(path), AsyncExitStack() as stack:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # the cap was set at start
            with anyio.fail_after(30):
                streams = [await hold(stack, path) for _ in range(100)]
                assert await exchange(path, b"dl 1") == ok("1")
                streams.append(await hold(stack, path))
                assert await exchange(path, b"dl 2") == ok("2")
                assert arrived(streams[0]) == (evicted_for_total(ROOT).encode(), True)
                assert arrived(streams[1]) == (evicted_for_total(ROOT).encode(), True)
                assert {arrived(stream) for stream in streams[2:]} == {(b"", False)}
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert warnings(caplog, "(the limit); closed the oldest unfinished one") == 1


async def test_out_of_descriptors_the_oldest_unfinished_connection_makes_room(
    sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    warned = log_waiter("out of file descriptors")
    path = sock_dir / "cmd.sock"
    async with serving(path), AsyncExitStack() as stack:
        with anyio.fail_after(30):
            oldest = await hold(stack, path)
            younger = await hold(stack, path)
            assert await exchange(path, b"dl 0") == ok("0")  # both were accepted
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # made while it can be
            stack.callback(client.close)
            with no_free_descriptors():
                client.connect(str(path))
                client.sendall(b"dl 1")
                client.shutdown(socket.SHUT_WR)
                stream = await stack.enter_async_context(await UNIXSocketStream.from_socket(client))
                assert await read_all(stream) == ok("1")  # served while the limit is still low
            assert arrived(oldest) == (
                b"IO error: the daemon is out of file descriptors; closed the oldest unfinished "
                b"connection, from uid %d" % ROOT,
                True,
            )
            assert arrived(younger) == (b"", False)
            assert warned.count == 1


async def test_out_of_descriptors_with_nothing_to_close_the_server_waits_and_recovers(
    sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    """anyio's ``serve()`` ended on the first failed accept, and with it the daemon."""
    warned = log_waiter("out of file descriptors")
    recovered = log_waiter("accepts connections again")
    retries = Countdown("Accepting failed again", 3)
    server_logger = logging.getLogger("sota_client")
    server_logger.addHandler(retries)
    path = sock_dir / "cmd.sock"
    try:
        async with serving(path), AsyncExitStack() as stack:
            with anyio.fail_after(30):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                stack.callback(client.close)
                with no_free_descriptors():
                    client.connect(str(path))
                    client.sendall(b"dl 1")
                    client.shutdown(socket.SHUT_WR)
                    await retries.done.wait()  # accept failed four times, warned once
                stream = await stack.enter_async_context(await UNIXSocketStream.from_socket(client))
                assert await read_all(stream) == ok("1")
                await recovered.wait()
                assert warned.count == 1
                assert await exchange(path, b"dl 2") == ok("2")
    finally:
        server_logger.removeHandler(retries)


async def test_failed_accepts_that_are_the_peers_doing_are_skipped(
    sock_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_waiter: Callable[[str], LogWaiter],
) -> None:
    """ECONNABORTED and the like cannot be caused over a real Unix socket: inject them."""
    real_listener = anyio.create_unix_listener
    failures = [errno.ECONNABORTED, errno.EPROTO]

    class FlakyListener(SocketListener):
        def __init__(self, inner: SocketListener) -> None:
            self.inner = inner

        async def accept(self) -> SocketStream:
            if failures:
                raise anyio.BrokenResourceError from OSError(failures.pop(0), "injected")
            return await self.inner.accept()

        async def aclose(self) -> None:
            await self.inner.aclose()

        @property
        def _raw_socket(self) -> socket.socket:
            return self.inner._raw_socket

    async def flaky(*args: Any, **kwargs: Any) -> SocketListener:
        return FlakyListener(await real_listener(*args, **kwargs))

    monkeypatch.setattr(anyio, "create_unix_listener", flaky)
    skipped = log_waiter("left before it was accepted")
    path = sock_dir / "cmd.sock"
    async with serving(path):
        assert await exchange(path, b"dl 1") == ok("1")
    assert not failures
    assert skipped.count == 2


@pytest.fixture
def open_file_limit() -> Iterator[tuple[int, int]]:
    """The (soft, hard) limits to restore after the test changes them."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


async def test_raise_open_file_limit_goes_to_the_hard_limit_up_to_the_ceiling(
    open_file_limit: tuple[int, int],
) -> None:
    _soft, hard = open_file_limit
    if hard < 4000:
        pytest.skip(f"needs an open-file hard limit of 4000 or more, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the common default
    assert raise_open_file_limit(ceiling=3000) == 3000
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (3000, hard)
    assert raise_open_file_limit(ceiling=hard + 1000) == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


async def test_raise_open_file_limit_never_lowers_it(open_file_limit: tuple[int, int]) -> None:
    _soft, hard = open_file_limit
    if hard < 2000:
        pytest.skip(f"needs an open-file hard limit of 2000 or more, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (2000, hard))
    assert raise_open_file_limit(ceiling=1500) == 2000
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (2000, hard)
