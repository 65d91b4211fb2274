"""ReportSender against the simulator: reports survive Core outages and restarts (bug 27)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest

from sota_client._backend import AuthSettings, CoreBackend
from sota_client._errors import AuthError
from sota_client._reports import ReportSender, encode_report
from sota_client._store import Journal, UpdateState
from sota_client.sim import AuthSettings as SimAuth
from sota_client.sim import (
    CoreSimulator,
    DelayFault,
    DropFault,
    ExpireTokensFault,
    LoseAnswerFault,
    StatusFault,
)
from swlm_sdk.protocol import (
    ErrorEvent,
    NotAuthenticated,
    ResultCode,
    UpdateReport,
    UpdateReportSent,
    UpdateRequest,
)
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


async def test_a_permanent_refusal_is_set_aside_with_an_error_event(
    sim: CoreSimulator, journal_path: Path
) -> None:
    update_id = str(uuid.uuid4())  # Core has no such update for the device
    report = UpdateReport.single(update_id, ResultCode.OK, "")
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, recorder):
            assert await sender.send(report) == ErrorEvent(
                f"The report for update {update_id} is set aside: Core refused it: "
                "HTTP client error: Response Code: 404 Not Found, Body:\n"
                '{"code":"missing_entity","description":"UpdateSpec not found"}'
            )
            assert journal.pending_reports() == 0
            assert journal.update_state(update_id) is UpdateState.SET_ASIDE
        assert recorder.events == []
    assert [r.status for r in sim.reports(DEVICE)] == [404]


@pytest.mark.parametrize("status", [401, 403, 408, 429, 500, 503])
async def test_only_a_permanent_4xx_from_the_report_endpoint_is_a_refusal(
    sim: CoreSimulator, journal_path: Path, status: int
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(StatusFault(status=status, route="report"))
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, recorder):
            report = UpdateReport.single(update_id, ResultCode.OK, "")
            if status in (401, 403):  # no [auth]: re-authenticating cannot help, so it says so
                with pytest.raises(AuthError):
                    await sender.send(report)
            else:
                assert isinstance(await sender.send(report), ErrorEvent)
            await recorder.wait_for(lambda events: events == [UpdateReportSent()])
            assert journal.update_state(update_id) is UpdateState.REPORTED
    assert len(accepted(sim)) == 1


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


async def test_an_unreadable_kept_report_is_set_aside(
    sim: CoreSimulator, journal_path: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    waiter = log_waiter("is set aside and will not be sent again: it cannot be read back")
    with Journal.open(journal_path) as journal:
        journal.add_report("u1", b"not json")
        async with retrying(sim, journal) as (_, recorder):
            await waiter.wait()
            await recorder.wait_for(lambda events: len(events) == 1)
            assert journal.pending_reports() == 0
            assert journal.update_state("u1") is UpdateState.SET_ASIDE
    assert isinstance(recorder.events[0], ErrorEvent)
    assert sim.requests == []


async def test_a_kept_report_with_an_unusable_id_is_set_aside_not_crashed_on(
    sim: CoreSimulator, journal_path: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    """A 22,000-character id (kept by an older daemon) once crashed every start-up."""
    bad = "%" * 22_000
    waiter = log_waiter("its update id is unusable")
    with Journal.open(journal_path) as journal:
        journal.add_report(bad, encode_report(UpdateReport.single(bad, ResultCode.OK, "")))
        async with retrying(sim, journal):
            await waiter.wait()
            assert journal.update_state(bad) is UpdateState.SET_ASIDE
    assert sim.requests == []


# -- exactly once --------------------------------------------------------------------------


async def test_a_report_core_accepted_is_answered_from_the_journal(
    sim: CoreSimulator, journal_path: Path
) -> None:
    """The SWLM sends it again (it lost the reply): no second POST reaches Core."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.OK, "done")
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, _):
            assert await sender.send(report) == UpdateReportSent()
            assert await sender.send(report) == UpdateReportSent()
            other = UpdateReport.single(update_id, ResultCode.INSTALL_FAILED, "no")
            assert await sender.send(other) == ErrorEvent(
                f"Update {update_id} was already reported to Core with another result; "
                "Core keeps the first report it accepted"
            )
    assert route_count(sim, "report") == 1


async def test_two_sends_of_one_report_at_once_post_it_once(
    sim: CoreSimulator, journal_path: Path
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.OK, "")
    sim.inject(DelayFault(seconds=0.5, route="report"))
    results: list[object] = []
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, _):

            async def send() -> None:
                results.append(await sender.send(report))

            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                with anyio.fail_after(10):
                    await sim.wait_for_async(lambda: route_count(sim, "report") == 1)
                tg.start_soon(send)
    assert results == [UpdateReportSent(), UpdateReportSent()]
    assert route_count(sim, "report") == 1


async def test_a_post_whose_answer_was_lost_is_checked_against_core_first(
    sim: CoreSimulator, journal_path: Path
) -> None:
    """Core took the report but the answer never came: Core's list says so; no second POST."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(LoseAnswerFault(route="report"))
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, recorder):
            event = await sender.send(UpdateReport.single(update_id, ResultCode.OK, ""))
            assert isinstance(event, ErrorEvent)
            pending = journal.pending_report(update_id)
            assert pending is not None
            assert pending.in_doubt
            await recorder.wait_for(lambda events: events == [UpdateReportSent()])
            assert journal.update_state(update_id) is UpdateState.REPORTED
    assert route_count(sim, "report") == 1
    assert [r.route for r in sim.requests] == ["report", "updates"]


async def test_a_post_that_never_arrived_is_sent_again_after_the_check(
    sim: CoreSimulator, journal_path: Path
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(DropFault(route="report"))  # read, not performed, no answer
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, recorder):
            await sender.send(UpdateReport.single(update_id, ResultCode.OK, ""))
            await recorder.wait_for(lambda events: events == [UpdateReportSent()])
    assert [r.route for r in sim.requests] == ["report", "updates", "report"]
    assert len(accepted(sim)) == 1


async def test_a_refused_connection_is_not_in_doubt(journal_path: Path) -> None:
    with Journal.open(journal_path) as journal:
        async with CoreBackend(f"http://127.0.0.1:{free_port()}", DEVICE) as unreachable:
            sender = ReportSender(unreachable, journal, backoff=0.02)
            await sender.send(UpdateReport.single("u1", ResultCode.OK, ""))
        pending = journal.pending_report("u1")
        assert pending is not None
        assert not pending.in_doubt


async def test_a_kill_between_acceptance_and_recording_sends_nothing_twice(
    sim: CoreSimulator, journal_path: Path
) -> None:
    """The journal says "sending" (the daemon died mid-POST) and Core has the report."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.OK, "")
    async with CoreBackend(sim.url, DEVICE) as backend:
        await backend.send_update_report(report)  # what the killed daemon got through
    with Journal.open(journal_path) as journal:
        journal.add_report(update_id, encode_report(report))
        journal.report_sending(update_id)
    with Journal.open(journal_path) as journal:  # the daemon starts again
        async with retrying(sim, journal) as (_, recorder):
            await recorder.wait_for(lambda events: events == [UpdateReportSent()])
            assert journal.update_state(update_id) is UpdateState.REPORTED
    assert route_count(sim, "report") == 1


# -- the token endpoint misbehaving --------------------------------------------------------


@pytest.mark.parametrize(
    "token_fault",
    [
        StatusFault(status=404, route="token"),
        StatusFault(status=400, route="token", body='{"error":"invalid_request"}'),
        StatusFault(status=200, route="token", body="<html>login</html>", content_type="text/html"),
        StatusFault(
            status=200,
            route="token",
            body='{"access_token":"tök€","token_type":"bearer","expires_in":60,"scope":""}',
            content_type="application/json",
        ),
    ],
    ids=["404", "400", "html", "non-ascii-token"],
)
async def test_a_misbehaving_token_endpoint_never_drops_a_report(
    journal_path: Path, token_fault: StatusFault
) -> None:
    """The token expires as the report goes out, and renewing it fails: the report waits."""
    auth = SimAuth(client_id="device", client_secret="secret")
    with CoreSimulator(auth=auth) as sim, Journal.open(journal_path) as journal:
        sim.add_package("nano", "2.2.6", data=b"nano")
        update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
        settings = AuthSettings(server=sim.url, client_id="device", client_secret="secret")
        recorder = Recorder()
        async with (
            CoreBackend(sim.url, DEVICE, auth=settings, backoff=FAST_BACKOFF) as backend,
            anyio.create_task_group() as tg,
        ):
            await backend.authenticate()
            sim.inject(ExpireTokensFault(route="report"))
            sim.inject(msgspec.structs.replace(token_fault, count=8))
            sender = ReportSender(backend, journal, backoff=0.02, max_backoff=0.2)
            tg.start_soon(sender.run, recorder)
            event = await sender.send(UpdateReport.single(update_id, ResultCode.OK, ""))
            assert isinstance(event, ErrorEvent | NotAuthenticated)
            assert journal.pending_reports() == 1
            await recorder.wait_for(lambda events: UpdateReportSent() in events)
            tg.cancel_scope.cancel()
        assert journal.update_state(update_id) is UpdateState.REPORTED
        assert len([r for r in sim.reports(DEVICE) if r.status == 204]) == 1


# -- bugs ----------------------------------------------------------------------------------


class _BrokenBackend:
    """A backend whose report call hits a bug (an exception nobody converted)."""

    def __init__(self) -> None:
        self.calls = 0

    async def send_update_report(self, report: UpdateReport) -> None:
        self.calls += 1
        raise RuntimeError("boom")

    async def get_update_requests(self) -> list[UpdateRequest]:
        return []


async def test_a_report_that_keeps_hitting_a_bug_is_set_aside_after_three_tries(
    journal_path: Path,
) -> None:
    backend = _BrokenBackend()
    recorder = Recorder()
    with Journal.open(journal_path) as journal:
        sender = ReportSender(backend, journal, backoff=0.01, max_backoff=0.02)
        async with anyio.create_task_group() as tg:
            event = await sender.send(UpdateReport.single("u1", ResultCode.OK, ""))
            assert isinstance(event, ErrorEvent)
            assert "Internal error in the report sender: RuntimeError: boom" in event.text
            tg.start_soon(sender.run, recorder)
            await recorder.wait_for(lambda events: len(events) == 1)
            tg.cancel_scope.cancel()
        assert journal.update_state("u1") is UpdateState.SET_ASIDE
    assert backend.calls == 3
    (set_aside,) = recorder.events
    assert isinstance(set_aside, ErrorEvent)
    assert set_aside.text.startswith("The report for update u1 is set aside: it failed the same")


async def test_a_report_is_in_doubt_while_its_post_is_under_way(
    sim: CoreSimulator, journal_path: Path
) -> None:
    """A kill during the POST must leave it "in doubt", so that Core's list is checked."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(DelayFault(seconds=60, route="report"))
    with Journal.open(journal_path) as journal:
        async with retrying(sim, journal) as (sender, _), anyio.create_task_group() as tg:
            tg.start_soon(sender.send, UpdateReport.single(update_id, ResultCode.OK, ""))
            with anyio.fail_after(10):
                await sim.wait_for_async(lambda: route_count(sim, "report") == 1)
            pending = journal.pending_report(update_id)
            assert pending is not None
            assert pending.in_doubt
            tg.cancel_scope.cancel()


async def test_without_asking_core_a_report_in_doubt_is_simply_sent_again(
    sim: CoreSimulator, journal_path: Path
) -> None:
    """Over RVI Core's list cannot be asked (the node has no such call): the report whose
    answer was lost goes again, with no request for Core's update list."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(LoseAnswerFault(route="report"))
    with Journal.open(journal_path) as journal:
        async with (
            CoreBackend(sim.url, DEVICE, timeout=5.0) as backend,
            anyio.create_task_group() as tg,
        ):
            sender = ReportSender(
                backend, journal, backoff=0.02, max_backoff=0.05, ask_core_when_in_doubt=False
            )
            recorder = Recorder()
            tg.start_soon(sender.run, recorder)
            await sender.send(UpdateReport.single(update_id, ResultCode.OK, ""))
            await recorder.wait_for(lambda events: events == [UpdateReportSent()])
            tg.cancel_scope.cancel()
    assert [r.route for r in sim.requests] == ["report", "report"]
