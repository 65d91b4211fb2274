"""Typing example: the public SDK API as a vendor uses it, checked by ``mypy --strict``.

Not a test module (pytest does not collect it); ``assert_type`` lines lock the signatures.
"""

from __future__ import annotations

from typing import assert_type

import swlm_sdk
from swlm_sdk import (
    App,
    AwaitingConfirmation,
    Client,
    DownloadComplete,
    Event,
    EventListener,
    InstalledPackagesSent,
    InstallError,
    Package,
    RebootNeeded,
    ResultCode,
    Retry,
    UpdateReportSent,
    sync,
)
from swlm_sdk.app import Outcome
from swlm_sdk.protocol import Command, GetUpdateRequests, SendUpdateReport, UpdateReport
from swlm_sdk.testing import FakeDaemon, SyncFakeDaemon

app = App("/var/lib/example-swlm", config="/etc/sota.toml", concurrency=1)


@app.on_download_complete
def install(event: DownloadComplete) -> ResultCode:
    if not event.update_image:
        raise InstallError(ResultCode.NOT_FOUND, "no image")
    return ResultCode.OK


@app.installed_packages
async def packages() -> list[Package]:
    return [Package("example", "1.0")]


@app.on_event("DownloadFailed")
def failed(event: Event) -> None:
    pass


def outcome_forms() -> list[Outcome]:
    return [None, ResultCode.OK, 0, "OK", (ResultCode.INSTALL_FAILED, "text"), ("4", "text")]


async def async_api(fake: FakeDaemon) -> None:
    client = Client(fake.commands_socket, reply_timeout=5, retry=Retry(attempts=3))
    assert_type(await client.send_update_report("u1", "OK", "text"), UpdateReportSent)
    assert_type(await client.send_installed_packages([("a", "1")]), InstalledPackagesSent)
    assert_type(await client.send_command(GetUpdateRequests()), Event)
    assert_type(await client.send_raw("ls"), bytes)
    assert_type(await swlm_sdk.send_update_report("u1", 0), UpdateReportSent)
    async with EventListener(fake.events_socket, kinds=[DownloadComplete]) as events:
        async for event in events:
            assert_type(event, Event)
    assert_type(await fake.wait_for(SendUpdateReport), list[SendUpdateReport])
    assert_type(await fake.wait_for(), list[Command])
    await fake.deliver(DownloadComplete("u1", "/image"))


def sync_api() -> None:
    assert_type(sync.send_update_report("u1", ResultCode.OK), UpdateReportSent)
    assert_type(sync.send_installed_packages([Package("a", "1")]), InstalledPackagesSent)
    with sync.listen(kinds=[DownloadComplete]) as events:
        for event in events:
            assert_type(event, Event)
        assert_type(events.receive(timeout=1.0), Event | None)


def sync_testing(fake: SyncFakeDaemon) -> None:
    with fake.serving(App("/tmp/state", config=fake.config_path)) as served:
        assert_type(served, App)
        fake.deliver(DownloadComplete("u1", "/image"))
        assert_type(fake.wait_for(SendUpdateReport), list[SendUpdateReport])
        assert_type(fake.wait_for(), list[Command])
    assert_type(fake.reports, list[UpdateReport])


reboot_app = App("/var/lib/example-flash", config="/etc/sota.toml", confirm_boots=3)


@reboot_app.on_download_complete
def flash(event: DownloadComplete) -> RebootNeeded:
    return RebootNeeded(f"flashed {event.update_id} to slot b")


@reboot_app.on_boot
def after_boot(pending: AwaitingConfirmation) -> tuple[ResultCode, str] | None:
    return (ResultCode.OK, "runs") if pending.boots == 1 and not pending.manual else None


@reboot_app.on_rollback
async def roll_back(pending: AwaitingConfirmation) -> ResultCode:
    return ResultCode.INSTALL_FAILED


async def confirming(app: App) -> None:
    assert_type(await app.confirm("u1"), str)
    assert_type(await swlm_sdk.confirm_update(app.control_socket, "u1"), str)
    assert_type(sync.confirm_update(swlm_sdk.control_socket_path("/var/lib/x"), "u1"), str)
    assert_type(swlm_sdk.read_boot_id(), str)
