"""device.report_timeout: an update handed to an SWLM that never reports is reported failed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

from sota_client import _daemon
from sota_client._config import parse_config
from sota_client._report_timeout import MAX_CHECK_INTERVAL, ReportTimeout
from sota_client._store import Journal, UpdateState
from sota_client.sim import CoreSimulator
from swlm_sdk.protocol import ResultCode, UpdateReport
from tests.conftest import LogWaiter

from .daemon_fixtures import DEVICE

pytestmark = pytest.mark.anyio


class Clocks:
    """A wall clock and a monotonic clock that tests move by hand."""

    def __init__(self, wall: float = 1_000_000.0) -> None:
        self.wall = wall
        self.mono = 50.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def journal(tmp_path: Path, clocks: Clocks) -> Iterator[Journal]:
    with Journal.open(tmp_path / "sota.db", clock=lambda: clocks.wall) as journal:
        yield journal


def deliver(journal: Journal, update_id: str) -> None:
    """Download ``update_id`` and hand its DownloadComplete to the SWLM."""
    journal.begin_download(update_id, f"/var/tmp/{update_id}")
    journal.finish_download(update_id, 10, "ab" * 32, event=("DownloadComplete", b"{}"))
    (event,) = [e for e in journal.events() if e.update_id == update_id]
    journal.event_delivered(event.id, holder="the SWLM at /run/sota/events.socket")


def watcher(journal: Journal, clocks: Clocks, seconds: float, woken: list[int]) -> ReportTimeout:
    return ReportTimeout(
        journal,
        seconds,
        queued=lambda: woken.append(1),
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )


def queued_report(journal: Journal, update_id: str) -> UpdateReport:
    pending = journal.pending_report(update_id)
    assert pending is not None
    return msgspec.json.decode(pending.payload, type=UpdateReport)


def test_no_report_in_time_is_reported_failed_with_one_warning(
    journal: Journal, clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    deliver(journal, "u1")
    woken: list[int] = []
    timeout = watcher(journal, clocks, 600, woken)
    assert timeout.check() == MAX_CHECK_INTERVAL  # the deadline is further than a minute
    clocks.advance(599)
    assert timeout.check() == pytest.approx(1)
    assert journal.update_state("u1") is UpdateState.DELIVERED
    clocks.advance(1)
    with caplog.at_level(logging.WARNING):
        timeout.check()
        timeout.check()
    assert journal.update_state("u1") is UpdateState.REPORT_PENDING
    report = queued_report(journal, "u1")
    (result,) = report.operation_results
    assert result.result_code is ResultCode.GENERAL_ERROR
    assert "No report arrived within 600 s" in result.result_text
    assert "the SWLM at /run/sota/events.socket" in result.result_text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Update u1 was handed to the SWLM" in warnings[0]
    assert "10 min ago" in warnings[0]
    assert woken == [1]  # the report sender was told


def test_a_report_that_came_in_time_is_never_replaced(journal: Journal, clocks: Clocks) -> None:
    deliver(journal, "u1")
    timeout = watcher(journal, clocks, 60, [])
    timeout.check()
    ok = UpdateReport.single("u1", ResultCode.OK, "installed")
    journal.add_report("u1", msgspec.json.encode(ok))
    clocks.advance(3600)
    timeout.check()
    assert queued_report(journal, "u1") == ok


def test_the_check_and_the_report_are_one_transaction(journal: Journal, clocks: Clocks) -> None:
    """The SWLM's report lands between the watcher's look and its write: the report stays."""
    deliver(journal, "u1")
    record = journal.update("u1")
    assert record is not None
    ok = msgspec.json.encode(UpdateReport.single("u1", ResultCode.OK))
    journal.add_report("u1", ok)
    assert not journal.report_overdue("u1", record.since, b"late")
    assert journal.pending_report("u1") is not None
    assert journal.pending_report("u1").payload == ok  # type: ignore[union-attr]


def test_an_update_handed_over_again_gets_a_new_deadline(journal: Journal, clocks: Clocks) -> None:
    deliver(journal, "u1")
    first = journal.update("u1")
    assert first is not None
    timeout = watcher(journal, clocks, 60, [])
    timeout.check()
    clocks.advance(50)
    journal.hand_over_again("u1", "DownloadComplete", b"{}")
    (event,) = journal.events()
    journal.event_delivered(event.id)
    assert not journal.report_overdue("u1", first.since, b"{}")  # that deadline is gone
    timeout.check()
    clocks.advance(20)  # 70 s after the first hand-over, 20 s after the second
    timeout.check()
    assert journal.update_state("u1") is UpdateState.DELIVERED


def test_a_wall_clock_jump_does_not_time_out_updates(journal: Journal, clocks: Clocks) -> None:
    """A device without a battery-backed clock sets it at boot, years forward."""
    deliver(journal, "u1")
    timeout = watcher(journal, clocks, 600, [])
    timeout.check()
    clocks.wall += 5 * 365 * 86400
    clocks.mono += 10
    timeout.check()
    assert journal.update_state("u1") is UpdateState.DELIVERED


def test_time_waited_before_a_restart_counts(journal: Journal, clocks: Clocks) -> None:
    deliver(journal, "old")
    clocks.advance(500)
    deliver(journal, "new")
    clocks.advance(50)  # the daemon restarts now: "old" waited 550 s, "new" 50 s
    timeout = watcher(journal, clocks, 600, [])
    assert timeout.check() == pytest.approx(50)
    clocks.advance(50)
    timeout.check()
    assert journal.update_state("old") is UpdateState.REPORT_PENDING
    assert journal.update_state("new") is UpdateState.DELIVERED


def test_a_journal_time_in_the_future_waits_the_whole_timeout(
    journal: Journal, clocks: Clocks
) -> None:
    deliver(journal, "u1")
    clocks.wall -= 86400  # the clock went back a day (set from a stale RTC)
    timeout = watcher(journal, clocks, 600, [])
    timeout.check()
    clocks.mono += 599
    timeout.check()
    assert journal.update_state("u1") is UpdateState.DELIVERED
    clocks.mono += 1
    timeout.check()
    assert journal.update_state("u1") is UpdateState.REPORT_PENDING


def test_a_timeout_must_be_positive(journal: Journal) -> None:
    with pytest.raises(ValueError, match="positive"):
        ReportTimeout(journal, 0, queued=lambda: None)


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        yield simulator


async def test_the_daemon_reports_an_update_its_swlm_never_reported(
    sim: CoreSimulator,
    sock_dir: Path,
    tmp_path: Path,
    log_waiter: Callable[[str], LogWaiter],
) -> None:
    """An SWLM takes DownloadComplete and is never heard of again: Core gets GENERAL_ERROR."""
    sim.add_package("fw", "1.0", data=b"firmware" * 100)
    update_id = sim.queue_update(DEVICE, "fw", "1.0")
    events = sock_dir / "ev.sock"
    config = parse_config(
        f"""
        [core]
        server = "{sim.url}"
        polling_sec = 1
        [device]
        packages_dir = "{tmp_path / "packages"}"
        state_dir = "{tmp_path / "state"}"
        certificates_path = "{tmp_path / "no-ca.pem"}"
        system_info = ""
        report_timeout = 0.5
        [gateway]
        socket = true
        [network]
        socket_commands_path = "{sock_dir / "cmd.sock"}"
        socket_events_path = "{events}"
        """
    )
    taken = anyio.Event()

    async def silent_swlm(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    await stream.receive()
        taken.set()

    warned = log_waiter(f"Update {update_id} was handed to the SWLM at {events}")
    listener = await anyio.create_unix_listener(events)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent_swlm)
        tg.start_soon(_daemon._main, config)
        with anyio.fail_after(20):
            await taken.wait()
        await warned.wait(within=20)
        with anyio.fail_after(20):
            await sim.wait_for_async(lambda: sim.results(DEVICE))
        tg.cancel_scope.cancel()
    (result,) = sim.results(DEVICE)
    assert result.update_id == update_id
    assert result.result_code == ResultCode.GENERAL_ERROR
    assert "No report arrived within 0.5 s" in result.result_text
    assert warned.count == 1


async def test_with_nothing_handed_over_it_sleeps_until_an_update_is(
    journal: Journal, clocks: Clocks
) -> None:
    """An idle daemon: no look at the journal every minute, but one as soon as an update is
    handed over."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await anyio.sleep_forever()

    woken: list[int] = []
    timeout = ReportTimeout(
        journal,
        600,
        queued=lambda: woken.append(1),
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
        sleep=sleep,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(timeout.run)
        await anyio.wait_all_tasks_blocked()
        assert sleeps == []  # no timer at all
        deliver(journal, "u1")
        await anyio.wait_all_tasks_blocked()
        assert sleeps == [MAX_CHECK_INTERVAL]  # now it waits for that report's deadline
        tg.cancel_scope.cancel()
    assert journal.handed_over_listeners == []
    assert woken == []


def test_an_update_awaiting_its_reboot_has_no_deadline(journal: Journal, clocks: Clocks) -> None:
    """The SWLM installed it and reports after the reboot, which may be boots later."""
    deliver(journal, "u1")
    assert journal.await_reboot("u1", "slot b flashed") == (UpdateState.DELIVERED, True)
    assert journal.update_state("u1") is UpdateState.AWAITING_REBOOT
    timeout = watcher(journal, clocks, 600, [])
    clocks.advance(86400)
    timeout.check()
    assert journal.update_state("u1") is UpdateState.AWAITING_REBOOT
    assert journal.pending_report("u1") is None
