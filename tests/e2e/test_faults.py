"""Fault runs: Core and the network misbehave for a while; the daemon asks less often while they
do, and once the faults stop every update still ends with exactly one report.

Request counts over a window are upper bounds: a slower machine only makes fewer requests.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from sota_client.sim import (
    AuthSettings,
    CoreSimulator,
    DropFault,
    ExpireTokensFault,
    StallFault,
    StatusFault,
    TruncateFault,
)
from swlm_sdk.protocol import UpdateRequestStatus

from .harness import DEVICE, DaemonProcess, MakeDaemon, auth_section

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

IMAGE = bytes(range(256)) * 12_288  # 3 MiB


def requests_of(sim: CoreSimulator, route: str) -> int:
    return sum(1 for r in sim.requests if r.route == route)


def file_manager(workdir: Path) -> dict[str, str]:
    return {"package_manager": f"file:{workdir / 'installed.txt'}"}


async def finished_once(sim: CoreSimulator, update_id: str, within: float = 90) -> None:
    """The update ends with exactly one report at Core (204), and no second one follows."""
    with anyio.fail_after(within):
        await sim.wait_for_async(
            lambda: (
                sim.status(DEVICE, update_id)
                in (UpdateRequestStatus.FINISHED, UpdateRequestStatus.FAILED)
            )
        )
    reports = [r for r in sim.reports(DEVICE) if r.update_id == update_id]
    assert [r.status for r in reports] == [204]


@pytest.mark.parametrize("polling_sec", [0, 1])
async def test_a_500_storm_is_polled_with_backoff_and_nothing_is_lost(
    sim: CoreSimulator, workdir: Path, make_daemon: MakeDaemon, polling_sec: int
) -> None:
    """2016 polled 59 times a minute (38,958 with polling_sec = 0) while Core failed."""
    sim.add_package("nano", "2.2.6", data=IMAGE)
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(StatusFault(status=500, count=1_000_000))
    daemon = make_daemon(sim.url, core={"polling_sec": polling_sec}, device=file_manager(workdir))
    await anyio.to_thread.run_sync(daemon.start)
    window = 12.0
    await anyio.sleep(window)  # a measurement window, not a synchronisation
    polls = requests_of(sim, "updates")
    # With backoff: polls at about 1, 2, 4 and 8 s. Without: about 12.
    assert 2 <= polls <= 6, polls
    assert daemon.log().count("Polling Core for updates failed") == 1
    sim.clear_faults()
    await finished_once(sim, update_id)
    await anyio.to_thread.run_sync(
        lambda: daemon.wait_log(lambda text: "Polling Core works again" in text)
    )
    if polling_sec == 0:
        assert "core.polling_sec = 0: polling every 1 s instead" in daemon.log()
    assert daemon.log().count("Polling Core works again") == 1


@pytest.mark.parametrize(
    "fault",
    [
        StallFault(route="download", after=1_500_000, seconds=30),
        TruncateFault(route="download", after=1_500_000),
        DropFault(route="download"),
        TruncateFault(route="download", after=0),
    ],
    ids=["stall", "truncate", "reset", "empty"],
)
async def test_a_broken_download_resumes_and_the_image_is_intact(
    sim: CoreSimulator,
    workdir: Path,
    make_daemon: MakeDaemon,
    fault: StallFault | TruncateFault | DropFault,
) -> None:
    sim.add_package("nano", "2.2.6", data=IMAGE)
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(msgspec.structs.replace(fault, count=2))
    daemon = make_daemon(sim.url, core={"timeout": 2}, device=file_manager(workdir))
    await anyio.to_thread.run_sync(daemon.start)
    await finished_once(sim, update_id)
    installed = (workdir / "installed.txt").read_text().split()
    assert installed == [str(daemon.packages_dir / update_id)]
    ranges = [r.headers.get("range") for r in sim.requests if r.route == "download"]
    assert len(ranges) == 3  # two broken attempts, then the rest
    assert ranges[0] is None
    log = daemon.log()
    assert f"sha256 {hashlib.sha256(IMAGE).hexdigest()}" in log


async def test_a_token_that_expires_during_the_report_costs_one_report(
    workdir: Path, make_daemon: MakeDaemon
) -> None:
    with CoreSimulator(auth=AuthSettings(client_id="device", client_secret="secret")) as sim:
        sim.add_package("nano", "2.2.6", data=IMAGE)
        update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
        sim.inject(ExpireTokensFault(route="report"))
        daemon = auth_daemon(make_daemon, sim, workdir)
        await anyio.to_thread.run_sync(daemon.start)
        await finished_once(sim, update_id)
        with anyio.fail_after(10):  # the state changes before the answer is logged
            await sim.wait_for_async(
                lambda: all(r.status for r in sim.requests if r.route == "report")
            )
        statuses = [r.status for r in sim.requests if r.route == "report"]
        assert statuses == [401, 204]
        assert requests_of(sim, "token") == 2


async def test_a_token_endpoint_down_during_the_report_costs_one_report(
    workdir: Path, make_daemon: MakeDaemon
) -> None:
    """Expired as the report went out, and the auth server answers 404 then an HTML page."""
    with CoreSimulator(auth=AuthSettings(client_id="device", client_secret="secret")) as sim:
        sim.add_package("nano", "2.2.6", data=IMAGE)
        update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
        sim.inject(ExpireTokensFault(route="report"))
        daemon = auth_daemon(make_daemon, sim, workdir)
        await anyio.to_thread.run_sync(daemon.start)
        with anyio.fail_after(60):
            await sim.wait_for_async(lambda: requests_of(sim, "report") == 1)
        sim.inject(StatusFault(status=404, route="token", count=3))
        sim.inject(StatusFault(status=200, route="token", body="<html>", count=3))
        await finished_once(sim, update_id)
        assert "Core refused" not in daemon.log()


def auth_daemon(make_daemon: MakeDaemon, sim: CoreSimulator, workdir: Path) -> DaemonProcess:
    return make_daemon(
        sim.url,
        auth=auth_section(sim.url, workdir),
        device=file_manager(workdir),
    )


@pytest.mark.parametrize("route", ["download", "report"])
async def test_a_redirect_loop_for_a_while_loses_nothing(
    sim: CoreSimulator, workdir: Path, make_daemon: MakeDaemon, route: str
) -> None:
    sim.add_package("nano", "2.2.6", data=IMAGE)
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    path = f"/api/v1/mydevice/{DEVICE}/updates/{update_id}"
    loop_to = path + "/download" if route == "download" else path
    sim.inject(StatusFault(status=302, route=route, location=loop_to, count=22))  # two rounds
    daemon = make_daemon(sim.url, device=file_manager(workdir))
    started = time.monotonic()
    await anyio.to_thread.run_sync(daemon.start)
    await finished_once(sim, update_id)
    hops = [r for r in sim.requests if r.route == route and r.fault == "status"]
    assert len(hops) == 22
    assert "more than 10 redirects" in daemon.log()
    assert time.monotonic() - started < 90
