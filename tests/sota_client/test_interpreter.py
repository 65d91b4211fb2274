"""The interpreter over real parts: a journal, CoreBackend against the simulator, the file: PM.

Reference-client.md 10.4 (the 2016 GlobalInterpreter tests) and section 5 (commands, the
follow-up table, and the 2016 bugs 25, 26, 29, 30 and 32 fixed).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from sota_client._backend import AccessToken, CoreBackend
from sota_client.pacman import FilePackageManager, InstallOutcome
from sota_client.sim import AuthSettings, CoreSimulator, DelayFault, StatusFault
from swlm_sdk import Backoff
from swlm_sdk.protocol import (
    AlreadyAuthenticated,
    Authenticate,
    Authenticated,
    Command,
    DownloadComplete,
    DownloadFailed,
    DownloadingUpdate,
    ErrorEvent,
    Event,
    FoundInstalledPackages,
    GetUpdateRequests,
    InstallComplete,
    InstalledPackagesSent,
    InstalledSoftware,
    InstallFailed,
    InstallingUpdate,
    ListInstalledPackages,
    ListSystemInfo,
    NotAuthenticated,
    NoUpdateRequests,
    Package,
    ResultCode,
    SendInstalledPackages,
    SendInstalledSoftware,
    SendSystemInfo,
    SendUpdateReport,
    Shutdown,
    StartDownload,
    StartInstall,
    SystemInfoSent,
    UpdateReport,
    UpdateReportSent,
    UpdateRequestStatus,
    UpdatesReceived,
)

from .daemon_fixtures import DEVICE, Sleeps, package_file, route_count, running_daemon

pytestmark = pytest.mark.anyio

IMAGE = b"an update image\n" * 64
#: What the daemon tells of IMAGE in DownloadComplete (device.event_metadata, on by default).
IMAGE_METADATA: dict[str, Any] = {"sha256": hashlib.sha256(IMAGE).hexdigest(), "size": len(IMAGE)}
SYSTEM_INFO = '{"hostname":"device-1","cpus":2}'
CLIENT_ID = "device-client"


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        simulator.add_package("nano", "2.2.6", data=IMAGE)
        yield simulator


@pytest.fixture
def auth_sim() -> Iterator[CoreSimulator]:
    with CoreSimulator(auth=AuthSettings(client_id=CLIENT_ID)) as simulator:
        simulator.add_package("nano", "2.2.6", data=IMAGE)
        yield simulator


def good_credentials(sim: CoreSimulator) -> tuple[str, str]:
    creds = sim.client_credentials
    return creds.client_id, creds.client_secret


async def system_info() -> str:
    return SYSTEM_INFO


def accepted_reports(sim: CoreSimulator) -> list[tuple[str, int, str]]:
    return [
        (result.id, result.result_code, result.result_text)
        for report in sim.reports(DEVICE)
        if report.status == 204
        for result in report.results
    ]


async def make_in_flight(sim: CoreSimulator, update_id: str, where: Path) -> None:
    """Core marks an update InFlight once its download starts (as after a lost event)."""
    await anyio.Path(where).mkdir(exist_ok=True)
    async with CoreBackend(sim.url, DEVICE) as other:
        await other.download(update_id, str(where))
    assert sim.status(DEVICE, update_id) is UpdateRequestStatus.IN_FLIGHT


# -- authentication (10.4.1, 10.4.5, 10.4.6, bug 25) --------------------------------------------


async def test_authenticate_with_a_token_held_is_already_authenticated(
    tmp_path: Path, auth_sim: CoreSimulator
) -> None:
    async with running_daemon(tmp_path, auth_sim, credentials=good_credentials(auth_sim)) as d:
        assert await d.execute(Authenticate()) == Authenticated()
        assert await d.execute(Authenticate()) == AlreadyAuthenticated()
        await d.idle()
    assert route_count(auth_sim, "token") == 1


async def test_without_a_token_every_command_but_authenticate_shutdown_and_reports_is_refused(
    tmp_path: Path, auth_sim: CoreSimulator
) -> None:
    update_id = auth_sim.queue_update(DEVICE, "nano", "2.2.6")
    sleeps = Sleeps()
    commands: list[Command] = [
        GetUpdateRequests(),
        ListInstalledPackages(),
        ListSystemInfo(),
        SendInstalledPackages((Package("nano", "2.2.6"),)),
        SendInstalledSoftware(InstalledSoftware()),
        SendSystemInfo(),
        StartDownload(update_id),
        StartInstall(update_id),
    ]
    async with running_daemon(
        tmp_path,
        auth_sim,
        credentials=(CLIENT_ID, "wrong-secret"),
        package_manager=package_file(tmp_path, "nano 2.2.6"),
        system_info=system_info,
        backoff=Backoff(initial_delay=1.0, max_delay=60.0, sleep=sleeps),
    ) as d:
        for command in commands:
            assert await d.execute(command) == NotAuthenticated(), command
        # The refusals start one retry chain, not one per command: one token request (refused),
        # then the chain waits out the backend's backoff, and commands are not held up by it.
        await sleeps.wait_for_count(1)
        assert sleeps.delays == [pytest.approx(1.0, abs=0.5)]
        for command in commands:
            assert await d.execute(command) == NotAuthenticated(), command
        assert await d.execute(Shutdown()) is None
        assert d.shutdowns == [True]
        assert d.journal.pending_reports() == 0
    assert {request.route for request in auth_sim.requests} == {"token"}
    assert route_count(auth_sim, "token") == 1
    assert not list(d.packages_dir.iterdir())


async def test_a_report_without_a_token_is_kept_and_sent_once_a_token_is_had(
    tmp_path: Path, auth_sim: CoreSimulator
) -> None:
    """Refusing it like other commands would lose the SWLM's report if it sent it only once."""
    update_id = auth_sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.OK, "installed")
    async with running_daemon(
        tmp_path,
        auth_sim,
        credentials=(CLIENT_ID, "wrong-secret"),
        backoff=Backoff(sleep=Sleeps()),
    ) as d:
        assert await d.execute(SendUpdateReport(report)) == NotAuthenticated()
        assert d.journal.pending_reports() == 1
        assert accepted_reports(auth_sim) == []
    async with running_daemon(
        tmp_path, auth_sim, credentials=good_credentials(auth_sim)
    ) as d:  # the same journal, now with working credentials: the kept report goes out
        with anyio.fail_after(20):
            await auth_sim.wait_for_async(lambda: accepted_reports(auth_sim))
    assert accepted_reports(auth_sim) == [(update_id, 0, "installed")]


async def test_without_auth_the_first_authenticate_sends_packages_and_system_info(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """2016 answered AlreadyAuthenticated here and so never sent them (bug 25)."""
    async with running_daemon(
        tmp_path,
        sim,
        package_manager=package_file(tmp_path, "nano 2.2.6", "vim 8.0"),
        system_info=system_info,
    ) as d:
        assert await d.execute(Authenticate()) == Authenticated()
        await d.idle()
        assert sim.installed(DEVICE) == [Package("nano", "2.2.6"), Package("vim", "8.0")]
        assert sim.system_info(DEVICE) == msgspec.json.decode(SYSTEM_INFO)
        assert await d.execute(Authenticate()) == AlreadyAuthenticated()
        await d.idle()
    assert d.recorder.events[0] == Authenticated()
    assert sorted(type(e).__name__ for e in d.recorder.events[1:3]) == [
        "InstalledPackagesSent",
        "SystemInfoSent",
    ]
    assert d.recorder.events[3:] == [AlreadyAuthenticated()]
    assert route_count(sim, "installed") == 1
    assert route_count(sim, "system_info") == 1
    assert all("authorization" not in request.headers for request in sim.requests)


class HeldAuthBackend(CoreBackend):
    """The real backend, whose token requests wait until the test lets them go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked = anyio.Event()
        self.release = anyio.Event()

    async def authenticate(self) -> AccessToken | None:
        self.asked.set()
        await self.release.wait()
        return await super().authenticate()


async def test_commands_sent_during_authentication_wait_for_it(
    tmp_path: Path, auth_sim: CoreSimulator
) -> None:
    """2016 ran commands one at a time: one sent at start-up saw the token (no NotAuthenticated)."""
    update_id = auth_sim.queue_update(DEVICE, "nano", "2.2.6")
    report = UpdateReport.single(update_id, ResultCode.OK, "sent while authenticating")
    results: dict[str, Event | None] = {}
    async with running_daemon(
        tmp_path,
        auth_sim,
        credentials=good_credentials(auth_sim),
        backend_type=HeldAuthBackend,
    ) as d:
        assert isinstance(d.backend, HeldAuthBackend)

        async def run(name: str, command: Command) -> None:
            results[name] = await d.execute(command)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "first", Authenticate())
            with anyio.fail_after(10):
                await d.backend.asked.wait()
            tg.start_soon(run, "second", Authenticate())
            tg.start_soon(run, "report", SendUpdateReport(report))
            tg.start_soon(run, "updates", GetUpdateRequests())
            await anyio.wait_all_tasks_blocked()
            assert results == {}
            d.backend.release.set()
        await d.idle()
    assert results["first"] == Authenticated()
    assert results["second"] == AlreadyAuthenticated()
    assert results["report"] == UpdateReportSent()
    assert isinstance(results["updates"], UpdatesReceived | NoUpdateRequests)
    assert route_count(auth_sim, "token") == 1
    assert accepted_reports(auth_sim) == [(update_id, 0, "sent while authenticating")]


async def test_core_401_reauthenticates_and_retries_the_call(
    tmp_path: Path, auth_sim: CoreSimulator
) -> None:
    async with running_daemon(tmp_path, auth_sim, credentials=good_credentials(auth_sim)) as d:
        assert await d.execute(Authenticate()) == Authenticated()
        assert auth_sim.expire_tokens() == 1
        assert await d.execute(GetUpdateRequests()) == NoUpdateRequests()
        await d.idle()
    assert route_count(auth_sim, "token") == 2
    assert [r.status for r in auth_sim.requests if r.route == "updates"] == [401, 200]
    assert not d.recorder.of(NotAuthenticated)


async def test_bad_credentials_retry_with_backoff_not_in_a_tight_loop(
    tmp_path: Path, auth_sim: CoreSimulator
) -> None:
    """2016 re-authenticated in a tight loop when the auth server refused it (bug 26).

    One owner of the timing: the backend's backoff, waited once before each token request.
    """
    sleeps = Sleeps(free=4)
    async with running_daemon(
        tmp_path,
        auth_sim,
        credentials=(CLIENT_ID, "wrong-secret"),
        backoff=Backoff(initial_delay=1.0, max_delay=60.0, sleep=sleeps),
    ) as d:
        assert await d.execute(Authenticate()) == NotAuthenticated()
        await sleeps.wait_for_count(5)
        assert sleeps.delays == [pytest.approx(d, abs=0.5) for d in (1.0, 2.0, 4.0, 8.0, 16.0)]
        assert route_count(auth_sim, "token") == 5
        assert [r.status for r in auth_sim.requests] == [401] * 5
        assert len(d.recorder.of(NotAuthenticated)) == 5


# -- Core calls --------------------------------------------------------------------------------


async def test_get_update_requests_without_updates(tmp_path: Path, sim: CoreSimulator) -> None:
    async with running_daemon(tmp_path, sim) as d:
        assert await d.execute(GetUpdateRequests()) == NoUpdateRequests()
        await d.idle()
    assert d.recorder.events == [NoUpdateRequests()]


async def test_updates_received_sorted_by_install_pos(tmp_path: Path, sim: CoreSimulator) -> None:
    sim.add_package("vim", "8.0", data=b"vim")
    sim.add_package("gcc", "7.63", data=b"gcc")
    first = sim.queue_update(DEVICE, "nano", "2.2.6")
    second = sim.queue_update(DEVICE, "vim", "8.0")
    third = sim.queue_update(DEVICE, "gcc", "7.63")
    sim.set_install_order(DEVICE, [third, first, second])
    async with running_daemon(tmp_path, sim) as d:
        event = await d.execute(GetUpdateRequests())
        assert isinstance(event, UpdatesReceived)
        assert [r.request_id for r in event.requests] == [third, first, second]
        assert [r.install_pos for r in event.requests] == [0, 1, 2]
        assert [r.package_id for r in event.requests] == [
            Package("gcc", "7.63"),
            Package("nano", "2.2.6"),
            Package("vim", "8.0"),
        ]
        await d.idle()  # each Pending update is downloaded (package manager off)
    assert {e.update_id for e in d.recorder.of(DownloadComplete)} == {first, second, third}


async def test_core_500_on_installed_is_an_error_event(tmp_path: Path, sim: CoreSimulator) -> None:
    """Reference 10.4.9, with its exact text."""
    sim.inject(StatusFault(status=500, body="boom", route="installed"))
    async with running_daemon(tmp_path, sim) as d:
        event = await d.execute(SendInstalledPackages((Package("nano", "2.2.6"),)))
        assert event == ErrorEvent(
            "HTTP client error: Response Code: 500 Internal Server Error, Body:\nboom"
        )
        assert await d.execute(SendInstalledPackages((Package("nano", "2.2.6"),))) == (
            InstalledPackagesSent()
        )
    assert sim.installed(DEVICE) == [Package("nano", "2.2.6")]


async def test_system_info_off_is_an_error_event(tmp_path: Path, sim: CoreSimulator) -> None:
    """2016 panicked here and stopped for good (section 5.7, bug 29)."""
    text = "System info error: system_info is turned off in the config"
    async with running_daemon(tmp_path, sim) as d:
        assert await d.execute(ListSystemInfo()) == ErrorEvent(text)
        assert await d.execute(SendSystemInfo()) == ErrorEvent(text)
        assert await d.execute(GetUpdateRequests()) == NoUpdateRequests()
    assert route_count(sim, "system_info") == 0


async def test_system_info_is_listed_and_sent(tmp_path: Path, sim: CoreSimulator) -> None:
    async with running_daemon(tmp_path, sim, system_info=system_info) as d:
        event = await d.execute(ListSystemInfo())
        assert event is not None
        assert event.name == "FoundSystemInfo"
        assert await d.execute(SendSystemInfo()) == SystemInfoSent()
    assert sim.system_info(DEVICE) == msgspec.json.decode(SYSTEM_INFO)


async def test_list_installed_packages(tmp_path: Path, sim: CoreSimulator) -> None:
    manager = package_file(tmp_path, "apa 0.0.0", "cepa-2.0.0", "bepa 1.2.3")
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        assert await d.execute(ListInstalledPackages()) == FoundInstalledPackages(
            (Package("apa", "0.0.0"), Package("bepa", "1.2.3"))
        )
    async with running_daemon(tmp_path, sim) as d:
        assert await d.execute(ListInstalledPackages()) == FoundInstalledPackages(())


async def test_shutdown_calls_the_shutdown_hook(tmp_path: Path, sim: CoreSimulator) -> None:
    async with running_daemon(tmp_path, sim) as d:
        assert await d.execute(Shutdown()) is None
        assert d.shutdowns == [True]
    assert d.recorder.events == []


# -- downloads and installs (10.4.2-4, flow D) -------------------------------------------------


async def test_start_download_publishes_downloading_then_complete(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    async with running_daemon(tmp_path, sim) as d:
        image = str(d.image(update_id))
        event = await d.execute(StartDownload(update_id))
        # Never in Core's list as the daemon saw it: no package, but the image's size and hash.
        assert event == DownloadComplete(update_id, image, "", **IMAGE_METADATA)
        await d.idle()
        assert d.recorder.events == [DownloadingUpdate(update_id), event]
        assert d.image(update_id).read_bytes() == IMAGE
        assert d.journal.update_state(update_id) == "downloaded"
        download = d.journal.download(update_id)
        assert download is not None
        assert download.state == "complete"
        assert download.size == len(IMAGE)


async def test_install_success_deletes_the_image_and_reports(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    manager = package_file(tmp_path, "apa 0.0.0")
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        d.image(update_id).write_bytes(IMAGE)
        event = await d.execute(StartInstall(update_id))
        report = UpdateReport.single(update_id, ResultCode.OK, "")
        assert event == InstallComplete(report)
        assert d.recorder.events[:2] == [InstallingUpdate(update_id), event]
        assert not d.image(update_id).exists()
        await d.idle()
    assert await anyio.Path(manager.path).read_text() == f"apa 0.0.0\n{d.image(update_id)}\n"
    assert accepted_reports(sim) == [(update_id, 0, "")]
    assert d.recorder.events[2:] == [UpdateReportSent(), InstalledPackagesSent()]


async def test_install_failure_keeps_the_image_and_reports(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    manager = FilePackageManager(str(tmp_path / "installed.txt"), succeeds=False)
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        d.image(update_id).write_bytes(IMAGE)
        event = await d.execute(StartInstall(update_id))
        report = UpdateReport.single(update_id, ResultCode.INSTALL_FAILED, "failed")
        assert event == InstallFailed(report)
        assert d.recorder.events[:2] == [InstallingUpdate(update_id), event]
        assert d.image(update_id).read_bytes() == IMAGE
        await d.idle()
    assert accepted_reports(sim) == [(update_id, 4, "failed")]
    assert sim.status(DEVICE, update_id) is UpdateRequestStatus.FAILED


async def test_start_install_without_an_image_is_an_error_event(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    manager = package_file(tmp_path)
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        event = await d.execute(StartInstall("u1"))
    assert event == ErrorEvent("Package error: no downloaded image for update u1")


async def test_start_install_with_the_package_manager_off_is_an_error_event(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """2016 panicked here and stopped for good (section 5.7, bug 29)."""
    async with running_daemon(tmp_path, sim) as d:
        d.image("u1").write_bytes(IMAGE)
        event = await d.execute(StartInstall("u1"))
        assert event == ErrorEvent(
            "Package error: StartInstall needs a package manager, "
            'but device.package_manager is "off"'
        )
        assert await d.execute(GetUpdateRequests()) == NoUpdateRequests()
    assert d.image("u1").read_bytes() == IMAGE


async def test_download_404_fails_and_reports_general_error(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """Flow D: DownloadFailed, then a GENERAL_ERROR report whose text is the reason."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(StatusFault(status=404, route="download"))
    reason = "HTTP client error: Response Code: 404 Not Found"
    async with running_daemon(tmp_path, sim) as d:
        assert await d.execute(StartDownload(update_id)) == DownloadFailed(update_id, reason)
        await d.idle()
        assert d.recorder.events == [
            DownloadingUpdate(update_id),
            DownloadFailed(update_id, reason),
            UpdateReportSent(),
        ]
        download = d.journal.download(update_id)
        assert download is not None
        assert download.state == "failed"
        assert download.error == reason
        assert not list(d.packages_dir.iterdir())
    assert accepted_reports(sim) == [(update_id, 19, reason)]
    assert sim.status(DEVICE, update_id) is UpdateRequestStatus.FAILED


@pytest.mark.parametrize("bad_id", ["../x", "/etc/passwd", ""])
@pytest.mark.parametrize("command", [StartDownload, StartInstall])
async def test_unsafe_update_ids_touch_nothing_on_disk(
    tmp_path: Path, sim: CoreSimulator, bad_id: str, command: type[StartDownload | StartInstall]
) -> None:
    """2016 used the id as a file name unchecked (bug 40)."""
    planted = tmp_path / "x"  # where "<packages_dir>/../x" points
    planted.write_bytes(b"not an update")
    manager = package_file(tmp_path, "apa 0.0.0")
    passwd = os.stat("/etc/passwd")
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        event = await d.execute(command(bad_id))
        assert isinstance(event, ErrorEvent)
        assert event.text.startswith("Invalid update id "), event.text
        await d.idle()
        assert d.recorder.events == [event]
        assert not list(d.packages_dir.iterdir())
    assert planted.read_bytes() == b"not an update"
    assert await anyio.Path(manager.path).read_text() == "apa 0.0.0\n"
    assert os.stat("/etc/passwd").st_mtime_ns == passwd.st_mtime_ns
    assert sim.requests == []


# -- InFlight updates (flow E, bug 32) ---------------------------------------------------------


async def test_in_flight_and_installed_is_reported_ok_without_a_download(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    await make_in_flight(sim, update_id, tmp_path / "elsewhere")
    manager = package_file(tmp_path, "nano 2.2.6")
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        event = await d.execute(GetUpdateRequests())
        assert isinstance(event, UpdatesReceived)
        assert [r.status for r in event.requests] == [UpdateRequestStatus.IN_FLIGHT]
        await d.idle()
    assert route_count(sim, "download") == 1
    assert accepted_reports(sim) == [(update_id, 0, "")]
    assert not d.recorder.of(DownloadingUpdate)


async def test_in_flight_and_not_installed_is_downloaded_again(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    await make_in_flight(sim, update_id, tmp_path / "elsewhere")
    manager = package_file(tmp_path, "nano 2.2.5")
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        await d.execute(GetUpdateRequests())
        await d.idle()
    assert route_count(sim, "download") == 2
    assert [e.update_id for e in d.recorder.of(DownloadComplete)] == [update_id]
    assert accepted_reports(sim) == [(update_id, 0, "")]


async def test_in_flight_handed_to_the_swlm_is_left_alone(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """Package manager off: the journal says the image went to the SWLM, which will report."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    await make_in_flight(sim, update_id, tmp_path / "elsewhere")
    async with running_daemon(tmp_path, sim, event_outbox=True) as d:
        d.journal.finish_download(update_id, 1, "00", event=("DownloadComplete", b"e"))
        await d.execute(GetUpdateRequests())
        await d.idle()
        assert [type(e) for e in d.recorder.events] == [UpdatesReceived]
    assert route_count(sim, "download") == 1
    assert sim.reports(DEVICE) == []


async def test_in_flight_never_downloaded_here_is_downloaded(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """2016 ignored InFlight updates with the package manager off, so one stayed stuck (bug 32)."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    await make_in_flight(sim, update_id, tmp_path / "elsewhere")
    async with running_daemon(tmp_path, sim) as d:
        await d.execute(GetUpdateRequests())
        await d.idle()
        assert d.recorder.events[1:] == [
            DownloadingUpdate(update_id),
            DownloadComplete(
                update_id,
                str(d.image(update_id)),
                "",
                **IMAGE_METADATA,
                package=Package("nano", "2.2.6"),  # as Core's list named it
            ),
        ]
        assert d.journal.update_state(update_id) == "downloaded"
    assert route_count(sim, "download") == 2
    assert sim.reports(DEVICE) == []


# -- robustness and concurrency (bugs 29 and 30) -----------------------------------------------


class BuggyPackageManager:
    """A package manager with a bug: listing raises something that is no SotaError."""

    def __init__(self) -> None:
        self.installs: list[str] = []

    async def installed_packages(self) -> list[Package]:
        raise RuntimeError("bug in the package manager")

    async def install(self, path: str) -> InstallOutcome:
        self.installs.append(path)
        return InstallOutcome(ResultCode.OK, "")


async def test_a_bug_in_a_command_is_an_error_event(tmp_path: Path, sim: CoreSimulator) -> None:
    async with running_daemon(tmp_path, sim, package_manager=BuggyPackageManager()) as d:
        assert await d.execute(ListInstalledPackages()) == ErrorEvent(
            "Internal error: bug in the package manager"
        )
        assert await d.execute(GetUpdateRequests()) == NoUpdateRequests()


async def test_a_bug_in_a_follow_up_does_not_stop_the_daemon(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """Follow-ups run in the daemon's task group: one raising would end the whole daemon."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    await make_in_flight(sim, update_id, tmp_path / "elsewhere")
    bug = ErrorEvent("Internal error: bug in the package manager")
    async with running_daemon(tmp_path, sim, package_manager=BuggyPackageManager()) as d:
        # Authenticated -> SendCurrentPackages; UpdatesReceived(InFlight) -> ResolveInFlight.
        assert await d.execute(Authenticate()) == Authenticated()
        await d.idle()
        assert d.recorder.events == [Authenticated(), bug]
        await d.execute(GetUpdateRequests())
        await d.idle()
        assert d.recorder.events[-1] == bug
        assert await d.execute(GetUpdateRequests()) is not None
        await d.idle()


async def test_concurrent_downloads_of_one_update_download_once(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    results: list[Event | None] = []

    async with running_daemon(tmp_path, sim) as d:

        async def download() -> None:
            results.append(await d.execute(StartDownload(update_id)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(download)
            tg.start_soon(download)
        await d.idle()
        complete = DownloadComplete(update_id, str(d.image(update_id)), "", **IMAGE_METADATA)
        assert results == [complete, complete]
        # Published once: the SWLM gets one envelope, a package manager installs once.
        assert d.recorder.events == [DownloadingUpdate(update_id), complete]
    assert route_count(sim, "download") == 1


async def test_a_slow_download_does_not_hold_up_a_report(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """2016 ran one command at a time: a long download blocked everything (bug 30)."""
    slow = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.add_package("vim", "8.0", data=b"vim")
    other = sim.queue_update(DEVICE, "vim", "8.0")
    sim.inject(DelayFault(seconds=60, route="download"))
    async with running_daemon(tmp_path, sim) as d:
        d.interpreter.submit(StartDownload(slow))
        with anyio.fail_after(10):
            await sim.wait_for_async(
                lambda: any(r.route == "download" and r.fault for r in sim.requests)
            )
        report = UpdateReport.single(other, ResultCode.OK, "installed by the SWLM")
        assert await d.execute(SendUpdateReport(report)) == UpdateReportSent()
        assert d.recorder.events == [DownloadingUpdate(slow), UpdateReportSent()]
        assert d.interpreter.activity.busy == 1  # the download is still going
    assert accepted_reports(sim) == [(other, 0, "installed by the SWLM")]


async def test_wait_idle_returns_after_the_whole_chain(tmp_path: Path, sim: CoreSimulator) -> None:
    """Poll -> download -> install -> report -> package list, all before idle (PRO-1654)."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    manager = package_file(tmp_path, "apa 0.0.0")
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        event = await d.execute(GetUpdateRequests())
        assert isinstance(event, UpdatesReceived)
        await d.idle()
        # Nothing awaited since idle: everything must be finished already.
        assert d.interpreter.activity.busy == 0
        assert sim.status(DEVICE, update_id) is UpdateRequestStatus.FINISHED
        assert [type(e) for e in d.recorder.events] == [
            UpdatesReceived,
            DownloadingUpdate,
            DownloadComplete,
            InstallingUpdate,
            InstallComplete,
            UpdateReportSent,
            InstalledPackagesSent,
        ]
        routes = [r.route for r in sim.requests]
        assert routes == ["updates", "download", "report", "installed"]
        assert not d.image(update_id).exists()


async def test_update_ids_from_core_are_checked_too(tmp_path: Path, sim: CoreSimulator) -> None:
    """An id is a file name: even Core cannot make the daemon write outside packages_dir."""
    async with running_daemon(tmp_path, sim) as d:
        event = await d.execute(StartDownload(".hidden"))
        assert isinstance(event, ErrorEvent)
        assert "starts with '.'" in event.text
        name = str(uuid.uuid4())
        assert await d.execute(StartDownload(name)) == DownloadFailed(
            name,
            'HTTP client error: Response Code: 404 Not Found, Body:\n{"code":"missing_package",'
            '"description":"package not found"}',
        )
        await d.idle()


class _GatedFileManager(FilePackageManager):
    """The file package manager, held at a gate, counting how many installs run at once."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = anyio.Event()
        self.running = 0
        self.most = 0
        self.started = anyio.Event()

    async def install(self, path: str) -> InstallOutcome:
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.set()
        try:
            await self.gate.wait()
            return await super().install(path)
        finally:
            self.running -= 1


async def test_installs_of_different_updates_run_one_at_a_time(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """dpkg and rpm lock their database: a second install at once would just fail."""
    first = sim.queue_update(DEVICE, "nano", "2.2.6")
    second = sim.queue_update(DEVICE, "nano", "2.2.6")
    manager = _GatedFileManager(str(tmp_path / "installed.txt"))
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        for update_id in (first, second):
            d.image(update_id).write_bytes(IMAGE)
        events: dict[str, Event | None] = {}

        async def install(update_id: str) -> None:
            events[update_id] = await d.execute(StartInstall(update_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(install, first)
            tg.start_soon(install, second)
            await manager.started.wait()
            # The other install must be queued behind the one running, not running beside it.
            lock = d.interpreter._install_lock
            with anyio.fail_after(10):
                while lock.statistics().tasks_waiting < 1:
                    await anyio.lowlevel.checkpoint()
            assert sum(isinstance(e, InstallingUpdate) for e in d.recorder.events) == 1
            manager.gate.set()
        await d.idle()
    assert manager.most == 1
    assert all(isinstance(event, InstallComplete) for event in events.values())
    assert sorted(events) == sorted([first, second])
