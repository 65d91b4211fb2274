"""What the daemon logs: failures at WARN in one line, routine work quiet, the real waits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from sota_client import _daemon
from sota_client._activity import Activity
from sota_client._config import parse_config
from sota_client._errors import one_line
from sota_client._poller import Poller
from sota_client.sim import CoreSimulator, StatusFault
from swlm_sdk.protocol import (
    Command,
    ErrorEvent,
    Event,
    GetUpdateRequests,
    NoUpdateRequests,
    Package,
    SendInstalledPackages,
)
from tests.conftest import LogWaiter

from .daemon_fixtures import DEVICE, Sleeps, running_daemon

pytestmark = pytest.mark.anyio


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        yield simulator


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and r.name.startswith("sota_client")
    ]


async def test_a_poll_that_finds_nothing_prints_nothing_at_info(
    tmp_path: Path, sim: CoreSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_daemon(tmp_path, sim) as d:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                assert await d.execute(GetUpdateRequests()) == NoUpdateRequests()
    assert lines(caplog, logging.INFO) == []


async def test_a_poll_that_finds_updates_prints_one_line_when_the_list_changes(
    tmp_path: Path, sim: CoreSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim.add_package("nano", "2.2.6", data=b"x")
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    async with running_daemon(tmp_path, sim, event_outbox=True) as d:  # no SWLM takes it
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                await d.execute(GetUpdateRequests())
                await d.idle()
    listed = [line for line in lines(caplog, logging.INFO) if "Core lists" in line]
    assert listed == [
        f"Core lists 1 update: {update_id} (nano 2.2.6, Pending)",
        f"Core lists 1 update: {update_id} (nano 2.2.6, InFlight)",  # the third poll: silent
    ]


async def test_a_failure_is_one_warning_with_the_url_and_cause_until_it_works(
    tmp_path: Path, sim: CoreSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    body = "<html>\n<body>\n<h1>Internal Server Error</h1>\n</body>\n</html>\n"
    sim.inject(StatusFault(status=500, route="updates", body=body, count=2))
    async with running_daemon(tmp_path, sim) as d:
        with caplog.at_level(logging.INFO):
            first = await d.execute(GetUpdateRequests())
            await d.execute(GetUpdateRequests())
            warnings = lines(caplog, logging.WARNING)
            await d.execute(GetUpdateRequests())  # works
            sim.inject(StatusFault(status=500, route="updates", body=body, count=1))
            await d.execute(GetUpdateRequests())
    assert isinstance(first, ErrorEvent)
    assert "\n" in first.text  # the event keeps the 2016 text, body and all
    (warning,) = warnings  # the same failure again is not repeated
    assert warning.startswith("GetUpdateRequests failed: ")
    assert f"{sim.url}/api/v1/mydevice/{DEVICE}/updates" in warning or "500" in warning
    assert "\n" not in warning
    assert "<h1>Internal Server Error</h1>" in warning
    assert len(lines(caplog, logging.WARNING)) == 2  # failing again after working: said again


async def test_the_package_list_is_logged_as_a_count(
    tmp_path: Path, sim: CoreSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    packages = tuple(Package(f"package-{n}", "1.0") for n in range(300))
    async with running_daemon(tmp_path, sim) as d:
        with caplog.at_level(logging.INFO):
            await d.execute(SendInstalledPackages(packages))
    assert lines(caplog, logging.INFO) == ["Sent the list of 300 installed packages to Core"]


def test_one_line_flattens_cuts_and_escapes() -> None:
    assert one_line("a\n  b\r\n\tc") == "a b c"
    assert one_line("x" * 500, 10) == "x" * 9 + "…"
    assert one_line("red \x1b[31m text") == "red \\x1b[31m text"


class FailingPolls:
    """Every poll fails, and the failure starts follow-up work that takes a while (as a
    NotAuthenticated starts an Authenticate that waits out the token backoff)."""

    def __init__(self, order: list[str]) -> None:
        self.activity = Activity()
        self.order = order
        self.follow_up_done = anyio.Event()

    async def execute(self, command: Command, *, quiet: bool = False) -> Event | None:
        assert isinstance(command, GetUpdateRequests)
        self.activity.begin()

        async def follow_up() -> None:
            await anyio.lowlevel.checkpoint()
            self.order.append("follow-up done")
            self.activity.end()

        self._tg.start_soon(follow_up)
        return ErrorEvent("HTTP transport error: GET http://core/updates: could not connect")

    def run_in(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg


async def test_the_backoff_message_states_the_wait_that_follows() -> None:
    order: list[str] = []
    interpreter = FailingPolls(order)
    sleeps = Sleeps(free=2)

    async def sleep(delay: float) -> None:
        order.append(f"sleep {delay:g}")
        await sleeps(delay)

    class Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Next poll in" in record.getMessage():
                order.append(record.getMessage().split(". ")[1].split(",")[0])

    handler = Record()
    logging.getLogger("sota_client").addHandler(handler)
    try:
        async with anyio.create_task_group() as tg:
            interpreter.run_in(tg)
            tg.start_soon(Poller(interpreter, 10, sleep=sleep).run)
            await sleeps.wait_for_count(3)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    finally:
        logging.getLogger("sota_client").removeHandler(handler)
    assert order[:4] == ["sleep 10", "follow-up done", "Next poll in 10 s", "sleep 10"]


def daemon_config(tmp_path: Path, extra: str = "") -> str:
    return f"""
        [device]
        packages_dir = "{tmp_path / "packages"}"
        state_dir = "{tmp_path / "state"}"
        certificates_path = "{tmp_path / "no-ca.pem"}"
        system_info = ""
        {extra}
    """


@pytest.mark.parametrize(
    ("extra", "warned"),
    [
        ("", True),  # the built-in defaults: package_manager off, no gateway
        ("[gateway]\nsocket = true", False),
        ("[gateway]\nconsole = true", False),
        ("[gateway]\ndbus = true", False),  # the D-Bus SWLM takes them
        ('package_manager = "deb"', False),
    ],
)
def test_a_daemon_that_cannot_install_anything_says_so_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, extra: str, warned: bool
) -> None:
    if extra.startswith("package_manager"):
        text = daemon_config(tmp_path).replace('system_info = ""', f'system_info = ""\n{extra}')
    else:
        text = daemon_config(tmp_path, extra)
    config = parse_config(text)
    with caplog.at_level(logging.WARNING):
        _daemon._warn_if_nothing_installs(config)
    said = any("Nothing can install updates" in line for line in lines(caplog, logging.WARNING))
    assert said is warned


def test_a_start_up_error_is_the_last_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-dir" / "commands.socket"
    config = parse_config(
        daemon_config(tmp_path)
        + f"""
        [core]
        polling = false
        server = "http://127.0.0.1:9"
        [gateway]
        socket = true
        [network]
        socket_commands_path = "{missing}"
        """
    )
    with caplog.at_level(logging.INFO):
        assert _daemon.run(config) == 1
    messages = lines(caplog, logging.INFO)
    assert "Stopped" not in messages
    assert messages[-1].startswith("couldn't start: couldn't open commands socket")
    assert "RuntimeDirectory=no-such-dir" in capsys.readouterr().err


async def test_unreachable_servers_are_warned_about_with_their_url(
    tmp_path: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    """With SOTA_LOG=warn nothing was printed for an unreachable auth server or Core."""
    config = parse_config(
        daemon_config(tmp_path)
        + """
        [auth]
        server = "http://127.0.0.1:9"
        client_id = "a"
        client_secret = "b"
        [core]
        server = "http://127.0.0.1:9"
        polling_sec = 1
        """
    )
    auth = log_waiter("Authenticate failed: HTTP transport error: POST http://127.0.0.1:9/token")
    async with anyio.create_task_group() as tg:
        tg.start_soon(_daemon._main, config)
        await auth.wait(within=20)
        tg.cancel_scope.cancel()
    assert auth.levels == {logging.WARNING}
