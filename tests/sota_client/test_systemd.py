"""sd_notify without libsystemd: messages reach a real datagram socket, as systemd's would."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from sota_client import _systemd
from sota_client._systemd import notify, watchdog


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


@pytest.mark.usefixtures("no_systemd")
def test_notify_without_systemd_does_nothing() -> None:
    assert notify("READY=1") is False


@pytest.mark.usefixtures("no_systemd")
def test_notify_to_a_missing_socket_is_false(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_dir / "nobody"))
    assert notify("READY=1") is False
    assert "couldn't notify systemd" in caplog.text


@pytest.mark.usefixtures("no_systemd")
def test_a_full_notify_queue_does_not_block_for_ever(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd not reading: the message is given up after NOTIFY_TIMEOUT, not waited for."""
    monkeypatch.setattr(_systemd, "NOTIFY_TIMEOUT", 0.05)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        filler.connect(os.environ["NOTIFY_SOCKET"])
        filler.setblocking(False)
        with pytest.raises(BlockingIOError):  # noqa: PT012 - fill the queue until it refuses
            while True:
                filler.send(b"x" * 1024)
    assert notify("WATCHDOG=1") is False


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
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with anyio.fail_after(10):
        await watchdog()  # returns at once
    notify_socket.setblocking(False)
    with pytest.raises(BlockingIOError):
        notify_socket.recv(4096)
