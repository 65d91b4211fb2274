"""swlm_sdk.testing: the fake daemon answers like 2016, and the pytest plugin works for vendors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from swlm_sdk import DaemonUnavailable, DownloadComplete, EventListener, ResultCode, send_raw
from swlm_sdk.protocol import (
    Command,
    ErrorEvent,
    GetUpdateRequests,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    UpdateReport,
)
from swlm_sdk.testing import FakeDaemon

REPO = Path(__file__).parents[2]

pytestmark = pytest.mark.anyio


async def raw(fake: FakeDaemon, text: bytes) -> bytes:
    return await send_raw(text, commands_socket=fake.commands_socket)


async def test_replies_exactly_like_2016(fake_daemon: FakeDaemon) -> None:
    assert await raw(fake_daemon, b"sendup u1 ok") == b'"UpdateReportSent"'
    assert await raw(fake_daemon, b"sendpack a 1 b 2\n") == b'"InstalledPackagesSent"'
    assert await raw(fake_daemon, b"foo") == b"Unknown Command: bad command: foo"
    assert await raw(fake_daemon, b"dl") == b"Unknown Command: usage: dl <id>"
    assert await raw(fake_daemon, b"\xff") == b"IO error: stream did not contain valid UTF-8"
    assert await raw(fake_daemon, b"dl 7") == (
        b'{"variant":"DownloadFailed","fields":["7","the fake daemon has no update to download"]}'
    )
    assert await raw(fake_daemon, b"shutdown") == b""
    assert fake_daemon.requests[2:4] == [b"foo", b"dl"]
    assert [type(c).__name__ for c in fake_daemon.commands] == [
        "SendUpdateReport",
        "SendInstalledPackages",
        "StartDownload",
        "Shutdown",
    ]


async def test_strict_2016_rejects_result_text(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir, strict_2016=True) as fake:
        assert await raw(fake, b"SendUpdateReport u1 4 dpkg failed") == (
            b'Unknown Command: unexpected SendUpdateReport args: ["u1", "4", "dpkg", "failed"]'
        )
        assert await raw(fake, b"SendUpdateReport u1 4") == b'"UpdateReportSent"'
        assert len(fake.reports) == 1


async def test_configurable_replies(sock_dir: Path) -> None:
    calls: list[Command] = []

    async def slow_then_error(command: Command) -> ErrorEvent | None:
        calls.append(command)
        await anyio.lowlevel.checkpoint()
        return ErrorEvent("boom") if isinstance(command, StartDownload) else None

    async with FakeDaemon(
        sock_dir, replies={GetUpdateRequests: "Unknown Command: nope", Shutdown: b"bye"}
    ) as fake:
        assert await raw(fake, b"getreq") == b"Unknown Command: nope"
        assert await raw(fake, b"shutdown") == b"bye"
        fake.set_reply(GetUpdateRequests, None)
        assert await raw(fake, b"getreq") == b'"NoUpdateRequests"'
        fake.set_reply(StartDownload, lambda command: ErrorEvent(f"no {command}"))
        assert b"no StartDownload" in await raw(fake, b"dl 1")
    async with FakeDaemon(sock_dir, replies=slow_then_error) as fake:
        assert await raw(fake, b"dl 1") == b'{"variant":"Error","fields":["boom"]}'
        assert await raw(fake, b"sendup u 0") == b'"UpdateReportSent"'
    assert calls == [
        StartDownload("1"),
        SendUpdateReport(UpdateReport.single("u", ResultCode.OK)),
    ]


async def test_wait_for_times_out_with_a_clear_message(fake_daemon: FakeDaemon) -> None:
    await raw(fake_daemon, b"getreq")
    with pytest.raises(TimeoutError, match=r"got 0 SendUpdateReport command\(s\) within 0\.05 s"):
        await fake_daemon.wait_for(SendUpdateReport, within=0.05)
    assert await fake_daemon.wait_for() == [GetUpdateRequests()]


async def test_deliver_needs_a_listener(fake_daemon: FakeDaemon) -> None:
    with pytest.raises(DaemonUnavailable, match="is the SWLM listening"):
        await fake_daemon.deliver(DownloadComplete("u1", "/i"))
    async with EventListener(fake_daemon.events_socket) as events:
        await fake_daemon.deliver(DownloadComplete("u1", "/i"))
        assert await anext(events) == DownloadComplete("u1", "/i")


async def test_private_directory_and_config(sock_dir: Path) -> None:
    fake = FakeDaemon()
    async with fake:
        assert oct(os.stat(fake.directory).st_mode & 0o777) == "0o700"
        config = await anyio.Path(fake.config_path).read_text()
        assert f'socket_commands_path = "{fake.commands_socket}"' in config
    assert not await anyio.Path(fake.directory).exists()


def test_pytest_plugin_for_vendors(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["swlm_sdk.testing"]\n')
    (tmp_path / "test_vendor.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from swlm_sdk import ResultCode
            from swlm_sdk.protocol import SendUpdateReport
            from swlm_sdk.sync import send_update_report
            from swlm_sdk.testing import FakeDaemon

            @pytest.fixture
            def anyio_backend():
                return "asyncio"

            @pytest.mark.anyio
            async def test_report(fake_daemon: FakeDaemon) -> None:
                from swlm_sdk import send_update_report
                await send_update_report("u1", ResultCode.OK,
                                         commands_socket=fake_daemon.commands_socket)
                [cmd] = await fake_daemon.wait_for(SendUpdateReport)
                assert cmd.report.update_id == "u1"
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
