"""sd_notify without libsystemd: messages reach a real datagram socket, as systemd's would, and a
receiver that stops reading never makes the daemon wait."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from sota_client import _systemd
from sota_client._systemd import notify, watchdog

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


@pytest.fixture(autouse=True)
def fresh_notifier(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No kept states, no earlier warning and no socket from another test."""
    notifier = _systemd._Notifier()
    monkeypatch.setattr(_systemd, "_notifier", notifier)
    yield
    notifier.close()


@pytest.fixture
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def notify_socket(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's end: a datagram socket at ``$NOTIFY_SOCKET``."""
    path = sock_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def fill_queue() -> int:
    """Send to ``$NOTIFY_SOCKET`` until its queue refuses more; the number of datagrams sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        filler.connect(os.environ["NOTIFY_SOCKET"])
        filler.setblocking(False)
        sent = 0
        while True:
            try:
                filler.send(b"filler")
            except BlockingIOError:
                return sent
            sent += 1


def queue_is_full() -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        probe.connect(os.environ["NOTIFY_SOCKET"])
        probe.setblocking(False)
        try:
            probe.send(b"probe")
        except BlockingIOError:
            return True
    return False


def drain(sock: socket.socket, count: int) -> None:
    for _ in range(count):
        assert sock.recv(4096) == b"filler"


@pytest.mark.usefixtures("no_systemd")
def test_notify_reaches_the_socket(notify_socket: socket.socket) -> None:
    assert notify("READY=1") is True
    assert notify_socket.recv(4096) == b"READY=1"
    assert notify("READY=1", "STATUS=Running") is True
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=Running"


@pytest.mark.usefixtures("no_systemd")
def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sota-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


class CountingSocket(socket.socket):
    """A real socket that counts how many were made."""

    made = 0

    def __init__(self, *args: int) -> None:
        CountingSocket.made += 1
        super().__init__(*args)


@pytest.mark.usefixtures("no_systemd")
def test_one_socket_serves_every_message(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle daemon notifies at every poll: that must not cost a socket each time."""
    CountingSocket.made = 0
    monkeypatch.setattr(socket, "socket", CountingSocket)
    for n in range(5):
        assert notify(f"STATUS=step {n}") is True
        assert notify_socket.recv(4096) == b"STATUS=step %d" % n
    assert CountingSocket.made == 1


@pytest.mark.usefixtures("no_systemd")
def test_an_unchanged_status_is_not_sent_again(notify_socket: socket.socket) -> None:
    assert notify("STATUS=Running") is True
    assert notify("STATUS=Running") is True  # systemd shows it already
    assert notify("WATCHDOG=1", "STATUS=Running") is True
    assert notify("STATUS=Core is failing") is True
    assert notify("STATUS=Running") is True
    notify_socket.setblocking(False)
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(notify_socket.recv(4096))
    assert got == [b"STATUS=Running", b"WATCHDOG=1", b"STATUS=Core is failing", b"STATUS=Running"]


@pytest.mark.usefixtures("no_systemd")
def test_a_status_that_did_not_arrive_is_sent_again(notify_socket: socket.socket) -> None:
    filled = fill_queue()
    assert notify("STATUS=Running") is False  # dropped: systemd does not have it
    drain(notify_socket, filled)
    assert notify("STATUS=Running") is True
    assert notify_socket.recv(4096) == b"STATUS=Running"


@pytest.mark.usefixtures("no_systemd")
def test_the_socket_is_opened_again_when_systemd_comes_back(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd re-executed: its notify socket is a new one at the same path; the kept socket,
    connected to the old one, fails once and is replaced without losing the message."""
    path = sock_dir / "notify"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    for run in range(2):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            sock.settimeout(10)
            assert notify(f"STATUS=run {run}") is True
            assert sock.recv(4096) == b"STATUS=run %d" % run
        path.unlink()


@pytest.mark.usefixtures("no_systemd")
def test_an_abstract_socket_is_kept_open_too(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sota-test-{uuid.uuid4().hex}"
    CountingSocket.made = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.setattr(socket, "socket", CountingSocket)
        for n in range(3):
            assert notify(f"STATUS={n}") is True
            assert sock.recv(4096) == b"STATUS=%d" % n
    assert CountingSocket.made == 1


@pytest.mark.usefixtures("no_systemd")
def test_notify_without_systemd_does_nothing() -> None:
    assert notify("READY=1") is False


@pytest.mark.usefixtures("no_systemd")
def test_a_missing_socket_is_false_and_nothing_is_kept(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody there is not a full queue: nothing to send again to a socket that does not exist."""
    path = sock_dir / "nobody"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert notify("READY=1") is False
    assert "couldn't notify systemd" in caplog.text
    assert "unset NOTIFY_SOCKET" in caplog.text
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        assert notify("STATUS=Running") is True
        assert sock.recv(4096) == b"STATUS=Running"


class SpySocket(socket.socket):
    """A real socket that records, for each send, whether it could have waited."""

    sends: list[bool]

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        SpySocket.sends.append(self._could_wait(flags))
        return super().send(data, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        SpySocket.sends.append(self._could_wait(flags))
        super().sendall(data, flags)

    def _could_wait(self, flags: int) -> bool:
        return self.gettimeout() != 0.0 and not flags & socket.MSG_DONTWAIT


@pytest.mark.usefixtures("no_systemd")
def test_a_full_queue_never_makes_notify_wait(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd not reading: the send is non-blocking, so it fails at once, nothing is read
    meanwhile, and READY=1 is kept for the next message."""
    filled = fill_queue()
    SpySocket.sends = []
    with monkeypatch.context() as patch:
        patch.setattr(socket, "socket", SpySocket)
        assert notify("READY=1", "STATUS=Starting") is False
    assert SpySocket.sends == [False]  # one send, on a socket that cannot wait
    assert queue_is_full()  # the call returned while nobody read

    drain(notify_socket, filled)
    assert notify("STATUS=Running") is True
    # READY=1 arrives after all; the dropped STATUS=Starting does not (Running replaced it).
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=Running"


@pytest.mark.usefixtures("no_systemd")
def test_only_status_is_dropped_on_a_full_queue(notify_socket: socket.socket) -> None:
    filled = fill_queue()
    assert notify("STATUS=Downloading update u1: 40%") is False
    drain(notify_socket, filled)
    assert notify("STATUS=Running") is True
    assert notify_socket.recv(4096) == b"STATUS=Running"

    filled = fill_queue()
    for states in (("READY=1", "STATUS=Starting"), ("WATCHDOG=1",), ("STOPPING=1",)):
        assert notify(*states) is False
    drain(notify_socket, filled)
    assert notify("STATUS=Stopping") is True
    assert notify_socket.recv(4096) == b"READY=1\nWATCHDOG=1\nSTOPPING=1\nSTATUS=Stopping"
    assert notify("STATUS=Stopped") is True  # delivered: not kept any more
    assert notify_socket.recv(4096) == b"STATUS=Stopped"


@pytest.mark.usefixtures("no_systemd")
def test_a_full_queue_warns_once_with_advice_then_debug(
    notify_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sota_client._systemd")
    filled = fill_queue()
    assert notify("READY=1") is False
    assert notify("STATUS=Running") is False
    drain(notify_socket, filled)
    assert notify("STATUS=Running") is True
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=Running"
    filled = fill_queue()
    assert notify("STOPPING=1") is False
    drain(notify_socket, filled)
    assert notify() is True
    assert notify_socket.recv(4096) == b"STOPPING=1"

    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == [
        logging.WARNING,
        logging.DEBUG,
        logging.INFO,
        logging.DEBUG,
        logging.DEBUG,
    ]
    warning = records[0][1]
    assert "couldn't notify systemd" in warning
    assert "READY=1 kept and sent again" in warning
    assert "keep reading it, or unset it" in warning  # what to do about it
    assert records[2][1] == "systemd got READY=1 after all"


# -- sending kept states again ------------------------------------------------------------------


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_systemd, "RETRY_FIRST", 0.001)
    monkeypatch.setattr(_systemd, "RETRY_MAX", 0.01)


async def receive(sock: socket.socket) -> bytes:
    """The next datagram, without blocking the event loop (the resender runs in it)."""
    with anyio.fail_after(10):
        while True:
            try:
                return sock.recv(4096)
            except BlockingIOError:
                await anyio.wait_readable(sock)


@pytest.mark.anyio
@pytest.mark.usefixtures("no_systemd", "quick_retries")
async def test_a_kept_ready_is_sent_again_without_another_message(
    notify_socket: socket.socket,
) -> None:
    """systemd needs READY=1 even if the daemon never notifies again: the watchdog task (on
    even with the watchdog off) sends it once the queue has room."""
    notify_socket.setblocking(False)
    filled = fill_queue()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog)
        await anyio.wait_all_tasks_blocked()  # the resender waits for something to send
        assert notify("READY=1", "STATUS=Starting") is False
        for _ in range(filled):
            assert await receive(notify_socket) == b"filler"
        assert await receive(notify_socket) == b"READY=1"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.usefixtures("no_systemd", "quick_retries")
async def test_a_state_kept_before_the_resender_starts_is_sent(
    notify_socket: socket.socket,
) -> None:
    notify_socket.setblocking(False)
    filled = fill_queue()
    assert notify("READY=1") is False  # no event loop task yet
    for _ in range(filled):
        assert await receive(notify_socket) == b"filler"
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog)
        assert await receive(notify_socket) == b"READY=1"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.usefixtures("no_systemd", "quick_retries")
async def test_notify_from_another_thread_does_not_wait_and_is_not_lost(
    notify_socket: socket.socket,
) -> None:
    """From a worker thread the resender is not woken (that would mean waiting for the event
    loop); the kept state goes out with the next message."""
    notify_socket.setblocking(False)
    filled = fill_queue()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog)
        await anyio.wait_all_tasks_blocked()
        assert await anyio.to_thread.run_sync(notify, "STOPPING=1") is False
        for _ in range(filled):
            assert await receive(notify_socket) == b"filler"
        assert notify("STATUS=Stopping") is True
        assert await receive(notify_socket) == b"STOPPING=1\nSTATUS=Stopping"
        tg.cancel_scope.cancel()


# -- the watchdog ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.usefixtures("no_systemd")
async def test_watchdog_pings(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = sock_dir / "notify"
    async with await anyio.create_unix_datagram_socket(local_path=path) as systemd:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "20000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        async with anyio.create_task_group() as tg:
            tg.start_soon(watchdog)
            with anyio.fail_after(10):
                for _ in range(2):
                    data, _sender = await systemd.receive()
                    assert data == b"WATCHDOG=1"
            tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.usefixtures("no_systemd")
@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "not a number"},
        {"WATCHDOG_USEC": "20000", "WATCHDOG_PID": "0"},  # meant for another process
    ],
)
async def test_watchdog_off(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    """No pings; only the resender runs, waiting for a state to send again."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog)
        await anyio.wait_all_tasks_blocked()  # a pinger would have sent its first ping by now
        tg.cancel_scope.cancel()
    notify_socket.setblocking(False)
    with pytest.raises(BlockingIOError):
        notify_socket.recv(4096)
