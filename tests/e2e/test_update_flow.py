"""An update travels from Core through the daemon (a real process) to an SWLM and back."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import msgspec
import pytest

from sota_client.sim import CoreSimulator, StatusFault
from swlm_sdk import (
    DownloadComplete,
    DownloadFailed,
    EventListener,
    Package,
    ResultCode,
    report_progress,
)
from swlm_sdk.app import App, Outcome

from .harness import DEVICE, MakeDaemon

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def reported(sim: CoreSimulator, request_id: str) -> list[list[dict[str, object]]]:
    """The result lists the simulator accepted for one update, in arrival order."""
    bodies = [r.body for r in sim.reports(DEVICE) if r.path.endswith(request_id)]
    return [msgspec.json.decode(body) for body in bodies]


@pytest.mark.parametrize(
    ("outcome", "code", "text"),
    [
        (ResultCode.OK, 0, ""),
        ((ResultCode.INSTALL_FAILED, "dpkg: dependency problems"), 4, "dpkg: dependency problems"),
        (("flash_failed", "slot b: write error"), 7, "slot b: write error"),
    ],
    ids=["numeric-ok", "install-failed-with-text", "verbal-code-with-text"],
)
async def test_pending_update_reaches_the_swlm_and_its_report_reaches_core(
    sim: CoreSimulator,
    make_daemon: MakeDaemon,
    workdir: Path,
    outcome: Outcome,
    code: int,
    text: str,
) -> None:
    image = b"firmware " * 50_000
    sim.add_package("fw", "1.0.0", data=image)
    daemon = make_daemon(sim.url)
    app = App(
        workdir / "swlm-state",
        commands_socket=daemon.commands_socket,
        events_socket=daemon.events_socket,
    )
    seen: list[DownloadComplete] = []

    @app.on_download_complete
    def install(event: DownloadComplete) -> Outcome:
        seen.append(event)
        assert Path(event.update_image).read_bytes() == image
        report_progress(50, "writing slot b")
        return outcome

    @app.installed_packages
    def packages() -> list[Package]:
        return [Package("fw", "1.0.0" if code == 0 else "0.9.0")]

    async with anyio.create_task_group() as tg:
        await tg.start(app.serve)
        await anyio.to_thread.run_sync(daemon.start)
        request_id = sim.queue_update(DEVICE, "fw", "1.0.0")
        with anyio.fail_after(60):
            await sim.wait_for_async(lambda: reported(sim, request_id))
            await sim.wait_for_async(lambda: sim.installed(DEVICE))
        app.stop()

    assert [e.update_id for e in seen] == [request_id]
    assert seen[0].update_image == str(daemon.packages_dir / request_id)
    assert seen[0].signature == ""
    assert reported(sim, request_id) == [
        [{"id": request_id, "result_code": code, "result_text": text}]
    ]
    assert sim.status(DEVICE, request_id) == ("Finished" if code == 0 else "Failed")
    assert sim.installed(DEVICE) == [Package("fw", "1.0.0" if code == 0 else "0.9.0")]
    daemon.drain_notifications()
    assert f"STATUS=Downloading update {request_id}: 100%" in daemon.statuses
    assert f"STATUS=Installing update {request_id}: 50%: writing slot b" in daemon.statuses
    assert daemon.stop() == 0
    assert not daemon.commands_socket.exists()


async def test_download_failure_is_published_and_reported_as_general_error(
    sim: CoreSimulator, make_daemon: MakeDaemon
) -> None:
    """Flow D: the image cannot be fetched; the SWLM hears DownloadFailed, Core gets code 19."""
    sim.add_package("fw", "1.0.0", data=b"x" * 1000)
    sim.inject(StatusFault(route="download", status=404, body="gone", count=10))
    daemon = make_daemon(sim.url)
    async with EventListener(daemon.events_socket) as events:
        await anyio.to_thread.run_sync(daemon.start)
        request_id = sim.queue_update(DEVICE, "fw", "1.0.0")
        with anyio.fail_after(30):
            event = await events.__anext__()
            await sim.wait_for_async(lambda: reported(sim, request_id))
    assert isinstance(event, DownloadFailed)
    assert event.update_id == request_id
    assert event.reason == "HTTP client error: Response Code: 404 Not Found, Body:\ngone"
    [[result]] = reported(sim, request_id)
    assert result == {"id": request_id, "result_code": 19, "result_text": event.reason}
    assert sim.status(DEVICE, request_id) == "Failed"


async def test_a_swlm_that_starts_late_still_gets_the_event(
    sim: CoreSimulator, make_daemon: MakeDaemon, workdir: Path
) -> None:
    """2016 dropped events nobody listened for (bug 46); now they wait, across restarts too."""
    image = bytes(range(256)) * 4096
    sim.add_package("fw", "2.0.0", data=image)
    daemon = make_daemon(sim.url)
    await anyio.to_thread.run_sync(daemon.start)
    request_id = sim.queue_update(DEVICE, "fw", "2.0.0")
    await anyio.to_thread.run_sync(daemon.wait_log, lambda log: "couldn't deliver an event" in log)
    # The daemon restarts while the event is still undelivered.
    assert daemon.stop() == 0
    await anyio.to_thread.run_sync(daemon.start)
    async with EventListener(daemon.events_socket) as events:
        with anyio.fail_after(30):
            event = await events.__anext__()
    assert isinstance(event, DownloadComplete)
    assert event.update_id == request_id
    received = await anyio.Path(event.update_image).read_bytes()
    assert hashlib.sha256(received).digest() == hashlib.sha256(image).digest()
