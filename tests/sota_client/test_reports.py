"""ReportSender against the simulator: reports survive Core outages and restarts (bug 27)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from sota_client._backend import AuthSettings, CoreBackend
from sota_client._errors import AuthError
from sota_client._reports import ReportSender
from sota_client._store import Journal
from sota_client.sim import AuthSettings as SimAuth
from sota_client.sim import CoreSimulator, DelayFault, StatusFault
from swlm_sdk.protocol import ErrorEvent, ResultCode, UpdateReport, UpdateReportSent
from tests.conftest import LogWaiter

from .daemon_fixtures import (
    DEVICE,
    FAST_BACKOFF,
    Recorder,
    free_port,
    route_count,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator(port=free_port()) as simulator:
        simulator.add_package("nano", "2.2.6", data=b"nano")
        yield simulator


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sota.db"


@asynccontextmanager
async def retrying(
    sim: CoreSimulator, journal: Journal
) -> AsyncIterator[tuple[ReportSender, Recorder]]:
    """A ReportSender with its retry loop running; the recorder gets what the loop publishes."""
    recorder = Recorder()
    async with (
        CoreBackend(sim.url, DEVICE, backoff=FAST_BACKOFF) as backend,
        anyio.create_task_group() as tg,
    ):
        sender = ReportSender(backend, journal, backoff=0.02, max_backoff=0.2)
        tg.start_soon(sender.run, recorder)
        yield sender, recorder
        tg.cancel_scope.cancel()


def accepted(sim: CoreSimulator) -> list[tuple[str, str]]:
    return [(r.update_id, r.body) for r in sim.reports(DEVICE) if r.status == 204]


async def wait_accepted(sim: CoreSimulator, count: int = 1) -> None:
    with anyio.fail_after(10):
        await sim.wait_for_async(lambda: len(accepted(sim)) >= count)


async def test_a_report_is_sent_and_forgotten(sim: CoreSimulator, journal_path: Path) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.OK, "installed")
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, _):
            assert await sender.send(report) == UpdateReportSent()
        assert journal.pending_reports() == 0
        assert journal.update_state(update_id) == "reported"
    body = f'[{{"id":"{update_id}","result_code":0,"result_text":"installed"}}]'
    assert accepted(sim) == [(update_id, body)]


async def test_core_503_keeps_the_report_and_the_retry_loop_sends_it(
    sim: CoreSimulator, journal_path: Path
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.INSTALL_FAILED, "dpkg said no")
    sim.inject(StatusFault(status=503, route="report", count=2))
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, recorder):
            assert await sender.send(report) == ErrorEvent(
                "HTTP client error: Response Code: 503 Service Unavailable"
                " (the report is kept and will be sent again)"
            )
            await wait_accepted(sim)
            await recorder.wait_for(lambda events: events == [UpdateReportSent()])
            assert journal.pending_reports() == 0
    assert route_count(sim, "report") == 3
    body = f'[{{"id":"{update_id}","result_code":4,"result_text":"dpkg said no"}}]'
    assert accepted(sim) == [(update_id, body)]


async def test_core_down_keeps_the_report_until_core_is_back(
    sim: CoreSimulator, journal_path: Path
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.OK, "")
    url = sim.url
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, recorder):
            sim.stop()
            event = await sender.send(report)
            assert isinstance(event, ErrorEvent)
            assert event.text.startswith(f"HTTP transport error: POST {url}/api/v1/mydevice/")
            assert event.text.endswith(" (the report is kept and will be sent again)")
            assert journal.pending_reports() == 1
            sim.start()  # on the same port, with the same state
            await wait_accepted(sim)
            await recorder.wait_for(lambda events: events == [UpdateReportSent()])
            assert journal.pending_reports() == 0


async def test_a_kept_report_survives_a_restart(sim: CoreSimulator, journal_path: Path) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.OK, "kept across a restart")
    with Journal.open(journal_path) as journal:
        async with CoreBackend(f"http://127.0.0.1:{free_port()}", DEVICE) as unreachable:
            sender = ReportSender(unreachable, journal, backoff=0.02)
            event = await sender.send(report)
        assert isinstance(event, ErrorEvent)
        assert event.text.endswith(" (the report is kept and will be sent again)")
        assert journal.pending_reports() == 1
    with Journal.open(journal_path) as journal:  # the daemon starts again, and Core is up
        assert journal.pending_reports() == 1
        async with retrying(sim, journal) as (_, recorder):
            await wait_accepted(sim)
            await recorder.wait_for(lambda events: events == [UpdateReportSent()])
            assert journal.pending_reports() == 0
            assert journal.update_state(update_id) == "reported"
    body = f'[{{"id":"{update_id}","result_code":0,"result_text":"kept across a restart"}}]'
    assert accepted(sim) == [(update_id, body)]


async def test_a_permanent_refusal_is_dropped_with_an_error_event(
    sim: CoreSimulator, journal_path: Path
) -> None:
    update_id = str(uuid.uuid4())  # Core has no such update for the device
    report = UpdateReport.single(update_id, ResultCode.OK, "")
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, recorder):
            assert await sender.send(report) == ErrorEvent(
                "HTTP client error: Response Code: 404 Not Found, Body:\n"
                '{"code":"missing_entity","description":"UpdateSpec not found"}'
            )
            assert journal.pending_reports() == 0
            assert journal.update_state(update_id) is None
        assert recorder.events == []
    assert [r.status for r in sim.reports(DEVICE)] == [404]


async def test_an_auth_failure_keeps_the_report_and_raises(journal_path: Path) -> None:
    """The interpreter turns the AuthError into NotAuthenticated; the report waits meanwhile."""
    with CoreSimulator(auth=SimAuth(client_id="device")) as sim:
        sim.add_package("nano", "2.2.6", data=b"nano")
        update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
        auth = AuthSettings(server=sim.url, client_id="device", client_secret="wrong")
        with Journal.open(journal_path) as journal:
            async with CoreBackend(sim.url, DEVICE, auth=auth, backoff=FAST_BACKOFF) as backend:
                sender = ReportSender(backend, journal, backoff=0.02)
                with pytest.raises(AuthError):
                    await sender.send(UpdateReport.single(update_id, ResultCode.OK, ""))
            assert journal.pending_reports() == 1
        assert sim.reports(DEVICE) == []


async def test_a_slow_core_never_gets_one_report_twice_at_once(
    sim: CoreSimulator, journal_path: Path
) -> None:
    """The retry loop leaves alone a report that send() is still sending."""
    slow = sim.queue_update(DEVICE, "nano", "2.2.6")
    refused = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(DelayFault(seconds=60, path=slow))
    sim.inject(StatusFault(status=503, path=refused))
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, recorder):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender.send, UpdateReport.single(slow, ResultCode.OK, ""))
                with anyio.fail_after(10):
                    await sim.wait_for_async(lambda: route_count(sim, "report") == 1)
                # This failure wakes the retry loop while the slow report is in flight.
                event = await sender.send(UpdateReport.single(refused, ResultCode.OK, ""))
                assert isinstance(event, ErrorEvent)
                await wait_accepted(sim)
                await recorder.wait_for(lambda events: events == [UpdateReportSent()])
                assert [r.update_id for r in sim.reports(DEVICE)] == [refused]
                assert [r.path.rsplit("/", 1)[1] for r in sim.requests] == [slow, refused, refused]
                tg.cancel_scope.cancel()
            assert journal.pending_reports() == 1  # the slow one, cut off: kept for later


async def test_an_unreadable_kept_report_is_dropped(
    sim: CoreSimulator, journal_path: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    waiter = log_waiter("Dropping unreadable kept report")
    with Journal.open(journal_path) as journal:
        journal.add_report("u1", b"not json")
        async with retrying(sim, journal):
            await waiter.wait()
            assert journal.pending_reports() == 0
    assert sim.requests == []
