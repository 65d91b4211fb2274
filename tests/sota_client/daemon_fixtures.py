"""Helpers for the in-process daemon tests: the interpreter over a real journal, backend and sim."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel

from sota_client._backend import AuthSettings, CoreBackend
from sota_client._download import DEFAULT_MAX_DOWNLOAD_SIZE
from sota_client._interpreter import Interpreter, PackageManagerLike, Services
from sota_client._reports import ReportSender
from sota_client._store import Journal
from sota_client.gateways import EventOutbox
from sota_client.pacman import FilePackageManager
from sota_client.sim import CoreSimulator
from swlm_sdk import Backoff
from swlm_sdk.protocol import Command, Event

DEVICE = "123e4567-e89b-12d3-a456-426655440000"
FAST_BACKOFF = Backoff(initial_delay=0.01, max_delay=0.05)
"""Download retries and token-request backoff without real waits worth noticing."""

E = TypeVar("E", bound=Event)


def free_port() -> int:
    """A loopback port nobody listens on now (so a stopped simulator can come back on it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Changes:
    """A test waits here until something it watches changes; every change wakes it."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait_until(self, predicate: Callable[[], object], within: float = 10.0) -> None:
        with anyio.fail_after(within):
            while not predicate():
                await self._event.wait()


class Recorder:
    """An event subscriber that keeps every published event, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changes = Changes()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changes.changed()

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, predicate: Callable[[list[Event]], object]) -> None:
        await self._changes.wait_until(lambda: predicate(self.events))


class Sleeps:
    """Stands in for ``anyio.sleep``: records each delay; after ``free`` calls, sleeps for ever.

    A test then sees every backoff the code asked for, and the code stops at a known point.
    """

    def __init__(self, free: int = 0) -> None:
        self.delays: list[float] = []
        self._free = free
        self._changes = Changes()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self._changes.changed()
        if len(self.delays) > self._free:
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()

    async def wait_for_count(self, count: int) -> None:
        await self._changes.wait_until(lambda: len(self.delays) >= count)


def package_file(directory: Path, *lines: str) -> FilePackageManager:
    """A ``file:`` package manager whose list holds ``lines`` (``"name version"``)."""
    path = directory / "installed.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return FilePackageManager(str(path))


def route_count(sim: CoreSimulator, route: str) -> int:
    """How many requests of one route the simulator received."""
    return sum(1 for request in sim.requests if request.route == route)


@dataclass
class Daemon:
    """The daemon's inner parts, running in a task group, as ``_daemon`` wires them."""

    interpreter: Interpreter
    services: Services
    backend: CoreBackend
    journal: Journal
    reports: ReportSender
    recorder: Recorder
    packages_dir: Path
    shutdowns: list[bool] = field(default_factory=list)

    async def execute(self, command: Command) -> Event | None:
        with anyio.fail_after(20):
            return await self.interpreter.execute(command)

    async def idle(self) -> None:
        """Wait until every follow-up has finished."""
        with anyio.fail_after(20):
            await self.interpreter.activity.wait_idle()

    def image(self, update_id: str) -> Path:
        return self.packages_dir / update_id


@asynccontextmanager
async def running_daemon(
    tmp_path: Path,
    sim: CoreSimulator,
    *,
    credentials: tuple[str, str] | None = None,
    package_manager: PackageManagerLike | None = None,
    system_info: Callable[[], Awaitable[str]] | None = None,
    backoff: Backoff = FAST_BACKOFF,
    report_backoff: float = 0.05,
    backend_type: type[CoreBackend] = CoreBackend,
    event_outbox: bool = False,
    max_concurrent_downloads: int = 1,
    max_download_size: int = DEFAULT_MAX_DOWNLOAD_SIZE,
    event_metadata: bool = True,
) -> AsyncIterator[Daemon]:
    """The interpreter with a journal in ``tmp_path``, Core at ``sim`` and the retry loop running.

    :param credentials: ``(client_id, client_secret)`` for an ``[auth]`` section; None for none.
    :param backend_type: ``CoreBackend`` or a subclass that instruments it.
    :param event_outbox: write the SWLM's events to the journal's outbox, as the socket gateway
        has the interpreter do (nothing delivers them here).
    :param event_metadata: ``device.event_metadata``.
    """
    packages_dir = tmp_path / "packages"
    packages_dir.mkdir(exist_ok=True)
    auth = None
    if credentials is not None:
        auth = AuthSettings(server=sim.url, client_id=credentials[0], client_secret=credentials[1])
    journal = Journal.open(tmp_path / "state" / "sota.db")
    try:
        async with (
            backend_type(sim.url, DEVICE, auth=auth, timeout=10.0, backoff=backoff) as backend,
            anyio.create_task_group() as tg,
        ):
            reports = ReportSender(backend, journal, backoff=report_backoff, max_backoff=0.5)
            recorder = Recorder()
            services = Services(
                backend=backend,
                journal=journal,
                reports=reports,
                packages_dir=str(packages_dir),
                package_manager=package_manager,
                system_info=system_info,
                subscribers=[recorder],
                outbox_entry=EventOutbox.entry_for if event_outbox else None,
                max_concurrent_downloads=max_concurrent_downloads,
                max_download_size=max_download_size,
                event_metadata=event_metadata,
            )
            interpreter = Interpreter(services, tg)
            daemon = Daemon(
                interpreter, services, backend, journal, reports, recorder, packages_dir
            )
            services.shutdown = lambda: daemon.shutdowns.append(True)
            tg.start_soon(reports.run, interpreter.publish)
            yield daemon
            tg.cancel_scope.cancel()
    finally:
        journal.close()
