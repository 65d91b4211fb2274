"""Install progress: ``Client.send_install_progress`` and the throttled ``ProgressReporter``
behind ``report_progress``, sync and async, and what a 2016 daemon answers."""

from __future__ import annotations

import contextvars
import logging
import threading
from pathlib import Path

import anyio
import pytest

from swlm_sdk import Client, CommandFailed, CommandRejected, DownloadComplete, ResultCode, Retry
from swlm_sdk._client import EXTENSION_REJECTED
from swlm_sdk._progress import ProgressReporter, report_progress
from swlm_sdk.app import App
from swlm_sdk.protocol import (
    AwaitingReboot,
    ErrorEvent,
    InstallProgress,
    ProtocolError,
    SendInstallProgress,
    SendUpdateReport,
    UpdateReport,
    decode_event,
    encode_event,
    parse_command,
)
from swlm_sdk.testing import FakeDaemon

pytestmark = pytest.mark.anyio


# -- the command ------------------------------------------------------------------------------


async def test_the_command_goes_out_as_text_and_its_answer_comes_back(
    fake_daemon: FakeDaemon,
) -> None:
    client = Client(fake_daemon.commands_socket)
    reply = await client.send_install_progress("u1", 40, "writing;slot\nb ")
    assert reply == InstallProgress("u1", 40, "writing slot b")
    assert fake_daemon.requests == [b"SendInstallProgress u1 40 writing slot b"]


async def test_a_2016_daemon_rejects_it_with_bad_command(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir, strict_2016=True) as fake:
        with pytest.raises(CommandRejected) as info:
            await Client(fake.commands_socket).send_install_progress("u1", 40)
    assert info.value.reply == EXTENSION_REJECTED + "SendInstallProgress u1 40"


async def test_a_refusal_is_command_failed(sock_dir: Path) -> None:
    refusal = ErrorEvent("Update u1 is unknown to the daemon: no progress is taken")
    async with FakeDaemon(sock_dir, replies={SendInstallProgress: refusal}) as fake:
        with pytest.raises(CommandFailed) as info:
            await Client(fake.commands_socket).send_install_progress("u1", 40)
    assert info.value.event == refusal


@pytest.mark.parametrize("percent", [-1, 101])
async def test_a_percentage_out_of_range_is_not_sent(fake_daemon: FakeDaemon, percent: int) -> None:
    with pytest.raises(ProtocolError):
        await Client(fake_daemon.commands_socket).send_install_progress("u1", percent)
    assert fake_daemon.requests == []


# -- the reporter ---------------------------------------------------------------------------


class Sent:
    def __init__(self) -> None:
        self.values: list[tuple[int, str]] = []

    async def __call__(self, percent: int, text: str) -> None:
        self.values.append((percent, text))


async def test_a_sync_installer_s_many_calls_become_the_first_and_the_last() -> None:
    sent = Sent()
    reporter = ProgressReporter(sent, interval=3600)  # nothing is sent between the two

    def install() -> None:
        for percent in range(101):
            report_progress(percent, f"block {percent}")

    async with reporter.sending():
        await anyio.to_thread.run_sync(install)
    assert sent.values[-1] == (100, "block 100")
    assert len(sent.values) <= 2  # the first one the sender saw, then the newest at the end


async def test_an_async_installer_reports_too_and_the_newest_wins() -> None:
    sent = Sent()
    reporter = ProgressReporter(sent, interval=3600)
    async with reporter.sending():
        report_progress(10, "unpacking")
        await anyio.wait_all_tasks_blocked()  # the sender sends the first at once
        report_progress(20, "writing")
        report_progress(30, "verifying")
    assert sent.values == [(10, "unpacking"), (30, "verifying")]


async def test_a_thread_of_the_installer_s_own_can_report() -> None:
    """A plain thread, not one of anyio's, started with the handler's context."""
    sent = Sent()
    reporter = ProgressReporter(sent, interval=3600)

    def install() -> None:
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(report_progress, 60, "own thread"))
        worker.start()
        worker.join()

    async with reporter.sending():
        await anyio.to_thread.run_sync(install)
    assert sent.values == [(60, "own thread")]


async def test_the_same_progress_is_sent_once() -> None:
    sent = Sent()
    reporter = ProgressReporter(sent, interval=0)
    async with reporter.sending():
        for _ in range(3):
            report_progress(50)
            await anyio.wait_all_tasks_blocked()
    assert sent.values == [(50, "")]


async def test_nothing_is_flushed_after_a_cancelled_install() -> None:
    sent = Sent()
    reporter = ProgressReporter(sent, interval=3600)
    with anyio.CancelScope() as scope:
        async with reporter.sending():
            report_progress(10)
            await anyio.wait_all_tasks_blocked()
            report_progress(90)
            scope.cancel()
            await anyio.sleep_forever()
    assert sent.values == [(10, "")]


@pytest.mark.parametrize("percent", [-1, 101, 5.5, True])
async def test_a_bad_percentage_is_the_caller_s_error(percent: object) -> None:
    async with ProgressReporter(Sent()).sending():
        with pytest.raises(ValueError, match="integer percentage from 0 to 100"):
            report_progress(percent)  # type: ignore[arg-type]


def test_outside_an_install_it_says_where_to_call_it() -> None:
    with pytest.raises(RuntimeError, match="call it from the on_download_complete handler"):
        report_progress(10)


# -- through the App --------------------------------------------------------------------------


def make_app(fake: FakeDaemon, state: Path) -> App:
    return App(
        state,
        commands_socket=fake.commands_socket,
        events_socket=fake.events_socket,
        report_retry=Retry(attempts=None, initial_delay=0.005, max_delay=0.02),
        progress_interval=3600,  # the first and the last of each install, nothing between
    )


async def install_two(fake: FakeDaemon, app: App) -> None:
    @app.on_download_complete
    def install(event: DownloadComplete) -> None:
        report_progress(10, "unpacking")
        report_progress(100, "done")

    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        for update_id in ("u1", "u2"):
            await fake.deliver(DownloadComplete(update_id, f"/var/sota/{update_id}"))
            await fake.wait_for(SendUpdateReport, count=int(update_id[1]))
        app.stop()


async def test_an_app_handler_s_progress_reaches_the_daemon_before_the_report(
    fake_daemon: FakeDaemon, sock_dir: Path
) -> None:
    await install_two(fake_daemon, make_app(fake_daemon, sock_dir / "state"))
    u1 = [r for r in fake_daemon.requests if b" u1 " in r or r.endswith(b" u1 0")]
    assert u1[-1] == b"SendUpdateReport u1 0"
    assert u1[-2] == b"SendInstallProgress u1 100 done"
    assert set(u1[:-2]) <= {b"SendInstallProgress u1 10 unpacking"}


async def test_after_a_2016_daemon_s_answer_no_more_progress_is_sent(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeDaemon(sock_dir, strict_2016=True) as fake:
        app = make_app(fake, sock_dir / "state")
        with caplog.at_level(logging.INFO, logger="swlm_sdk"):
            await install_two(fake, app)
    progress = [r for r in fake.requests if r.startswith(b"SendInstallProgress")]
    # One, which the 2016 daemon refused (10 %, or 100 % if the handler was quicker than that).
    assert len(progress) == 1
    assert progress[0].startswith(b"SendInstallProgress u1 ")
    assert [r for r in fake.requests if r.startswith(b"SendUpdateReport")] == [
        b"SendUpdateReport u1 0",
        b"SendUpdateReport u2 0",
    ]
    assert not app.progress_taken
    said = [r.getMessage() for r in caplog.records if "install progress" in r.getMessage()]
    assert said == ["the daemon does not take install progress (a 2016 client?); not sent"]


async def test_a_refused_progress_is_one_warning_and_the_install_goes_on(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refusal = ErrorEvent("Update u1 is unknown to the daemon: no progress is taken")
    async with FakeDaemon(sock_dir, replies={SendInstallProgress: refusal}) as fake:
        app = make_app(fake, sock_dir / "state")
        app.progress_interval = 0

        @app.on_download_complete
        async def install(event: DownloadComplete) -> None:
            # Three sends an install, each refused: the handler waits for each to arrive.
            for percent in (10, 50, 100):
                sent = len([c for c in fake.commands if isinstance(c, SendInstallProgress)])
                report_progress(percent)
                await fake.wait_for(SendInstallProgress, count=sent + 1)

        with caplog.at_level(logging.WARNING, logger="swlm_sdk"):
            async with anyio.create_task_group() as group:
                await group.start(app.serve)
                for n, update_id in enumerate(("u1", "u2"), start=1):
                    await fake.deliver(DownloadComplete(update_id, f"/var/sota/{update_id}"))
                    await fake.wait_for(SendUpdateReport, count=n)
                app.stop()
    assert fake.reports == [
        UpdateReport.single("u1", ResultCode.OK),
        UpdateReport.single("u2", ResultCode.OK),
    ]
    assert len([c for c in fake.commands if isinstance(c, SendInstallProgress)]) == 6
    warned = [r.getMessage() for r in caplog.records if "not taken" in r.getMessage()]
    assert len(warned) == 2  # one an install, though each sent three
    assert warned[0].startswith("progress of update u1 not taken (the install goes on): ")
    assert app.progress_taken


# -- the docs' examples -----------------------------------------------------------------------

REPO = Path(__file__).parents[2]


def test_the_protocol_doc_s_exchanges_are_what_is_parsed_and_answered() -> None:
    text = (REPO / "docs" / "protocol.md").read_text()
    block = text.split("<!-- progress example -->\n```\n", 1)[1].split("```", 1)[0]
    lines = [line.split(":  ", 1) for line in block.splitlines()]
    assert [who for who, _ in lines] == ["peer -> daemon", "daemon -> peer"] * 3
    for (_, sent), (_, answer) in zip(lines[::2], lines[1::2], strict=True):
        command = parse_command(sent)
        assert isinstance(command, SendInstallProgress)
        expected = InstallProgress(command.update_id, command.percent, command.text)
        if command.update_id == "7":  # the one the daemon does not know
            expected = ErrorEvent("Update 7 is unknown to the daemon: no progress is taken")  # type: ignore[assignment]
        assert encode_event(expected).decode() == answer
        assert decode_event(answer.encode()) == expected


async def test_the_sdk_doc_s_example_reports_its_progress(
    fake_daemon: FakeDaemon, sock_dir: Path
) -> None:
    text = (REPO / "docs" / "sdk.md").read_text()
    code = text.split("<!-- example: install progress -->\n```python\n", 1)[1].split("```", 1)[0]
    app = make_app(fake_daemon, sock_dir / "state")
    namespace = {"app": app, "flash_blocks": lambda image: [(n, 4) for n in range(1, 5)]}
    exec(compile(code, "docs/sdk.md", "exec"), namespace)
    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await fake_daemon.deliver(DownloadComplete("u1", "/var/sota/u1"))
        await fake_daemon.wait_for(SendUpdateReport)
        app.stop()
    progress = [r for r in fake_daemon.requests if r.startswith(b"SendInstallProgress")]
    assert progress[-1] == b"SendInstallProgress u1 100 writing block 4 of 4"
    assert fake_daemon.reports == [UpdateReport.single("u1", ResultCode.OK)]


async def test_the_handler_s_error_comes_out_as_it_is() -> None:
    """Not in an exception group: the App turns InstallError into its report."""
    sent = Sent()

    async def install() -> None:
        async with ProgressReporter(sent, interval=3600).sending():
            report_progress(70, "nearly")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await install()
    assert sent.values == [(70, "nearly")]


# -- SendRebootNeeded ---------------------------------------------------------------------------


async def test_reboot_needed_goes_out_as_text_and_its_answer_comes_back(
    fake_daemon: FakeDaemon,
) -> None:
    reply = await Client(fake_daemon.commands_socket).send_reboot_needed("u1", "slot b\nflashed")
    assert reply == AwaitingReboot("u1", "slot b flashed")
    assert fake_daemon.requests == [b"SendRebootNeeded u1 slot b flashed"]


async def test_a_2016_daemon_rejects_reboot_needed(sock_dir: Path) -> None:
    async with FakeDaemon(sock_dir, strict_2016=True) as fake:
        with pytest.raises(CommandRejected) as info:
            await Client(fake.commands_socket).send_reboot_needed("u1")
    assert info.value.reply == EXTENSION_REJECTED + "SendRebootNeeded u1"
