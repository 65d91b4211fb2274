"""swlm_sdk.testing: the fake daemon answers like 2016, and the pytest plugin works for vendors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

import swlm_sdk.testing
from swlm_sdk import (
    DaemonUnavailable,
    DownloadComplete,
    EventListener,
    InstallError,
    ResultCode,
    SwlmError,
    send_raw,
    sync,
)
from swlm_sdk.app import App
from swlm_sdk.protocol import (
    Command,
    ErrorEvent,
    GetUpdateRequests,
    Package,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    UpdateReport,
)
from swlm_sdk.testing import FakeDaemon, SyncFakeDaemon

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


def test_sync_fake_daemon_serves_an_app_with_a_sync_handler(
    sync_fake_daemon: SyncFakeDaemon, tmp_path: Path
) -> None:
    fake = sync_fake_daemon
    app = App(tmp_path / "state", config=fake.config_path)
    handled_in: list[threading.Thread] = []

    @app.on_download_complete
    def install(event: DownloadComplete) -> ResultCode:
        handled_in.append(threading.current_thread())
        if event.update_image == "":
            raise InstallError(ResultCode.VALIDATION_FAILED, "no image")
        return ResultCode.OK

    @app.installed_packages
    def packages() -> list[tuple[str, str]]:
        return [("fw", "1.0")]

    with fake.serving(app) as served:
        assert served is app
        fake.deliver(DownloadComplete("u1", "/var/sota/u1"))
        fake.deliver(DownloadComplete("u2", ""))
        fake.wait_for(SendUpdateReport, count=2)
    assert {report.update_id: report for report in fake.reports} == {
        "u1": UpdateReport.single("u1", ResultCode.OK),
        "u2": UpdateReport.single("u2", ResultCode.VALIDATION_FAILED, "no image"),
    }
    assert fake.package_lists[0] == (Package("fw", "1.0"),)
    assert threading.current_thread() not in handled_in
    # Stopped on the way out: nothing listens any more.
    with pytest.raises(DaemonUnavailable):
        fake.deliver(DownloadComplete("u3", "/var/sota/u3"))


def test_sync_fake_daemon_serving_passes_on_what_the_app_raises(
    sync_fake_daemon: SyncFakeDaemon, tmp_path: Path
) -> None:
    app = App(tmp_path / "state", config=sync_fake_daemon.config_path)
    with pytest.raises(SwlmError, match="no install handler"), sync_fake_daemon.serving(app):
        pass


def test_sync_fake_daemon_serving_gives_up_on_an_app_that_does_not_stop(
    sync_fake_daemon: SyncFakeDaemon, tmp_path: Path
) -> None:
    app = App(tmp_path / "state", config=sync_fake_daemon.config_path)
    started, release = threading.Event(), threading.Event()

    @app.on_download_complete
    def install(event: DownloadComplete) -> None:
        started.set()
        release.wait(30)

    def serve_one_stuck_install() -> None:
        with sync_fake_daemon.serving(app, within=0.05):
            sync_fake_daemon.deliver(DownloadComplete("u1", "/var/sota/u1"))
            assert started.wait(10)

    try:
        with pytest.raises(TimeoutError, match=r"did not stop within 0\.05 s"):
            serve_one_stuck_install()
    finally:
        release.set()


def test_sync_fake_daemon_outside_with(sock_dir: Path) -> None:
    fake = SyncFakeDaemon(sock_dir)
    with pytest.raises(RuntimeError, match="first"):
        fake.wait_for()
    with fake:
        assert fake.config_path == str(sock_dir / "sota.toml")
        assert sync.send_raw(b"getreq", config=fake.config_path) == b'"NoUpdateRequests"'
        assert fake.wait_for(GetUpdateRequests) == [GetUpdateRequests()]
        with pytest.raises(RuntimeError, match="already running"):
            fake.__enter__()
    assert not os.path.exists(fake.commands_socket)


def test_the_plugin_loads_from_its_entry_point(pytestconfig: pytest.Config) -> None:
    # Registered under the module's own name, so that a `pytest_plugins` line naming the
    # module finds it loaded instead of registering it a second time.
    plugin = pytestconfig.pluginmanager.get_plugin("swlm_sdk.testing")
    assert plugin is swlm_sdk.testing
    [dist] = [d for p, d in pytestconfig.pluginmanager.list_plugin_distinfo() if p is plugin]
    assert dist.metadata["Name"] == "sota-client"


VENDOR_TESTS = """
import pytest
from swlm_sdk import ResultCode, send_update_report
from swlm_sdk.protocol import SendUpdateReport, UpdateReport
from swlm_sdk.testing import FakeDaemon, SyncFakeDaemon

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_async(fake_daemon: FakeDaemon) -> None:
    await send_update_report("u1", ResultCode.OK, commands_socket=fake_daemon.commands_socket)
    [cmd] = await fake_daemon.wait_for(SendUpdateReport)
    assert cmd.report.update_id == "u1"

def test_sync(sync_fake_daemon: SyncFakeDaemon) -> None:
    from swlm_sdk.sync import send_update_report
    send_update_report("u2", "INSTALL_FAILED", config=sync_fake_daemon.config_path)
    assert sync_fake_daemon.reports == [UpdateReport.single("u2", ResultCode.INSTALL_FAILED)]
"""


@pytest.mark.parametrize(
    "conftest",
    [
        pytest.param(None, id="entry-point"),
        # What the docs asked for before the entry point: it must not register it twice.
        pytest.param('pytest_plugins = ["swlm_sdk.testing"]\n', id="old-conftest-line"),
    ],
)
def test_pytest_plugin_for_vendors(tmp_path: Path, conftest: str | None) -> None:
    if conftest is not None:
        (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_vendor.py").write_text(VENDOR_TESTS)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
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
    assert "2 passed" in result.stdout
