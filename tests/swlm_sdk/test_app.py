"""The handler framework end to end: real sockets, the fake daemon, a journal on disk."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import swlm_sdk._app
from swlm_sdk import (
    DownloadComplete,
    DownloadFailed,
    ErrorEvent,
    InstallError,
    ListenerError,
    Package,
    ResultCode,
    Retry,
    SwlmError,
    UnknownEvent,
)
from swlm_sdk.app import App, Journal, JournalEntry
from swlm_sdk.protocol import (
    Command,
    NotAuthenticated,
    OperationResult,
    SendInstalledPackages,
    SendUpdateReport,
    UpdateReport,
)
from swlm_sdk.testing import FakeDaemon
from tests.conftest import LogWaiter
from tests.swlm_sdk.conftest import FAST

pytestmark = pytest.mark.anyio


def make_app(fake: FakeDaemon, state: Path, **options: Any) -> App:
    return App(
        state,
        commands_socket=fake.commands_socket,
        events_socket=fake.events_socket,
        **{"report_retry": FAST, **options},
    )


def exists(path: str) -> bool:
    return os.path.exists(path)


def report(update_id: str, code: ResultCode, text: str = "") -> UpdateReport:
    return UpdateReport.single(update_id, code, text)


def dc(update_id: str, image: str = "/img") -> DownloadComplete:
    return DownloadComplete(update_id, image)


def levels(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """The level of each log record containing ``text``."""
    return [r.levelname for r in caplog.records if text in r.getMessage()]


async def test_sync_handler_ok_then_packages(fake_daemon: FakeDaemon, sock_dir: Path) -> None:
    app = make_app(fake_daemon, sock_dir / "state")
    seen: list[DownloadComplete] = []

    @app.on_download_complete
    def install(event: DownloadComplete) -> None:
        seen.append(event)

    @app.installed_packages
    def packages() -> list[tuple[str, str]]:
        return [("swlm-demo", str(len(seen)))]

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.wait_for(SendInstalledPackages)  # once at start-up
        await fake_daemon.deliver(dc("u1", "/var/sota/u1"))
        await fake_daemon.wait_for(SendInstalledPackages, count=2)
        app.stop()
    assert seen == [dc("u1", "/var/sota/u1")]
    assert fake_daemon.requests == [
        b"SendInstalledPackages swlm-demo 0",
        b"SendUpdateReport u1 0",
        b"SendInstalledPackages swlm-demo 1",
    ]
    assert not exists(fake_daemon.events_socket)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (ResultCode.OK, report("u1", ResultCode.OK)),
        (4, report("u1", ResultCode.INSTALL_FAILED)),
        ("disk_full", report("u1", ResultCode.DISK_FULL)),
        ((ResultCode.FLASH_FAILED, "slot B"), report("u1", ResultCode.FLASH_FAILED, "slot B")),
        (("ALREADY_PROCESSED", "same"), report("u1", ResultCode.ALREADY_PROCESSED, "same")),
        (
            InstallError("VALIDATION_FAILED", "bad sig"),
            report("u1", ResultCode.VALIDATION_FAILED, "bad sig"),
        ),
        (RuntimeError("boom"), report("u1", ResultCode.INTERNAL_ERROR, "RuntimeError: boom")),
        (
            3.5,
            report(
                "u1",
                ResultCode.INTERNAL_ERROR,
                "TypeError: the install handler returned 3.5, not a ResultCode, its number "
                "or name, a (code, text) tuple or None",
            ),
        ),
        (
            77,
            report(
                "u1",
                ResultCode.INTERNAL_ERROR,
                "ProtocolError: unknown result code 77: expected a number from 0 to 19",
            ),
        ),
    ],
)
async def test_async_handler_outcomes(
    fake_daemon: FakeDaemon, sock_dir: Path, outcome: object, expected: UpdateReport
) -> None:
    app = make_app(fake_daemon, sock_dir / "state")

    @app.on_download_complete
    async def install(event: DownloadComplete) -> Any:
        await anyio.lowlevel.checkpoint()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.deliver(dc("u1"))
        await fake_daemon.wait_for(SendUpdateReport)
        app.stop()
    assert fake_daemon.reports == [expected]


async def test_exceptions_do_not_stop_the_swlm(
    fake_daemon: FakeDaemon, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(fake_daemon, sock_dir / "state")

    @app.on_download_complete
    def install(event: DownloadComplete) -> ResultCode:
        if event.update_id == "bad":
            raise KeyError("missing")
        return ResultCode.OK

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.deliver(dc("bad"))
        await fake_daemon.wait_for(SendUpdateReport)
        await fake_daemon.deliver(dc("good"))
        await fake_daemon.wait_for(SendUpdateReport, count=2)
        app.stop()
    assert fake_daemon.reports == [
        report("bad", ResultCode.INTERNAL_ERROR, "KeyError: 'missing'"),
        report("good", ResultCode.OK),
    ]
    assert "install handler failed for update bad" in caplog.text


async def test_an_acknowledged_report_is_never_sent_again(
    fake_daemon: FakeDaemon,
    sock_dir: Path,
    log_waiter: Callable[[str], LogWaiter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ignored = log_waiter(
        "update u1 was already reported (UPGRADE_FAILED) and the daemon acknowledged it: "
        "ignoring the redelivery"
    )
    app = make_app(fake_daemon, sock_dir / "state")
    calls: list[str] = []

    @app.on_download_complete
    def install(event: DownloadComplete) -> tuple[ResultCode, str]:
        calls.append(event.update_id)
        return ResultCode.UPGRADE_FAILED, "held back"

    @app.installed_packages
    def packages() -> list[tuple[str, str]]:
        return [("p", str(len(calls)))]

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.wait_for(SendInstalledPackages)  # at start-up
        await fake_daemon.deliver(dc("u1"))
        await fake_daemon.wait_for(SendInstalledPackages, count=2)  # after u1 is sent
        await fake_daemon.deliver(dc("u1"))
        await ignored.wait()
        await fake_daemon.deliver(dc("u2"))  # later work still goes out, u1 does not
        await fake_daemon.wait_for(SendInstalledPackages, count=3)
        app.stop()
    assert calls == ["u1", "u2"]
    assert fake_daemon.reports == [
        report("u1", ResultCode.UPGRADE_FAILED, "held back"),
        report("u2", ResultCode.UPGRADE_FAILED, "held back"),
    ]
    assert {uid: e.state for uid, e in app.journal.entries().items()} == {
        "u1": "sent",
        "u2": "sent",
    }
    assert levels(caplog, ignored.text) == ["INFO"]


async def test_a_pending_report_is_sent_once_more_at_start(
    fake_daemon: FakeDaemon, sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    # What a kill after the daemon answered UpdateReportSent, before "sent" was saved, leaves.
    state = sock_dir / "state"
    journal = Journal(state)
    await journal.open()
    await journal.record("u1", ResultCode.OK, "done")
    calls: list[str] = []

    def install(event: DownloadComplete) -> None:
        calls.append(event.update_id)

    def packages() -> list[tuple[str, str]]:
        return [("p", "1")]

    first = make_app(fake_daemon, state)
    first.on_download_complete(install)
    first.installed_packages(packages)
    ignored = log_waiter("update u1 was already reported (OK) and the daemon acknowledged it")
    async with anyio.create_task_group() as group:
        await group.start(first.serve)
        await fake_daemon.wait_for(SendInstalledPackages)  # sent after the report was saved
        assert fake_daemon.reports == [report("u1", ResultCode.OK, "done")]
        reread = Journal(state)
        await reread.open()
        assert reread.get("u1") == JournalEntry("sent", ResultCode.OK, "done", seq=2)
        await fake_daemon.deliver(dc("u1"))
        await ignored.wait()
        first.stop()

    # Nothing more at the next start either: only the package list goes out.
    second = make_app(fake_daemon, state)
    second.on_download_complete(install)
    second.installed_packages(packages)
    async with anyio.create_task_group() as group:
        await group.start(second.serve)
        await fake_daemon.wait_for(SendInstalledPackages, count=2)
        await fake_daemon.deliver(dc("u1"))
        await fake_daemon.deliver(dc("u2"))
        await fake_daemon.wait_for(SendUpdateReport, count=2)
        second.stop()
    assert calls == ["u2"]
    assert fake_daemon.reports == [report("u1", ResultCode.OK, "done"), report("u2", ResultCode.OK)]


async def test_a_redelivery_sends_a_pending_report_once_without_installing(
    sock_dir: Path, log_waiter: Callable[[str], LogWaiter], caplog: pytest.LogCaptureFixture
) -> None:
    failed = log_waiter("report for update u1 not delivered")
    pending = log_waiter(
        "update u1 was handled already (INSTALL_FAILED) and its report is not acknowledged yet"
    )
    down = FakeDaemon(sock_dir / "daemon")  # not entered: it only delivers events
    os.makedirs(down.directory)
    # A backoff this long leaves the redelivery as the only thing that can send the report.
    slow = Retry(attempts=None, initial_delay=3600, max_delay=3600)
    app = make_app(down, sock_dir / "state", report_retry=slow)
    calls: list[str] = []

    @app.on_download_complete
    def install(event: DownloadComplete) -> ResultCode:
        calls.append(event.update_id)
        return ResultCode.INSTALL_FAILED

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await down.deliver(dc("u1"))
        await failed.wait()
        async with FakeDaemon(down.directory) as up:  # the daemon is back and redelivers
            await up.deliver(dc("u1"))
            await pending.wait()
            await up.wait_for(SendUpdateReport)
            await up.deliver(dc("u1"))
            await up.deliver(dc("u2"))
            await up.wait_for(SendUpdateReport, count=2)
            app.stop()
    assert calls == ["u1", "u2"]
    assert up.reports == [
        report("u1", ResultCode.INSTALL_FAILED),
        report("u2", ResultCode.INSTALL_FAILED),
    ]
    assert levels(caplog, pending.text) == ["INFO"]


async def test_a_stop_right_after_the_acknowledgement_still_records_it(
    fake_daemon: FakeDaemon, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = sock_dir / "state"
    app = make_app(fake_daemon, state)
    app.on_download_complete(lambda event: None)
    async with anyio.create_task_group() as group:

        def point(name: str) -> None:
            if name == "swlm.report.acknowledged":
                group.cancel_scope.cancel()  # the caller gives up on the SWLM right there

        monkeypatch.setattr(swlm_sdk._app, "kill_point", point)
        await group.start(app.serve)
        await fake_daemon.deliver(dc("u1"))
        with anyio.fail_after(30):
            await anyio.sleep_forever()  # until the point cancels
    reread = Journal(state)
    await reread.open()
    assert reread.get("u1") == JournalEntry("sent", ResultCode.OK, "", seq=3)
    assert fake_daemon.reports == [report("u1", ResultCode.OK)]


async def test_undelivered_report_survives_a_restart(
    sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    state = sock_dir / "state"
    calls: list[str] = []

    def install(event: DownloadComplete) -> ResultCode:
        calls.append(event.update_id)
        return ResultCode.OK

    # The daemon is down: the fake only delivers events, its commands socket is not open.
    down = FakeDaemon(sock_dir / "down")
    os.makedirs(down.directory)
    first = make_app(down, state)
    first.on_download_complete(install)
    failed = log_waiter("report for update u1 not delivered: no socket at")
    async with anyio.create_task_group() as group:
        await group.start(first.serve)
        await down.deliver(dc("u1"))
        await failed.wait()
        first.stop()
    assert calls == ["u1"]
    on_disk = json.loads((state / "swlm-journal.json").read_text())
    assert on_disk["updates"]["u1"]["state"] == "pending"

    # The SWLM restarts with the daemon up: the report goes out at start-up, once; the daemon's
    # redelivery of u1 (which may arrive before the acknowledgement is saved) sends nothing more.
    async with FakeDaemon(sock_dir / "up") as fake:
        second = make_app(fake, state)
        second.on_download_complete(install)
        async with anyio.create_task_group() as group:
            await group.start(second.serve)
            await fake.wait_for(SendUpdateReport)
            await fake.deliver(dc("u1"))
            await fake.deliver(dc("u2"))
            await fake.wait_for(SendUpdateReport, count=2)
            second.stop()
    assert calls == ["u1", "u2"]
    assert fake.reports == [report("u1", ResultCode.OK), report("u2", ResultCode.OK)]
    assert Journal(state).path == str(state / "swlm-journal.json")


async def test_error_replies_are_retried_until_accepted(sock_dir: Path) -> None:
    answers: list[Any] = [NotAuthenticated(), ErrorEvent("HTTP client error: 503"), None]

    def reply(command: Command) -> Any:
        return answers.pop(0) if isinstance(command, SendUpdateReport) else None

    async with FakeDaemon(sock_dir, replies=reply) as fake:
        app = make_app(fake, sock_dir / "state")
        app.on_download_complete(lambda event: ResultCode.OK)
        async with anyio.create_task_group() as group:
            await group.start(app.serve)
            await fake.deliver(dc("u1"))
            await fake.wait_for(SendUpdateReport, count=3)
            app.stop()
    assert fake.reports == [report("u1", ResultCode.OK)] * 3
    assert app.journal.get("u1").state == "sent"  # type: ignore[union-attr]


async def test_report_waits_for_a_restarting_daemon(
    sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    failed = log_waiter("report for update u1 not delivered")
    down = FakeDaemon(sock_dir / "daemon")  # not entered: it only delivers events
    os.makedirs(down.directory)
    app = make_app(down, sock_dir / "state")
    app.on_download_complete(lambda event: (ResultCode.OK, "done"))
    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await down.deliver(dc("u1"))
        await failed.wait()
        assert [uid for uid, _ in app.journal.pending()] == ["u1"]
        async with FakeDaemon(down.directory) as up:  # the daemon is back
            await up.wait_for(SendUpdateReport)
            app.stop()
    assert up.reports == [report("u1", ResultCode.OK, "done")]


async def test_strict_2016_daemon_gets_the_report_without_text(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir, strict_2016=True) as fake:
        app = make_app(fake, sock_dir / "state")
        app.on_download_complete(lambda event: (ResultCode.INSTALL_FAILED, "dpkg said no"))
        async with anyio.create_task_group() as group:
            await group.start(app.serve)
            await fake.deliver(dc("u1"))
            await fake.wait_for(SendUpdateReport)
            app.stop()
    assert fake.requests == [b"SendUpdateReport u1 4 dpkg said no", b"SendUpdateReport u1 4"]


async def first_of(*events: anyio.Event) -> None:
    """Return once any of ``events`` is set."""
    async with anyio.create_task_group() as group:
        for event in events:

            async def wait(event: anyio.Event = event) -> None:
                await event.wait()
                group.cancel_scope.cancel()

            group.start_soon(wait)


@pytest.mark.parametrize("concurrency", [None, 2])
async def test_installs_beyond_the_concurrency_wait(
    fake_daemon: FakeDaemon,
    sock_dir: Path,
    log_waiter: Callable[[str], LogWaiter],
    concurrency: int | None,
) -> None:
    # The default (None) is one install at a time: the second one waits for the first.
    limit = concurrency or 1
    options = {} if concurrency is None else {"concurrency": concurrency}
    app = make_app(fake_daemon, sock_dir / "state", **options)
    extra = f"u{limit}"
    waits = log_waiter(f"DownloadComplete for update {extra!r} waits: {limit} handler(s) running")
    running: set[str] = set()
    most: list[int] = []
    all_started = anyio.Event()
    too_many = anyio.Event()
    release = anyio.Event()

    @app.on_download_complete
    async def install(event: DownloadComplete) -> None:
        running.add(event.update_id)
        most.append(len(running))
        if len(running) == limit:
            all_started.set()
        if len(running) > limit:
            too_many.set()
        await release.wait()
        running.discard(event.update_id)

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        with anyio.fail_after(30):
            for i in range(limit):
                await fake_daemon.deliver(dc(f"u{i}"))
            await all_started.wait()  # the first `limit` run at once
            await fake_daemon.deliver(dc(extra))
            # The App holds the extra update back; with more room it would start it instead.
            await first_of(waits.seen, too_many)
            assert not too_many.is_set(), f"{max(most)} installs ran at once"
            release.set()
            await fake_daemon.wait_for(SendUpdateReport, count=limit + 1)
        app.stop()
    assert max(most) == limit
    assert fake_daemon.reports[-1].update_id == extra


async def test_configurable_concurrency(fake_daemon: FakeDaemon, sock_dir: Path) -> None:
    app = make_app(fake_daemon, sock_dir / "state", concurrency=3)
    both = anyio.Event()
    running: set[str] = set()

    @app.on_download_complete
    async def install(event: DownloadComplete) -> None:
        running.add(event.update_id)
        if len(running) == 3:
            both.set()
        await both.wait()  # deadlocks unless three installs run at once

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        for i in range(3):
            await fake_daemon.deliver(dc(f"u{i}"))
        await fake_daemon.wait_for(SendUpdateReport, count=3)
        app.stop()
    assert sorted(r.update_id for r in fake_daemon.reports) == ["u0", "u1", "u2"]


async def test_graceful_stop_finishes_the_current_install(
    fake_daemon: FakeDaemon, sock_dir: Path, log_waiter: Callable[[str], LogWaiter]
) -> None:
    closed = log_waiter("events socket closed; waiting for 1 install(s) to finish")
    app = make_app(fake_daemon, sock_dir / "state")
    started = anyio.Event()
    release = anyio.Event()

    @app.on_download_complete
    async def install(event: DownloadComplete) -> ResultCode:
        started.set()
        await release.wait()
        return ResultCode.OK

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.deliver(dc("u1"))
        await started.wait()
        app.stop()
        await closed.wait()  # the events socket closes at once; the install goes on
        assert not exists(fake_daemon.events_socket)
        assert fake_daemon.reports == []
        release.set()
    assert fake_daemon.reports == [report("u1", ResultCode.OK)]


async def test_stop_abandons_an_async_install_after_the_grace(
    fake_daemon: FakeDaemon, sock_dir: Path
) -> None:
    app = make_app(fake_daemon, sock_dir / "state", shutdown_grace=0.05)
    started = anyio.Event()

    @app.on_download_complete
    async def install(event: DownloadComplete) -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.deliver(dc("u1"))
        await started.wait()
        app.stop()
    assert fake_daemon.reports == []
    assert app.journal.get("u1") is None  # abandoned cleanly: a redelivery installs again
    assert not exists(fake_daemon.events_socket)


async def test_interrupted_install_is_reported_at_start(
    fake_daemon: FakeDaemon, sock_dir: Path
) -> None:
    state = sock_dir / "state"
    journal = Journal(state)
    await journal.open()
    await journal.mark_installing("u7")  # what a crash in the middle of an install leaves
    app = make_app(fake_daemon, state)
    calls: list[str] = []
    app.on_download_complete(lambda event: calls.append(event.update_id))
    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.wait_for(SendUpdateReport)
        await fake_daemon.deliver(dc("u7"))
        await fake_daemon.deliver(dc("u8"))
        await fake_daemon.wait_for(SendUpdateReport, count=2)
        app.stop()
    assert calls == ["u8"]
    [first, second] = fake_daemon.reports
    assert second == report("u8", ResultCode.OK)
    assert first.operation_results == (
        OperationResult(
            "u7",
            ResultCode.INTERNAL_ERROR,
            "the install was interrupted: the SWLM stopped before it finished",
        ),
    )


async def test_unreportable_update_ids_are_ignored(
    fake_daemon: FakeDaemon, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(fake_daemon, sock_dir / "state")
    calls: list[str] = []
    app.on_download_complete(lambda event: calls.append(event.update_id))
    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.deliver(dc("has space"))
        await fake_daemon.deliver(dc(""))
        await fake_daemon.deliver(dc("ok"))
        await fake_daemon.wait_for(SendUpdateReport)
        app.stop()
    assert calls == ["ok"]
    assert "DownloadComplete for update id 'has space' ignored" in caplog.text


async def test_observers_see_other_events(fake_daemon: FakeDaemon, sock_dir: Path) -> None:
    app = make_app(fake_daemon, sock_dir / "state")
    app.on_download_complete(lambda event: None)
    seen: list[Any] = []
    got_both = anyio.Event()

    @app.on_event(DownloadFailed, UnknownEvent)
    async def observe(event: DownloadFailed | UnknownEvent) -> None:
        seen.append(event)
        if len(seen) == 2:
            got_both.set()

    @app.on_event("DownloadFailed")
    def broken(event: DownloadFailed) -> None:
        raise ValueError("observer bug")  # logged, nothing else

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.deliver(DownloadFailed("u1", "IO error"))
        await fake_daemon.deliver(b'{"version":"0.2","event":"New","data":1}')
        with anyio.fail_after(10):
            await got_both.wait()
        app.stop()
    assert seen == [DownloadFailed("u1", "IO error"), UnknownEvent("New", 1, "0.2")]
    assert fake_daemon.reports == []


async def test_async_packages_provider_and_bad_lists(
    fake_daemon: FakeDaemon, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(fake_daemon, sock_dir / "state")
    app.on_download_complete(lambda event: None)
    lists: list[Any] = [[("bad name", "1")], [], [Package("a", "1")]]

    @app.installed_packages
    async def packages() -> Any:
        return lists.pop(0)

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        for i in range(3):
            await fake_daemon.deliver(dc(f"u{i}"))
            await fake_daemon.wait_for(SendUpdateReport, count=i + 1)
        await fake_daemon.wait_for(SendInstalledPackages)
        app.stop()
    assert fake_daemon.package_lists == [(Package("a", "1"),)]
    assert "installed packages cannot be sent" in caplog.text
    assert "returned no packages" in caplog.text


async def test_events_socket_in_use_is_a_clear_error(
    fake_daemon: FakeDaemon, sock_dir: Path
) -> None:
    first = make_app(fake_daemon, sock_dir / "one")
    first.on_download_complete(lambda event: None)
    second = make_app(fake_daemon, sock_dir / "two")
    second.on_download_complete(lambda event: None)
    async with anyio.create_task_group() as group:
        await group.start(first.serve)
        with pytest.raises(ListenerError, match="another process is listening on"):
            await second.serve()
        first.stop()


async def test_serve_needs_a_handler(fake_daemon: FakeDaemon, sock_dir: Path) -> None:
    with pytest.raises(SwlmError, match=r"@app\.on_download_complete"):
        await make_app(fake_daemon, sock_dir / "state").serve()


def test_registration_errors(sock_dir: Path) -> None:
    app = App(sock_dir / "state", commands_socket="/c.sock", events_socket="/e.sock")
    app.on_download_complete(lambda event: None)
    with pytest.raises(ValueError, match="already registered"):
        app.on_download_complete(lambda event: None)
    app.installed_packages(lambda: [])
    with pytest.raises(ValueError, match="already registered"):
        app.installed_packages(lambda: [])
    with pytest.raises(ValueError, match="at least one"):
        app.on_event()
    with pytest.raises(ValueError, match="concurrency"):
        App(sock_dir, concurrency=0, commands_socket="/c.sock", events_socket="/e.sock")


async def test_a_burst_of_1000_downloads(
    fake_daemon: FakeDaemon, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = make_app(fake_daemon, sock_dir / "state", concurrency=8)
    app.on_download_complete(lambda event: int(event.update_id[1:]) % 20)
    async with anyio.create_task_group() as group:
        await group.start(app.serve)

        async def send(start: int) -> None:
            for i in range(start, 1000, 10):
                await fake_daemon.deliver(dc(f"u{i}"))

        async with anyio.create_task_group() as senders:
            for start in range(10):
                senders.start_soon(send, start)
        await fake_daemon.wait_for(SendUpdateReport, count=1000, within=60)
        app.stop()
    got = {r.update_id: r.operation_results[0].result_code for r in fake_daemon.reports}
    assert got == {f"u{i}": ResultCode(i % 20) for i in range(1000)}
