"""An update's life in the journal, driven by the interpreter: one state machine, recovered at
start-up, downloads queued in installPos order, one download or install of an update at a time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from sota_client._backend import CoreBackend
from sota_client._download import Checkpoint, DownloadResult, Progress
from sota_client._interpreter import MAX_UPDATES_PER_POLL
from sota_client._store import UpdateState
from sota_client.pacman import FilePackageManager, InstallOutcome
from sota_client.sim import CoreSimulator, TruncateFault
from swlm_sdk.protocol import (
    DownloadComplete,
    DownloadFailed,
    ErrorEvent,
    GetUpdateRequests,
    InstallComplete,
    InstallingUpdate,
    Package,
    ResultCode,
    SendUpdateReport,
    StartDownload,
    StartInstall,
    UpdateReport,
    UpdateRequest,
    UpdateRequestStatus,
    UpdatesReceived,
)

from .daemon_fixtures import DEVICE, package_file, route_count, running_daemon

pytestmark = pytest.mark.anyio

IMAGE = b"an update image\n" * 64
SHA256 = hashlib.sha256(IMAGE).hexdigest()


@pytest.fixture
def sim() -> Iterator[CoreSimulator]:
    with CoreSimulator() as simulator:
        simulator.add_package("nano", "2.2.6", data=IMAGE)
        yield simulator


def downloads(sim: CoreSimulator) -> list[str]:
    return [r.path.split("/")[-2] for r in sim.requests if r.route == "download"]


class GatedBackend(CoreBackend):
    """The real backend; each download waits at a gate the test opens, and is counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = anyio.Event()
        self.started: list[str] = []
        self.running = 0
        self.most = 0

    async def download(self, update_id: str, packages_dir: str, **kwargs: Any) -> DownloadResult:
        self.started.append(update_id)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
            return await super().download(update_id, packages_dir, **kwargs)
        finally:
            self.running -= 1


class GatedManager(FilePackageManager):
    def __init__(self, path: str, *, succeeds: bool = True) -> None:
        super().__init__(path, succeeds=succeeds)
        self.gate = anyio.Event()
        self.started = anyio.Event()
        self.installs: list[str] = []

    async def install(self, path: str) -> InstallOutcome:
        self.installs.append(path)
        self.started.set()
        await self.gate.wait()
        return await super().install(path)


# -- the download queue --------------------------------------------------------------------


async def test_downloads_run_one_at_a_time_in_install_pos_order(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    ids = [sim.queue_update(DEVICE, "nano", "2.2.6") for _ in range(4)]
    order = [ids[2], ids[0], ids[3], ids[1]]
    sim.set_install_order(DEVICE, order)
    async with running_daemon(tmp_path, sim, backend_type=GatedBackend) as d:
        assert isinstance(d.backend, GatedBackend)
        await d.execute(GetUpdateRequests())
        for _ in range(5):
            await anyio.wait_all_tasks_blocked()
        assert d.backend.started == [order[0]]  # the others wait their turn
        d.backend.gate.set()
        await d.idle()
    assert d.backend.most == 1
    assert d.backend.started == order
    assert downloads(sim) == order


async def test_max_concurrent_downloads_at_a_time(tmp_path: Path, sim: CoreSimulator) -> None:
    ids = [sim.queue_update(DEVICE, "nano", "2.2.6") for _ in range(5)]
    async with running_daemon(
        tmp_path, sim, backend_type=GatedBackend, max_concurrent_downloads=2
    ) as d:
        assert isinstance(d.backend, GatedBackend)
        await d.execute(GetUpdateRequests())
        for _ in range(5):
            await anyio.wait_all_tasks_blocked()
        # the first two in the queue hold the two turns; trio may start them in either order
        assert sorted(d.backend.started) == sorted(ids[:2])
        d.backend.gate.set()
        await d.idle()
    assert d.backend.most == 2
    assert sorted(downloads(sim)) == sorted(ids)


class ListingBackend(CoreBackend):
    """Core's update list, as the test writes it."""

    listing: ClassVar[list[UpdateRequest]] = []

    async def get_update_requests(self) -> list[UpdateRequest]:
        return list(self.listing)


def finished(request_id: str, pos: int) -> UpdateRequest:
    return UpdateRequest(
        request_id=request_id,
        status=UpdateRequestStatus.FINISHED,
        package_id=Package("nano", "2.2.6"),
        install_pos=pos,
        created_at="2016-01-01T00:00:00Z",
    )


async def test_a_huge_update_list_is_handled_in_part_with_one_warning(
    tmp_path: Path, sim: CoreSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """20,000 updates once started 20,000 downloads at once (355 MB, 4,001 pool timeouts)."""
    ListingBackend.listing = [finished(f"u{n:05}", 20_000 - n) for n in range(20_000)]
    async with running_daemon(tmp_path, sim, backend_type=ListingBackend) as d:
        with caplog.at_level(logging.WARNING):
            first = await d.execute(GetUpdateRequests())
            second = await d.execute(GetUpdateRequests())
        await d.idle()
    assert isinstance(first, UpdatesReceived)
    assert first == second
    assert len(first.requests) == MAX_UPDATES_PER_POLL
    assert [r.request_id for r in first.requests[:2]] == ["u19999", "u19998"]  # by installPos
    assert caplog.text.count("Core lists 20000 updates; handling the first 1000") == 1


async def test_unusable_ids_from_core_are_skipped_with_one_warning(
    tmp_path: Path, sim: CoreSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A 22,000-character id from Core once crash-looped the daemon at every start."""
    long_id = "%" * 22_000
    ListingBackend.listing = [finished(long_id, 0), finished("../etc", 1), finished("ok", 2)]
    async with running_daemon(tmp_path, sim, backend_type=ListingBackend) as d:
        with caplog.at_level(logging.WARNING):
            first = await d.execute(GetUpdateRequests())
            await d.execute(GetUpdateRequests())
        await d.idle()
    assert isinstance(first, UpdatesReceived)
    assert [r.request_id for r in first.requests] == ["ok"]
    assert caplog.text.count("Ignoring update") == 2
    assert "it is longer than 250 bytes" in caplog.text


async def test_an_unusable_id_in_a_command_is_refused_before_anything_happens(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    bad = "%" * 22_000
    async with running_daemon(tmp_path, sim) as d:
        for command in (
            SendUpdateReport(UpdateReport.single(bad, ResultCode.OK, "")),
            StartDownload(bad),
            StartInstall(bad),
        ):
            event = await d.execute(command)
            assert isinstance(event, ErrorEvent)
            assert event.text.startswith("Invalid update id '%%%%")
            assert event.text.endswith("it is longer than 250 bytes")
        assert d.journal.updates() == []
    assert sim.requests == []


# -- one download or install of an update at a time ---------------------------------------


async def test_an_install_waits_for_the_download_of_the_same_update(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    manager = package_file(tmp_path)
    results: dict[str, object] = {}
    async with running_daemon(
        tmp_path, sim, package_manager=manager, backend_type=GatedBackend
    ) as d:
        assert isinstance(d.backend, GatedBackend)

        async def run(name: str, command: Any) -> None:
            results[name] = await d.execute(command)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "download", StartDownload(update_id))
            for _ in range(3):
                await anyio.wait_all_tasks_blocked()
            tg.start_soon(run, "install", StartInstall(update_id))
            for _ in range(3):
                await anyio.wait_all_tasks_blocked()
            assert not d.recorder.of(InstallingUpdate)  # held until the image is complete
            d.backend.gate.set()
        await d.idle()
    assert isinstance(results["download"], DownloadComplete)
    assert isinstance(results["install"], InstallComplete)


@pytest.mark.parametrize("succeeds", [True, False], ids=["ok", "failed"])
async def test_a_poll_during_an_install_does_not_install_it_again(
    tmp_path: Path, sim: CoreSimulator, succeeds: bool
) -> None:
    """A failed install keeps its image, so a second install would run (and report) again."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    manager = GatedManager(str(tmp_path / "installed.txt"), succeeds=succeeds)
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        d.interpreter.submit(StartDownload(update_id))  # then the install follows
        with anyio.fail_after(20):
            await manager.started.wait()
        assert sim.status(DEVICE, update_id) is UpdateRequestStatus.IN_FLIGHT
        assert d.journal.update_state(update_id) is UpdateState.INSTALLING
        event = await d.execute(GetUpdateRequests())  # Core lists it InFlight
        assert isinstance(event, UpdatesReceived)
        for _ in range(5):
            await anyio.wait_all_tasks_blocked()
        manager.gate.set()
        await d.idle()
    assert len(manager.installs) == 1
    assert route_count(sim, "download") == 1
    assert route_count(sim, "report") == 1


# -- driven forward from the journal at start-up -------------------------------------------


async def test_start_up_installs_an_image_downloaded_before_a_crash(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """Killed after the image was complete and before the install began."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    async with running_daemon(tmp_path, sim) as d:  # no package manager: nothing follows
        assert isinstance(await d.execute(StartDownload(update_id)), DownloadComplete)
    manager = package_file(tmp_path)
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        d.interpreter.recover()
        await d.idle()
        assert d.journal.update_state(update_id) is UpdateState.REPORTED
        assert [type(e) for e in d.recorder.events[:2]] == [InstallingUpdate, InstallComplete]
    assert route_count(sim, "download") == 1
    assert route_count(sim, "report") == 1


async def test_start_up_runs_an_interrupted_install_again(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    async with running_daemon(tmp_path, sim) as d:
        await d.execute(StartDownload(update_id))
        d.journal.begin_install(update_id)  # then the power went
    manager = package_file(tmp_path)
    async with running_daemon(tmp_path, sim, package_manager=manager) as d:
        d.interpreter.recover()
        await d.idle()
        assert d.journal.update_state(update_id) is UpdateState.REPORTED
        installed = await anyio.Path(manager.path).read_text()
        assert installed == f"{d.image(update_id)}\n"  # installed once, after the restart
    assert route_count(sim, "report") == 1


async def test_start_up_resumes_a_download_from_its_checkpoint(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    big = bytes(range(256)) * 16_384  # 4 MiB: checkpoints at every MiB
    sim.add_package("big", "1", data=big)
    update_id = sim.queue_update(DEVICE, "big", "1")
    async with running_daemon(tmp_path, sim) as d:
        image = d.image(update_id)
        part = image.with_name(image.name + ".part")
        part.write_bytes(big[: 3 << 20])  # what a killed daemon left, 2 MiB of it checkpointed
        d.journal.begin_download(update_id, str(image))
        d.journal.download_checkpoint(
            update_id, 2 << 20, hashlib.sha256(big[: 2 << 20]).hexdigest()
        )
    async with running_daemon(tmp_path, sim, event_outbox=True) as d:
        d.interpreter.recover()
        await d.idle()
        assert d.image(update_id).read_bytes() == big
        assert d.journal.update_state(update_id) is UpdateState.DOWNLOADED
        assert d.journal.has_pending_event(update_id, "DownloadComplete")
    (request,) = [r for r in sim.requests if r.route == "download"]
    assert request.headers.get("range") == f"bytes={2 << 20}-"


async def test_start_up_hands_over_again_an_image_whose_event_is_gone(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """Downloaded while no events gateway was on (or the outbox overflowed)."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    async with running_daemon(tmp_path, sim) as d:
        await d.execute(StartDownload(update_id))
    async with running_daemon(tmp_path, sim, event_outbox=True) as d:
        assert not d.journal.has_pending_event(update_id, "DownloadComplete")
        d.interpreter.recover()
        await d.idle()
        assert d.journal.has_pending_event(update_id, "DownloadComplete")
        # Handed over again from the journal: the size and SHA-256 it recorded.
        assert d.recorder.events == [
            DownloadComplete(update_id, str(d.image(update_id)), "", sha256=SHA256, size=len(IMAGE))
        ]
        d.interpreter.recover()  # already in the outbox: not again
        await d.idle()
        assert d.journal.pending_events() == 1
    assert route_count(sim, "download") == 1


async def test_start_download_of_a_complete_image_hands_it_over_without_downloading(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    """``swlm send "dl <id>"``: an SWLM that lost the event gets it again."""
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    async with running_daemon(tmp_path, sim, event_outbox=True) as d:
        first = await d.execute(StartDownload(update_id))
        assert await d.execute(StartDownload(update_id)) == first
        assert d.journal.pending_events() == 2
        d.image(update_id).write_bytes(b"changed on disk")  # no longer what was downloaded
        assert await d.execute(StartDownload(update_id)) == first
        assert d.image(update_id).read_bytes() == IMAGE
        d.image(update_id).write_bytes(IMAGE[::-1])  # the same size, other bytes
        assert await d.execute(StartDownload(update_id)) == first
        assert d.image(update_id).read_bytes() == IMAGE
    assert route_count(sim, "download") == 3


async def test_a_download_too_large_is_a_failure_reported_once(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    async with running_daemon(tmp_path, sim, max_download_size=100, event_outbox=True) as d:
        event = await d.execute(StartDownload(update_id))
        assert isinstance(event, DownloadFailed)
        assert "max_download_size" in event.reason
        await d.idle()
        assert d.journal.update_state(update_id) is UpdateState.REPORTED
        assert [e.name for e in d.journal.due_events(float("inf"), 10)] == ["DownloadFailed"]
    assert [r.status for r in sim.reports(DEVICE)] == [204]
    assert not list(d.packages_dir.iterdir())


def test_the_checkpoint_type_is_what_the_journal_stores() -> None:
    point = Checkpoint(5, SHA256)
    assert (point.size, point.sha256) == (5, SHA256)
    assert Progress is not None


async def test_a_download_that_keeps_breaking_fails_once_and_leaves_no_partial_file(
    tmp_path: Path, sim: CoreSimulator
) -> None:
    update_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    sim.inject(TruncateFault(route="download", after=100))  # a start: 100 bytes kept
    sim.inject(TruncateFault(route="download", after=0, count=100))  # then never any more
    async with running_daemon(tmp_path, sim) as d:
        event = await d.execute(StartDownload(update_id))
        assert isinstance(event, DownloadFailed)
        await d.idle()
        assert d.journal.update_state(update_id) is UpdateState.REPORTED
        assert list(d.packages_dir.iterdir()) == []  # the update is over: nothing to resume
    assert [r.status for r in sim.reports(DEVICE)] == [204]
