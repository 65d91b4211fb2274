"""The Unix-socket gateway over real sockets: commands in (reference 4.2-4.6, 10.10), events out.

The commands socket keeps the 2016 framing and texts byte for byte; the events outbox keeps
every envelope until an SWLM takes it (2016 dropped them, bug 46) and never stalls (bug 47).
"""

from __future__ import annotations

import grp
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream

from sota_client._errors import SotaError
from sota_client.gateways import CommandServer
from sota_client.gateways._socket import MAX_COMMAND_BYTES, Execute
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
) -> AsyncIterator[CommandServer]:
    server = CommandServer(str(path), execute, mode=mode, group=group, read_timeout=read_timeout)
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


async def test_a_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "cmd.sock"
    stale_socket(path)
    async with serving(path):
        assert await exchange(path, b"dl 1") == b'{"variant":"FoundSystemInfo","fields":["1"]}'
    assert not path.exists()


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
        f"couldn't open commands socket: {path}: No such file or directory"
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
