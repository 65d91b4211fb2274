"""Updates that count only after a reboot: RebootNeeded, the boot counter, on_boot, the
control socket (``swlm confirm``), rollback. A reboot is a new boot id and a new App."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import swlm_sdk._app
import swlm_sdk._cli as cli
from swlm_sdk import (
    AwaitingConfirmation,
    ConfirmRefused,
    DaemonUnavailable,
    DownloadComplete,
    InstallError,
    RebootNeeded,
    ResultCode,
    confirm_update,
)
from swlm_sdk.app import App, Journal
from swlm_sdk.protocol import SendRebootNeeded, SendUpdateReport, UpdateReport
from swlm_sdk.testing import FakeDaemon
from tests.conftest import LogWaiter
from tests.swlm_sdk.conftest import FAST, Server2016

pytestmark = pytest.mark.anyio

FLASHED = "flashed 1.4.2 to slot b"


class Device:
    """The boot id file of a simulated device, and the App's state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.boot_id_file = directory / "boot_id"
        self.state = directory / "state"
        self.reboot()

    def reboot(self) -> None:
        self.boot_id_file.write_text(f"{uuid.uuid4()}\n")

    def app(self, fake: FakeDaemon, **options: Any) -> App:
        app = App(
            self.state,
            commands_socket=fake.commands_socket,
            events_socket=fake.events_socket,
            boot_id_file=self.boot_id_file,
            **{"report_retry": FAST, **options},
        )
        return app

    async def journal(self) -> dict[str, Any]:
        journal = Journal(self.state)
        await journal.open()
        return {uid: entry for uid, entry in journal.entries().items()}


@pytest.fixture
def device(sock_dir: Path) -> Device:
    return Device(sock_dir)


def flash(app: App, text: str = FLASHED) -> list[str]:
    calls: list[str] = []

    @app.on_download_complete
    def install(event: DownloadComplete) -> RebootNeeded:
        calls.append(event.update_id)
        return RebootNeeded(text)

    return calls


async def serve_until(app: App, until: Callable[[], Any]) -> None:
    """Serve the App until the awaitable ``until()`` is done, then stop it."""
    async with anyio.create_task_group() as group:
        await group.start(app.serve)
        await until()
        app.stop()


async def install_and_await(fake: FakeDaemon, app: App, update_id: str = "u1") -> None:
    async def until() -> None:
        before = len(await fake.wait_for(SendRebootNeeded, count=0))
        await fake.deliver(DownloadComplete(update_id, "/img"))
        said = await fake.wait_for(SendRebootNeeded, count=before + 1)
        assert said[-1].update_id == update_id

    await serve_until(app, until)


async def installed_then_rebooted(fake: FakeDaemon, device: Device) -> App:
    """The App of the boot after ``u1`` was flashed and asked for a reboot, not started yet."""
    app = device.app(fake)
    flash(app)
    await install_and_await(fake, app)
    device.reboot()
    app = device.app(fake)
    flash(app)
    return app


async def boot(app: App) -> None:
    """A start-up, as after a reboot: the boot checks run before serve reports started."""
    await serve_until(app, anyio.lowlevel.checkpoint)


class PowerCut(Exception):
    """Raised at a kill point: the App stops there, as a process killed there would."""


async def serve_until_cut(app: App, point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve ``app`` until it passes the kill point ``point``, where it dies."""

    def cut(name: str) -> None:
        if name == point:
            raise PowerCut(name)

    monkeypatch.setattr(swlm_sdk._app, "kill_point", cut)
    try:
        with pytest.raises(PowerCut):
            await app.serve()
    finally:
        monkeypatch.undo()


def report(update_id: str, code: ResultCode, text: str) -> UpdateReport:
    return UpdateReport.single(update_id, code, text)


async def test_the_report_waits_for_the_reboot_and_on_boot(
    fake_daemon: FakeDaemon, device: Device, log_waiter: Callable[[str], LogWaiter]
) -> None:
    asked: list[AwaitingConfirmation] = []

    def on_boot(pending: AwaitingConfirmation) -> ResultCode:
        asked.append(pending)
        return ResultCode.OK

    first = device.app(fake_daemon)
    calls = flash(first)
    first.on_boot(on_boot)
    ignored = log_waiter("update u1 is installed and awaits its confirmation after a reboot")

    async def until() -> None:
        await fake_daemon.deliver(DownloadComplete("u1", "/img"))
        [said] = await fake_daemon.wait_for(SendRebootNeeded)
        assert said == SendRebootNeeded("u1", FLASHED)
        await fake_daemon.deliver(DownloadComplete("u1", "/img"))  # redelivered: not again
        await ignored.wait()

    await serve_until(first, until)
    assert calls == ["u1"]
    assert fake_daemon.reports == []
    [entry] = (await device.journal()).values()
    assert (entry.state, entry.boots, entry.announced, entry.text) == (
        "awaiting_reboot",
        0,
        True,
        FLASHED,
    )

    restarted = device.app(fake_daemon)  # the SWLM restarts, the device does not reboot
    flash(restarted)
    restarted.on_boot(on_boot)
    await boot(restarted)
    assert asked == []
    said = [r for r in fake_daemon.requests if r.startswith(b"SendRebootNeeded")]
    assert len(said) == 1  # it was acknowledged: not sent again

    device.reboot()
    after = device.app(fake_daemon)
    flash(after)
    after.on_boot(on_boot)

    async def reported() -> None:
        await fake_daemon.wait_for(SendUpdateReport)

    await serve_until(after, reported)
    assert asked == [AwaitingConfirmation("u1", FLASHED, boots=1, manual=False)]
    assert fake_daemon.reports == [report("u1", ResultCode.OK, FLASHED)]
    assert (await device.journal())["u1"].state == "sent"


async def test_no_verdict_for_confirm_boots_boots_rolls_back(
    fake_daemon: FakeDaemon, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[int] = []
    rolled: list[AwaitingConfirmation] = []

    def make() -> App:
        app = device.app(fake_daemon, confirm_boots=3)
        flash(app)

        @app.on_boot
        def undecided(pending: AwaitingConfirmation) -> None:
            asked.append(pending.boots)

        @app.on_rollback
        def rollback(pending: AwaitingConfirmation) -> tuple[ResultCode, str]:
            rolled.append(pending)
            return ResultCode.INSTALL_FAILED, f"rolled back to slot a after {pending.boots} boots"

        return app

    await install_and_await(fake_daemon, make())
    for _ in range(3):
        device.reboot()
        await boot(make())
        await boot(make())  # a restart in the same boot neither counts nor asks again
    assert asked == [1, 2, 3]
    assert fake_daemon.reports == []
    assert rolled == []
    assert (
        "update u1 is not confirmed in boot 3 of 3; it is rolled back at the start of boot 4 "
        f"unless confirmed before: swlm confirm --state-dir {device.state} u1"
    ) in caplog.text

    device.reboot()

    async def reported() -> None:
        await fake_daemon.wait_for(SendUpdateReport)

    await serve_until(make(), reported)
    assert asked == [1, 2, 3, 4]  # at boot 4 a last time, then rolled back
    assert rolled == [AwaitingConfirmation("u1", FLASHED, boots=3)]
    assert fake_daemon.reports == [
        report("u1", ResultCode.INSTALL_FAILED, "rolled back to slot a after 3 boots")
    ]


async def test_without_hooks_a_shell_confirms_and_n_boots_fail_it(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    app = device.app(fake_daemon, confirm_boots=1)
    flash(app)
    await install_and_await(fake_daemon, app, "u1")
    await install_and_await(fake_daemon, app, "u2")

    async def confirm_u1() -> None:
        with pytest.raises(ConfirmRefused, match="'nope' is unknown to this SWLM"):
            await confirm_update(app.control_socket, "nope")
        assert await confirm_update(app.control_socket, "u1") == FLASHED
        with pytest.raises(ConfirmRefused, match="update u1 is already reported: OK"):
            await confirm_update(app.control_socket, "u1")

        await fake_daemon.wait_for(SendUpdateReport)

    device.reboot()
    app = device.app(fake_daemon, confirm_boots=1)
    flash(app)
    await serve_until(app, confirm_u1)
    assert fake_daemon.reports == [report("u1", ResultCode.OK, FLASHED)]
    # u2 had no hook and no confirm: with confirm_boots=1, the next boot rolls it back.
    device.reboot()
    app = device.app(fake_daemon, confirm_boots=1)
    flash(app)

    async def reported() -> None:
        await fake_daemon.wait_for(SendUpdateReport, count=2)

    await serve_until(app, reported)
    assert fake_daemon.reports[1] == report(
        "u2", ResultCode.INSTALL_FAILED, "not confirmed after 1 boot"
    )


async def test_a_confirm_before_the_reboot_is_refused(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    app = device.app(fake_daemon)
    flash(app)

    async def until() -> None:
        await fake_daemon.deliver(DownloadComplete("u1", "/img"))
        await fake_daemon.wait_for(SendRebootNeeded)
        with pytest.raises(ConfirmRefused, match="has not rebooted into it yet: reboot first"):
            await confirm_update(app.control_socket, "u1")

    await serve_until(app, until)
    assert fake_daemon.reports == []


async def test_a_manual_confirm_asks_the_hook(fake_daemon: FakeDaemon, device: Device) -> None:
    asked: list[AwaitingConfirmation] = []

    def make() -> App:
        app = device.app(fake_daemon)
        flash(app)

        @app.on_boot
        async def only_when_asked(pending: AwaitingConfirmation) -> tuple[ResultCode, str] | None:
            asked.append(pending)
            if pending.manual and pending.update_id == "u1":
                return ResultCode.OK, "slot b marked good"
            return None

        return app

    app = make()
    await install_and_await(fake_daemon, app, "u1")
    await install_and_await(fake_daemon, app, "u2")
    device.reboot()
    app = make()

    async def until() -> None:
        assert await confirm_update(app.control_socket, "u1") == "slot b marked good"
        with pytest.raises(ConfirmRefused, match="on_boot handler gave no verdict for update u2"):
            await confirm_update(app.control_socket, "u2")
        await fake_daemon.wait_for(SendUpdateReport)

    await serve_until(app, until)
    assert [(p.update_id, p.manual) for p in asked] == [
        ("u1", False),
        ("u2", False),
        ("u1", True),
        ("u2", True),
    ]
    assert fake_daemon.reports == [report("u1", ResultCode.OK, "slot b marked good")]
    assert (await device.journal())["u2"].state == "awaiting_reboot"


async def test_verdicts_failures_and_broken_hooks(
    fake_daemon: FakeDaemon, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    def make() -> App:
        app = device.app(fake_daemon, confirm_boots=1)
        flash(app)

        @app.on_boot
        def verdict(pending: AwaitingConfirmation) -> Any:
            if pending.update_id == "fails":
                raise InstallError(ResultCode.FLASH_FAILED, "slot b did not come up")
            if pending.update_id == "bad-value":
                return object()
            if pending.update_id == "rollback-breaks":
                raise RuntimeError("health check crashed")
            return None  # "rollback-ok": no verdict

        @app.on_rollback
        def rollback(pending: AwaitingConfirmation) -> Any:
            if pending.update_id == "rollback-breaks":
                raise OSError("bootloader environment is read-only")
            return ResultCode.OK  # a success from a rollback is no success

        return app

    ids = ["fails", "bad-value", "rollback-breaks", "rollback-ok"]
    app = make()
    for update_id in ids:
        await install_and_await(fake_daemon, app, update_id)
    device.reboot()
    await boot(make())  # the verdict on "fails"; no verdict on the others
    device.reboot()

    async def reported() -> None:
        await fake_daemon.wait_for(SendUpdateReport, count=4)

    await serve_until(make(), reported)
    got = {r.update_id: r.operation_results[0] for r in fake_daemon.reports}
    assert (got["fails"].result_code, got["fails"].result_text) == (
        ResultCode.FLASH_FAILED,
        "slot b did not come up",
    )
    # A hook that breaks gives no verdict: the update is rolled back as never confirmed.
    assert got["bad-value"].result_code == ResultCode.INSTALL_FAILED
    assert got["rollback-breaks"].result_code == ResultCode.INTERNAL_ERROR
    assert got["rollback-breaks"].result_text == (
        "not confirmed after 1 boot, and the rollback failed: OSError: bootloader environment is "
        "read-only"
    )
    assert (got["rollback-ok"].result_code, got["rollback-ok"].result_text) == (
        ResultCode.INSTALL_FAILED,
        "not confirmed after 1 boot",
    )
    assert "the on_boot handler failed for update bad-value" in caplog.text
    assert "the on_boot handler failed for update rollback-breaks" in caplog.text
    assert "the on_rollback handler failed for update rollback-breaks" in caplog.text


async def test_a_power_cut_before_the_verdict_is_saved_asks_again_in_the_same_boot(
    fake_daemon: FakeDaemon, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    def make() -> App:
        app = device.app(fake_daemon)
        flash(app)

        @app.on_boot
        def confirm(pending: AwaitingConfirmation) -> ResultCode:
            asked.append(pending.boots)
            return ResultCode.OK

        return app

    await install_and_await(fake_daemon, make())
    device.reboot()

    # The process dies between the hook's action and the journal.
    await serve_until_cut(make(), "swlm.boot.decided", monkeypatch)
    assert (await device.journal())["u1"].boots == 1  # counted, and saved before the hook

    async def reported() -> None:
        await fake_daemon.wait_for(SendUpdateReport)

    await serve_until(make(), reported)
    assert asked == [1, 1]  # the same boot, asked again; counted once
    assert fake_daemon.reports == [report("u1", ResultCode.OK, FLASHED)]


async def test_a_2016_daemon_gets_no_reboot_notice_but_the_report(
    sock_dir: Path, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeDaemon(sock_dir / "daemon", strict_2016=True) as fake:
        app = device.app(fake)
        flash(app)
        with caplog.at_level(logging.INFO, logger="swlm_sdk"):
            for update_id in ("u1", "u2"):

                async def until(update_id: str = update_id) -> None:
                    await fake.deliver(DownloadComplete(update_id, "/img"))
                    await wait_for_entry(device, update_id, announced=True)

                await serve_until(app, until)
        assert [r for r in fake.requests if r.startswith(b"SendRebootNeeded")] == [
            b"SendRebootNeeded u1 flashed 1.4.2 to slot b"  # refused once, then not sent
        ]
        said = [r.getMessage() for r in caplog.records if "SendRebootNeeded" in r.getMessage()]
        assert len(said) == 1
        assert "does not take SendRebootNeeded" in said[0]
        device.reboot()
        app = device.app(fake)
        flash(app)

        async def confirmed() -> None:
            await confirm_update(app.control_socket, "u1")
            await fake.wait_for(SendUpdateReport)

        await serve_until(app, confirmed)
        assert fake.requests[-1] == b"SendUpdateReport u1 0"  # 2016: no text


async def wait_for_entry(device: Device, update_id: str, **fields: Any) -> None:
    journal = Journal(device.state)
    with anyio.fail_after(10):
        while True:
            await journal.open()
            entry = journal.get(update_id)
            if entry is not None and all(getattr(entry, k) == v for k, v in fields.items()):
                return
            await anyio.sleep(0.01)


async def test_the_reboot_notice_is_retried_until_the_daemon_takes_it(
    sock_dir: Path, device: Device, log_waiter: Callable[[str], LogWaiter]
) -> None:
    failed = log_waiter("SendRebootNeeded for u1 not delivered")
    down = FakeDaemon(sock_dir / "daemon")
    os.makedirs(down.directory)
    app = device.app(down)
    flash(app)

    async def until() -> None:
        await down.deliver(DownloadComplete("u1", "/img"))
        await failed.wait()
        async with FakeDaemon(down.directory) as up:
            [said] = await up.wait_for(SendRebootNeeded)
            assert said.update_id == "u1"
            await wait_for_entry(device, "u1", announced=True)

    await serve_until(app, until)
    assert failed.levels == {logging.WARNING}


async def test_an_unreadable_boot_id_fails_an_update_that_needs_a_reboot(
    fake_daemon: FakeDaemon, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(
        sock_dir / "state",
        commands_socket=fake_daemon.commands_socket,
        events_socket=fake_daemon.events_socket,
        boot_id_file=sock_dir / "missing",
    )
    flash(app)

    async def until() -> None:
        await fake_daemon.deliver(DownloadComplete("u1", "/img"))
        await fake_daemon.wait_for(SendUpdateReport)

    await serve_until(app, until)
    [result] = fake_daemon.reports[0].operation_results
    assert result.result_code == ResultCode.INTERNAL_ERROR
    assert result.result_text.startswith("installed, needs a reboot, but cannot tell a reboot")
    assert f"the boot id in {sock_dir / 'missing'} is unreadable" in caplog.text


async def test_the_control_socket_is_private_and_answers_bad_requests(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    app = device.app(fake_daemon)
    flash(app)

    def ask(request: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as peer:
            peer.settimeout(10)
            peer.connect(app.control_socket)
            peer.sendall(request)
            peer.shutdown(socket.SHUT_WR)
            answer: dict[str, Any] = json.loads(peer.makefile("rb").read())
            return answer

    async def until() -> None:
        assert stat.S_IMODE(os.stat(app.control_socket).st_mode) == 0o600
        for request, error in [
            (b"confirm u1", "not a request like"),
            (b'{"confirm": 1}', "not a request like"),
            (b'{"confirm": "u1", "also": 2}', "not a request like"),
            (b"x" * 5000, "request is larger than 4096 bytes"),
            (b'{"confirm": "u1"}', "'u1' is unknown to this SWLM"),
        ]:
            answer = await anyio.to_thread.run_sync(ask, request)
            assert answer["ok"] is False, request
            assert error in answer["error"], (request, answer)

    await serve_until(app, until)
    assert not await anyio.Path(app.control_socket).exists()  # removed at the stop
    with pytest.raises(DaemonUnavailable, match="is the SWLM running"):
        await confirm_update(app.control_socket, "u1")


def test_confirm_boots_must_be_positive(device: Device) -> None:
    with pytest.raises(ValueError, match="confirm_boots must be at least 1"):
        App(device.state, commands_socket="/c", events_socket="/e", confirm_boots=0)


async def test_swlm_confirm_from_a_shell(
    fake_daemon: FakeDaemon, device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    app = await installed_then_rebooted(fake_daemon, device)
    confirm = ["confirm", "--state-dir", str(device.state), "u1"]

    async def until() -> None:
        assert await anyio.to_thread.run_sync(cli.main, confirm) == cli.EXIT_OK
        assert capsys.readouterr().out == f"confirmed update u1: {FLASHED}\n"
        assert await anyio.to_thread.run_sync(cli.main, confirm) == cli.EXIT_REJECTED
        assert capsys.readouterr().err == (
            f"swlm: the SWLM did not confirm it: update u1 is already reported: OK {FLASHED}\n"
        )
        await fake_daemon.wait_for(SendUpdateReport)

    await serve_until(app, until)
    assert await anyio.to_thread.run_sync(cli.main, confirm) == cli.EXIT_UNREACHABLE
    assert "is the SWLM running" in capsys.readouterr().err
    assert await anyio.to_thread.run_sync(cli.main, ["confirm", "u1"]) == cli.EXIT_USAGE
    zero = [*confirm, "--timeout", "0"]
    assert await anyio.to_thread.run_sync(cli.main, zero) == cli.EXIT_USAGE


async def test_an_interrupted_install_is_rolled_back_and_reported(
    fake_daemon: FakeDaemon, device: Device
) -> None:
    journal = Journal(device.state)
    await journal.open()
    await journal.mark_installing("u7")  # what a power cut in the middle of a flash leaves
    rolled: list[AwaitingConfirmation] = []
    app = device.app(fake_daemon)
    flash(app)

    @app.on_rollback
    def rollback(pending: AwaitingConfirmation) -> tuple[ResultCode, str]:
        rolled.append(pending)
        return ResultCode.INSTALL_FAILED, "slot a stays active"

    async def reported() -> None:
        await fake_daemon.wait_for(SendUpdateReport)

    await serve_until(app, reported)
    assert rolled == [
        AwaitingConfirmation(
            "u7", "the install was interrupted: the SWLM stopped before it finished", boots=0
        )
    ]
    assert fake_daemon.reports == [
        report(
            "u7",
            ResultCode.INTERNAL_ERROR,
            "the install was interrupted: the SWLM stopped before it finished "
            "(slot a stays active)",
        )
    ]


async def test_the_sdk_doc_s_reboot_example(fake_daemon: FakeDaemon, device: Device) -> None:
    text = (Path(__file__).parents[2] / "docs" / "sdk.md").read_text()
    code = text.split("<!-- example: reboot -->\n```python\n", 1)[1].split("```", 1)[0]
    slots = {"good": False, "switched_back": False}

    def make(healthy: bool) -> App:
        app = device.app(fake_daemon, confirm_boots=1)
        namespace: dict[str, Any] = {
            "app": app,
            "write_inactive_slot": lambda image: "b",
            "booted_the_new_slot": lambda: True,
            "healthy": lambda: healthy,
            "mark_slot_good": lambda: slots.update(good=True),
            "switch_back": lambda: slots.update(switched_back=True),
        }
        exec(compile(code, "docs/sdk.md", "exec"), namespace)
        return app

    await install_and_await(fake_daemon, make(healthy=True), "u1")
    await install_and_await(fake_daemon, make(healthy=False), "u2")
    assert fake_daemon.requests.count(b"SendRebootNeeded u1 flashed to slot b, on trial") == 1
    device.reboot()

    await serve_until(make(healthy=False), anyio.lowlevel.checkpoint)  # no verdict
    assert fake_daemon.reports == []
    assert slots == {"good": False, "switched_back": False}
    await serve_until(make(healthy=True), anyio.lowlevel.checkpoint)  # same boot: not asked
    assert fake_daemon.reports == []
    device.reboot()

    async def rolled_back() -> None:
        await fake_daemon.wait_for(SendUpdateReport, count=2)

    await serve_until(make(healthy=False), rolled_back)  # asked a last time, still no
    assert fake_daemon.reports == [
        report("u1", ResultCode.INSTALL_FAILED, "rolled back after 1 unconfirmed boots"),
        report("u2", ResultCode.INSTALL_FAILED, "rolled back after 1 unconfirmed boots"),
    ]
    assert slots == {"good": False, "switched_back": True}
    await install_and_await(fake_daemon, make(healthy=True), "u3")
    device.reboot()

    async def confirmed() -> None:
        await fake_daemon.wait_for(SendUpdateReport, count=3)

    await serve_until(make(healthy=True), confirmed)
    assert fake_daemon.reports[2] == report("u3", ResultCode.OK, "runs after 1 boot(s)")
    assert slots["good"]


async def test_made_permanent_in_the_last_boot_then_a_power_cut_still_counts(
    fake_daemon: FakeDaemon, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    permanent: list[int] = []
    rolled: list[int] = []

    def make() -> App:
        app = device.app(fake_daemon, confirm_boots=1)
        flash(app)

        @app.on_boot
        def confirm(pending: AwaitingConfirmation) -> ResultCode:
            permanent.append(pending.boots)  # marked good, idempotently
            return ResultCode.OK

        @app.on_rollback
        def rollback(pending: AwaitingConfirmation) -> ResultCode:
            rolled.append(pending.boots)
            return ResultCode.INSTALL_FAILED

        return app

    await install_and_await(fake_daemon, make())
    device.reboot()

    # The power goes right after the slot was marked good.
    await serve_until_cut(make(), "swlm.boot.decided", monkeypatch)
    device.reboot()  # boot 2 of confirm_boots=1: asked a last time, which says it is good

    async def reported() -> None:
        await fake_daemon.wait_for(SendUpdateReport)

    await serve_until(make(), reported)
    assert permanent == [1, 2]
    assert rolled == []
    assert fake_daemon.reports == [report("u1", ResultCode.OK, FLASHED)]


async def test_the_control_protocol_s_bytes(
    fake_daemon: FakeDaemon, device: Device, sock_dir: Path
) -> None:
    """Golden bytes, both ways: what ``swlm confirm`` writes, and what the App answers."""
    replies = {
        b'{"confirm":"u1"}': b'{"ok":true,"text":"flashed 1.4.2 to slot b"}\n',
        b'{"confirm":"u2"}': b'{"ok":false,"error":"update \'u2\' is unknown to this SWLM"}\n',
    }
    with Server2016(sock_dir / "peer.sock", lambda request: replies[request]) as peer:
        assert await confirm_update(peer.path, "u1") == FLASHED
        with pytest.raises(ConfirmRefused, match=r"^update 'u2' is unknown to this SWLM$"):
            await confirm_update(peer.path, "u2")
    assert peer.requests == list(replies)

    app = await installed_then_rebooted(fake_daemon, device)

    def ask(request: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect(app.control_socket)
            conn.sendall(request)
            conn.shutdown(socket.SHUT_WR)
            return conn.makefile("rb").read()

    async def until() -> None:
        for request, reply in replies.items():
            assert await anyio.to_thread.run_sync(ask, request) == reply

    await serve_until(app, until)
