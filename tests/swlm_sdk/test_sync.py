"""The blocking facade, from plain threads, against a fake daemon in its own event loop."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from swlm_sdk import (
    CommandRejected,
    DaemonUnavailable,
    DownloadComplete,
    DownloadFailed,
    ListenerError,
    ResultCode,
    UpdateReportSent,
    sync,
)
from swlm_sdk.protocol import GetUpdateRequests, NoUpdateRequests
from swlm_sdk.testing import SyncFakeDaemon

from .conftest import deliver_2016


def test_send_update_report(sync_fake_daemon: SyncFakeDaemon) -> None:
    fake = sync_fake_daemon
    reply = sync.send_update_report("u1", ResultCode.OK, commands_socket=fake.commands_socket)
    assert reply == UpdateReportSent()
    assert sync.send_installed_packages([("a", "1")], config=fake.config_path).name == (
        "InstalledPackagesSent"
    )
    assert sync.send_command(GetUpdateRequests(), config=fake.config_path) == NoUpdateRequests()
    assert sync.send_raw("nope", config=fake.config_path) == b"Unknown Command: bad command: nope"
    with pytest.raises(CommandRejected):
        sync.send_command("nope", config=fake.config_path)
    assert fake.requests == [
        b"SendUpdateReport u1 0",
        b"SendInstalledPackages a 1",
        b"GetUpdateRequests",
        b"nope",
        b"nope",
    ]


def test_errors_are_the_same_types(sock_dir: Path) -> None:
    with pytest.raises(DaemonUnavailable):
        sync.send_update_report("u1", 0, commands_socket=sock_dir / "missing.sock")


def test_listen_blocking_iterator(sock_dir: Path) -> None:
    path = str(sock_dir / "ev.sock")
    with sync.listen(path, kinds=[DownloadComplete]) as events:
        assert events.path == path

        def send_two() -> None:
            deliver_2016(
                path,
                b'{"version":"0.1","event":"DownloadFailed","data":'
                b'{"update_id":"u0","reason":"x"}}',
            )
            deliver_2016(
                path,
                b'{"version":"0.1","event":"DownloadComplete","data":'
                b'{"update_id":"u1","update_image":"/i","signature":""}}',
            )

        sender = threading.Thread(target=send_two)
        sender.start()
        got = []
        for event in events:
            got.append(event)
            break
        sender.join()
        with pytest.raises(TimeoutError):
            events.receive(timeout=0.05)
    assert got == [DownloadComplete("u1", "/i")]
    assert not Path(path).exists()


def test_listen_all_kinds_and_receive(sock_dir: Path) -> None:
    path = str(sock_dir / "ev.sock")
    with sync.listen(path) as events:
        deliver_2016(
            path,
            b'{"version":"0.1","event":"DownloadFailed","data":{"update_id":"u0","reason":"x"}}',
        )
        assert events.receive(timeout=10) == DownloadFailed("u0", "x")
    with pytest.raises(RuntimeError, match="before receiving"):
        events.receive()


def test_listen_refuses_a_live_socket(sock_dir: Path) -> None:
    path = sock_dir / "ev.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with (
            pytest.raises(ListenerError, match="another process is listening on"),
            sync.listen(path),
        ):
            pass
